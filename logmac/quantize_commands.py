"""``logmac quantize``: a thin CLI over :func:`logmac.experiments.registry.quantize_registry_model`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click
import tomllib

from logmac.format import MAX_BITS, MIN_BITS
from logmac.paths import results_home
from logmac.quant.config import METHODS, ROUNDINGS, QuantConfig, QuantError

if TYPE_CHECKING:
    from logmac.experiments.registry import EvalOptions
    from logmac.format.artifact import Artifact
    from logmac.quant.methods.ptmq.calibrate import PtmqConfig

SETTINGS_KEY = "settings_file"  # where ``--settings`` keeps the file, and the artifact records it


def load_settings_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--settings FILE.toml``: its keys (option names, ``w_bits`` or ``w-bits``, in a ``[quantize]`` table or
    at the top level) become the defaults; options given on the command line still win.  The file's text is
    kept for the artifact, which records it verbatim."""
    if value is None:
        return
    text = Path(value).read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{value} is not valid TOML: {exc}") from exc
    table = data.get("quantize", data)
    names = {opt.lstrip("-").replace("-", "_"): p.name for p in ctx.command.params for opt in p.opts if opt.startswith("--")}
    unknown = sorted(k for k in table if k.replace("-", "_") not in names)
    if unknown or not isinstance(table, dict):
        raise click.BadParameter(f"{value}: unknown settings {unknown}; use the long option names, e.g. w_bits = 3")
    ctx.default_map = {**(ctx.default_map or {}), **{names[k.replace("-", "_")]: v for k, v in table.items()}}
    ctx.meta[SETTINGS_KEY] = {"file": str(value), "text": text}


def _config(**kw) -> QuantConfig:
    try:
        return QuantConfig(**kw)
    except QuantError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.option("--settings", type=click.Path(exists=True, dir_okay=False), callback=load_settings_file, is_eager=True,
              expose_value=False, help="Settings as TOML (option names as keys); the artifact records the file verbatim.")
@click.option("--model", "model_name", required=True, help="Model name from `logmac models` (e.g. resnet18_fmnist).")
@click.option("--path", default=None, help="Local weights for models that need them.")
@click.option("--method", type=click.Choice(METHODS + ("latticeq", "ptmq", "adalog")), default="log_dynamic", show_default=True)
@click.option("--bits", "ptmq_bits", default="3,4,6", show_default=True,
              help="PTMQ: weight bit-widths calibrated together into one artifact.")
@click.option("--ptmq-a-bits", default=None, help="PTMQ: activation bits per width (default: --a-bits for all).")
@click.option("--ptmq-codes", type=click.Choice(METHODS), default="log_dynamic", show_default=True,
              help="PTMQ: the code family of every width.")
@click.option("--nest", type=click.Choice(["coarsen", "prefix"]), default="coarsen", show_default=True,
              help="PTMQ: how lower-width log codes are read out of the top code (docs/ptmq.md).")
@click.option("--w-bits", type=click.IntRange(MIN_BITS, MAX_BITS), default=4, show_default=True)
@click.option("--a-bits", type=int, default=8, show_default=True, help="Activation bits; 32 keeps them float.")
@click.option("--granularity", type=click.Choice(["channel", "tensor"]), default="channel", show_default=True)
@click.option("--no-dbs", is_flag=True, help="Disable dynamic base selection.")
@click.option("--no-sfs", is_flag=True, help="Disable the scaling-factor search.")
@click.option("--no-abs", is_flag=True, help="Disable the sign-asymmetric range.")
@click.option("--learn-rounding", is_flag=True,
              help="LLR for log methods, AdaRound for linear ones, block reconstruction (--iters steps) for latticeq.")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="nearest", show_default=True,
              help="Codes on the fitted grid: nearest level, or GPTQ error feedback (the start of --learn-rounding).")
@click.option("--group-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="log_*/linear_*: a power-of-two exponent per this many inputs along K (0: one grid per channel); "
                   "a short last group when it does not divide K.")
