"""Optional block reconstruction for LatticeQ (spec 5.4): fit the lattice coordinates to the FP block outputs.

The data-free search fixes each layer's basis from the weights alone.  Reconstruction then moves the
weights *within* that lattice: every lattice layer of a unit (a residual block, or a lone layer) gets
latent FP weights, rounded to the lattice by Babai in the forward pass with a straight-through gradient,
and Adam minimises the unit's output MSE against the FP network (input from the already-quantized prefix,
target from the FP network, as BRECQ's "asymmetric" reconstruction).  The basis, the bias-correction gain
and offset and the activation ranges stay fixed, so the result is still ``scale_c * (c @ B_int + m_c)`` and
runs on the same integer path.

Differences from the reference (which reconstructs ResNet BasicBlocks only): BatchNorm is already folded
here (the reference trains with BN in train mode), the latent weights are normalised by the layer's ``d``
(so one learning rate fits every layer) and the budget is ``recon_iters`` Adam steps on random
calibration batches instead of 2000 passes, with a cosine decay to 0.1 lr.  The hard-rounded result is
scored on the whole calibration set before and after; a unit keeps its old coordinates if it got worse.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from tqdm import tqdm

from logmac.quant.calibrate import capture_unit_io, find_units, recon_loss
from logmac.quant.methods.latticeq.model import LatticeConfig, LatticeLayer, lattice_layers, set_lattice_quant

log = logging.getLogger(__name__)


def _block_error(unit: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    """The unit's output MSE (:func:`recon_loss`) over all calibration batches, hard-rounded weights."""
    with torch.no_grad():
        return sum(float(recon_loss(unit(x), t)) * len(x) for x, t in zip(inputs, targets, strict=True)) / sum(map(len, inputs))


def reconstruct_unit(unit: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor], iters: int,
                     lr: float, gen: torch.Generator) -> tuple[float, float]:
    """Train the latent weights of ``unit``'s lattice layers for ``iters`` steps; returns the unit's
    output MSE (hard rounding, all batches) before and after -- after <= before, since a worse result
    is discarded."""
    layers = [unit] if isinstance(unit, LatticeLayer) else lattice_layers(unit)
    before = _block_error(unit, inputs, targets)
    params = [layer.start_latent() for layer in layers]
    opt = torch.optim.Adam(params, lr=lr)
    try:
        for step in range(iters):
            for group in opt.param_groups:  # cosine decay from lr to 0.1 lr
                group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / iters)))
            i = int(torch.randint(len(inputs), (1,), generator=gen))
            loss = recon_loss(unit(inputs[i]), targets[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        old = [layer.code.coords for layer in layers]
        for layer in layers:
            layer.finish_latent(keep=True)
        after = _block_error(unit, inputs, targets)
        if after >= before:  # keep the data-free coordinates
            for layer, coords in zip(layers, old, strict=True):
                layer.code.coords = coords
                layer.qweight = layer.code.decode().to(layer.qweight.device, layer.qweight.dtype)
            after = before
    finally:
        for layer in layers:
            layer.latent = None
    return before, after


def reconstruct_blocks(model: nn.Module, calib: torch.Tensor, cfg: LatticeConfig, *, progress: bool = True
                       ) -> dict[str, tuple[float, float]]:
    """Reconstruct every unit of a LatticeQ model in network order (see the module docstring).

    Returns ``{unit: (output MSE before, after)}`` on the calibration set.
    """
    batches = list(calib.split(cfg.batch_size))
    gen = torch.Generator().manual_seed(cfg.seed)
    out: dict[str, tuple[float, float]] = {}
    for name, unit in tqdm(find_units(model, batches[0][:1], LatticeLayer), desc="reconstruct", disable=not progress):
        inputs = [args[0] for args, _, _ in capture_unit_io(model, unit, batches, want_output=False)]
        set_lattice_quant(model, False)
        try:
            targets = [out for _, _, out in capture_unit_io(model, unit, batches, want_output=True)]
        finally:
            set_lattice_quant(model, True)
        with torch.enable_grad():
            out[name] = reconstruct_unit(unit, inputs, targets, cfg.recon_iters, cfg.recon_lr, gen)
        log.info("reconstructed %s: block MSE %.4g -> %.4g", name, *out[name])
    return out
