"""PTMQ: one post-training calibration that serves several bit-widths, switched at run time.

Sequential block reconstruction as in ``logmac.quant.calibrate`` (same units, same capture of inputs and
FP targets, same AdaRound/LLR schedules), with PTMQ's changes (spec section 4):

- every quantized layer is a :class:`~logmac.quant.methods.ptmq.layer.MultiBitLayer`: shared rounding V, per-width
  weight grids (log: one nested grid), per-width activation quantizers whose steps are learned (LSQ);
- bit-widths are split into groups (low / middle / high, contiguous in sorted order); each iteration draws
  one width per group at random;
- **MFM** (``own_inputs=False``): the unit's input is the mean of the quantized prefix's outputs at the drawn
  widths, with each element replaced by the FP input with probability ``mix_p`` (QDrop-style, FP from the
  FP model as in the paper's figure); by default (``own_inputs``) each width gets its own prefix's input,
  FP-mixed the same way;
- **GD loss**: ``g1 * L(mean of the drawn outputs, FP target) + g2 * L(f_mid, f_high) + g3 * L(f_low, f_high)``
  with the high-width output detached (the teacher), ``L`` the BRECQ block loss of ``calibrate``, plus
  (``fp_weight``, default 1) every drawn width's own loss to the FP target;
- lone layers (stem, head) are units like blocks and get the same loss (the community code gave them
  none), and every width is scored and exported (the community code evaluated only the lowest).

BN is folded first (``fold_batchnorm``), so switching widths needs no BN re-estimation.  The result is a
multi-bit artifact (``logmac.quant.methods.ptmq.artifact``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from logmac.format.nested import NEST_MODES
from logmac.memory import peak_memory_mib, reset_peak_memory
from logmac.quant.calibrate import Batch, calibrate_sequential, capture_unit_io, recon_loss
from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.fold import first_tensor
from logmac.quant.methods.ptmq.layer import MultiBitLayer, multibit_layers, set_precision
from logmac.quant.modules import QuantLayer
from logmac.quant.pipeline import QuantResult, prepare_model, wrap_model
from logmac.quant.rounding import beta_schedule, reconstruction_lr

GROUPS = 3  # low / middle / high


@dataclass
class PtmqConfig:
    """What PTMQ adds to a QuantConfig (stored in the artifact's ``settings.ptmq``).

    ``bits`` are the weight widths, ``a_bits`` the activation width paired with each (same length);
    ``nest`` how lower log codes come out of the top code; ``mix_p`` MFM's FP-replacement probability;
    ``gammas`` the GD-loss weights; ``act_lr`` Adam's rate on the activation steps (cosine to 0).

    ``fp_weight`` adds ``fp_weight * sum_b L(f_b, FP)``, every drawn width's own block loss to the FP
    target: the paper's GD loss sees the FP target only through the *mean* of the widths' outputs, whose
    errors can cancel (W3 too small, W6 too big), so learning traded W4/W6 for W3 and the keep rule fell
    back to round-to-nearest on some units (docs/ptmq.md: 1.0 lifts ResNet-18 W3 by 1.5-2 points).
    ``own_inputs`` (default on) runs each drawn width on its own quantized-prefix input (what it sees when
    deployed), FP-mixed with ``mix_p``, instead of MFM's mean of the widths' inputs (ResNet-18 W3 89.20 ->
    91.44, single W3 run 91.67).  ``width_scale`` gives each lower log width its own
    per-channel weight step (least squares on its round-to-nearest nested weight, then fixed: PTMQ's S_w;
    stored as ``p{b}/scale``, carried by that width's requant registers, no hardware change).
    """

    bits: tuple[int, ...] = (3, 4, 6)
    a_bits: tuple[int, ...] = (8, 8, 8)
    nest: str = "coarsen"
    mix_p: float = 0.5
    gammas: tuple[float, float, float] = (1.0, 1.0, 1.0)
    act_lr: float = 4e-4
    fp_weight: float = 1.0
    own_inputs: bool = True
    width_scale: bool = False

    def __post_init__(self) -> None:
        self.bits, self.a_bits = tuple(int(b) for b in self.bits), tuple(int(a) for a in self.a_bits)
        if not self.bits or len(set(self.bits)) != len(self.bits):
            raise QuantError(f"PTMQ needs distinct weight bit-widths, got {list(self.bits)}")
        if len(self.a_bits) != len(self.bits):
            raise QuantError(f"give one activation width per weight width: bits {list(self.bits)}, "
                             f"a_bits {list(self.a_bits)}")
        if any(a == 32 or not 2 <= a <= 16 for a in self.a_bits):
            raise QuantError(f"PTMQ quantizes activations: a_bits must be in 2..16, got {list(self.a_bits)}")
        if self.nest not in NEST_MODES:
            raise QuantError(f"unknown nesting {self.nest!r}; choose one of {', '.join(NEST_MODES)}")
        if not 0 <= self.mix_p <= 1:
            raise QuantError(f"mix_p must be in [0, 1], got {self.mix_p}")
        order = np.argsort(self.bits)
        self.bits = tuple(self.bits[i] for i in order)
        self.a_bits = tuple(self.a_bits[i] for i in order)

    @property
    def top(self) -> int:
        return max(self.bits)

    def groups(self) -> list[list[int]]:
        """Widths split into up to three contiguous groups (low, middle, high)."""
        parts = np.array_split(np.array(self.bits), min(GROUPS, len(self.bits)))
        return [[int(b) for b in p] for p in parts]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class PtmqResult(QuantResult):
    """The multi-bit fake-quant model (switch it with ``set_precision``), its artifact and the run's cost."""


def check_config(cfg: QuantConfig, ptmq: PtmqConfig) -> None:
    """Raise QuantError for settings PTMQ cannot honour (every width must be a legal format)."""
    for b, a in zip(ptmq.bits, ptmq.a_bits, strict=True):
        QuantConfig(**{**cfg.to_dict(), "w_bits": b, "a_bits": a})
    if cfg.is_log and cfg.zero == "none":
        raise QuantError("multi-bit log codes need a zero (--zero code or flag)")


def wrap_multibit(model: nn.Module, cfg: QuantConfig, ptmq: PtmqConfig) -> dict[str, str]:
    """``pipeline.wrap_model``, then every QuantLayer becomes a MultiBitLayer (same seeds, same order)."""
    top_cfg = QuantConfig(**{**cfg.to_dict(), "w_bits": ptmq.top, "a_bits": ptmq.a_bits[-1]})
    float_modules = wrap_model(model, top_cfg)
    for i, (path, layer) in enumerate([(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]):
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, MultiBitLayer(layer.name, layer.inner, cfg, list(ptmq.bits), list(ptmq.a_bits),
                                             ptmq.nest, seed=cfg.seed + i, width_scale=ptmq.width_scale))
    return float_modules


def ptmq_quantize(model: nn.Module, calib: torch.Tensor | Sequence[Batch], cfg: QuantConfig, ptmq: PtmqConfig, *,
                  model_name: str = "custom", task: str = "classification", progress: bool = False) -> PtmqResult:
    """Quantize ``model`` in place at every width of ``ptmq`` with one calibration; export a multi-bit artifact.

    ``cfg`` gives the code family (method, grid options, zero mode), calibration size, ``iters`` per unit
    and the rounding rate; its ``w_bits``/``a_bits`` are replaced by ``ptmq.bits``/``ptmq.a_bits``.
    """
    from logmac.quant.methods.ptmq.artifact import build_multibit_artifact

    check_config(cfg, ptmq)
    start = time.perf_counter()
    reset_peak_memory(cfg.device)
    batches, folded = prepare_model(model, calib, cfg)
    float_modules = wrap_multibit(model, cfg, ptmq)
    losses = calibrate_multibit(model, batches, cfg, ptmq, progress)
    seconds = time.perf_counter() - start
    peak = peak_memory_mib(cfg.device)
    meta = {"model": model_name, "task": task, "float_modules": float_modules, "folded_bn": folded,
            "calibration": {"samples": sum(int(first_tensor(b).shape[0]) for b in batches), "seed": cfg.seed,
                            "seconds": round(seconds, 2), "peak_mib": round(peak, 1)},
            "metrics": {}}
    artifact = build_multibit_artifact(model, cfg, ptmq, meta, folded)
    return PtmqResult(model, artifact, float_modules, losses, seconds, peak)


def calibrate_multibit(model: nn.Module, batches: Sequence[Batch], cfg: QuantConfig, ptmq: PtmqConfig,
                       progress: bool = False) -> dict[str, dict[str, float]]:
    """Unit by unit: capture FP targets and per-width inputs, fit every width, then PTMQ reconstruction."""
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    def inputs_per_width(unit: nn.Module) -> dict[int, list]:
        inputs = {}
        for b in ptmq.bits:
            set_precision(model, b)
            inputs[b] = capture_unit_io(model, unit, batches, want_output=False)
        return inputs

    def fit_unit(_name: str, unit: nn.Module, layers: list[MultiBitLayer], inputs: dict[int, list], targets: list
                 ) -> dict[str, float] | None:
        _fit_unit(unit, layers, inputs, ptmq)
        if not (cfg.learn_rounding and cfg.iters):
            return None
        return _reconstruct(unit, layers, inputs, targets, cfg, ptmq, rng, gen)

    def report(name: str, i: int, n: int) -> None:
        print(f"[ptmq] unit {i + 1}/{n} {name}", flush=True)

    losses = calibrate_sequential(model, batches, fit_unit, want_targets=True, capture_inputs=inputs_per_width,
                                  progress=report if progress else None)
    set_precision(model, ptmq.top)
    return losses


def _fit_unit(unit: nn.Module, layers: list[MultiBitLayer], inputs: dict[int, list], ptmq: PtmqConfig) -> None:
    """Activation ranges of every width (observed on that width's quantized-prefix inputs), then the weights."""
    for b in ptmq.bits:
        for layer in layers:
            layer.set_precision(b)
            layer.quant_on = False
            layer.act.observing = True
        with torch.no_grad():
            for args, kwargs, *_ in inputs[b]:
                unit(*args, **kwargs)
        for layer in layers:
            layer.act.init_range()
    for layer in layers:
        layer.fit_all()
        layer.quant_on = True


def _mixed_input(inputs: dict[int, list], targets: list, drawn: list[int], r: int, p: float,
                 gen: torch.Generator) -> tuple[tuple, dict]:
    """MFM at the unit input: mean of the drawn widths' inputs, elements replaced by FP with probability p."""
    args, kwargs, _ = inputs[drawn[-1]][r]
    x = torch.stack([first_tensor(inputs[b][r][0]) for b in drawn]).mean(0)
    fp = first_tensor(targets[r][0])
    if p > 0:
        x = torch.where(torch.rand(x.shape, generator=gen).to(x.device) < p, fp, x)
    return (x,) + tuple(args[1:]), kwargs


def _outputs(unit: nn.Module, layers: list[MultiBitLayer], drawn: list[int], args: tuple, kwargs: dict) -> list:
    outs = []
    for b in drawn:
        for layer in layers:
            layer.set_precision(b)
        outs.append(first_tensor(unit(*args, **kwargs)))
    return outs


def gd_loss(outs: list[torch.Tensor], target: torch.Tensor, gammas: tuple[float, float, float],
            fp_weight: float = 0.0) -> torch.Tensor:
    """PTMQ's group-wise distillation loss on the outputs of the drawn widths (ascending: low .. high),
    plus ``fp_weight`` times each width's own block loss to the FP target."""
    mixed = torch.stack(outs).mean(0)
    loss = gammas[0] * recon_loss(mixed, target)
    if fp_weight:
        loss = loss + fp_weight * sum(recon_loss(o, target) for o in outs)
    teacher = outs[-1].detach()
    if len(outs) >= 3:
        loss = loss + gammas[1] * recon_loss(outs[1], teacher)
    if len(outs) >= 2:
        loss = loss + gammas[2] * recon_loss(outs[0], teacher)
    return loss


@torch.no_grad()
def _score(unit: nn.Module, layers: list[MultiBitLayer], inputs: dict[int, list], targets: list,
           bits: Sequence[int]) -> dict[int, float]:
    """Hard-rounded block loss to the FP target at every width, on that width's own inputs (no mixing)."""
    out = {}
    for b in bits:
        total = 0.0
        for r, (args, kwargs, _) in enumerate(inputs[b]):
            pred = _outputs(unit, layers, [b], args, kwargs)[0]
            total += float(recon_loss(pred, first_tensor(targets[r][2])))
        out[b] = total / len(inputs[b])
    return out


def _reconstruct(unit: nn.Module, layers: list[MultiBitLayer], inputs: dict[int, list], targets: list,
                 cfg: QuantConfig, ptmq: PtmqConfig, rng: np.random.Generator, gen: torch.Generator) -> dict[str, float]:
    """Adam on the shared V (LLR/AdaRound schedule of ``calibrate``) and on every width's activation step.

    The result is kept only if the summed hard loss over all widths beats round-to-nearest with the
    initial steps (as ``calibrate._run_rounding`` does for one width)."""
    v_params = [p for layer in layers for p in layer.start_shared_rounding()]
    steps = [layer.acts[str(b)].start_learning() for layer in layers for b in ptmq.bits]
    for layer in layers:
        layer.set_hard(True)
    before = _score(unit, layers, inputs, targets, ptmq.bits)
    for layer in layers:
        layer.set_hard(False)
    opt_v = torch.optim.Adam(v_params, lr=cfg.lr)
    opt_s = torch.optim.Adam(steps, lr=ptmq.act_lr)
    groups = ptmq.groups()
    n = len(targets)
    for step in range(cfg.iters):
        for g in opt_v.param_groups:
            g["lr"] = reconstruction_lr(step, cfg.iters, cfg.lr)
        for g in opt_s.param_groups:
            g["lr"] = ptmq.act_lr * 0.5 * (1 + np.cos(np.pi * step / cfg.iters))
        drawn = [int(rng.choice(grp)) for grp in groups]
        r = int(rng.integers(n))
        if ptmq.own_inputs:
            outs = []
            for b in drawn:  # each width on its own prefix's input (MFM over that one width)
                args, kwargs = _mixed_input(inputs, targets, [b], r, ptmq.mix_p, gen)
                outs += _outputs(unit, layers, [b], args, kwargs)
        else:
            args, kwargs = _mixed_input(inputs, targets, drawn, r, ptmq.mix_p, gen)
            outs = _outputs(unit, layers, drawn, args, kwargs)
        loss = gd_loss(outs, first_tensor(targets[r][2]), ptmq.gammas, ptmq.fp_weight)
        beta = beta_schedule(step, cfg.iters, cfg.warmup)
        if beta is not None:
            loss = loss + cfg.round_weight * sum(layer.regularizer(beta) for layer in layers)
        opt_v.zero_grad(set_to_none=True)
        opt_s.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()
        opt_s.step()
    for layer in layers:
        layer.set_hard(True)
    after = _score(unit, layers, inputs, targets, ptmq.bits)
    keep = sum(after.values()) <= sum(before.values())
    for layer in layers:
        for b in ptmq.bits:
            layer.acts[str(b)].stop_learning(keep)
        layer.finish_shared_rounding(keep)
    out = {f"rtn_w{b}": before[b] for b in ptmq.bits}
    out.update({f"learned_w{b}": after[b] for b in ptmq.bits})
    out["kept_learned"] = float(keep)
    return out


__all__ = ["PtmqConfig", "PtmqResult", "gd_loss", "multibit_layers", "ptmq_quantize", "set_precision"]
