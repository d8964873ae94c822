"""The fair LM table: uniform vs log weights at equal stored bits, one calibration budget for every row.

    OMP_NUM_THREADS=1 python benchmarks/lm_table.py --model smollm2_135m --bits 3 4 -o docs/lm_table.md
    python benchmarks/lm_table.py --quick -o /tmp/lm_table.md      # CI smoke test on a tiny random Llama

Rows per weight width (weight-only, activations float): uniform (``linear_mse``, asymmetric per channel) and
log (``log_dynamic`` + DBS + SFS + ABS, zero code) with round-to-nearest, GPTQ, and learned rounding started
from GPTQ (AdaRound for uniform, LLR for log; ``round_start``), each per output channel or with a power-of-two
exponent per group of ``--group-size`` inputs (``logmac/format/groups.py``).  Every row uses the same
calibration windows (from the calibration novels, never the evaluation text), evaluation tokens, SFS
candidates and learned-rounding iterations.  Stored bits per weight count the codes plus, per output channel,
a 16-bit scale and the uniform zero point or the log decode table (both signs' entries, shift field +
half-step bit each), plus the group exponents.  The table is rewritten after every row.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from logmac.experiments.registry import EvalOptions, append_csv, quantize_registry_model
from logmac.format import LogFormat
from logmac.format.artifact import Artifact
from logmac.format.groups import stored_group_bits
from logmac.quant import QuantConfig

SCALE_BITS = 16
GROUPED = " +group exp"
# label -> (method, rounding, learned rounding)
BASE_ROWS = {"uniform RTN": ("linear_mse", "nearest", False), "uniform GPTQ": ("linear_mse", "gptq", False),
             "uniform GPTQ+AdaRound": ("linear_mse", "gptq", True), "log RTN": ("log_dynamic", "nearest", False),
             "log GPTQ": ("log_dynamic", "gptq", False), "log GPTQ+LLR": ("log_dynamic", "gptq", True)}
ROWS = [label + suffix for suffix in ("", GROUPED) for label in BASE_ROWS]
DEFAULT_ROWS = ["uniform GPTQ", "log GPTQ", "uniform GPTQ+AdaRound", "log GPTQ+LLR", "uniform GPTQ+AdaRound" + GROUPED,
                "log GPTQ+LLR" + GROUPED]
PAIRS = [("uniform GPTQ", "log GPTQ"), ("uniform GPTQ+AdaRound", "log GPTQ+LLR"),
         ("uniform GPTQ+AdaRound" + GROUPED, "log GPTQ+LLR" + GROUPED)]


def stored_bits_per_weight(artifact: Artifact) -> float:
    """Codes plus per-channel scale, zero point or decode table and any group exponents, over the weights."""
    bits = weights = 0
    for layer in artifact.layers.values():
        channels = layer.weight_shape[0]
        side = SCALE_BITS
        if isinstance(layer.fmt, LogFormat):
            side += 2 * layer.fmt.nonzero_levels * (layer.fmt.shift_bits + 1)
        else:
            side += layer.fmt.bits
        bits += layer.num_weights * layer.fmt.storage_bits + channels * side + stored_group_bits(layer.extras, layer.attrs)
        weights += layer.num_weights
    return bits / weights


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| W | row | perplexity | x FP | stored bits / weight | quantization (s) | load + quantize + "
             "export + eval (s) | CPU (s) | peak MiB (quantization) | added MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = r.get("cpu_seconds")
        lines.append(f"| {r['w_bits']} | {r['row']} | {r['q_perplexity']:.2f} | {r['q_perplexity'] / r['fp_perplexity']:.2f} "
                     f"| {r['stored_bits']:.3f} | {r['quant_seconds']:.0f} | {r['total_seconds']:.0f} | "
                     f"{f'{cpu:.0f}' if isinstance(cpu, (int, float)) else 'n/a'} | "
                     f"{r['quant_peak_mib']:.0f} | {r['quant_peak_mib'] - r['start_mib']:.0f} |")
    verdicts = []
    for r in rows:
        for uni, log in PAIRS:
            if r["row"] != log:
                continue
            base = next((u for u in rows if u["row"] == uni and u["w_bits"] == r["w_bits"]), None)
            if base is None:
                continue
            gain = 1 - r["q_perplexity"] / base["q_perplexity"]
            verdicts.append(f"- W{r['w_bits']} {log} vs {uni}: {'log better' if gain > 0 else 'LOG LOSES'} by "
                            f"{abs(gain) * 100:.1f} % perplexity at {r['stored_bits']:.3f} vs {base['stored_bits']:.3f} "
                            "bits/weight")
    return "\n".join(lines + ([""] + verdicts if verdicts else [])) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m", help="A registry name, a save_pretrained folder or a .gguf")
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--calib-samples", type=int, default=128, help="calibration windows (LLM default 128 x 512 tokens)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--alpha-steps", type=int, default=11, help="SFS candidates between 1.0 and 0.5")
    ap.add_argument("--iters", type=int, default=50, help="learned-rounding steps per linear layer")
    ap.add_argument("--group-size", type=int, default=64, help="inputs per group exponent in the grouped rows")
    ap.add_argument("--group-bits", type=int, default=2)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=ROWS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="A tiny random Llama, 8 windows of 32 tokens (CI smoke)")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/lm_table.csv"))
    ap.add_argument("--notes", type=Path, default=None,
                    help="Markdown appended after the table (why a row lost, what did not run), kept on regeneration")
    ap.add_argument("--merge", action="store_true",
                    help="Start the table from the rows of --results made at the same model and budget (a row of this "
                         "run replaces one with the same width and label), so rows can be run in several sessions")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.quick:
            from logmac.models.tiny_lm import save_tiny_causal_lm

            model = str(save_tiny_causal_lm(Path(tmp) / "tiny-llama", "llama"))
            args.calib_samples, args.seq_len, args.max_tokens, args.alpha_steps = 8, 32, 256, 3
            args.iters, args.group_size = 5, 16
        run(args, model)


def config(args: argparse.Namespace, label: str, bits: int) -> QuantConfig:
    method, rounding, learn = BASE_ROWS[label.removesuffix(GROUPED)]
    return QuantConfig(method=method, w_bits=bits, a_bits=32, rounding=rounding, act_order=args.act_order,
                       learn_rounding=learn, iters=args.iters, calib_samples=args.calib_samples,
                       alpha_steps=args.alpha_steps, device=args.device,
                       group_size=args.group_size if label.endswith(GROUPED) else 0, group_bits=args.group_bits)


def earlier_rows(args: argparse.Namespace, model: str) -> list[dict]:
    """Rows of ``args.results`` made with this model, calibration budget, learned-rounding steps, evaluation
    tokens and (for grouped rows) group size; numbers parsed back from the CSV's text."""
    if not args.results.exists():
        return []
    with args.results.open(newline="") as f:
        found = []
        for r in csv.DictReader(f):
            same = (r["model"] == model and r.get("row") in ROWS and int(r["calib_samples"]) == args.calib_samples
                    and int(r["iters"]) == args.iters and float(r["fp_tokens"]) == args.max_tokens
                    and (not r["row"].endswith(GROUPED) or int(r["group_size"] or 0) == args.group_size))
            if same:
                found.append({k: (v if k in ("row", "model", "label", "method") else _number(v)) for k, v in r.items()})
    latest = {(r["w_bits"], r["row"]): r for r in found}  # a later run of the same row wins
    return sorted(latest.values(), key=lambda r: (r["w_bits"], ROWS.index(r["row"])))


