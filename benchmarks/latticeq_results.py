"""LatticeQ (fake-quant and integer-emulated) next to log_dynamic (+LLR) and linear AdaRound at equal bits.

    nice python benchmarks/latticeq_results.py --model resnet18_fmnist --eval-limit 2000 -o results/latticeq.md
    nice python benchmarks/latticeq_results.py --preset efficientnet     # only the EfficientNet-Lite0 rows

Rows: W4A8 (basis 8 bits), W4A4 (basis 4 bits), W3A8 (basis 8 bits), as in the LatticeQ README.  Every
method quantizes every layer at the same bits with the same per-tensor MSE activation quantizer
(LatticeQ ``edge="same"``), so only the weight quantizer differs.  Search steps, restarts, rounding
iterations and run times are printed with the table; rows are appended to the results CSV.  The table
file is rewritten after every row, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import torch

from logmac.experiments.latticeq import lattice_registry_model
from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.quant import QuantConfig
from logmac.quant.methods.latticeq.model import LatticeConfig

SETTINGS = {"W4A8": (4, 8, 8), "W4A4": (4, 4, 4), "W3A8": (3, 8, 8)}  # w bits, a bits, basis bits
# The EfficientNet-Lite0 rows: a budget that finishes on 2 shared cores (see docs/latticeq.md).
PRESETS = {
    "efficientnet": dict(model="efficientnet_lite0", steps=20, restarts=2, normalize="channel", iters=50,
                         calib_samples=64, eval_limit=None, output=Path("results/latticeq_efficientnet.md")),
}


def _score(row: dict, prefix: str) -> str:
    """Top-1 % (Fashion-MNIST only) and FP agreement % / KL (nats) from a results row."""
    top1 = f"{row[f'{prefix}top1']:.2f}" if f"{prefix}top1" in row else "–"
    if f"{prefix}agreement" not in row:
        return f"{top1} | –"
    return f"{top1} | {row[f'{prefix}agreement']:.2f} / {row[f'{prefix}kl']:.4f}"


def _value(text: str):
    """A ``--set`` value as a Python literal when it is one (``8``, ``None``, ``1e-3``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESETS), help="fixed model and budget; other flags still override")
    ap.add_argument("--model", default="resnet18_fmnist")
    ap.add_argument("--path", default=None, help="local weights (house models before their weights are shipped)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=80, help="LatticeQ search steps per temperature")
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--normalize", choices=["layer", "channel"], default="layer", help="LatticeQ normalisation")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="other LatticeConfig fields, e.g. granularity=tensor act_mode=quantile recon_iters=200")
    ap.add_argument("--no-latticeq", action="store_true", help="baselines only")
    ap.add_argument("--iters", type=int, default=200, help="LLR / AdaRound iterations per block")
    ap.add_argument("--baselines", nargs="*", default=["log_dynamic", "log_dynamic+LLR", "linear_mse+AdaRound"])
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-limit", type=int, default=2000)
    ap.add_argument("--results", type=Path, default=Path("results/latticeq_results.csv"))
    ap.add_argument("-o", "--output", type=Path, default=Path("results/latticeq_results.md"))
    ap.add_argument("--quick", action="store_true", help="W4A8 on ResNet-18 with a minimal budget, output and CSV in a "
                    "scratch folder (CI smoke)")
    known = ap.parse_known_args()[0]
    preset = known.preset
    if preset:
        ap.set_defaults(**PRESETS[preset])
    if known.quick:
        import tempfile

        scratch = Path(tempfile.mkdtemp())
        ap.set_defaults(settings=["W4A8"], steps=2, restarts=1, iters=2, calib_samples=16, eval_limit=64,
                        baselines=["log_dynamic"], results=scratch / "latticeq.csv", output=scratch / "latticeq.md")
    return ap.parse_args()


def main() -> None:
    args = _parse()
    torch.set_num_threads(1)  # the machine is shared; one thread per run keeps run times comparable
    head = (f"model {args.model}; eval {args.eval_limit or 'all'} samples; calibration {args.calib_samples} samples; "
            f"LatticeQ {args.steps} steps x 9 temperatures x {args.restarts} restarts, bias correction, "
            f"normalize={args.normalize} {' '.join(args.set)}"
            + (f"; LLR/AdaRound {args.iters} iterations per block" if args.baselines else "") + "\n")
    lines = ["| setting | method | top-1 fake-quant | agreement % / KL fake-quant | top-1 integer | "
             "agreement % / KL integer | quant time (s) |", "|---|---|---|---|---|---|---|"]
    fp_line = ""

    def write() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join([head, fp_line + "\n", *lines]) + "\n")

    for name in args.settings:
        w, a, bb = SETTINGS[name]
        if not args.no_latticeq:
            extra_cfg = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
            cfg = LatticeConfig(w_bits=w, a_bits=a, basis_bits=bb, steps=args.steps, restarts=args.restarts,
                                calib_samples=args.calib_samples, edge="same", normalize=args.normalize, **extra_cfg)
            _, row = lattice_registry_model(args.model, cfg, eval_limit=args.eval_limit, path=args.path,
                                            progress=False)
            append_csv(row, args.results)
            print(row, flush=True)
            fp_line = fp_line or f"FP top-1: {row.get('fp_top1', '–')}"
            extra = f" ({', '.join(args.set)})" if args.set else ""
            lines.append(f"| {name} | {cfg.label()}{extra} | {_score(row, 'q_')} | {_score(row, 'int_')} | "
                         f"{row['quant_seconds']} |")
            write()
        for base in args.baselines:
            method, _, extra = base.partition("+")
            qcfg = QuantConfig(method=method, w_bits=w, a_bits=a, learn_rounding=bool(extra), iters=args.iters,
                               calib_samples=args.calib_samples)
            start = time.perf_counter()
            _, brow = quantize_registry_model(args.model, qcfg, EvalOptions(eval_limit=args.eval_limit),
                                              path=args.path, progress=False)
            brow["wall_seconds"] = round(time.perf_counter() - start, 1)
            brow["eval_limit"] = args.eval_limit or ""
            append_csv(brow, args.results)
            print(brow, flush=True)
            fp_line = fp_line or f"FP top-1: {brow.get('fp_top1', '–')}"
            lines.append(f"| {name} | {base} | {_score(brow, 'q_')} | – | – | {brow['quant_seconds']} |")
            write()
    print("\n".join([head, fp_line + "\n", *lines]))


if __name__ == "__main__":
    main()
