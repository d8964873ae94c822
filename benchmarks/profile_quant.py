"""Where a quantization run spends its time: one ``quantize_registry_model`` call under cProfile.

    python benchmarks/profile_quant.py --model smollm2_135m --w-bits 3 --a-bits 32 --calib-samples 8 \\
        --alpha-steps 11 --max-tokens 1024

Prints the results row and the functions with the largest cumulative time (model loading, BN folding,
Hessian capture, grid search, learned rounding, evaluation).  cProfile inflates pure-Python code (the GGUF
reader most), so read the shares, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, quantize_registry_model
from logmac.quant import QuantConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--method", default="log_dynamic")
    ap.add_argument("--w-bits", type=int, default=3)
    ap.add_argument("--a-bits", type=int, default=32)
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--alpha-steps", type=int, default=11)
    ap.add_argument("--learn-rounding", action="store_true")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--top", type=int, default=45)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="A tiny random Llama, minimal budget (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.calib_samples, args.alpha_steps, args.max_tokens, args.top = tiny_llama(), 8, 3, 256, 10
    torch.set_num_threads(args.threads)
    cfg = QuantConfig(method=args.method, w_bits=args.w_bits, a_bits=args.a_bits, calib_samples=args.calib_samples,
                      batch_size=min(8, args.calib_samples), iters=args.iters, alpha_steps=args.alpha_steps,
                      learn_rounding=args.learn_rounding)
    profile = cProfile.Profile()
    profile.enable()
    _, row = quantize_registry_model(args.model, cfg, EvalOptions(max_tokens=args.max_tokens), progress=False)
    profile.disable()
    print(row)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


def tiny_llama() -> str:
    """A random tiny Llama saved to a temporary folder (removed at exit), for ``--quick``."""
    import atexit
    import shutil
    import tempfile

    from logmac.models.tiny_lm import save_tiny_causal_lm

    folder = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, folder, True)
    return str(save_tiny_causal_lm(folder / "tiny-llama", "llama"))


if __name__ == "__main__":
    main()
