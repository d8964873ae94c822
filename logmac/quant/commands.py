"""``logmac quantize``: a thin CLI over :func:`logmac.quant.run.quantize_registry_model`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import tomllib

from logmac.format import MAX_BITS, MIN_BITS
from logmac.paths import results_home
from logmac.quant.config import METHODS, ROUNDINGS, QuantConfig, QuantError
from logmac.quant.run import SETTINGS_KEY


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
@click.option("--act-order", is_flag=True, help="GPTQ: round the inputs with the largest Hessian diagonal first.")
@click.option("--hardware-approx", is_flag=True, help="Fit to the datapath's 1+1/2 levels instead of sqrt(2).")
@click.option("--zero", type=click.Choice(["code", "flag", "none"]), default="code", show_default=True)
@click.option("--act-init", type=click.Choice(["mse", "percentile"]), default="mse", show_default=True)
@click.option("--calib-samples", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
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
@click.option("--seq-len", type=int, default=256, show_default=True, help="LM calibration window.")
@click.option("--data-path", default=None, help="ImageNet-style folder for evaluation/calibration.")
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
    from logmac.format import artifact as artifact_io
    from logmac.format.atomic import atomic_write_text
    from logmac.quant.run import (
        EvalOptions,
        ablation_configs,
        append_csv,
        markdown_table,
        memory_summary,
        quantize_registry_model,
        with_settings_file,
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    lattice = {k: kw.pop(k) for k in ("basis_bits", "search_steps", "restarts")}
    ptmq_opts = {k: kw.pop(k) for k in ("ptmq_bits", "ptmq_a_bits", "ptmq_codes", "nest")}
    adalog_opts = {k: kw.pop(k) for k in ("adalog_weights", "adalog_acts")}
    if kw["method"] == "adalog":
        from logmac.quant.methods.adalog.run import adalog_cli
        return adalog_cli(model_name, path, eval_limit, results, output, **kw, **adalog_opts)
    if kw["method"] == "ptmq":
        from logmac.quant.methods.ptmq.run import ptmq_cli, ptmq_settings
        cfg, ptmq = ptmq_settings(dict(kw, dbs=not no_dbs, sfs=not no_sfs, abs=not no_abs), **ptmq_opts)
        opts = EvalOptions(eval_limit=eval_limit, max_tokens=max_tokens, seq_len=seq_len, data_path=data_path)
        return ptmq_cli(model_name, path, cfg, ptmq, opts, results, output)
    if kw["method"] == "latticeq":
        from logmac.quant.methods.latticeq.run import lattice_cli
        return lattice_cli(model_name, path, eval_limit, results, output, **kw, **lattice)
    cfg = _config(dbs=not no_dbs, sfs=not no_sfs, abs=not no_abs, **kw)
    opts = EvalOptions(eval_limit=eval_limit, max_tokens=max_tokens, seq_len=seq_len, data_path=data_path)
    configs = ablation_configs(cfg) if ablation else [cfg]
    rows = []
    for c in configs:
        try:
            res, row = quantize_registry_model(model_name, c, opts, path=path)
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
