"""The fair LM table: uniform vs log weights, round-to-nearest vs GPTQ, one budget for every row.

    OMP_NUM_THREADS=1 python benchmarks/lm_table.py --model smollm2_135m --bits 4 3 -o docs/lm_table.md
    python benchmarks/lm_table.py --quick -o /tmp/lm_table.md      # CI smoke test on a tiny random Llama

Rows per weight width (per output channel, weight-only, activations float): uniform RTN and uniform GPTQ
(``linear_mse``: the range both start from), log RTN and log GPTQ (``log_dynamic`` + DBS + SFS + ABS).
Every row uses the same calibration windows, evaluation tokens and SFS candidates.  Stored bits per weight
count the codes plus, per output channel, a 16-bit scale and the uniform zero point or the log decode table
(both signs' entries, shift field + half-step bit each).  The table is rewritten after every row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.format import LogFormat
from logmac.format.artifact import Artifact
from logmac.quant import QuantConfig

SCALE_BITS = 16
ROWS = [("uniform RTN", "linear_mse", "nearest"), ("uniform GPTQ", "linear_mse", "gptq"),
        ("log RTN (DBS+SFS+ABS)", "log_dynamic", "nearest"), ("log GPTQ (DBS+SFS+ABS)", "log_dynamic", "gptq")]


def stored_bits_per_weight(artifact: Artifact) -> float:
    """Codes plus per-channel scale, zero point or decode table, over the quantized weights."""
    bits = weights = 0
    for layer in artifact.layers.values():
        channels = layer.weight_shape[0]
        side = SCALE_BITS
        if isinstance(layer.fmt, LogFormat):
            side += 2 * layer.fmt.nonzero_levels * (layer.fmt.shift_bits + 1)
        else:
            side += layer.fmt.bits
        bits += layer.num_weights * layer.fmt.storage_bits + channels * side
        weights += layer.num_weights
    return bits / weights


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| W | row | perplexity | stored bits / weight | quantization time (s) | peak MiB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['w_bits']} | {r['row']} | {r['q_perplexity']:.2f} | {r['stored_bits']:.3f} | "
                     f"{r['quant_seconds']:.0f} | {r['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m", help="A registry name, a save_pretrained folder or a .gguf")
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--alpha-steps", type=int, default=11, help="SFS candidates between 1.0 and 0.5")
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="A tiny random Llama, 8 windows of 32 tokens (CI smoke)")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/lm_table.csv"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.quick:
            from logmac.models.tiny_lm import save_tiny_causal_lm

            model = str(save_tiny_causal_lm(Path(tmp) / "tiny-llama", "llama"))
            args.calib_samples, args.seq_len, args.max_tokens, args.alpha_steps = 8, 32, 256, 3
        run(args, model)


def run(args: argparse.Namespace, model: str) -> None:
    opts = EvalOptions(max_tokens=args.max_tokens, seq_len=args.seq_len)
    rows: list[dict] = []
    fp = None
    header = ""
    for bits in args.bits:
        for label, method, rounding in ROWS:
            if label not in args.rows:
                continue
            cfg = QuantConfig(method=method, w_bits=bits, a_bits=32, rounding=rounding, act_order=args.act_order,
                              calib_samples=args.calib_samples, batch_size=args.calib_samples,
                              alpha_steps=args.alpha_steps, device=args.device)
            started = time.perf_counter()
            res, row = quantize_registry_model(model, cfg, opts, progress=False, fp_metrics=fp)
            fp = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
            row.update(row=label, stored_bits=stored_bits_per_weight(res.artifact),
                       wall_seconds=round(time.perf_counter() - started, 1))
            del res
            append_csv(row, args.results)
            rows.append(row)
            print(f"W{bits} {label}: perplexity {row['q_perplexity']:.2f} (FP {fp['perplexity']:.2f}), "
                  f"{row['stored_bits']:.3f} bits/weight, {row['quant_seconds']} s, peak {row['peak_mib']} MiB",
                  flush=True)
            header = (f"{Path(model).name if args.quick else model}, weight-only per output channel, activations "
                      f"float; FP perplexity {fp['perplexity']:.2f} on the first {args.max_tokens} Persuasion tokens "
                      f"(context 512, stride 256); calibration {args.calib_samples} x {args.seq_len} tokens; "
                      f"{args.alpha_steps} SFS scales; act-order {'on' if args.act_order else 'off'}; "
                      f"{args.threads} torch thread(s); time = quantization only, peak = resident memory "
                      "through quantization and evaluation.")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(table(rows, header))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