@click.option("--group-bits", type=int, default=2, show_default=True, help="Bits of each signed group exponent.")
@click.option("--act-order", is_flag=True, help="GPTQ: round the inputs with the largest Hessian diagonal first.")
@click.option("--hardware-approx", is_flag=True, help="Fit to the datapath's 1+1/2 levels instead of sqrt(2).")
@click.option("--zero", type=click.Choice(["code", "flag", "none"]), default="code", show_default=True)
@click.option("--act-init", type=click.Choice(["mse", "percentile"]), default="mse", show_default=True)
@click.option("--calib-samples", type=int, default=None,
              help="Calibration inputs [default: 256 images, or 128 windows of --seq-len tokens for a causal LM].")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Images per calibration batch (LMs: as many windows as fill the 2048 Hessian rows per batch).")
@click.option("--iters", type=int, default=200, show_default=True, help="Rounding iterations per block (per layer on LLMs).")
@click.option("--lr", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--basis-bits", type=int, default=8, show_default=True, help="LatticeQ basis bits (0: float basis).")
@click.option("--search-steps", type=int, default=80, show_default=True, help="LatticeQ search steps per temperature.")
@click.option("--restarts", type=int, default=5, show_default=True, help="LatticeQ search restarts.")
@click.option("--adalog-weights", type=click.Choice(["uniform", "log"]), default="uniform", show_default=True,
              help="AdaLog: uniform per-channel weights, or LogART log_dynamic weights (1+1/2 levels).")
@click.option("--adalog-acts", type=click.Choice(["adalog", "uniform"]), default="adalog", show_default=True,
              help="AdaLog: AdaLog codes after Softmax/GELU, or uniform ones (the equal-bits baseline).")
@click.option("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu", show_default=True)
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many images/sentences only.")
@click.option("--max-tokens", type=int, default=4096, show_default=True, help="LM evaluation tokens.")
@click.option("--seq-len", type=int, default=512, show_default=True, help="LM calibration window.")
@click.option("--data-path", default=None, help="ImageNet-style folder for evaluation/calibration.")
@click.option("--offload-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="LMs: one decoder block's weights in memory at a time. A safetensors model is read from its "
                   "checkpoint block by block (never loaded whole); a GGUF or .bin model is loaded, then offloaded here.")
@click.option("--results", type=click.Path(path_type=Path), default=lambda: results_home() / "ptq_results.csv",
              show_default="$LOGMAC_HOME/ptq_results.csv (~/.local/share/logmac)", help="CSV the results row is appended to.")
@click.option("--ablation", type=click.Path(path_type=Path), default=None,
              help="Run the 16-row DBS/SFS/ABS/LLR table and write it (markdown) to this file; -o is not used.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write the artifact here.")
@click.option("--force", is_flag=True, help="Overwrite an existing -o file.")
def quantize(model_name: str, path: str | None, no_dbs: bool, no_sfs: bool, no_abs: bool, eval_limit: int | None,
             max_tokens: int, seq_len: int, data_path: str | None, results: Path, ablation: Path | None,
             output: Path | None, force: bool, **kw) -> None:
    """Quantize a model to exponent-coded (or uniform) weights, evaluate it and export the artifact."""
    if output is not None and output.exists() and not force:  # refuse before the run, not after it
        raise click.UsageError(f"{output} exists; pass --force to overwrite it")
    from logmac.experiments.registry import (
        EvalOptions,
        ablation_configs,
        append_csv,
        markdown_table,
        memory_summary,
        quantize_registry_model,
    )
    from logmac.format import artifact as artifact_io
    from logmac.format.atomic import atomic_write_text

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lattice = {k: kw.pop(k) for k in ("basis_bits", "search_steps", "restarts")}
    ptmq_opts = {k: kw.pop(k) for k in ("ptmq_bits", "ptmq_a_bits", "ptmq_codes", "nest")}
    adalog_opts = {k: kw.pop(k) for k in ("adalog_weights", "adalog_acts")}
    group = {k: kw.pop(k) for k in ("group_size", "group_bits")}
    if kw["calib_samples"] is None:
        from logmac.experiments.registry import default_calib_samples

        kw["calib_samples"] = default_calib_samples(model_name)
    offload_dir = kw.pop("offload_dir")
    if (group["group_size"] or offload_dir) and kw["method"] in ("adalog", "ptmq", "latticeq"):
        raise click.UsageError("--group-size and --offload-dir apply to the log_* and linear_* methods only")
    if kw["method"] == "adalog":
        return adalog_cli(model_name, path, eval_limit, results, output, **kw, **adalog_opts)
    if kw["method"] == "ptmq":
        cfg, ptmq = ptmq_settings(dict(kw, dbs=not no_dbs, sfs=not no_sfs, abs=not no_abs), **ptmq_opts)
        opts = EvalOptions(eval_limit=eval_limit, max_tokens=max_tokens, seq_len=seq_len, data_path=data_path)
        return ptmq_cli(model_name, path, cfg, ptmq, opts, results, output)
    if kw["method"] == "latticeq":
        return lattice_cli(model_name, path, eval_limit, results, output, **kw, **lattice)
    cfg = _config(dbs=not no_dbs, sfs=not no_sfs, abs=not no_abs, **kw, **group)
    opts = EvalOptions(eval_limit=eval_limit, max_tokens=max_tokens, seq_len=seq_len, data_path=data_path)
    configs = ablation_configs(cfg) if ablation else [cfg]
    rows = []
    for c in configs:
        try:
            res, row = quantize_registry_model(model_name, c, opts, path=path, offload_dir=offload_dir)
        except (QuantError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from exc
        append_csv(row, results)
        rows.append(row)
        click.echo(f"{c.label()}: FP {json.dumps(res.artifact.meta['metrics']['fp'])} -> "
                   f"quantized {json.dumps(res.artifact.meta['metrics']['quant'])}")
        click.echo(f"time {res.seconds:.1f} s (quantization), {memory_summary(row)}")
        for name, reason in res.float_modules.items():
            click.echo(f"  float: {name}: {reason}")
        if output and not ablation:
            artifact_io.save(with_settings_file(res.artifact), output)
            click.echo(f"wrote {output}")
        del res
    if ablation:
        metric = "perplexity" if "q_perplexity" in rows[0] else ("agreement" if "q_agreement" in rows[0] else "top1")
        atomic_write_text(ablation, markdown_table(rows, metric) + "\n")
        click.echo(f"wrote {ablation}")
    click.echo(f"results appended to {results}")


def adalog_cli(model_name: str, path: str | None, eval_limit: int | None, results, output, **kw) -> None:
    """``logmac quantize --method adalog``: the shared options mapped onto :class:`AdaLogConfig`."""
    import torch

    from logmac.experiments.adalog import VIT_MODELS, adalog_registry_model
    from logmac.experiments.registry import append_csv
    from logmac.quant.methods.adalog.vit import AdaLogConfig

    if output and model_name not in VIT_MODELS:
        raise click.UsageError(f"-o: AdaLog artifacts hold ViTs ({', '.join(VIT_MODELS)}); {model_name} cannot be "
                               "saved yet (its attention is rewritten in place); run without -o to score it")
    torch.manual_seed(kw["seed"])
    try:
        cfg = AdaLogConfig(w_bits=kw["w_bits"], a_bits=kw["a_bits"], weights=kw["adalog_weights"],
                           acts=kw["adalog_acts"], zero=kw["zero"], calib_samples=kw["calib_samples"], seed=kw["seed"])
        res, row = adalog_registry_model(model_name, cfg, eval_limit=eval_limit, path=path)
    except (QuantError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    append_csv(row, results)
    scores = {k: v for k, v in row.items() if k.startswith(("fp_", "q_", "emu_"))}
    click.echo(f"AdaLog {cfg.label()}: {scores}")
    click.echo(f"time {row['quant_seconds']} s (calibration), {row['total_seconds']} s with evaluation")
    for name, q in res.quantizers.items():
        click.echo(f"  {name}: base 2^({q['q']}/37), scale {q['scale']}")
    if output:
        from logmac.format.artifact import save
        from logmac.quant.methods.adalog.export import adalog_artifact

        meta = {"model": model_name, "task": "classification", "metrics": {k: row[k] for k in scores}}
        click.echo(f"wrote {save(with_settings_file(adalog_artifact(res.model, cfg, meta)), output)}")
    click.echo(f"results appended to {results}")


def ptmq_cli(model_name: str, path: str | None, cfg: QuantConfig, ptmq: PtmqConfig, opts: EvalOptions,
             results: Path, output: Path | None) -> None:
    """The CLI body: run, print one line per width, append the rows, write the artifact."""
    from logmac.experiments.ptmq import quantize_registry_ptmq
    from logmac.experiments.registry import append_csv
    from logmac.format import artifact as artifact_io

    try:
        res, rows = quantize_registry_ptmq(model_name, cfg, ptmq, opts, path=path)
    except (QuantError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    fp = res.artifact.meta["metrics"]["fp"]
    for row in rows:
        quant = {k.removeprefix("q_"): v for k, v in row.items() if k.startswith("q_")}
        click.echo(f"{row['label']}: FP {json.dumps(fp)} -> quantized {json.dumps(quant)}")
        append_csv(row, results)
    click.echo(f"time {res.seconds:.1f} s (one calibration for {len(ptmq.bits)} widths), "
               f"peak memory {res.peak_mib:.0f} MiB")
    if output:
        artifact_io.save(with_settings_file(res.artifact), output)
        click.echo(f"wrote {output} (widths {list(ptmq.bits)}; run it with logmac.backends.multibit)")
    click.echo(f"results appended to {results}")


def ptmq_settings(kw: dict, ptmq_bits: str, ptmq_a_bits: str | None, ptmq_codes: str,
                  nest: str) -> tuple[QuantConfig, PtmqConfig]:
    """The QuantConfig (code family, learned rounding on) and PtmqConfig from the CLI's options."""
    from logmac.experiments.ptmq import parse_bits
    from logmac.quant.methods.ptmq.calibrate import PtmqConfig

    try:
        bits = parse_bits(ptmq_bits)
        a_bits = parse_bits(ptmq_a_bits, "--ptmq-a-bits") if ptmq_a_bits else (kw["a_bits"],) * len(bits)
        ptmq = PtmqConfig(bits=bits, a_bits=a_bits, nest=nest)
        cfg = QuantConfig(**{**kw, "method": ptmq_codes, "w_bits": ptmq.top, "a_bits": ptmq.a_bits[-1],
                             "learn_rounding": True})
    except QuantError as exc:
        raise click.BadParameter(str(exc)) from exc
    return cfg, ptmq


def lattice_cli(model_name: str, path: str | None, eval_limit: int | None, results, output, **kw) -> None:
    """``logmac quantize --method latticeq``: the shared options mapped onto :class:`LatticeConfig`."""
    from logmac.experiments.latticeq import lattice_registry_model, score_groups
    from logmac.experiments.registry import append_csv
    from logmac.quant.methods.latticeq.model import LatticeConfig
    from logmac.quant.methods.latticeq.search import LatticeError

    try:
        cfg = LatticeConfig(w_bits=kw["w_bits"], a_bits=kw["a_bits"], basis_bits=kw["basis_bits"] or None,
                            granularity=kw["granularity"], steps=kw["search_steps"], restarts=kw["restarts"],
                            calib_samples=kw["calib_samples"], seed=kw["seed"], device=kw["device"],
                            recon_iters=kw["iters"] if kw["learn_rounding"] else 0)
        if output and cfg.basis_bits is None:
            raise LatticeError("a float basis (--basis-bits 0) has no integer form; export needs --basis-bits >= 2")
        res, row = lattice_registry_model(model_name, cfg, eval_limit=eval_limit, path=path)
    except (LatticeError, QuantError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    append_csv(row, results)
    scores = {k: v for k, v in row.items() if k.startswith(("fp_", "q_", "int_"))}
    click.echo(f"{cfg.label()}: {scores}")
    click.echo(f"time {row['quant_seconds']} s (quantization); results appended to {results}")
    if output:
        from logmac.format import artifact as artifact_io
        from logmac.quant.methods.latticeq.export import build_lattice_artifact

        metrics = score_groups(row)
        try:
            artifact_io.save(with_settings_file(build_lattice_artifact(res, cfg, model_name, metrics)), output)
        except LatticeError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"wrote {output}")


def with_settings_file(artifact: Artifact) -> Artifact:
    """``artifact`` with the ``--settings`` file of the running ``logmac quantize`` (path and verbatim text) in its
    settings; unchanged outside that command or without the option."""
    ctx = click.get_current_context(silent=True)
    record = ctx.meta.get(SETTINGS_KEY) if ctx is not None else None
    if record:
        artifact.settings[SETTINGS_KEY] = record
    return artifact
