"""Learned rounding: AdaRound on the uniform grid and LLR (AdaRound in the exponent domain) on the log grid.

Each weight sits between two neighbouring levels ``lo <= |w| < hi`` and learns ``h(V)`` in [0, 1], the
rectified sigmoid of a free variable V.  Uniform: ``w_soft = lo + h * (hi - lo)``.  Log: the exponent is
``floor + h`` so ``w_soft = lo * (hi / lo) ** h`` (geometric interpolation); both start at the FP weight
and end at ``h = 1[V >= 0]``.  Under the smallest log level the lower neighbour is the zero code
(``lo`` is the virtual level one grid step down, decoded as 0 once hard); outside the grid the value is fixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from logmac.format import LogFormat, ZeroMode, zero_threshold_ratio

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    h = h.clamp(1e-4, 1 - 1e-4)
    return -torch.log((ZETA - GAMMA) / (h - GAMMA) - 1)


def round_regularizer(v: torch.Tensor, beta: float) -> torch.Tensor:
    """AdaRound's ``sum(1 - |2h - 1|^beta)``: zero only when every h is 0 or 1."""
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def beta_schedule(step: int, total: int, warmup: float, start: float = 20.0, end: float = 2.0) -> float | None:
    """None during warm-up (no regulariser), then beta decays linearly from ``start`` to ``end``."""
    first = int(warmup * total)
    if step < first:
        return None
    frac = (step - first) / max(1, total - first)
    return end + (start - end) * max(0.0, 1 - frac)


class SoftRounding(nn.Module):
    """Shared state: per-element neighbours and V; subclasses say how to interpolate."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, frac: torch.Tensor, learn: torch.Tensor) -> None:
        super().__init__()
        self.hard = False  # evaluate with the hard decisions (used to score the result)
        self.register_buffer("learn", learn)
        self._learn_index: torch.Tensor | None = None
        self.v = nn.Parameter(torch.where(learn, inverse_rectified_sigmoid(frac), torch.full_like(frac, -10.0)).float())

    def h(self, hard: bool) -> torch.Tensor:
        if hard or self.hard:
            return (self.v >= 0).to(self.lo.dtype)
        return rectified_sigmoid(self.v).to(self.lo.dtype)

    def regularizer(self, beta: float) -> torch.Tensor:
        """``round_regularizer`` over the learned elements, gathered by indices found once (``v[learn]`` would
        search the mask on every step; the elements, their order and so the result are the same)."""
        if self._learn_index is None:
            self._learn_index = self.learn.reshape(-1).nonzero()[:, 0]
        return round_regularizer(self.v.reshape(-1).index_select(0, self._learn_index), beta)


class UniformRounding(SoftRounding):
    """AdaRound for asymmetric uniform codes ``clamp(floor(w/s) + h + z, 0, 2^b - 1)``."""

    def __init__(self, w2d: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, bits: int) -> None:
        x = w2d / scale[:, None]
        floor = torch.floor(x)
        super().__init__(x - floor, torch.ones_like(x, dtype=torch.bool))
        self.bits = bits
        self.register_buffer("floor", floor)
        self.register_buffer("scale", scale[:, None].clone())
        self.register_buffer("zp", zp[:, None].clone())
        self.lo = self.floor  # for dtype in h()

    def codes(self) -> torch.Tensor:
        return torch.clamp(self.floor + self.h(True) + self.zp, 0, (1 << self.bits) - 1).long()

    def forward(self, hard: bool = False) -> torch.Tensor:
        q = torch.clamp(self.floor + self.h(hard) + self.zp, 0, (1 << self.bits) - 1)
        return (q - self.zp) * self.scale


class LogRounding(SoftRounding):
    """LLR: learn up/down in the exponent domain between the two log levels around each weight."""

    def __init__(self, w2d: torch.Tensor, levels: torch.Tensor, fmt: LogFormat) -> None:
        w = w2d.double()
        sign = (w < 0).long()
        mag = w.abs()
        lv = torch.where(sign[:, :, None] == 1, levels[:, 1:2, :], levels[:, 0:1, :]).to(w)  # (C, K, n)
        n = lv.shape[-1]
        below = (mag[..., None] >= lv).sum(-1) - 1  # index of the level at or under |w|; -1 under the grid
        has_zero = fmt.zero is not ZeroMode.NONE
        virtual = lv[..., 0] * zero_threshold_ratio(fmt) ** 2  # one grid step under the smallest level
        lo = torch.gather(lv, 2, below.clamp(min=0)[..., None])[..., 0]
        hi = torch.gather(lv, 2, (below + 1).clamp(max=n - 1)[..., None])[..., 0]
        lo = torch.where(below < 0, virtual, lo)
        learn = (below < n - 1) & ((below >= 0) | (has_zero & (mag >= virtual)))
        frac = torch.where(learn, torch.log(mag.clamp(min=1e-300) / lo) / torch.log(hi / lo), torch.zeros_like(mag))
        super().__init__(frac.float(), learn)
        # Fixed elements: over the top -> top; under the grid -> zero (or the smallest level without a zero code).
        fixed_index = torch.where(below >= n - 1, torch.full_like(below, n - 1), torch.zeros_like(below))
        fixed_zero = (~learn) & (below < 0) & has_zero
        self.register_buffer("sign", sign)
        self.register_buffer("below", below)
        self.register_buffer("fixed_index", fixed_index)
        self.register_buffer("fixed_zero", fixed_zero)
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.register_buffer("fixed_value", torch.where(fixed_zero, torch.zeros_like(mag),
                                                        torch.gather(lv, 2, fixed_index[..., None])[..., 0]))
        self.register_buffer("log_ratio", torch.log(hi / lo))
        # The soft path with the sign folded in (negation is exact, so the values and gradients are the same
        # as negating afterwards, without a sign select per step and its backward).
        neg = sign == 1
        self.register_buffer("signed_lo", torch.where(neg, -lo, lo))
        self.register_buffer("signed_fixed", torch.where(neg, -self.fixed_value, self.fixed_value))

    def forward(self, hard: bool = False) -> torch.Tensor:
        hard = hard or self.hard
        h = self.h(hard)
        if not hard:
            return torch.where(self.learn, self.signed_lo * torch.exp(h * self.log_ratio), self.signed_fixed)
        val = torch.where(h > 0, self.hi, torch.where(self.below < 0, torch.zeros_like(self.lo), self.lo))
        val = torch.where(self.learn, val, self.fixed_value)
        return torch.where(self.sign == 1, -val, val)

    def indices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hard ``(sign, non-zero level index, is_zero)`` for ``loggrid.words_from``."""
        up = self.h(True) > 0
        index = torch.where(self.learn, self.below + up.long(), self.fixed_index).clamp(min=0)
        is_zero = torch.where(self.learn, (self.below < 0) & ~up, self.fixed_zero)
        return self.sign, index, is_zero


def reconstruction_lr(step: int, total: int, lr: float) -> float:
    """Cosine decay from ``lr`` to ``0.3 * lr`` (LogART's schedule)."""
    return lr * (0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * step / max(1, total))))