def _number(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def run(args: argparse.Namespace, model: str) -> None:
    opts = EvalOptions(max_tokens=args.max_tokens, seq_len=args.seq_len)
    rows: list[dict] = earlier_rows(args, model) if args.merge else []
    fp = None
    for bits in args.bits:
        for label in args.rows:
            cfg = config(args, label, bits)
            started, cpu_started = time.perf_counter(), time.process_time()
            res, row = quantize_registry_model(model, cfg, opts, progress=False, fp_metrics=fp)
            fp = {k[3:]: v for k, v in row.items() if k.startswith("fp_")}
            row.update(row=label, stored_bits=stored_bits_per_weight(res.artifact),
                       wall_seconds=round(time.perf_counter() - started, 1), group_size=cfg.group_size,
                       cpu_seconds=round(time.process_time() - cpu_started, 1))
            del res
            append_csv(row, args.results)
            rows = [r for r in rows if (r["w_bits"], r["row"]) != (bits, label)] + [row]
            print(f"W{bits} {label}: perplexity {row['q_perplexity']:.2f} (FP {fp['perplexity']:.2f}), "
                  f"{row['stored_bits']:.3f} bits/weight, {row['quant_seconds']} s, quant peak {row['quant_peak_mib']} "
                  f"MiB (start {row['start_mib']})", flush=True)
            header = (f"# LM table: uniform vs log weights at equal stored bits\n\nMade by `OMP_NUM_THREADS=1 python "
                      f"{' '.join(shlex.quote(a) for a in sys.argv)}`.\n\n"
                      f"{Path(model).name if args.quick else model}, weight-only per output channel, activations "
                      f"float; FP perplexity {fp['perplexity']:.2f} on the first {args.max_tokens} Persuasion tokens "
                      f"(context 512, stride 256); calibration {args.calib_samples} x {args.seq_len} tokens from the "
                      f"calibration novels in batches of 2048 tokens (every token enters the Hessians); "
                      f"{args.alpha_steps} SFS scales; "
                      f"{args.iters} learned-rounding steps per layer; group rows: a {args.group_bits}-bit exponent "
                      f"per {args.group_size} inputs; act-order {'on' if args.act_order else 'off'}; {args.threads} "
                      "torch thread(s); rows run in turn in one process.")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            notes = "\n" + args.notes.read_text() if args.notes is not None else ""
            args.output.write_text(table(sorted(rows, key=lambda r: (r["w_bits"], ROWS.index(r["row"]))), header) + notes)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
