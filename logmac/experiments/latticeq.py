"""LatticeQ on a registry model end to end: load, quantize, score FP / fake-quant / integer path, one row.

The counterpart of :func:`logmac.experiments.registry.quantize_registry_model` for ``--method latticeq``; the row
uses the same column names (``fp_*``, ``q_*``) plus ``int_*`` for the integer-emulated model.
"""

from __future__ import annotations

import time

from logmac.quant.float_view import FloatView
from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model
from logmac.quant.methods.latticeq.model import LatticeConfig, LatticeResult, set_lattice_quant


def _rounded(scores: dict) -> dict:
    return {k: round(float(v), 4) for k, v in scores.items()}


def lattice_registry_model(name: str, cfg: LatticeConfig, *, eval_limit: int | None = None, path: str | None = None,
                           integer: bool = True, progress: bool = True) -> tuple[LatticeResult, dict]:
    """Quantize ``logmac.models`` model ``name`` with LatticeQ; returns the result and a results row.

    With ``integer`` (and per-tensor activations) the integer-emulated model is scored too (``int_*``),
    next to the fake-quant scores (``q_*``).
    """
    from logmac.backends.lattice import emulate_lattice
    from logmac.experiments.registry import load_for_quantization
    from logmac.models import calibration_samples, evaluate_model

    start = time.perf_counter()
    model = load_for_quantization(name, path, cfg.device).model
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




def score_groups(row: dict) -> dict[str, dict]:
    """A results row's FP, fake-quant and integer-path scores, each without its column prefix (the artifact's
    ``meta.metrics``)."""
    return {name: {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
            for name, prefix in (("fp", "fp_"), ("quant", "q_"), ("integer", "int_"))}
