"""``logmac emulate``: run an exported artifact on the bit-exact emulator next to its fake-quant model."""

from __future__ import annotations

import json

import click

from logmac.format import FormatError


@click.command(name="emulate")
@click.argument("artifact_path", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Choice(["auto", "fashion-mnist"]), default="auto", show_default=True,
              help="Evaluation data: auto = the evaluation data of the model the artifact records.")
@click.option("--width", type=int, default=None, help="PTMQ artifacts: the weight width to run (default: the top one).")
@click.option("--limit", type=int, default=None,
              help="Use only the first N test samples (causal LMs: N evaluation tokens, default 1024).")
@click.option("--context", type=int, default=512, show_default=True, help="Causal LMs: perplexity window.")
@click.option("--stride", type=int, default=256, show_default=True, help="Causal LMs: perplexity window step.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--acc-bits", type=click.IntRange(2, 63), default=None,
              help="Hardware accumulator width; default: per layer, wide enough never to overflow.")
@click.option("--overflow", type=click.Choice(["saturate", "wrap"]), default="saturate", show_default=True)
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
@click.option("--path", "model_path", default=None,
              help="Causal LMs: the float model (save_pretrained folder or .gguf) instead of the one the artifact records.")
@click.option("--placement/--no-placement", default=False, help="Print which ops run on the integer datapath.")
@click.option("--trace", "trace_layer", default=None, help="Also write a trace of this layer for the RTL suite.")
@click.option("--trace-out", type=click.Path(dir_okay=False), default="trace.npz", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def emulate(artifact_path, data, width, limit, context, stride, batch_size, acc_bits, overflow, device, model_path, placement,
            trace_layer, trace_out, as_json) -> None:
    """Run an exported artifact on the bit-exact integer emulator and compare it with the fake-quant model.

    Causal LMs (artifact ``meta.task`` = ``lm``) are scored by perplexity on the Austen evaluation text instead.
    """
    import torch

    from logmac.backends import compare, open_backends
    from logmac.format.artifact import ArtifactError, load
    from logmac.models.causal_lm import ModelFileError
    from logmac.models.data import fashion_mnist
    from logmac.quant.methods.latticeq.search import LatticeError
    from logmac.sim.emulator import Emulator
    from logmac.sim.layers import EmulatorError

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        artifact = load(artifact_path)
        if artifact.meta.get("task") == "lm":
            return _emulate_lm(artifact, artifact_path, limit or 1024, context, stride, device, placement, as_json,
                               model_path)
        backends = open_backends(artifact, width=width, acc_bits=acc_bits, overflow=overflow, device=device)
        inputs, labels = fashion_mnist("test", limit=limit) if data == "fashion-mnist" else (None, None)
        result = compare(artifact, inputs=inputs, labels=labels, limit=limit, batch_size=batch_size, backends=backends)
        emu = backends["emulator"].forward
        if (trace_layer or placement) and not isinstance(emu, Emulator):
            raise FormatError(f"--trace and --placement run on LogART and PTMQ artifacts, not {result['method']}")
        if trace_layer:
            path = emu.capture(trace_layer, fashion_mnist("test", limit=1)[0], trace_out)
    except (ArtifactError, EmulatorError, FormatError, FileNotFoundError, LatticeError, ModelFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_comparison(result, str(artifact_path))
    if placement:
        for row in emu.placement():
            click.echo(f"  {row['where']:8s} {row['op']:30s} {row['kind']:18s} {row['detail']}")
    if trace_layer:
        click.echo(f"trace of {trace_layer} written to {path}")


def _emulate_lm(artifact, artifact_path, tokens: int, context: int, stride: int, device: str, placement: bool,
                as_json: bool, model_path: str | None = None) -> None:
    """FP, fake-quant and emulator perplexity of a causal LM on the first ``tokens`` tokens of Persuasion.

    The float model comes from ``model_path`` if given, else from where the artifact says it was loaded."""
    from logmac.backends.lm import compare_lm
    from logmac.models import load_model
    from logmac.models.text import austen_tokens

    loaded = load_model(artifact.meta["model"], path=model_path or artifact.meta.get("model_path"), device=device)
    ids = austen_tokens(loaded.tokenizer, "evaluation", max_tokens=tokens)
    result, emu = compare_lm(artifact, loaded.model, ids, context=context, stride=stride, device=device,
                             bos_token_id=getattr(loaded.tokenizer, "bos_token_id", None))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        r = result
        click.echo(f"Persuasion, first {r.tokens} tokens (context {r.context}, stride {r.stride}), {artifact_path}")
        click.echo(f"  perplexity   FP {r.fp_ppl:.3f}   fake-quant {r.fake_quant_ppl:.3f}   emulator {r.emulator_ppl:.3f}   "
                   f"(emulator {100 * r.margin:.2f} % from fake-quant)")
        click.echo(f"  time (s)     FP {r.seconds['fp']:.1f}   fake-quant {r.seconds['fake_quant']:.1f}   "
                   f"emulator {r.seconds['emulator']:.1f}   peak RSS {max(r.peak_mib.values()):.0f} MiB")
        click.echo(f"  {r.int_layers} Linear layers on the integer MAC; float: {', '.join(r.float_linears)}")
    if placement:
        for row in emu.placement(ids[:64][None]):
            click.echo(f"  {row['where']:8s} {row['op']:45s} {row['kind']:22s} {row['detail']}")


def print_comparison(result: dict, source: str) -> None:
    """The float / fake-quant / emulator comparison of :func:`logmac.backends.compare` as a few aligned lines."""
    click.echo(f"{result['model']} ({result['method']}), {result['samples']} samples, {source}")
    scores = result["scores"]
    for key in sorted({k for s in scores.values() for k in s} - {"views"}):
        digits = 4 if key == "kl" else 2
        row = "   ".join(f"{kind.replace('_', '-')} {s[key]:.{digits}f}" for kind, s in scores.items() if key in s)
        click.echo(f"  {key:10s} {row}")
    d = result["emulator_vs_fake_quant"]
    click.echo(f"  emulator vs fake-quant: same prediction {d['same_prediction']:.2f}%   outputs differing "
               f"{100 * d['outputs_differing']:.2f}%   max |diff| {d['max_abs_diff']:.4g}   mean |diff| "
               f"{d['mean_abs_diff']:.3g}   (max |output| {d['output_absmax']:.3g})")
    click.echo("  speed   " + "   ".join(f"{k.replace('_', '-')} {v:.0f} img/s" for k, v in result["images_per_s"].items()))
    click.echo("  overflow: " + (", ".join(f"{k}: {v}" for k, v in result["overflows"].items())
                                 if result["overflows"] else "none"))
