"""docs/results.md: every model x weight bits x methods side by side, with the time each run took here.

    .venv/bin/python benchmarks/results_page.py run --models resnet18_fmnist,vit_fmnist --bits 3,4 \\
        --methods log_dynamic,log_2,linear_mse [--a-bits 8] [--learn-rounding]   # append cells to the CSV
    .venv/bin/python benchmarks/results_page.py page [-o docs/results.md]      # the page, from the CSV only

``run`` quantizes each cell with ``logmac.experiments.registry.quantize_registry_model`` (the code path of
``logmac quantize``) and appends one row per cell to ``benchmarks/out/ptq_runs.csv``; the other benchmarks
(``ablation.py``, ``ptq_results.py``, ``zero_modes.py``) append to the same file.  ``page`` re-runs
nothing: it reads that CSV and writes one table per model (the latest row of each cell wins), so the
expensive LLM runs are measured once and the page is regenerated in a second.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.quant.config import QuantConfig

CSV = Path("benchmarks/out/ptq_runs.csv")
LATTICE_CSV = Path("results/latticeq_results.csv")  # benchmarks/latticeq_results.py: LatticeQ and its baselines
MODELS = ["resnet18_fmnist", "mobilenetv2_fmnist", "vit_fmnist", "efficientnet_lite0", "smollm2_135m", "minilm_l6_v2"]
METRICS = {  # model -> (CSV metric column without the q_/fp_ prefix, how it reads)
    "efficientnet_lite0": ("agreement", "top-1 agreement with FP (%) on the 96 shipped photo views"),
    "smollm2_135m": ("perplexity", "perplexity on Persuasion (lower is better)"),
    "minilm_l6_v2": ("cosine", "mean cosine of sentence embeddings to FP on 256 Persuasion sentences"),
}
DEFAULT_METRIC = ("top1", "top-1 % on Fashion-MNIST test images")
# Why some cells are missing: these are the methods that do not fit a shared 2-core CPU in this session.
SKIPPED = """\
Not on this page, and why:
- Zero-mode variants (`zero=flag` / `zero=none`): [zero_modes.md](zero_modes.md); every cell here uses the
  default `code` zero.
- Learned rounding on MobileNetV2 and MiniLM: the house ResNet-18 and ViT carry the LLR-vs-AdaRound comparison
  at every W/A cell; MobileNetV2's single-width LLR runs are in [ptmq.md](ptmq.md).
