"""``quantize_model``: fold, wrap, calibrate sequentially, export.  The CLI is a thin layer over this."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from logmac.format.artifact import Artifact
from logmac.memory import peak_memory_mib, reset_peak_memory, resident_memory_mib
from logmac.quant.calibrate import Batch, calibrate_blocks, calibrate_chain
from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.export import build_artifact
from logmac.quant.fold import fold_batchnorm
from logmac.quant.modules import QuantLayer, supported
from logmac.quant.stream import BlockStream, TensorSource

log = logging.getLogger(__name__)

MIN_CALIB_SAMPLES = 8


@dataclass
class QuantResult:
    """The fake-quant model (the input model, changed in place), its artifact and what the run cost."""

    model: nn.Module
    artifact: Artifact
    float_modules: dict[str, str]
    losses: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    peak_mib: float = 0.0
    start_mib: float = 0.0  # resident memory when quantization began (runtime, loaded model, data)
    stream: BlockStream | None = None  # with ``offload_dir``: the blocks' weights on disk; ``close()`` reloads them


def wrap_model(model: nn.Module, cfg: QuantConfig, scope: Sequence[nn.Module] | None = None) -> dict[str, str]:
    """Replace every Conv2d/Linear (inside ``scope`` modules if given) by a QuantLayer, in place.

    Returns ``{path: reason}`` for modules with weights that stay float.  NaN/Inf weights are an error.
    """
    inside = {id(m) for s in scope for m in s.modules()} if scope is not None else None
    float_modules: dict[str, str] = {}
    targets = []
    for path, mod in model.named_modules():
        weight = getattr(mod, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2 or isinstance(mod, QuantLayer):
            continue
        if inside is not None and id(mod) not in inside:
            float_modules[path] = f"{type(mod).__name__} outside the quantized blocks, kept in float"
        elif supported(mod):
            if not weight.is_meta and not torch.isfinite(weight).all():  # meta: checked as it is streamed in
                raise QuantError(f"layer {path} has NaN or Inf weights; fix the checkpoint before quantizing")
            targets.append((path, mod))
        else:
            float_modules[path] = f"{type(mod).__name__} cannot be quantized (not a plain Conv2d/Linear), kept in float"
    for i, (path, mod) in enumerate(targets):
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, QuantLayer(path, mod, cfg, seed=cfg.seed + i))
    for path, reason in float_modules.items():
        log.warning("%s: %s", path, reason)
    if not targets:
        raise QuantError("the model has no Conv2d or Linear layer to quantize")
    return float_modules


def split_batches(calib: torch.Tensor | Sequence[Batch], cfg: QuantConfig) -> list[Batch]:
    """Calibration batches of ``cfg.batch_size`` from a tensor, or the given batches; checks there are enough."""
    if isinstance(calib, torch.Tensor):
        calib = calib[: cfg.calib_samples]
        batches = list(calib.split(cfg.batch_size))
    else:
        batches = list(calib)
    n = sum(_batch_len(b) for b in batches)
    if n < MIN_CALIB_SAMPLES:
        raise QuantError(f"only {n} calibration samples; at least {MIN_CALIB_SAMPLES} are needed "
                         f"(ranges, Hessians and rounding are fitted on them)")
    return [_to(b, cfg.device) for b in batches]


def _batch_len(b: Batch) -> int:
    t = next(iter(b.values())) if isinstance(b, dict) else b
    return int(t.shape[0])


def _to(b: Batch, device: str) -> Batch:
    if isinstance(b, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
    return b.to(device)


def prepare_model(model: nn.Module, calib: torch.Tensor | Sequence[Batch], cfg: QuantConfig
                  ) -> tuple[list[Batch], dict[str, str]]:
    """Seed, eval mode on ``cfg.device``, frozen weights, calibration batches, BatchNorm folded (``{bn: conv}``):
    what every method does to a model before it wraps and calibrates it."""
    torch.manual_seed(cfg.seed)
    model.eval()
    if not any(p.is_meta for p in model.parameters()):  # a lazily loaded model was placed tensor by tensor
        model.to(cfg.device)
    for p in model.parameters():
        p.requires_grad_(False)
    batches = split_batches(calib, cfg)
    return batches, fold_batchnorm(model, batches[0] if isinstance(batches[0], torch.Tensor) else None)


def quantize_model(
    model: nn.Module,
    calib: torch.Tensor | Sequence[Batch],
    cfg: QuantConfig,
    *,
    model_name: str = "custom",
    task: str = "classification",
    blocks: Sequence[nn.Module] | None = None,
    progress: bool = True,
    offload_dir: str | Path | None = None,
    source: TensorSource | None = None,
) -> QuantResult:
    """Quantize ``model`` in place and export it.

    ``blocks`` (an LLM's decoder layers, a chain) selects the GPTQ-style path: only linears inside them
    are quantized, each on its Hessian objective.  Otherwise every Conv2d/Linear is quantized with
    BRECQ-style block reconstruction.  Same ``cfg.seed`` and inputs give the same codes.  ``offload_dir`` (with
    ``blocks``) streams the blocks: their weight matrices wait on disk there and one block is in memory at a
    time (:class:`~logmac.quant.stream.BlockStream`), during calibration and every later forward pass.
    ``source`` (with ``blocks``, instead of ``offload_dir``): the blocks of a model built on ``meta`` are read
    from that checkpoint one at a time (see :func:`~logmac.quant.stream.materialize_outside_blocks`).
    """
    start = time.perf_counter()
    reset_peak_memory(cfg.device)
    start_mib = resident_memory_mib()
    batches, folded = prepare_model(model, calib, cfg)
    float_modules = wrap_model(model, cfg, scope=blocks)
    if (offload_dir is not None or source is not None) and blocks is None:
        raise QuantError("offload_dir and source stream an LLM's decoder blocks; pass blocks as well")
    stream = BlockStream(blocks, offload_dir, source=source, device=cfg.device) \
        if offload_dir is not None or source is not None else None
    bar = tqdm(total=None, desc=f"quantize {cfg.label()}", unit="unit", disable=not progress)

    def step(name: str, i: int, total: int) -> None:
        bar.total = total
        bar.set_postfix_str(name)
        bar.update(1)

    if blocks is not None:
        losses = calibrate_chain(model, blocks, batches, cfg, step)
    else:
        losses = calibrate_blocks(model, batches, cfg, step)
    bar.close()
    seconds = time.perf_counter() - start
    peak = peak_memory_mib(cfg.device)
    meta = {"model": model_name, "task": task, "float_modules": float_modules, "folded_bn": folded,
            "calibration": {"samples": sum(_batch_len(b) for b in batches), "seed": cfg.seed,
                            "seconds": round(seconds, 2), "peak_mib": round(peak, 1)},
            "metrics": {}}
    artifact = build_artifact(model, cfg.to_dict(), meta, folded)
    return QuantResult(model, artifact, float_modules, losses, seconds, peak, start_mib, stream)
