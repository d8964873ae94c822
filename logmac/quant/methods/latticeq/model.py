"""LatticeQ on a whole network: BN folding, lattice weights per layer, uniform activation quantizers.

:func:`logmac.quant.methods.latticeq.calibrate.lattice_quantize_model` is the model-level API.  Weights
are quantized data-free (:mod:`logmac.quant.methods.latticeq.search`); activation ranges come from one calibration pass
with the quantized weights in place.  Activation modes: ``mse`` (per tensor, the repo's asymmetric MSE
range, the same quantizer the log and linear pipelines use), ``max`` (LatticeQ per-layer: ``alpha =
max|x|``) and ``quantile`` (LatticeQ per-channel quantiles; fake-quant only, since a per-input-channel
scale cannot leave an integer dot product).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from logmac.format import activation_codes
from logmac.quant.methods.latticeq.search import LatticeCode, LatticeError, LatticeSpec, babai
from logmac.quant.modules import static_padding, supported
from logmac.quant.uniform import ValueSampler, uniform_range

log = logging.getLogger(__name__)

ACT_MODES = ("mse", "max", "quantile")
EDGE_POLICIES = ("latticeq", "same")
# LatticeQ's per-channel clipping quantile by activation bit-width (section 5.3).
QUANTILES = {1: 0.97, 2: 0.992, 3: 0.9991, 4: 0.9997, 5: 0.9998, 6: 0.99995, 7: 0.99999, 8: 1.0}
SAMPLES_PER_BATCH = 4096  # values per channel an observer keeps from each batch (seeded)
EDGE_BITS = 8
LAST_LAYER_STEPS = 300


@dataclass
class LatticeConfig:
    """Settings of a LatticeQ run (stored with the results).

    ``edge="latticeq"`` follows the reference: the stem is a scalar (n = 1) quantizer and the classifier
    is 8-bit (per layer, 300 steps per temperature, no bias correction) with 8-bit input; ``"same"``
    treats every layer alike (as the repo's log/linear pipelines do).  ``dim=None`` picks n per layer:
    the kernel width for 2x2/3x3 convs, else 2 (1 when K is odd).
    """

    w_bits: int = 4
    basis_bits: int | None = 8
    a_bits: int = 8
    granularity: str = "channel"
    dim: int | None = None
    steps: int = 80
    restarts: int = 5
    bias_corr: bool = True
    normalize: str = "layer"
    act_mode: str = "mse"
    edge: str = "latticeq"
    calib_samples: int = 256
    batch_size: int = 64
    recon_iters: int = 0
    recon_lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        LatticeSpec(bits=self.w_bits, basis_bits=self.basis_bits, steps=self.steps, restarts=self.restarts,
                    per_channel=self.granularity == "channel", normalize=self.normalize)
        if self.granularity not in ("channel", "tensor"):
            raise LatticeError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")
        if self.act_mode not in ACT_MODES:
            raise LatticeError(f"act_mode must be one of {ACT_MODES}, got {self.act_mode!r}")
        if self.edge not in EDGE_POLICIES:
            raise LatticeError(f"edge must be one of {EDGE_POLICIES}, got {self.edge!r}")
        if self.a_bits != 32 and not 2 <= self.a_bits <= 16:
            raise LatticeError(f"a_bits must be in 2..16, or 32 for float activations, got {self.a_bits}")
        if self.dim is not None and not 1 <= self.dim <= 8:
            raise LatticeError(f"dim must be in 1..8 or None, got {self.dim}")
        if self.calib_samples < 1 or self.batch_size < 1:
            raise LatticeError("calib_samples and batch_size must be >= 1")
        if self.recon_iters < 0 or not self.recon_lr > 0:
            raise LatticeError(f"need recon_iters >= 0 and recon_lr > 0, got {self.recon_iters}, {self.recon_lr}")
        if self.recon_iters and self.basis_bits is None:
            raise LatticeError("block reconstruction needs a quantized basis (basis_bits)")

    def label(self) -> str:
        basis = f"B{self.basis_bits}" if self.basis_bits else "Bfp"
        acts = self.a_bits if self.a_bits != 32 else "fp"
        return (f"latticeq W{self.w_bits}A{acts}{basis}" + ("" if self.normalize == "layer" else " norm/ch")
                + (f" +recon {self.recon_iters}" if self.recon_iters else ""))

    def to_dict(self) -> dict:
        return asdict(self)


class ActQuantizer(nn.Module):
    """Unsigned ``bits``-bit codes with a zero point; per tensor, or per input channel (``quantile``)."""

    def __init__(self, bits: int, mode: str, channel_axis: int, seed: int = 0) -> None:
        super().__init__()
        self.bits, self.mode, self.axis = bits, mode, channel_axis
        self.observing = False
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.sampler = ValueSampler(SAMPLES_PER_BATCH, seed, channel_axis)

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def per_tensor(self) -> bool:
        return self.scale.ndim == 0

    def _shape(self, x: torch.Tensor) -> list[int]:
        view = [1] * x.ndim
        view[self.axis % x.ndim] = -1
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.sampler.add(x)
            return x
        shape = [] if self.per_tensor else self._shape(x)
        scale, zp = self.scale.reshape(shape), self.zero_point.reshape(shape)
        out = ((self.codes(x) - zp) * scale).to(x.dtype)
        if x.requires_grad:  # block reconstruction: straight-through inside the clipping range (adds exactly 0)
            inside = (x >= -zp * scale) & (x <= (self.qmax - zp) * scale)
            out = out + (x - x.detach()) * inside
        return out

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """``clamp(round(x / s) + z, 0, 2^b - 1)`` in float32: the integers the MAC sees."""
        shape = self._shape(x) if not self.per_tensor else []
        scale, zp = self.scale.reshape(shape).float(), self.zero_point.reshape(shape).float()
        return activation_codes(x.float(), scale, zp, 0, self.qmax)

    def fit(self) -> None:
        """Fix the range from the observed values (see the module docstring for the three modes)."""
        x = self.sampler.take()
        if x is None:
            raise LatticeError("activation quantizer saw no data; is the layer reached by the calibration set?")
        x, self.observing = x.double(), False  # (channels, samples)
        signed = bool(x.min() < 0)
        if self.mode == "mse":
            scale, zp = uniform_range(x.reshape(1, -1), self.bits, mse=True)
            scale, zp = scale[0], zp[0]
        else:
            alpha = x.abs().max() if self.mode == "max" else torch.quantile(x.abs(), QUANTILES.get(self.bits, 1.0), dim=1)
            alpha = alpha.clamp_min(1e-8)
            scale = (2 * alpha if signed else alpha) / self.qmax
            zp = torch.round(alpha / scale) if signed else torch.zeros_like(alpha)
        self.scale = scale.float().to(self.scale.device)
        self.zero_point = zp.float().to(self.scale.device)


class LatticeLayer(nn.Module):
    """A Conv2d/Linear whose weight is a :class:`LatticeCode` (BN folded, bias kept float)."""

    def __init__(self, name: str, inner: nn.Conv2d | nn.Linear, code: LatticeCode, act: ActQuantizer | None) -> None:
        super().__init__()
        self.name, self.inner, self.code, self.act = name, inner, code, act
        self.op = "conv2d" if isinstance(inner, nn.Conv2d) else "linear"
        self.pre_pad = static_padding(inner)
        self.register_buffer("qweight", code.decode().to(inner.weight.device, inner.weight.dtype))
        self.quant_on = True
        self.latent: nn.Parameter | None = None

    def start_latent(self) -> nn.Parameter:
        """Block reconstruction: latent FP weights (divided by the code's ``d``), rounded by Babai in the
        forward pass with a straight-through gradient; the basis, ``eta`` and offset stay fixed.  They start
        at the FP weights, whose Babai coordinates are exactly the current code's."""
        w = self.inner.weight.detach().double().reshape(self.code.out_channels, -1)
        self.latent = nn.Parameter(w / self.code.d[:, None].to(w.device))
        return self.latent

    def latent_coords(self) -> torch.Tensor:
        """Babai coordinates (C, G, n) of the latent weights in the code's fixed basis."""
        code = self.code
        half = 1 << (code.bits - 1)
        units = code.basis.shape[0]
        vectors = self.latent.detach().reshape(units, -1, code.dim)
        coords = babai(vectors, code.basis.to(vectors.device), (-half + 1, half))
        return coords.reshape(code.out_channels, -1, code.dim).to(torch.int64)

    def finish_latent(self, keep: bool) -> None:
        """Leave reconstruction: with ``keep`` the latent weights' coordinates become the code."""
        if keep:
            self.code.coords = self.latent_coords().to(self.code.coords.device)
            self.qweight = self.code.decode().to(self.qweight.device, self.qweight.dtype)
        self.latent = None

    def _latent_weight(self) -> torch.Tensor:
        """The hard lattice weight of the latent weights, with the gradient of the identity (STE)."""
        code, dtype = self.code, self.qweight.dtype
        with torch.no_grad():
            coords = self.latent_coords().double()
            per = code.basis.shape[0]
            w_n = (coords.reshape(per, -1, code.dim) @ code.basis).reshape(code.out_channels, -1) + code.mu[:, None]
            hard = ((code.eta * code.d)[:, None] * w_n).to(dtype)
        soft = (self.latent * code.d[:, None]).to(dtype)
        return (soft + (hard - soft).detach()).reshape(self.qweight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None and (self.quant_on or self.act.observing):
            x = self.act(x)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        w = self.qweight if self.quant_on else self.inner.weight
        if self.quant_on and self.latent is not None:
            w = self._latent_weight()
        if self.op == "linear":
            return F.linear(x, w, self.inner.bias)
        m = self.inner
        return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    def extra_repr(self) -> str:
        return f"{self.name}: {self.op}, W{self.code.bits} n={self.code.dim}, act={self.act.bits if self.act else 'fp'}"


@dataclass
class LatticeResult:
    """The fake-quant model (changed in place), each layer's spec and what the run cost."""

    model: nn.Module
    specs: dict[str, LatticeSpec]
    float_modules: dict[str, str] = field(default_factory=dict)
    folded_bn: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    recon: dict[str, tuple[float, float]] = field(default_factory=dict)  # unit: (block MSE before, after)

    def layers(self) -> list[LatticeLayer]:
        return lattice_layers(self.model)


def lattice_layers(model: nn.Module) -> list[LatticeLayer]:
    return [m for m in model.modules() if isinstance(m, LatticeLayer)]


def set_lattice_quant(model: nn.Module, on: bool) -> None:
    """Switch every LatticeLayer to the quantized (True) or FP (False) path."""
    for m in lattice_layers(model):
        m.quant_on = on


def pick_dim(mod: nn.Conv2d | nn.Linear, requested: int | None) -> int:
    """Vector length n for a layer: ``requested`` if it divides K, else one kernel row / pairs / scalars."""
    k = mod.weight[0].numel()
    if requested is not None:
        if k % requested == 0:
            return requested
        log.warning("dim %d does not divide the %d weights per channel; picking one for this layer", requested, k)
    kw = mod.kernel_size[1] if isinstance(mod, nn.Conv2d) else 1
    if kw in (2, 3) and k % kw == 0:
        return kw
    return 2 if k % 2 == 0 else 1


def forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Supported Conv2d/Linear modules in the order the forward pass reaches them."""
    order: list[tuple[str, nn.Module]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _a, name=n: order.append((name, mod)))
             for n, m in model.named_modules() if supported(m)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    seen: set[str] = set()
    return [(n, m) for n, m in order if not (n in seen or seen.add(n))]


def layer_spec(cfg: LatticeConfig, mod: nn.Module, role: str, seed: int) -> tuple[LatticeSpec, int | None]:
    """The lattice spec and input activation bits (None = float) of a layer in ``role`` first/middle/last."""
    a_bits = None if cfg.a_bits == 32 else cfg.a_bits
    base = dict(bits=cfg.w_bits, basis_bits=cfg.basis_bits, dim=pick_dim(mod, cfg.dim),
                per_channel=cfg.granularity == "channel", steps=cfg.steps, restarts=cfg.restarts,
                bias_corr=cfg.bias_corr, normalize=cfg.normalize, seed=seed)
    if cfg.edge == "latticeq" and role == "first":
        base["dim"] = 1
        a_bits = None if a_bits is None else max(a_bits, EDGE_BITS)
    elif cfg.edge == "latticeq" and role == "last":
        base.update(bits=EDGE_BITS, per_channel=False, steps=LAST_LAYER_STEPS, bias_corr=False, normalize="layer")
        a_bits = None if a_bits is None else max(a_bits, EDGE_BITS)
    return LatticeSpec(**base), a_bits
