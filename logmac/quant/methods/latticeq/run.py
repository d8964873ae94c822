"""LatticeQ on a registry model end to end: load, quantize, score FP / fake-quant / integer path, one row.

The counterpart of :func:`logmac.quant.run.quantize_registry_model` for ``--method latticeq``; the row
uses the same column names (``fp_*``, ``q_*``) plus ``int_*`` for the integer-emulated model.
"""

from __future__ import annotations

import time

from logmac.quant.methods.latticeq.model import LatticeConfig, LatticeResult, lattice_quantize_model, set_lattice_quant
from logmac.quant.run import FloatView


def _rounded(scores: dict) -> dict:
    return {k: round(float(v), 4) for k, v in scores.items()}


def lattice_registry_model(name: str, cfg: LatticeConfig, *, eval_limit: int | None = None, path: str | None = None,
                           integer: bool = True, progress: bool = True) -> tuple[LatticeResult, dict]:
    """Quantize ``logmac.models`` model ``name`` with LatticeQ; returns the result and a results row.

    With ``integer`` (and per-tensor activations) the integer-emulated model is scored too (``int_*``),
    next to the fake-quant scores (``q_*``).
    """
    from logmac.backends.lattice import emulate_lattice
    from logmac.models import calibration_samples, evaluate_model, load_model

    start = time.perf_counter()
    model = load_model(name, path, device=cfg.device).model
    calib = calibration_samples(name, cfg.calib_samples, seed=cfg.seed, model=model, device=cfg.device)
    res = lattice_quantize_model(model, calib, cfg, progress=progress)
    del calib
    reference = FloatView(res.model, set_lattice_quant)
    fp = _rounded(evaluate_model(reference, name, limit=eval_limit))
    quant = _rounded(evaluate_model(res.model, name, reference=reference, limit=eval_limit))
    row = {"model": name, "label": cfg.label(), "method": "latticeq", **cfg.to_dict(), "eval_limit": eval_limit}
    row.update({f"fp_{k}": v for k, v in fp.items()})
    row.update({f"q_{k}": v for k, v in quant.items()})
    if integer and cfg.act_mode != "quantile" and cfg.a_bits != 32:
        emu, stats = emulate_lattice(res.model)
        ints = _rounded(evaluate_model(emu, name, reference=reference, limit=eval_limit))
        row.update({f"int_{k}": v for k, v in ints.items()})
        row.update(int_overflows=sum(s.overflows for s in stats.values()),
                   int_max_acc_bits=max(s.acc_bits for s in stats.values()))
    row.update(quant_seconds=round(res.seconds, 1), total_seconds=round(time.perf_counter() - start, 1))
    return res, row


def lattice_cli(model_name: str, path: str | None, eval_limit: int | None, results, output, **kw) -> None:
    """``logmac quantize --method latticeq``: the shared options mapped onto :class:`LatticeConfig`."""
    import click

    from logmac.models import UnknownModelError
    from logmac.quant.methods.latticeq.search import LatticeError
    from logmac.quant.run import append_csv, with_settings_file

    try:
        cfg = LatticeConfig(w_bits=kw["w_bits"], a_bits=kw["a_bits"], basis_bits=kw["basis_bits"] or None,
                            granularity=kw["granularity"], steps=kw["search_steps"], restarts=kw["restarts"],
                            calib_samples=kw["calib_samples"], seed=kw["seed"], device=kw["device"],
                            recon_iters=kw["iters"] if kw["learn_rounding"] else 0)
        if output and cfg.basis_bits is None:
            raise LatticeError("a float basis (--basis-bits 0) has no integer form; export needs --basis-bits >= 2")
        res, row = lattice_registry_model(model_name, cfg, eval_limit=eval_limit, path=path)
    except (LatticeError, UnknownModelError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    append_csv(row, results)
    scores = {k: v for k, v in row.items() if k.startswith(("fp_", "q_", "int_"))}
    click.echo(f"{cfg.label()}: {scores}")
    click.echo(f"time {row['quant_seconds']} s (quantization); results appended to {results}")
    if output:
        from logmac.format import artifact as artifact_io
        from logmac.quant.methods.latticeq.export import build_lattice_artifact

        metrics = {"fp": _strip(row, "fp_"), "quant": _strip(row, "q_"), "integer": _strip(row, "int_")}
        try:
            artifact_io.save(with_settings_file(build_lattice_artifact(res, cfg, model_name, metrics)), output)
        except LatticeError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"wrote {output}")


def _strip(row: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
