"""Uniform quantizers: the linear weight baseline and the activation quantizer of the integer datapath.

Both are asymmetric with a zero point (``x_hat = s * (clamp(round(x/s) + z, 0, 2^b - 1) - z)``); the range
is found by min/max or by BRECQ's MSE search over 80 shrink ratios scored by ``|x - x_hat|^2.4``.
"""

from __future__ import annotations

import torch
from torch import nn

from logmac.format import activation_codes

MSE_STEPS = 80
MSE_P = 2.4
OBSERVER_SAMPLES = 1 << 18  # values an activation observer keeps per batch (seeded subsample)


def _qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo) / ((1 << bits) - 1)).clamp(min=1e-12)
    zp = torch.round(-lo / scale).clamp(0, (1 << bits) - 1)
    return scale, zp


def fake_uniform(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest uniform fake quantization (broadcast ``scale``/``zp`` yourself)."""
    q = activation_codes(x, scale, zp, 0, (1 << bits) - 1)
    return (q - zp) * scale


def uniform_range(x2d: torch.Tensor, bits: int, mse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, zero_point) of ``x2d`` (rows, K): min/max, or the MSE-best shrink of it."""
    lo, hi = x2d.min(1).values, x2d.max(1).values
    scale, zp = _qparams(lo, hi, bits)
    if not mse:
        return scale, zp
    best = torch.full_like(lo, float("inf"))
    for i in range(MSE_STEPS):
        c = 1.0 - 0.01 * i
        s, z = _qparams(lo * c, hi * c, bits)
        err = (fake_uniform(x2d, s[:, None], z[:, None], bits) - x2d).abs().pow(MSE_P).sum(1)
        better = err < best
        best = torch.where(better, err, best)
        scale, zp = torch.where(better, s, scale), torch.where(better, z, zp)
    return scale, zp


def uniform_codes(w2d: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integer codes ``clamp(round(w/s) + z, 0, 2^b - 1)`` (int64)."""
    return torch.clamp(torch.round(w2d / scale[:, None]) + zp[:, None], 0, (1 << bits) - 1).long()


class RoundSTE(torch.autograd.Function):
    """round() whose gradient is the identity, so reconstruction can train through activation quantizers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad


class ValueSampler:
    """The observer every activation quantizer calibrates from: a seeded sample of the values it sees.

    Per batch it keeps at most ``cap`` values per channel (``channel_axis``) or of the whole tensor (``None``),
    drawn with its own generator, plus each channel's minimum and maximum, so the range ends are never lost.
    """

    def __init__(self, cap: int, seed: int, channel_axis: int | None = None) -> None:
        self.cap, self.axis = cap, channel_axis
        self._rows: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        rows = x.reshape(1, -1).float() if self.axis is None else x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1).float()
        if rows.shape[1] > self.cap:
            keep = torch.randint(rows.shape[1], (self.cap,), generator=self._gen).to(rows.device)
            rows = torch.cat([rows[:, keep], rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)], 1)
        self._rows.append(rows.cpu())

    def take(self) -> torch.Tensor | None:
        """Everything sampled so far as (channels, values), emptying the sampler; None if it saw nothing."""
        if not self._rows:
            return None
        rows, self._rows = torch.cat(self._rows, 1), []
        return rows


class ActQuant(nn.Module):
    """Per-tensor unsigned ``bits``-bit activation quantizer with a zero point.

    States: ``observe`` (pass through, collect a seeded sample of the values), then :meth:`init_range`
    fixes scale and zero point (``mse`` or ``percentile``), after which it fake-quantizes when enabled.
    """

    def __init__(self, bits: int, init: str = "mse", seed: int = 0) -> None:
        super().__init__()
        self.bits, self.init = bits, init
        self.observing = False
        self.enabled = False
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.sampler = ValueSampler(OBSERVER_SAMPLES, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.sampler.add(x)
            return x
        if not self.enabled:
            return x
        q = activation_codes(x, self.scale, self.zero_point, 0, (1 << self.bits) - 1, rounding=RoundSTE.apply)
        return (q - self.zero_point) * self.scale

    def init_range(self) -> None:
        """Fix scale and zero point from the observed values and switch quantization on."""
        x = self.sampler.take()
        if x is None:
            raise RuntimeError("activation quantizer saw no data; is the layer reached by the calibration set?")
        if self.init == "percentile":
            lo, hi = torch.quantile(x, 1e-4, dim=1), torch.quantile(x, 1 - 1e-4, dim=1)
            lo = torch.where(x.min(1).values >= 0, torch.zeros_like(lo), lo)
            scale, zp = _qparams(lo, hi, self.bits)
        else:
            scale, zp = uniform_range(x, self.bits, mse=True)
        self.scale.fill_(float(scale[0]))
        self.zero_point.fill_(float(zp[0]))
        self.observing, self.enabled = False, True

    def export(self) -> dict:
        """The ``act_in`` attrs of the artifact schema."""
        return {"bits": self.bits, "signed": False, "scale": float(self.scale), "zero_point": int(self.zero_point),
                "qmin": 0, "qmax": (1 << self.bits) - 1}
