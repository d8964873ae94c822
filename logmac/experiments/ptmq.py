"""``logmac quantize --method ptmq``: quantize a registry model once for several widths, score each, export one file."""

from __future__ import annotations

import time

from logmac.experiments.registry import EvalOptions, evaluation_metrics, load_for_quantization
from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.float_view import FloatView
from logmac.quant.methods.ptmq.calibrate import PtmqConfig, PtmqResult, ptmq_quantize, set_precision


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
    from logmac.models import calibration_samples

    opts = opts or EvalOptions()
    start = time.perf_counter()
    loaded = load_for_quantization(name, path, cfg.device)
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
