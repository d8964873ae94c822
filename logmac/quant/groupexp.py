"""Choosing per-group exponent offsets on a fitted channel grid (``logmac/format/groups.py``, algorithms.md §2.6b).

After the channel's grid is fitted (log DBS/SFS/ABS, or the uniform range), every group of ``group_size``
inputs along K may move its levels by ``2**e``, ``e`` a ``group_bits``-bit signed integer.  Each group takes the
``e`` whose round-to-nearest error, weighted by the Hessian diagonal (the SFS score's pre-filter; plain squared
error without data), is smallest; ties keep ``e = 0``.  Rounding on a shifted grid is rounding ``w / 2**e`` on
the channel grid and multiplying back, exact because ``2**e`` is a power of two, so the codes are what
``format.encode`` / ``uniform_codes`` give for ``w / 2**e``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from logmac.format.groups import exponent_range, group_count, group_factors

Nearest = Callable[[torch.Tensor], torch.Tensor]  # (C, K) weights -> nearest values on the channel grids


def search_group_exponents(w2d: torch.Tensor, nearest: Nearest, group_size: int, group_bits: int,
                           diag: torch.Tensor | None = None) -> np.ndarray:
    """(C, groups) int8 exponents minimising each group's ``sum d (w - Q(w))^2`` (``diag`` (C, K) or None)."""
    w = w2d.double()
    C, K = w.shape
    n = group_count(K, group_size)
    d = torch.ones_like(w) if diag is None else diag.to(w)
    lo, hi = exponent_range(group_bits)
    cands = [0] + [e for e in range(lo, hi + 1) if e != 0]  # e = 0 first: argmin keeps it on ties
    pad = n * group_size - K
    scores = []
    for e in cands:
        f = 2.0 ** e
        err = d * (w - nearest(w / f) * f) ** 2
        scores.append(torch.nn.functional.pad(err, (0, pad)).reshape(C, n, group_size).sum(-1))
    best = torch.stack(scores).argmin(0).cpu().numpy()
    return np.asarray(cands, dtype=np.int8)[best]


def factor_tensor(exps: np.ndarray, k: int, group_size: int, like: torch.Tensor) -> torch.Tensor:
    """(C, K) ``2**e`` per weight, in ``like``'s dtype and device."""
    return torch.from_numpy(group_factors(exps, k, group_size)).to(like.device, like.dtype)


class GroupScaled(nn.Module):
    """A learned rounding (LLR / AdaRound) run on ``w / 2**e`` whose output is scaled back by ``2**e``.

    The soft and hard values are the inner ones on the shifted grids; the codes (``indices`` / ``codes``) are
    the inner ones unchanged, which is what the artifact stores next to the group exponents."""

    def __init__(self, inner: nn.Module, factor: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("factor", factor)

    @property
    def v(self) -> nn.Parameter:
        return self.inner.v

    @property
    def hard(self) -> bool:
        return self.inner.hard

    @hard.setter
    def hard(self, value: bool) -> None:
        self.inner.hard = value

    def regularizer(self, beta: float) -> torch.Tensor:
        return self.inner.regularizer(beta)

    def forward(self, hard: bool = False) -> torch.Tensor:
        return self.inner(hard) * self.factor.to(self.inner.lo.dtype)
