"""LogART ablation (DBS/SFS/ABS/LLR) plus the uniform round-to-nearest baseline, as a markdown table.

    python benchmarks/ablation.py --model smollm2_135m --w-bits 3 --rows paper -o docs/ablation_smollm2.md

``--rows full`` runs all 16 combinations (LogART's table); ``paper`` the 7 rows the LogART README lists;
``core`` none / DBS+SFS+ABS / all four (what fits a shared 2-core CPU in minutes).
``--quick`` runs the core rows on a tiny random Llama with a minimal budget (CI smoke; results CSV next to -o).
Every row is also appended to the results CSV.  All settings are printed with the table.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from logmac.experiments.registry import (
    ABLATION,
    EvalOptions,
    append_csv,
    markdown_table,
    memory_summary,
    quantize_registry_model,
)
from logmac.quant import QuantConfig

# The 7 rows of LogART's README, the headline ones (none, DBS+SFS+ABS, all four) first so they land early.
PAPER_ROWS = [(False, False, False, False), (True, True, True, False), (True, True, True, True),
              (False, False, False, True), (False, False, True, False), (True, False, False, False),
              (False, True, False, False)]
CORE_ROWS = [(False, False, False, False), (True, True, True, False), (True, True, True, True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--w-bits", type=int, default=3)
    ap.add_argument("--a-bits", type=int, default=32)
    ap.add_argument("--rows", choices=["core", "paper", "full"], default="paper")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--alpha-steps", type=int, default=26, help="SFS candidates between 1.0 and 0.5")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--hardware-approx", action="store_true")
    ap.add_argument("--no-uniform", action="store_true", help="Skip the uniform round-to-nearest row.")
    ap.add_argument("--no-llr", action="store_true", help="Only the rows without LLR (quicker).")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--resume", action="store_true",
                    help="Skip rows the results CSV already has with these settings (continue a stopped sweep).")
    ap.add_argument("--only-labels", nargs="+", metavar="LABEL", default=None,
                    help="Run only these rows (labels as in the table, e.g. 'linear_minmax W3Afp'); the table "
                         "still lists every row of the sweep the results CSV has.")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/ptq_runs.csv"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="A tiny random Llama, core rows, minimal budget (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.rows, args.results = tiny_llama(), "core", args.output.with_suffix(".csv")
        args.calib_samples, args.seq_len, args.iters, args.alpha_steps, args.max_tokens = 8, 32, 2, 3, 256
    common = dict(w_bits=args.w_bits, a_bits=args.a_bits, calib_samples=args.calib_samples, iters=args.iters,
                  batch_size=min(8, args.calib_samples), hardware_approx=args.hardware_approx,
                  alpha_steps=args.alpha_steps)
    combos = {"full": ABLATION, "paper": PAPER_ROWS, "core": CORE_ROWS}[args.rows]
    combos = [c for c in combos if not (args.no_llr and c[3])]
    configs = [] if args.no_uniform else [QuantConfig(method="linear_minmax", **common)]
    configs += [QuantConfig(method="log_dynamic", dbs=d, sfs=s, abs=a, learn_rounding=r, **common) for d, s, a, r in combos]
    opts = EvalOptions(eval_limit=args.eval_limit, max_tokens=args.max_tokens, seq_len=args.seq_len)
    torch.set_num_threads(args.threads)
    if args.only_labels:
        unknown = set(args.only_labels) - {c.label() for c in configs}
        if unknown:
            ap.error(f"--only-labels: not rows of this sweep: {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(c.label() for c in configs)}")
    done = {r["label"]: r for r in saved_rows(args)}
    fp_metrics = None  # every row shares the FP model and evaluation data: score it once
    if args.resume and done:  # ... or take it from a row of this sweep a stopped run already saved
        last = list(done.values())[-1]
        fp_metrics = {k[3:]: float(v) for k, v in last.items() if k.startswith("fp_") and v not in ("", None)} or None
    for cfg in configs:
        if (args.resume and cfg.label() in done) or (args.only_labels and cfg.label() not in args.only_labels):
            continue
        start = time.perf_counter()
        # Only the row is kept: the quantized model goes before the next row loads its own.
        row = quantize_registry_model(args.model, cfg, opts, progress=False, fp_metrics=fp_metrics)[1]
        fp_metrics = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
        append_csv(row, args.results)
        print(f"{cfg.label()}: {row}  ({time.perf_counter() - start:.0f} s)\n{memory_summary(row)}", flush=True)
        done = {r["label"]: r for r in saved_rows(args)}
        rows = [done[c.label()] for c in configs if c.label() in done]
        metric = "perplexity" if "q_perplexity" in row else ("agreement" if "q_agreement" in row else "top1")
        fp = row.get(f"fp_{metric}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            f"{args.model}, W{args.w_bits} per channel, activations {'float' if args.a_bits == 32 else args.a_bits}; "
            f"FP {metric} {fp}; {args.calib_samples} x {args.seq_len}-token calibration samples, "
            f"{args.alpha_steps} SFS scales, LLR {args.iters} iterations/layer, {args.max_tokens} evaluation tokens, "
            f"hardware_approx={args.hardware_approx}, {args.threads} torch thread(s); time = quantization only, "
            "peak = resident memory from the start of quantization to the end of evaluation (model already loaded)\n\n"
            + markdown_table(rows, metric) + "\n")


def tiny_llama() -> str:
    """A random tiny Llama saved to a temporary folder (removed at exit), for ``--quick``."""
    import atexit
    import shutil
    import tempfile

    from logmac.models.tiny_lm import save_tiny_causal_lm

    folder = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, folder, True)
    return str(save_tiny_causal_lm(folder / "tiny-llama", "llama"))


def saved_rows(args: argparse.Namespace) -> list[dict]:
    """Rows of the results CSV from a run with this sweep's settings (the latest per label comes last)."""
    if not args.results.exists():
        return []
    with args.results.open(newline="") as f:
        rows = list(csv.DictReader(f))
    want = {"model": args.model, "w_bits": str(args.w_bits), "a_bits": str(args.a_bits),
            "calib_samples": str(args.calib_samples), "iters": str(args.iters),
            "hardware_approx": str(args.hardware_approx), "q_tokens": f"{float(args.max_tokens)}"}
    return [r for r in rows if all(r.get(k) == v for k, v in want.items())]


if __name__ == "__main__":
    main()
