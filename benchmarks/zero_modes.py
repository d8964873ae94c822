"""Zero code vs zero flag vs no zero (datapath.md asks which to make the default), measured as model accuracy.

    python benchmarks/zero_modes.py --models resnet18_fmnist mobilenetv2_fmnist vit_fmnist -o docs/zero_modes.md

Each row quantizes a registry model (log_dynamic + DBS + SFS + ABS, the 1+1/2 hardware approximation,
8-bit activations, round to nearest unless ``--learn-rounding``) in one zero mode and scores it:
``code`` spends one of the 2^(n-1) index slots per sign on zero (n bits), ``flag`` keeps all slots and
stores a separate zero bit (n+1 bits), ``none`` has no zero (small weights clamp to the smallest level).
The table also gives the fraction of weights that decode to zero.  Rows go to the results CSV too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.quant import QuantConfig
from logmac.quant.modules import QuantLayer

ZERO_MODES = ("code", "flag", "none")


def zero_fraction(model: torch.nn.Module) -> float:
    """Percent of quantized weights whose decoded value is exactly zero."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, QuantLayer) and m.qweight is not None:
            zeros += int((m.qweight == 0).sum())
            total += m.qweight.numel()
    return 100.0 * zeros / max(1, total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet18_fmnist", "mobilenetv2_fmnist", "vit_fmnist"])
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--a-bits", type=int, default=8)
    ap.add_argument("--learn-rounding", action="store_true")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/ptq_runs.csv"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--quick", action="store_true",
                    help="ResNet-18 W4 only, 16 calibration images, 64 test images; CSV next to -o (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.bits, args.results = ["resnet18_fmnist"], [4], args.output.with_suffix(".csv")
        args.calib_samples, args.iters, args.eval_limit = 16, 2, 64
    torch.set_num_threads(args.threads)
    rounding = f"LLR {args.iters} iterations per block" if args.learn_rounding else "round to nearest"
    lines = [f"log_dynamic + DBS + SFS + ABS, hardware_approx, A{args.a_bits}, {rounding}, "
             f"{args.calib_samples} calibration samples, evaluation on {args.eval_limit or 'all'} test images\n",
             "| model | bits | zero | stored bits/weight | top-1 % | FP top-1 % | weights = 0 (%) | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    opts = EvalOptions(eval_limit=args.eval_limit)
    for name in args.models:
        fp_metrics = None
        for bits in args.bits:
            for zero in ZERO_MODES:
                cfg = QuantConfig(method="log_dynamic", w_bits=bits, a_bits=args.a_bits, zero=zero,
                                  hardware_approx=True, learn_rounding=args.learn_rounding, iters=args.iters,
                                  calib_samples=args.calib_samples)
                res, row = quantize_registry_model(name, cfg, opts, progress=False, fp_metrics=fp_metrics)
                fp_metrics = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
                row["zero_percent"] = round(zero_fraction(res.model), 2)
                append_csv(row, args.results)
                lines.append(f"| {name} | {bits} | {zero} | {cfg.weight_format().storage_bits} | {row['q_top1']} | "
                             f"{row['fp_top1']} | {row['zero_percent']} | {row['quant_seconds']} |")
                print(lines[-1], flush=True)
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
