"""Sequential calibration: each unit (block or lone layer) is fitted on the inputs the quantized prefix makes.

CNN / ViT (BRECQ-style): units are residual or transformer blocks plus the layers outside any block.  For
each unit the FP network gives the target (FP input -> FP output) and the partly quantized network gives
the input; the unit's activation ranges and Hessians are measured on that input, its grids are searched,
and with learned rounding the unit's output error to the FP target is minimised.  Inputs are recomputed by
re-running the prefix, so only one unit's activations are held.

LLM (GPTQ / aespa-style): decoder layers form a chain, so their inputs are carried from one to the next;
every linear layer is fitted and rounded on its own Hessian objective ``tr(dW H dW^T)``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from logmac.quant.config import QuantConfig
from logmac.quant.fold import first_tensor
from logmac.quant.modules import GramCache, QuantLayer, quant_layers, set_quant
from logmac.quant.rounding import beta_schedule, reconstruction_lr

log = logging.getLogger(__name__)

BLOCK_SUFFIXES = ("BasicBlock", "Bottleneck", "InvertedResidual", "Block", "DecoderLayer", "EncoderLayer",
                  "MBConv", "ResidualUnit")
LLM_DAMP = 0.01

Batch = Any  # a tensor, or a dict of keyword arguments, as the model's forward takes it


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Each unit's transients (activations, Hessians, grid-search and rounding state) are freed when it is done,
    but glibc keeps most of them in its heap between the small long-lived code arrays, so without a trim the
    resident size grows by every unit's leftovers and a chain of decoder layers ends far above its live data.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library when it has ``malloc_trim`` (glibc), else None; looked up once."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") else None


class _Stop(Exception):
    """Raised by a hook once the unit's input/output is captured, to skip the rest of the network."""


def call(model: nn.Module, batch: Batch):
    return model(**batch) if isinstance(batch, dict) else model(batch)


def find_units(model: nn.Module, batch: Batch, layer_type: type[nn.Module] = QuantLayer) -> list[tuple[str, nn.Module]]:
    """Blocks (outermost module whose class name ends in a BLOCK_SUFFIXES entry and holds a ``layer_type``)
    and lone ``layer_type`` layers, in the order the forward pass first reaches them; units the batch never
    reaches are left out."""
    units: list[tuple[str, nn.Module]] = []
    claimed: set[str] = set()
    for name, mod in model.named_modules():
        if any(name.startswith(c + ".") for c in claimed):
            continue
        is_block = type(mod).__name__.endswith(BLOCK_SUFFIXES) and any(isinstance(m, layer_type) for m in mod.modules())
        if is_block or isinstance(mod, layer_type):
            units.append((name, mod))
            claimed.add(name)
    order: dict[str, int] = {}

    def seen(name: str):
        def hook(_m, _args) -> None:
            order.setdefault(name, len(order))
        return hook

    hooks = [m.register_forward_pre_hook(seen(n)) for n, m in units]
    try:
        with torch.no_grad():
            call(model, batch)
    finally:
        for h in hooks:
            h.remove()
    missed = [n for n, _ in units if n not in order]
    if missed:
        log.warning("not reached by the calibration data, kept in float: %s", ", ".join(missed))
    return sorted([(n, m) for n, m in units if n in order], key=lambda nm: order[nm[0]])


