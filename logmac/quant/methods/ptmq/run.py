"""``logmac quantize --method ptmq``: quantize a registry model once for several widths, score each, export one file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.methods.ptmq.calibrate import PtmqConfig, PtmqResult, ptmq_quantize, set_precision
from logmac.quant.run import EvalOptions, FloatView, append_csv, evaluation_metrics, with_settings_file


def parse_bits(text: str | None, what: str = "--bits") -> tuple[int, ...]:
    """``"3,4,6"`` -> ``(3, 4, 6)`` with a clear error for anything else."""
    try:
        bits = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError as exc:
        raise QuantError(f"{what} takes comma-separated integers such as 3,4,6, got {text!r}") from exc
    if not bits:
        raise QuantError(f"{what} needs at least one bit-width")
    return bits


def quantize_registry_ptmq(name: str, cfg: QuantConfig, ptmq: PtmqConfig, opts: EvalOptions | None = None, *,
                           path: str | None = None) -> tuple[PtmqResult, list[dict]]:
    """Load ``name``, run one PTMQ calibration, score FP and every width; returns the result and one row per width."""
    from logmac.models import UnknownModelError, calibration_samples, load_model

    opts = opts or EvalOptions()
    start = time.perf_counter()
    try:
        loaded = load_model(name, path, device=cfg.device)
    except UnknownModelError as exc:
        raise QuantError(exc.args[0] if exc.args else f"unknown model {name!r}") from exc
    calib = calibration_samples(name, cfg.calib_samples, seed=cfg.seed, device=cfg.device, data_path=opts.data_path)
    res = ptmq_quantize(loaded.model, calib, cfg, ptmq, model_name=name)
    fp = evaluation_metrics(FloatView(res.model), name, opts, None, None)
    rows, by_width = [], {}
    for b, a in zip(ptmq.bits, ptmq.a_bits, strict=True):
        set_precision(res.model, b)
        quant = evaluation_metrics(res.model, name, opts, None, FloatView(res.model))
        by_width[str(b)] = quant
        row = {"model": name, "label": f"ptmq({ptmq.nest}) {cfg.method} W{b}A{a} of {list(ptmq.bits)}",
               "method": f"ptmq:{cfg.method}", "w_bits": b, "a_bits": a, "calib_samples": cfg.calib_samples,
               "iters": cfg.iters, "seed": cfg.seed}
        row.update({f"fp_{k}": v for k, v in fp.items()})
        row.update({f"q_{k}": v for k, v in quant.items()})
        row.update(quant_seconds=round(res.seconds, 1), total_seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
    set_precision(res.model, ptmq.top)
    res.artifact.meta["metrics"] = {"fp": fp, "quant": by_width[str(ptmq.top)], "by_width": by_width}
    return res, rows


def ptmq_cli(model_name: str, path: str | None, cfg: QuantConfig, ptmq: PtmqConfig, opts: EvalOptions,
             results: Path, output: Path | None) -> None:
    """The CLI body: run, print one line per width, append the rows, write the artifact."""
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
    try:
        bits = parse_bits(ptmq_bits)
        a_bits = parse_bits(ptmq_a_bits, "--ptmq-a-bits") if ptmq_a_bits else (kw["a_bits"],) * len(bits)
        ptmq = PtmqConfig(bits=bits, a_bits=a_bits, nest=nest)
        cfg = QuantConfig(**{**kw, "method": ptmq_codes, "w_bits": ptmq.top, "a_bits": ptmq.a_bits[-1],
                             "learn_rounding": True})
    except QuantError as exc:
        raise click.BadParameter(str(exc)) from exc
    return cfg, ptmq
