"""Log (log_dynamic + DBS/SFS/ABS + LLR) against linear AdaRound at equal bits, as a markdown table.

    python benchmarks/ptq_results.py --models vit_fmnist resnet18_fmnist --hardware-approx -o docs/ptq_house.md

Rows: every model x W{3,4} x A{float, 8} x {log_dynamic+LLR, linear_mse+AdaRound}; each run is appended to
the results CSV, and the table is rebuilt from every CSV row with this run's settings, so a stopped sweep
continues with ``--resume`` (rows already in the CSV are skipped).  Iteration counts are modest
(``--iters``, default 200 per block) so a cell takes minutes on 2 CPU cores; they are printed with the table.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.quant import QuantConfig

METHODS = ("log_dynamic", "linear_mse")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet18_fmnist", "vit_fmnist"])
    ap.add_argument("--w-bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--a-bits", type=int, nargs="+", default=[32, 8])
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--hardware-approx", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--resume", action="store_true", help="skip cells the results CSV already has")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/ptq_runs.csv"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--quick", action="store_true",
                    help="ResNet-18 W4A8 only, 16 calibration images, 2 iterations, 64 test images; CSV next to -o (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.w_bits, args.a_bits, args.results = ["resnet18_fmnist"], [4], [8], args.output.with_suffix(".csv")
        args.calib_samples, args.iters, args.eval_limit = 16, 2, 64
    torch.set_num_threads(args.threads)
    for name in args.models:
        fp_metrics = None
        for w in args.w_bits:
            for a in args.a_bits:
                for method in METHODS:
                    cfg = QuantConfig(method=method, w_bits=w, a_bits=a, learn_rounding=True, iters=args.iters,
                                      calib_samples=args.calib_samples, hardware_approx=args.hardware_approx)
                    if args.resume and _key(name, cfg) in saved_cells(args):
                        continue
                    _, row = quantize_registry_model(name, cfg, EvalOptions(eval_limit=args.eval_limit),
                                                     progress=False, fp_metrics=fp_metrics)
                    fp_metrics = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
                    row["eval_limit"] = args.eval_limit or ""
                    append_csv(row, args.results)
                    print(row, flush=True)
                    write_table(args)


def _key(model: str, cfg: QuantConfig) -> tuple[str, str, str, str]:
    return model, str(cfg.w_bits), str(cfg.a_bits), cfg.method


def saved_cells(args: argparse.Namespace) -> dict[tuple[str, str, str, str], dict]:
    """CSV rows with this sweep's settings, keyed by (model, w, a, method); the latest row wins."""
    if not args.results.exists():
        return {}
    with args.results.open(newline="") as f:
        rows = list(csv.DictReader(f))
    want = {"learn_rounding": "True", "iters": str(args.iters), "calib_samples": str(args.calib_samples),
            "eval_limit": str(args.eval_limit or "")}
    cells = {}
    for r in rows:
        if r["model"] in args.models and r["method"] in METHODS and all((r.get(k) or "") == v for k, v in want.items()):
            if r["method"] == "linear_mse" or r["hardware_approx"] == str(args.hardware_approx):
                cells[(r["model"], r["w_bits"], r["a_bits"], r["method"])] = r
    return cells


def write_table(args: argparse.Namespace) -> None:
    cells = saved_cells(args)
    lines = [f"{args.calib_samples} calibration images, {args.iters} rounding iterations per block, "
             f"hardware_approx={args.hardware_approx} (log rows), evaluation on "
             f"{args.eval_limit or 'all 10,000'} test images, {args.threads} torch thread(s); top-1 %, "
             "agreement = % of images with the FP model's prediction; time = quantization only (s), on 2 cores "
             "shared with other jobs\n",
             "| model | W | A | FP top-1 | log_dynamic+LLR top-1 (agreement) | linear_mse+AdaRound top-1 (agreement) "
             "| time log / linear (s) |", "|---|---|---|---|---|---|---|"]
    for name in args.models:
        for w in args.w_bits:
            for a in args.a_bits:
                got = [cells.get((name, str(w), str(a), m)) for m in METHODS]
                if not any(got):
                    continue
                fp = next(r["fp_top1"] for r in got if r)
                vals = [f"{r['q_top1']} ({r['q_agreement']})" if r else "–" for r in got]
                times = " / ".join(r["quant_seconds"] if r else "–" for r in got)
                lines.append(f"| {name} | {w} | {'fp' if a == 32 else a} | {fp} | {vals[0]} | {vals[1]} | {times} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
