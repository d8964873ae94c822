"""LatticeQ's model-level entry: data-free lattice weights per layer, one activation pass, optional reconstruction."""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm import tqdm

from logmac.quant.fold import fold_batchnorm
from logmac.quant.methods.latticeq.model import (
    ActQuantizer,
    LatticeConfig,
    LatticeLayer,
    LatticeResult,
    LatticeSpec,
    forward_order,
    lattice_layers,
    layer_spec,
)
from logmac.quant.methods.latticeq.recon import reconstruct_blocks
from logmac.quant.methods.latticeq.search import LatticeError, quantize_weight
from logmac.quant.modules import supported


def lattice_quantize_model(model: nn.Module, calib: torch.Tensor, cfg: LatticeConfig, *,
                           progress: bool = True) -> LatticeResult:
    """Quantize ``model`` in place with LatticeQ; ``calib`` are example inputs (only activation ranges
    and the layer order use them).  Same ``cfg.seed`` gives the same codes."""
    start = time.perf_counter()
    model.eval().to(cfg.device)
    for p in model.parameters():
        p.requires_grad_(False)
    calib = calib[: cfg.calib_samples].to(cfg.device)
    if len(calib) == 0:
        raise LatticeError("no calibration samples")
    folded = fold_batchnorm(model, calib[: cfg.batch_size])
    order = forward_order(model, calib[:1])
    if not order:
        raise LatticeError("the model has no Conv2d or Linear layer to quantize")
    float_modules = {n: f"{type(m).__name__} not a plain Conv2d/Linear, kept in float" for n, m in model.named_modules()
                     if isinstance(m, (nn.Conv2d, nn.Linear)) and not supported(m)}
    specs: dict[str, LatticeSpec] = {}
    for i, (name, mod) in enumerate(tqdm(order, desc=f"quantize {cfg.label()}", disable=not progress)):
        if not torch.isfinite(mod.weight).all():
            raise LatticeError(f"layer {name} has NaN or Inf weights; fix the checkpoint before quantizing")
        role = "first" if i == 0 else ("last" if i == len(order) - 1 else "middle")
        spec, a_bits = layer_spec(cfg, mod, role, cfg.seed + i)
        axis = 1 if isinstance(mod, nn.Conv2d) else -1
        act = ActQuantizer(a_bits, cfg.act_mode, axis, seed=cfg.seed + i).to(cfg.device) if a_bits else None
        parent_path, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, LatticeLayer(name, mod, quantize_weight(mod.weight, spec), act))
        specs[name] = spec
    calibrate_activations(model, calib, cfg.batch_size)
    recon = {}
    if cfg.recon_iters:
        recon = reconstruct_blocks(model, calib, cfg, progress=progress)
    return LatticeResult(model, specs, float_modules, folded, time.perf_counter() - start, recon)


@torch.no_grad()
def calibrate_activations(model: nn.Module, calib: torch.Tensor, batch_size: int) -> None:
    """One pass with quantized weights and observing activation quantizers, then fix every range."""
    layers = [m for m in lattice_layers(model) if m.act is not None]
    for m in layers:
        m.act.observing = True
    for batch in calib.split(batch_size):
        model(batch)
    for m in layers:
        m.act.fit()
