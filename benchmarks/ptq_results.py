"""Log (log_dynamic + DBS/SFS/ABS + LLR) against linear AdaRound at equal bits, as a markdown table.

    python benchmarks/ptq_results.py --models resnet18_fmnist vit_fmnist -o docs/ptq_house.md

Rows: every model x W{3,4} x A{8, float} x {log_dynamic+LLR, linear_mse+AdaRound}; each row is also
appended to the results CSV.  Iteration counts are modest (``--iters``, default 200 per block) so the
table builds in minutes on 2 CPU cores; they are printed with the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from logmac.quant import QuantConfig
from logmac.quant.run import EvalOptions, append_csv, quantize_registry_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet18_fmnist", "vit_fmnist"])
    ap.add_argument("--w-bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--a-bits", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--hardware-approx", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/ptq_runs.csv"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"calibration {args.calib_samples} samples, {args.iters} rounding iterations per block, "
             f"hardware_approx={args.hardware_approx}, evaluation on "
             f"{args.eval_limit or 'all 10,000'} test images, {args.threads} torch thread(s); "
             "time = quantization only (s)\n",
             "| model | W | A | FP top-1 | log_dynamic+LLR | linear_mse+AdaRound | time log / linear (s) |",
             "|---|---|---|---|---|---|---|"]
    for name in args.models:
        for w in args.w_bits:
            for a in args.a_bits:
                cells, times, fp = [], [], None
                for method in ("log_dynamic", "linear_mse"):
                    cfg = QuantConfig(method=method, w_bits=w, a_bits=a, learn_rounding=True, iters=args.iters,
                                      calib_samples=args.calib_samples, hardware_approx=args.hardware_approx)
                    _, row = quantize_registry_model(name, cfg, EvalOptions(eval_limit=args.eval_limit), progress=False)
                    append_csv(row, args.results)
                    fp = row.get("fp_top1")
                    cells.append(str(row.get("q_top1")))
                    times.append(str(row["quant_seconds"]))
                    print(row, flush=True)
                lines.append(f"| {name} | {w} | {'fp' if a == 32 else a} | {fp} | {cells[0]} | {cells[1]} | "
                             f"{' / '.join(times)} |")
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