def capture_unit_io(model: nn.Module, unit: nn.Module, batches: Sequence[Batch], want_output: bool) -> list:
    """Per batch, the unit's (args, kwargs) and, with ``want_output``, its output; the rest is skipped."""
    got: list = []

    def pre(_m, args, kwargs):
        got.append([args, kwargs, None])
        if not want_output:
            raise _Stop

    def post(_m, _args, _kwargs, out):
        got[-1][2] = out
        raise _Stop

    hooks = [unit.register_forward_pre_hook(pre, with_kwargs=True)]
    if want_output:
        hooks.append(unit.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    call(model, b)
                except _Stop:
                    pass
    finally:
        for h in hooks:
            h.remove()
    return got


def recon_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BRECQ's block MSE: squared error summed over the feature axis, averaged over the rest."""
    feat = pred.shape[1] if pred.ndim == 4 else pred.shape[-1]
    return (pred - target).pow(2).mean() * feat


def _run_rounding(layers: list[QuantLayer], loss_fn: Callable[[int], torch.Tensor], n_batches: int,
                  cfg: QuantConfig, rng: np.random.Generator) -> dict[str, float]:
    """Adam on every V of ``layers`` for ``cfg.iters`` steps.

    The hard-rounded result is scored on all calibration batches against round-to-nearest (the starting
    point); if learning made it worse the nearest rounding is kept.  Returns both scores.
    """
    params = [p for layer in layers for p in layer.start_rounding()]
    rtn = _hard_loss(layers, loss_fn, n_batches)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for step in range(cfg.iters):
        for g in opt.param_groups:
            g["lr"] = reconstruction_lr(step, cfg.iters, cfg.lr)
        loss = loss_fn(int(rng.integers(1 << 30)))
        beta = beta_schedule(step, cfg.iters, cfg.warmup)
        if beta is not None:
            loss = loss + cfg.round_weight * sum(layer.rounding.regularizer(beta) for layer in layers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    learned = _hard_loss(layers, loss_fn, n_batches)
    kept = learned <= rtn
    for layer in layers:
        if not kept:
            layer.rounding = None  # the codes from fit() (round to nearest) stay
        else:
            layer.finish_rounding()
    return {"rtn": rtn, "learned": learned, "kept_learned": float(kept)}


@torch.no_grad()
def _hard_loss(layers: list[QuantLayer], loss_fn: Callable[[int], torch.Tensor], n_batches: int) -> float:
    for layer in layers:
        layer.rounding.hard = True
    total = sum(float(loss_fn(i)) for i in range(n_batches)) / n_batches
    for layer in layers:
        layer.rounding.hard = False
    return total


def needs_hessian(cfg: QuantConfig) -> bool:
    """Whether any step uses the layer Hessians: the DBS/SFS grid score, or the LLM rounding objective.

    Round-to-nearest with a fixed grid (uniform, or log without DBS and SFS) skips the costly accumulation.
    """
    return cfg.learn_rounding or cfg.rounding == "gptq" or (cfg.is_log and (cfg.dbs or cfg.sfs))


def _observe_and_fit(unit: nn.Module, layers: list[QuantLayer], inputs: list, damp: float,
                     keep: bool = False) -> dict[str, torch.Tensor]:
    """One pass over the unit's inputs measures activation ranges and Hessians; then every grid is fitted.

    Returns the (damped) Hessians when ``keep`` (the LLM rounding objective needs them)."""
    grams = GramCache()
    for layer in layers:
        layer.quant_on = False
        layer.collect = needs_hessian(layer.cfg)
        layer.gram_cache = grams
        if layer.act is not None:
            layer.act.observing = True
    with torch.no_grad():
        for args, kwargs, *_ in inputs:
            unit(*args, **kwargs)
    grams.clear()
    kept = {}
    for layer in layers:
        layer.collect, layer.gram_cache = False, None
        if layer.act is not None:
            layer.act.init_range()
        hess = layer.take_hessian(damp)
        layer.fit(hess)
        if layer.cfg.rounding == "gptq" and hess is not None:
            layer.round_gptq(hess)
        layer.quant_on = True
        if keep:
            kept[layer.name] = hess
    return kept


# fit_unit(name, unit, layers, inputs, targets) -> the unit's reconstruction losses, or None without learning
UnitFit = Callable[[str, nn.Module, list[QuantLayer], Any, list], dict[str, float] | None]


def calibrate_sequential(model: nn.Module, batches: Sequence[Batch], fit_unit: UnitFit, *, want_targets: bool,
                         capture_inputs: Callable[[nn.Module], Any] | None = None,
                         progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """The one sequential loop: unit by unit, FP targets from the float network, inputs from the quantized prefix.

    For each unit (:func:`find_units`) every quantizer is switched off to capture the FP targets (when
    ``want_targets``), the already-fitted units are switched back on, the unit's inputs are captured
    (``capture_inputs(unit)``, default one pass; PTMQ takes one per width), and ``fit_unit`` fits it.  Only one
    unit's activations are held at a time.  Returns the losses ``fit_unit`` reported, per unit.
    """
    units = find_units(model, batches[0])
    done: list[QuantLayer] = []
    losses: dict[str, dict[str, float]] = {}
    for i, (name, unit) in enumerate(units):
        if progress:
            progress(name, i, len(units))
        layers = [unit] if isinstance(unit, QuantLayer) else quant_layers(unit)
        set_quant(model, False)
        targets = capture_unit_io(model, unit, batches, want_output=True) if want_targets else []
        for layer in done:
            layer.quant_on = True
        inputs = capture_inputs(unit) if capture_inputs else capture_unit_io(model, unit, batches, want_output=False)
        loss = fit_unit(name, unit, layers, inputs, targets)
        if loss is not None:
            losses[name] = loss
        done.extend(layers)
        inputs = targets = None  # this unit's activations go before the next unit's are captured
        release_memory()
    set_quant(model, True)
    return losses


def calibrate_blocks(model: nn.Module, batches: Sequence[Batch], cfg: QuantConfig,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """BRECQ-style sequential calibration of a CNN or ViT; returns each unit's final reconstruction loss."""
    rng = np.random.default_rng(cfg.seed)

    def fit_unit(_name: str, unit: nn.Module, layers: list[QuantLayer], inputs: list, targets: list
                 ) -> dict[str, float] | None:
        _observe_and_fit(unit, layers, inputs, damp=0.0)
        if not (cfg.learn_rounding and cfg.iters):
            return None

        def loss_fn(r: int) -> torch.Tensor:
            args, kwargs, _ = inputs[r % len(inputs)]
            return recon_loss(first_tensor(unit(*args, **kwargs)), first_tensor(targets[r % len(inputs)][2]))
        return _run_rounding(layers, loss_fn, len(inputs), cfg, rng)

    return calibrate_sequential(model, batches, fit_unit, want_targets=cfg.learn_rounding, progress=progress)


def calibrate_chain(model: nn.Module, blocks: Sequence[nn.Module], batches: Sequence[Batch], cfg: QuantConfig,
                    progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """GPTQ-style calibration of an LLM's decoder layers, each layer on its own Hessian objective."""
    rng = np.random.default_rng(cfg.seed)
    set_quant(model, False)
    inputs = capture_unit_io(model, blocks[0], batches, want_output=False)
    losses: dict[str, dict[str, float]] = {}
    for i, block in enumerate(blocks):
        if progress:
            progress(f"block {i}", i, len(blocks))
        layers = quant_layers(block)
        hessians = _observe_and_fit(block, layers, inputs, LLM_DAMP, keep=cfg.learn_rounding)
        for layer in layers:
            hess = hessians.pop(layer.name, None)  # each Hessian is freed once its layer is rounded
            if cfg.learn_rounding and cfg.iters:
                loss_fn = _hessian_loss(layer, hess[0], cfg.hessian_rank)
                losses[layer.name] = _run_rounding([layer], loss_fn, 1, cfg, rng)
                del loss_fn
            del hess
        with torch.no_grad():
            for entry in inputs:
                out = first_tensor(block(*entry[0], **entry[1]))
                if entry[0]:
                    entry[0] = (out,) + tuple(entry[0][1:])
                else:  # the hidden state was passed by keyword
                    entry[1] = {**entry[1], "hidden_states": out}
        release_memory()
    set_quant(model, True)
    return losses


def _hessian_loss(layer: QuantLayer, hess: torch.Tensor, rank: int) -> Callable[[int], torch.Tensor]:
    """aespa's layer objective ``tr(E H E^T) / rows`` with ``E = W_soft - W``.

    With ``rank > 0`` H is replaced by its top-``rank`` eigenpairs plus the leftover diagonal
    (``E U sqrt(L)`` and ``E^2 . d``), which costs ``rank / K`` of the exact form on these CPUs.
    """
    w = layer.weight2d().float()
    hess = hess.to(w.device)
    if rank and rank < hess.shape[0]:
        evals, evecs = torch.linalg.eigh(hess.double())
        evals, evecs = evals[-rank:].clamp(min=0), evecs[:, -rank:]
        factor = (evecs * evals.sqrt()).float()
        resid = (torch.diagonal(hess).double() - (evecs ** 2 * evals).sum(1)).clamp(min=0).float()

        def loss(_r: int) -> torch.Tensor:
            e = layer.rounding().float() - w
            return ((e @ factor) ** 2).sum() / e.shape[0] + (e * e * resid).sum() / e.shape[0]
        return loss

    def exact(_r: int) -> torch.Tensor:
        e = layer.rounding().float() - w
        return (e @ hess * e).sum() / e.shape[0]
    return exact
