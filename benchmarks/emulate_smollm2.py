"""SmolLM2-135M W4A8 through the bit-exact emulator: FP, fake-quant and emulator perplexity on the Austen text.

    .venv/bin/python benchmarks/emulate_smollm2.py smollm2_w4a8.lmq --quantize   # or: logmac quantize ... -o FILE
    .venv/bin/python benchmarks/emulate_smollm2.py smollm2_w4a8.lmq [--max-tokens 1024] [--context 512 --stride 256]
    .venv/bin/python benchmarks/emulate_smollm2.py smollm2_w4a8.lmq --ulp-control   # float32 sensitivity baseline
    .venv/bin/python benchmarks/emulate_smollm2.py tiny.lmq --quick   # CI smoke: a tiny random Llama, 128 tokens

``--quantize`` runs the same ``logmac.quant.quantize_model`` as ``logmac quantize --model smollm2_135m --w-bits 4
--a-bits 8 --method log_dynamic --hardware-approx --no-dbs --no-sfs --calib-samples 8`` (round-to-nearest on the
pure base-2 grid with ABS, no LLR, MSE activation ranges; 8 x 256-token calibration windows) but skips that
command's own FP/quantized evaluation, which this script does anyway.

The evaluation tokens are the first ``--max-tokens`` of Persuasion (``logmac.models.text``, the novel calibration
never sees), scored by sliding window as ``logmac.models.evaluate.perplexity`` does.  Every decoder Linear runs
on the integer log MAC; the placement table lists what ran in float32.  Time and peak resident memory are
reported per stage (the peak includes the model loaded from its GGUF file).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from logmac.backends.lm import compare_lm
from logmac.format import artifact as art
from logmac.memory import peak_memory_mib
from logmac.models import load_model
from logmac.models.text import austen_tokens


def quantize(path: Path, model: str = "smollm2_135m", seq_len: int = 256) -> None:
    """Round-to-nearest W4A8 export of SmolLM2 (the settings in the module docstring), no evaluation."""
    from logmac.models import calibration_samples
    from logmac.quant import QuantConfig, quantize_model
    from logmac.quant.llm import decoder_blocks

    cfg = QuantConfig(method="log_dynamic", w_bits=4, a_bits=8, hardware_approx=True, dbs=False, sfs=False,
                      calib_samples=8)
    loaded = load_model(model, device="cpu")
    calib = calibration_samples(model, cfg.calib_samples, seed=cfg.seed, seq_len=seq_len, tokenizer=loaded.tokenizer)
    res = quantize_model(loaded.model, calib, cfg, model_name=model, task="lm",
                         blocks=decoder_blocks(loaded.model))
    art.save(res.artifact, path)
    print(f"wrote {path}: {len(res.artifact.layers)} layers, quantization {res.seconds:.0f} s, peak {res.peak_mib:.0f} MiB")


def tiny_llama() -> str:
    """A random tiny Llama saved to a temporary folder (removed at exit), for ``--quick``."""
    import atexit
    import shutil
    import tempfile

    from logmac.models.tiny_lm import save_tiny_causal_lm

    folder = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, folder, True)
    return str(save_tiny_causal_lm(folder / "tiny-llama", "llama"))


def ulp_control(path: Path, tokens: int = 128) -> None:
    """How far the fake-quant model moves from itself when every quantized Linear output is perturbed by about
    one float32 ulp (x (1 + 2**-23 * N(0, 1))): the scale of the emulator's per-layer difference, so the
    logit difference it causes is the baseline for emulator vs fake-quant."""
    import torch

    from logmac.sim.layers import FakeQuantLayer, fake_quant_model

    artifact = art.load(path)
    loaded = load_model(artifact.meta["model"], device="cpu")
    ids = austen_tokens(loaded.tokenizer, "evaluation", max_tokens=tokens)[None]
    fq = fake_quant_model(artifact, loaded.model).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        clean = fq(ids)[0]
        for m in fq.modules():
            if isinstance(m, FakeQuantLayer):
                m.register_forward_hook(lambda _m, _i, out: out * (1 + 2**-23 * torch.randn_like(out)))
        noisy = fq(ids)[0]
    diff = (clean - noisy).abs()
    print(f"fake-quant vs fake-quant with every quantized Linear output moved by ~1 ulp, first {tokens} tokens: "
          f"max |diff| {float(diff.max()):.4g}, mean |diff| {float(diff.mean()):.3g}, "
          f"same next-token argmax {100 * float((clean.argmax(-1) == noisy.argmax(-1)).float().mean()):.2f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--quantize", action="store_true", help="Write the W4A8 artifact to ARTIFACT and stop.")
    ap.add_argument("--ulp-control", action="store_true",
                    help="Only run the sensitivity baseline: fake-quant vs itself with ~1 ulp noise on every layer.")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--no-stream", action="store_true", help="Cache each layer's float32 GEMM operand (more memory).")
    ap.add_argument("--json", type=Path, help="Also write the numbers here.")
    ap.add_argument("--quick", action="store_true",
                    help="Quantize a tiny random Llama into ARTIFACT, then compare on 128 tokens (CI smoke).")
    args = ap.parse_args()
    if args.quick:
        quantize(args.artifact, tiny_llama(), seq_len=32)
        args.max_tokens, args.context, args.stride = 128, 64, 32
    if args.quantize:
        return quantize(args.artifact)
    if args.ulp_control:
        return ulp_control(args.artifact)

    start = time.perf_counter()
    artifact = art.load(args.artifact)
    loaded = load_model(artifact.meta["model"], device="cpu")
    load_seconds, load_peak = time.perf_counter() - start, peak_memory_mib()
    ids = austen_tokens(loaded.tokenizer, "evaluation", max_tokens=args.max_tokens)
    result, emu = compare_lm(artifact, loaded.model, ids, context=args.context, stride=args.stride,
                             stream=not args.no_stream)
    placement = emu.placement(ids[: min(len(ids), 64)][None])

    s = artifact.settings
    print(f"{artifact.meta['model']}: {s['method']} W{s['w_bits']}A{s['a_bits']} (hardware approx {s['hardware_approx']}, "
          f"DBS {s['dbs']}, SFS {s['sfs']}, ABS {s['abs']}, LLR {s['learn_rounding']}), {args.artifact}")
    print(f"Persuasion, first {result.tokens} tokens, context {result.context}, stride {result.stride}")
    print(f"load: {load_seconds:.1f} s, peak {load_peak:.0f} MiB")
    print("| model | perplexity | time (s) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for key, label, ppl in (("fp", "FP", result.fp_ppl), ("fake_quant", "fake-quant W4A8", result.fake_quant_ppl),
                            ("emulator", "emulator (integer MAC)", result.emulator_ppl)):
        print(f"| {label} | {ppl:.3f} | {result.seconds[key]:.1f} | {result.peak_mib[key]:.0f} |")
    print(f"emulator vs fake-quant perplexity: {100 * result.margin:.2f} % apart")
    print(f"logits on the first {result.diff_tokens} tokens: max |diff| {result.logits_max_abs_diff:.4g}, "
          f"mean |diff| {result.logits_mean_abs_diff:.3g} "
          f"(max |logit| {result.logits_absmax:.3g}), same next-token argmax {100 * result.next_token_agreement:.2f} %")
    ints = [r for r in placement if r["where"] == "int"]
    kinds = Counter(r["op"].rsplit(".", 1)[-1] for r in ints)
    print(f"integer MAC: {len(ints)} Linear layers ({', '.join(f'{k} x{n}' for k, n in kinds.items())}); "
          f"float Linear: {', '.join(result.float_linears)}")
    print("float32 ops (per module, decoder layers folded into layers.*):")
    for row in placement:
        if row["where"] == "float32":
            print(f"  {row['op']:45s} {row['kind']:22s} {row['detail']}")
    if args.json:
        args.json.write_text(json.dumps({**result.to_dict(), "load_seconds": load_seconds, "load_peak_mib": load_peak,
                                         "placement": placement}, indent=2))


if __name__ == "__main__":
    main()