- SmolLM2 with 8-bit activations: the LLM rows are weight-only (LogART's setting), activations float.
- log_2 on the pretrained models: it is the log_dynamic grid without DBS (the ablation's DBS column).
- Times are wall-clock on 2 cores shared with other jobs; the load average ranged from about 2 to 20 between
  runs, so a time compares only with cells measured in the same sweep.
"""


def run(args: argparse.Namespace) -> None:
    """Quantize every requested cell and append its row to the CSV."""
    torch.set_num_threads(args.threads)
    for model in [m for m in args.models.split(",") if m]:
        fp_metrics = None
        for bits in [int(b) for b in args.bits.split(",") if b]:
            for method in [m for m in args.methods.split(",") if m]:
                cfg = QuantConfig(method=method, w_bits=bits, a_bits=args.a_bits, learn_rounding=args.learn_rounding,
                                  iters=args.iters, calib_samples=args.calib_samples, batch_size=args.batch_size,
                                  hardware_approx=method.startswith("log"))
                opts = EvalOptions(eval_limit=args.eval_limit, max_tokens=args.max_tokens)
                start = time.perf_counter()
                _, row = quantize_registry_model(model, cfg, opts, progress=False, fp_metrics=fp_metrics)
                fp_metrics = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
                row["eval_limit"] = args.eval_limit or ""
                append_csv(row, args.csv[0])
                print(model, cfg.label(), {k: v for k, v in row.items() if k.startswith("q_")},
                      f"({time.perf_counter() - start:.0f} s)", flush=True)


def _method(row: dict) -> str:
    """The label without its W/A suffix, e.g. ``log_dynamic+DBS+SFS+ABS+LLR``; the hardware approximation
    and a zero mode other than the default ``code`` are marked.  LatticeQ rows (whose labels carry the
    basis bits) read ``LatticeQ``, ``+recon`` when block reconstruction ran."""
    if row["method"] == "latticeq":
        return "LatticeQ" + (" +recon" if row.get("recon_iters") not in (None, "", "0") else "")
    name = row["label"].rsplit(" ", 1)[0]
    if row["method"].startswith("log"):
        name += " (1+1/2)" if row.get("hardware_approx") == "True" else ""
        name += f" zero={row['zero']}" if row.get("zero", "code") != "code" else ""
    return name


def _cell(row: dict, metric: str) -> str:
    """``metric (time s)``, plus the integer-emulated score where the run has one and the number of test
    samples when the run did not use all of them."""
    notes = [f"{float(row['quant_seconds']):.0f} s"]
    if row.get(f"int_{metric}") not in (None, "", "None"):
        notes.append(f"integer {_number(row[f'int_{metric}'], metric)}")
    if row.get("eval_limit") not in (None, "", "None"):
        notes.append(f"first {int(float(row['eval_limit'])):,} test samples")
    return f"{_number(row[f'q_{metric}'], metric)} ({'; '.join(notes)})"


def _number(text: str, metric: str = "") -> str:
    """A CSV score as shown: four decimals for a cosine, else two (percents, perplexities)."""
    return f"{float(text):.{4 if metric == 'cosine' else 2}f}"


def page(args: argparse.Namespace) -> None:
    """Write the results page from the CSV: one table per model, rows W x A, one column per method."""
    rows = []
    for path in args.csv:
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
    lines = ["# Results: models x weight bits x methods", "",
             f"Generated by `benchmarks/results_page.py page` from {', '.join(f'`{p}`' for p in args.csv)}, which the "
             "benchmark scripts fill "
             "(`results_page.py run`, `ablation.py`, `ptq_results.py`, `zero_modes.py`, `latticeq_results.py`; each row "
             "records its full "
             "settings). Measured on this machine: 2 CPU cores shared with other jobs, no GPU. Each cell is "
             "`metric (quantization time in s)`; the time excludes model loading and evaluation and grows with "
             "the machine's load. Log methods use the per-channel LogART grid (DBS/SFS/ABS as named); "
             "\"(1+1/2)\" marks the hardware approximation of sqrt(2) levels. LLR / AdaRound = learned "
             "rounding with `iters` steps per block (CNN/ViT) or per linear (LLM). When a cell was run twice "
             "the latest row is shown.", ""]
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        metric, reads = METRICS.get(model, DEFAULT_METRIC)
        cells: dict[tuple[str, str], dict[str, dict]] = {}
        for r in mine:
            if r.get("zero", "code") not in ("", "code"):
                continue  # zero-mode variants have their own page (docs/zero_modes.md)
            if f"q_{metric}" in r and r[f"q_{metric}"] != "":
                cells.setdefault((r["w_bits"], r["a_bits"]), {})[_method(r)] = r
        methods = sorted({m for c in cells.values() for m in c}, key=lambda m: (not m.startswith("log"), m))
        whole = [r for r in mine if r.get("eval_limit") in (None, "", "None")] or mine  # FP on all test samples
        fp = next((_number(r[f"fp_{metric}"], metric) for r in reversed(whole) if r.get(f"fp_{metric}")), "")
        settings = sorted({f"{r['calib_samples']} calibration samples, {r['iters']} iterations"
                           for r in mine if r["learn_rounding"] == "True"})
        lines += [f"## {model}", "", f"Metric: {reads}. FP: {fp or 'reference (by definition)'}."
                  + (f" Learned rounding: {'; '.join(settings)}." if settings else ""), "",
                  "| W | A | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
        for (w, a) in sorted(cells, key=lambda k: (int(k[0]), int(k[1]))):
            row = cells[(w, a)]
            vals = [_cell(row[m], metric) if m in row else "–" for m in methods]
            lines.append(f"| {w} | {'fp' if a == '32' else a} | " + " | ".join(vals) + " |")
        lines.append("")
    lines.append(SKIPPED)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, nargs="+", default=[CSV, LATTICE_CSV],
                    help="results CSVs to read (page) / the first one is appended to (run)")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="quantize cells and append them to the CSV")
    r.add_argument("--models", default="resnet18_fmnist,mobilenetv2_fmnist,vit_fmnist")
    r.add_argument("--bits", default="3,4")
    r.add_argument("--methods", default="log_dynamic,log_2,linear_mse")
    r.add_argument("--a-bits", type=int, default=8)
    r.add_argument("--learn-rounding", action="store_true", help="LLR (log) / AdaRound (linear) for every cell")
    r.add_argument("--iters", type=int, default=100)
    r.add_argument("--calib-samples", type=int, default=256)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--eval-limit", type=int, default=None)
    r.add_argument("--max-tokens", type=int, default=2048, help="LM evaluation tokens")
    r.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    r.add_argument("--quick", action="store_true", help="one ResNet-18 W4 log_dynamic cell on a minimal budget "
                   "(CI smoke; give --csv a scratch file)")
    p = sub.add_parser("page", help="write the page from the CSV")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/results.md"))
    args = ap.parse_args()
    if args.command == "run" and args.quick:
        args.models, args.bits, args.methods = "resnet18_fmnist", "4", "log_dynamic"
        args.calib_samples, args.batch_size, args.iters, args.eval_limit = 16, 16, 2, 64
    run(args) if args.command == "run" else page(args)


if __name__ == "__main__":
    main()
