"""``logmac emulate``: run an exported artifact on the bit-exact emulator next to its fake-quant model."""

from __future__ import annotations

import json

import click

from logmac.format import FormatError


@click.command(name="emulate")
@click.argument("artifact_path", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Choice(["fashion-mnist"]), default="fashion-mnist", show_default=True,
              help="Evaluation data (the test split).")
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
def emulate(artifact_path, data, limit, context, stride, batch_size, acc_bits, overflow, device, model_path, placement,
            trace_layer, trace_out, as_json) -> None:
    """Run an exported artifact on the bit-exact integer emulator and compare it with the fake-quant model.

    Causal LMs (artifact ``meta.task`` = ``lm``) are scored by perplexity on the Austen evaluation text instead.
    """
    import torch

    from logmac.backends.evaluate import compare
    from logmac.format.artifact import ArtifactError, load
    from logmac.models.causal_lm import ModelFileError
    from logmac.models.data import fashion_mnist
    from logmac.quant.latticeq import LatticeError
    from logmac.sim.layers import EmulatorError

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        artifact = load(artifact_path)
        if artifact.meta.get("task") == "lm":
            return _emulate_lm(artifact, artifact_path, limit or 1024, context, stride, device, placement, as_json,
                               model_path)
        if artifact.settings.get("method") == "latticeq":
            return _emulate_lattice(artifact, artifact_path, limit, batch_size, acc_bits, overflow, as_json)
        if artifact.settings.get("method") == "adalog":
            return _emulate_adalog(artifact, artifact_path, limit, batch_size, as_json)
        inputs, labels = fashion_mnist("test", limit=limit)
        result, emu = compare(artifact, inputs, labels, batch_size=batch_size, acc_bits=acc_bits, overflow=overflow,
                              device=device)
        if trace_layer:
            path = emu.capture(trace_layer, inputs[:1], trace_out)
    except (ArtifactError, EmulatorError, FormatError, FileNotFoundError, LatticeError, ModelFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        r = result
        click.echo(f"{data} test, {r.samples} samples, {artifact_path}")
        click.echo(f"  top-1   emulator {100 * r.emulator_top1:.2f}%   fake-quant {100 * r.fake_quant_top1:.2f}%   "
                   f"same prediction {100 * r.argmax_agreement:.2f}%")
        click.echo(f"  outputs differing {100 * r.outputs_differing:.2f}%   max |diff| {r.max_abs_diff:.4g}   "
                   f"mean |diff| {r.mean_abs_diff:.3g}   (max |logit| {r.output_absmax:.3g})")
        click.echo(f"  speed   emulator {r.emulator_images_per_s:.0f} img/s   fake-quant {r.fake_quant_images_per_s:.0f} img/s")
        click.echo("  overflow: " + (", ".join(f"{k}: {v}" for k, v in r.overflows.items()) if r.overflows else "none"))
    if placement:
        for row in emu.placement():
            click.echo(f"  {row['where']:8s} {row['op']:30s} {row['kind']:18s} {row['detail']}")
    if trace_layer:
        click.echo(f"trace of {trace_layer} written to {path}")


def _emulate_lm(artifact, artifact_path, tokens: int, context: int, stride: int, device: str, placement: bool,
                as_json: bool, model_path: str | None = None) -> None:
    """FP, fake-quant and emulator perplexity of a causal LM on the first ``tokens`` tokens of Persuasion.

    The float model comes from ``model_path`` if given, else from where the artifact says it was loaded."""
    from logmac.models import load_model
    from logmac.models.text import austen_tokens
    from logmac.sim.lm import compare_lm

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


def _emulate_lattice(artifact, artifact_path, limit: int | None, batch_size: int, acc_bits: int | None,
                     overflow: str, as_json: bool) -> None:
    """A LatticeQ artifact on its model's evaluation data: FP, fake-quant and integer-path scores side by side.

    The integer path is not bit-identical to fake-quant (the basis is applied to integer activations before
    the scale), so the two are compared by their scores and by how often their predictions agree.
    """
    from logmac.backends.lattice import emulate_lattice
    from logmac.models import fp_agreement, predict
    from logmac.models.tasks import evaluation_images, image_scores
    from logmac.quant.lattice_export import load_lattice_model
    from logmac.quant.lattice_model import set_lattice_quant
    from logmac.quant.run import FloatView

    name = artifact.meta.get("model")
    fake_quant = load_lattice_model(artifact).eval()
    integer, stats = emulate_lattice(fake_quant, acc_bits, overflow)
    inputs, labels = evaluation_images(fake_quant, name, limit)
    fp, fq, ints = (predict(m, inputs, batch_size=batch_size, desc=label) for m, label in (
        (FloatView(fake_quant, set_lattice_quant), "FP"), (fake_quant, "fake-quant"), (integer, "integer")))
    scores = {"fp": image_scores(fp, labels), "fake_quant": image_scores(fq, labels, fp),
              "integer": image_scores(ints, labels, fp)}
    same_prediction = fp_agreement(fq, ints)
    result = {"model": name, "scores": scores, "integer_vs_fake_quant_agreement": same_prediction,
              "overflows": {k: s.overflows for k, s in stats.items() if s.overflows},
              "max_acc_bits": max(s.acc_bits for s in stats.values()), "integer_layers": len(stats)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{name} (LatticeQ, {len(stats)} layers on the integer path), {artifact_path}")
    for key in sorted({k for s in scores.values() for k in s} - {"views"}):
        digits = 4 if key == "kl" else 2
        row = "   ".join(f"{label} {s[key]:.{digits}f}" for label, s in scores.items() if key in s)
        click.echo(f"  {key:10s} {row}")
    click.echo(f"  integer vs fake-quant: same prediction {same_prediction:.2f}%   "
               f"widest accumulator {result['max_acc_bits']} bits")
    click.echo("  overflow: " + (", ".join(f"{k}: {v}" for k, v in result["overflows"].items())
                                 if result["overflows"] else "none"))


def _emulate_adalog(artifact, artifact_path, limit: int | None, batch_size: int, as_json: bool) -> None:
    """An AdaLog ViT artifact on Fashion-MNIST: FP, fake-quant and emulator (exact integer attn@V and fc2)."""
    import torch

    from logmac.backends.adalog import compare_vit
    from logmac.models import load_model
    from logmac.models.data import fashion_mnist
    from logmac.quant.adalog_export import load_adalog_model

    name = artifact.meta.get("model")
    fp_model = load_model(name).model.eval()
    images, labels = fashion_mnist("test", limit=limit)
    with torch.no_grad():
        reference = torch.cat([fp_model(b) for b in images.split(batch_size)])
    model = load_adalog_model(artifact, load_model(name).model)
    result = {"model": name, "fp_top1": 100 * float((reference.argmax(1) == labels).float().mean()),
              **compare_vit(model, images, labels, batch_size=batch_size, reference=reference)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{name} (AdaLog, {len(artifact.activations)} activation quantizers), {result['images']} test images, "
               f"{artifact_path}")
    click.echo(f"  top-1   FP {result['fp_top1']:.2f}%   fake-quant {result['fake_top1']:.2f}%   "
               f"emulator {result['emulator_top1']:.2f}%   same prediction {result['same_prediction']:.2f}%")
    click.echo(f"  max |logit diff| {result['max_logit_diff']:.3g}   overflowing outputs {result['overflows']}")
