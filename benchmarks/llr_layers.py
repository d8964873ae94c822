"""What learned log rounding (LLR) buys per layer of an LLM: the layer objective before and after learning.

    python benchmarks/llr_layers.py --model smollm2_135m --blocks 2 --iters 30

Runs the LLM calibration chain (``calibrate.calibrate_chain``, the code path of ``logmac quantize``) on the
first ``--blocks`` decoder layers only, with DBS+SFS+ABS and LLR, and prints for every linear the objective
``tr(dW H dW^T) / rows`` of round-to-nearest on the searched grid, after LLR, and their ratio.  A check that
LLR learns something at a given budget, in minutes instead of the hour a full perplexity row takes here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from logmac.models import calibration_samples, load_model
from logmac.quant import QuantConfig
from logmac.quant.calibrate import calibrate_chain
from logmac.quant.llm import decoder_blocks
from logmac.quant.pipeline import split_batches, wrap_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--w-bits", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--alpha-steps", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="A tiny random Llama, one block, 2 iterations (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.blocks, args.iters, args.calib_samples, args.alpha_steps = tiny_llama(), 1, 2, 8, 3
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    model = loaded.model
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = QuantConfig(method="log_dynamic", w_bits=args.w_bits, a_bits=32, calib_samples=args.calib_samples,
                      batch_size=min(8, args.calib_samples), iters=args.iters, alpha_steps=args.alpha_steps,
                      learn_rounding=True)
    blocks = decoder_blocks(model)[: args.blocks]
    calib = calibration_samples(args.model, args.calib_samples, seed=cfg.seed, tokenizer=loaded.tokenizer)
    wrap_model(model, cfg, scope=blocks)
    start = time.perf_counter()
    losses = calibrate_chain(model, blocks, split_batches(calib, cfg), cfg)
    print(f"{cfg.label()}, {args.blocks} blocks, {args.iters} LLR iterations per layer, "
          f"{time.perf_counter() - start:.0f} s\n")
    print("| layer | nearest | LLR | LLR / nearest |\n|---|---|---|---|")
    for name, loss in losses.items():
        print(f"| {name} | {loss['rtn']:.5g} | {loss['learned']:.5g} | {loss['learned'] / loss['rtn']:.3f} |")
    total_rtn = sum(v["rtn"] for v in losses.values())
    total = sum(min(v["learned"], v["rtn"]) for v in losses.values())
    print(f"| all | {total_rtn:.5g} | {total:.5g} | {total / total_rtn:.3f} |")


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
