"""The verify report: one self-contained HTML page (plots inline), a Markdown twin and a JSON of every number.

The page is built from a plain ``results`` dict (see :func:`write_report`) so that the numbers a person
reads and the JSON a script reads are the same numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from logmac.format.atomic import atomic_write_bytes, atomic_write_text


def _figure_png(draw) -> bytes:
    """Render one matplotlib figure off-screen and return its PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_metric_vs_bits(sweep: list[dict[str, Any]], metric: str, fp_value: float | None) -> bytes:
    def draw(ax):
        for method in sorted({row["method"] for row in sweep}):
            rows = sorted((r for r in sweep if r["method"] == method), key=lambda r: r["w_bits"])
            ax.plot([r["w_bits"] for r in rows], [r["metric"] for r in rows], marker="o", label=method)
        if fp_value is not None:
            ax.axhline(fp_value, color="black", linestyle="--", linewidth=1, label="FP")
        ax.set_xlabel("weight bits")
        ax.set_xticks(sorted({row["w_bits"] for row in sweep}))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs weight bits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return _figure_png(draw)


def plot_weight_histogram(name: str, weights: np.ndarray, levels: np.ndarray) -> bytes:
    """Weights of one channel with the grid levels that channel decodes to (both signs)."""

    def draw(ax):
        ax.hist(weights, bins=80, color="tab:blue", alpha=0.7)
        for v in levels:
            ax.axvline(v, color="tab:red", linewidth=0.8, alpha=0.8)
        ax.set_title(f"{name}: weights (blue) and log-grid levels (red)")
        ax.set_xlabel("weight value")
        ax.set_ylabel("count")

    return _figure_png(draw)


def plot_layer_errors(layers: list[dict[str, Any]]) -> bytes:
    def draw(ax):
        names = [row["name"] for row in layers]
        ax.bar(range(len(names)), [row["weight_rel_error"] for row in layers], color="tab:orange")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=75, fontsize=6)
        ax.set_ylabel("relative weight error ||W-Q(W)||/||W||")
        ax.set_title("per-layer quantization error")

    return _figure_png(draw)


def plot_compare(rows: list[dict[str, Any]]) -> bytes:
    """Each engine's LUT4 per lane (bars) and LUT4 x cycles per MAC (dots) as ratios to the int engine, per
    grid and weight bits, at the smaller lane count (rows of ``logmac.hw.compare.compare_rows``)."""
    lanes = min(r["lanes"] for r in rows)
    rows = [r for r in rows if r["lanes"] == lanes and r["engine"] != "int"]
    groups = list(dict.fromkeys((r["grid"], r["weight_bits"]) for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    width = 0.8 / max(1, len(engines))

    def draw(ax):
        for e, engine in enumerate(engines):
            for g, group in enumerate(groups):
                row = next((r for r in rows if (r["grid"], r["weight_bits"]) == group and r["engine"] == engine), None)
                if row is None:
                    continue
                x = g + (e - (len(engines) - 1) / 2) * width
                ax.bar(x, row["ratio_vs_int"]["lut4_per_lane"], width, color=f"C{e}", label=engine if g == 0 else None)
                ax.plot(x, row["ratio_vs_int"]["lut4_x_cycles_per_mac"], "k.", markersize=8,
                        label="LUT4 x cycles per MAC" if g == 0 and e == 0 else None)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{grid} W{bits}" for grid, bits in groups], fontsize=8)
        ax.set_ylabel(f"ratio to int engine ({lanes} lanes)")
        ax.set_title("LUT4 per lane (bars) and LUT4 x cycles per MAC (dots) vs int")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)

    return _figure_png(draw)


def _table(headers: list[str], rows: list[list[Any]]) -> tuple[str, str]:
    """The same table as Markdown and as HTML."""
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return "\n".join(md), f"<table><tr>{th}</tr>{trs}</table>"


def _fmt(value: Any) -> str:
    if value is None:  # not measured in this run (an Fmax without place and route, say)
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(results: dict[str, Any], plots: dict[str, bytes], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.html`` (plots embedded), ``report.md`` (+ PNG files) and ``report.json`` to ``out_dir``.

    ``results`` holds JSON-able numbers: ``title``, ``summary`` (label -> value), ``layers`` (list of
    dicts, shown as a table), optional ``area`` rows; ``plots`` maps a caption to PNG bytes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(results, indent=2, default=float))
    title = results.get("title", "logmac report")
    sections_md = [f"# {title}", ""]
    sections_html = [f"<h1>{html.escape(title)}</h1>"]

    summary_rows = [[k, _fmt(v)] for k, v in results.get("summary", {}).items()]
    md, htm = _table(["", "value"], summary_rows)
    sections_md += ["## Summary", md, ""]
    sections_html += ["<h2>Summary</h2>", htm]

    for key, heading in (("layers", "Per layer"), ("area", "Area and Fmax")):
        rows = results.get(key) or []
        if rows:
            headers = list(rows[0])
            md, htm = _table(headers, [[_fmt(r.get(h, "")) for h in headers] for r in rows])
            sections_md += [f"## {heading}", md, ""]
            sections_html += [f"<h2>{heading}</h2>", htm]

    sections_md.append("## Plots")
    sections_html.append("<h2>Plots</h2>")
    for i, (caption, png) in enumerate(plots.items()):
        file = out / f"plot{i}.png"
        atomic_write_bytes(file, png)
        sections_md += [f"### {caption}", f"![{caption}]({file.name})", ""]
        b64 = base64.b64encode(png).decode()
        sections_html.append(f"<figure><img src='data:image/png;base64,{b64}'><figcaption>{html.escape(caption)}"
                             "</figcaption></figure>")

    atomic_write_text(out / "report.md", "\n".join(sections_md) + "\n")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(sections_html)}</body></html>"
    atomic_write_text(out / "report.html", page)
    return {"html": out / "report.html", "markdown": out / "report.md", "json": out / "report.json"}
