"""Hardware at equal accuracy: each log row of the LM table against the int engine of the narrowest uniform
width that is at least as accurate, from the same PTQ pipeline and budget.

    python benchmarks/iso_accuracy.py [--results benchmarks/out/lm_table.csv] [-o docs/iso_accuracy.md]
    python benchmarks/iso_accuracy.py --quick      # CI smoke: a tiny results file, 2/4-lane builds

Equal stored bits is the fair area comparison when both formats reach the same accuracy at the same width.
Where they do not, a designer pays for the width the accuracy needs: here the smallest uniform width, with the
pairing of methods of ``lm_table.py`` (GPTQ with GPTQ, GPTQ+AdaRound with GPTQ+LLR, grouped with grouped),
whose perplexity is no worse than the log row's.  The engines are synthesised as in ``logmac hw compare``
(yosys only: area, not Fmax); the scheduled engines' cycles per output come from the house ResNet-18 codes
(``logmac/hw_compare.py``), not from the LM's.  Rows with group exponents are listed but not priced: only the
scheduled terms-store engine applies a group shift, and no int engine with one exists to compare against.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

PAIRS = {"log GPTQ": "uniform GPTQ", "log GPTQ+LLR": "uniform GPTQ+AdaRound", "log RTN": "uniform RTN"}
GROUPED = " +group exp"
ENGINES = ("int", "lean", "sched-inplace", "sched-coded")


def uniform_partner(label: str) -> str | None:
    base, grouped = label.removesuffix(GROUPED), label.endswith(GROUPED)
    partner = PAIRS.get(base)
    return None if partner is None else partner + (GROUPED if grouped else "")


def iso_pairs(rows: list[dict]) -> list[dict]:
    """For every log row: the narrowest uniform row of the partner method at least as accurate (or None)."""
    out = []
    for r in rows:
        partner = uniform_partner(r["row"])
        if partner is None:
            continue
        uniform = sorted((u for u in rows if u["row"] == partner), key=lambda u: int(u["w_bits"]))
        match = next((u for u in uniform if float(u["q_perplexity"]) <= float(r["q_perplexity"])), None)
        out.append({"log": r, "uniform": match, "tried": [int(u["w_bits"]) for u in uniform]})
    return out


def engine_rows(bits: set[int], lanes: tuple[int, int]) -> dict[tuple[str, int, int], dict]:
    """``(engine, weight bits, lanes) -> compare row`` on the log_dynamic grid, area only."""
    from logmac.hw import compare
    from logmac.hw_compare import register_sched_engines

    register_sched_engines()
    rows = compare.compare_rows(grids=("log_dynamic",), weight_bits=tuple(sorted(bits)), lanes=lanes,
                                engines=ENGINES, fmax=False)
    return {(r["engine"], r["weight_bits"], r["lanes"]): r for r in rows}


def table(pairs: list[dict], engines: dict, lanes: int) -> str:
    lines = ["| log row | W | ppl | uniform at least as accurate | W | ppl | engine | LUT4/lane vs int | "
             f"{lanes}-lane core LUT4 vs int | LUT4 x cycles/MAC vs int |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        log, uni = p["log"], p["uniform"]
        wl = int(log["w_bits"])
        if log["row"].endswith(GROUPED):
            lines.append(f"| {log['row']} | {wl} | {float(log['q_perplexity']):.2f} | not priced: only the scheduled "
                         "terms-store engine applies group shifts; no int engine with a group shifter is built | "
                         "| | | | | |")
            continue
        if uni is None:
            lines.append(f"| {log['row']} | {wl} | {float(log['q_perplexity']):.2f} | none of W{p['tried']} | | | | | | |")
            continue
        wu = int(uni["w_bits"])
        base = engines[("int", wu, lanes)]
        for name in ENGINES[1:]:
            e = engines[(name, wl, lanes)]
            cost = e["lut4"] * e["cycles_per_output"] / (base["lut4"] * base["cycles_per_output"])
            lines.append(f"| {log['row']} | {wl} | {float(log['q_perplexity']):.2f} | {uni['row']} | {wu} | "
                         f"{float(uni['q_perplexity']):.2f} | {name} | {e['lut4_per_lane'] / base['lut4_per_lane']:.2f} | "
                         f"{e['lut4'] / base['lut4']:.2f} | {cost:.2f} |")
    return "\n".join(lines)


def quick_results(folder: Path) -> Path:
    """A tiny results file in the LM table's columns (for --quick; not measurements)."""
    path = folder / "lm.csv"
    rows = [("uniform GPTQ", 3, 9.0), ("uniform GPTQ", 4, 5.0), ("log GPTQ", 3, 6.0)]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["row", "w_bits", "q_perplexity"])
        w.writeheader()
        w.writerows({"row": r, "w_bits": b, "q_perplexity": p} for r, b, p in rows)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/lm_table.csv"))
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--calib-samples", type=int, default=128, help="the LM table's budget whose rows are paired")
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the table (Markdown) here")
    ap.add_argument("--quick", action="store_true", help="a tiny results file and 2/4-lane builds (CI smoke)")
    args = ap.parse_args()
    lanes = (16, 32)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.results, lanes, args.calib_samples = quick_results(Path(tmp)), (2, 4), None
        with args.results.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if args.quick or (
                r["model"] == args.model and int(r["calib_samples"]) == args.calib_samples and r.get("row"))]
    latest = {(r["w_bits"], r["row"]): r for r in rows}  # a later run of the same row wins
    pairs = iso_pairs(list(latest.values()))
    bits = {int(p["log"]["w_bits"]) for p in pairs} | {int(p["uniform"]["w_bits"]) for p in pairs if p["uniform"]}
    text = table(pairs, engine_rows(bits, lanes), lanes[0])
    print(text)
    if args.output:
        header = ("# Hardware at equal accuracy (SmolLM2-135M, the LM table's rows)\n\n"
                  f"Made by `python benchmarks/iso_accuracy.py -o {args.output}` from `{args.results}` "
                  f"({args.model}, {args.calib_samples} calibration windows; see docs/lm_table.md).  Each log row is "
                  "paired with the narrowest uniform width of the partner method (GPTQ with GPTQ, GPTQ+AdaRound "
                  "with GPTQ+LLR) whose perplexity is no worse; the log engines at the log row's width are then "
                  f"priced against the int engine at that width ({lanes[0]} and {lanes[1]} lanes, yosys, "
                  "log_dynamic builds; per lane = the difference over the extra lanes).  The scheduled engines' "
                  "cycles per output come from the house ResNet-18 codes, not from the LM's.  \"none of W[...]\" "
                  "means no uniform width that was run is as accurate (wider ones were not run).\n\n")
        args.output.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
