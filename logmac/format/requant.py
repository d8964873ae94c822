"""Requantization, the datapath's only rounding, and the fixed-point multiplier it is built from.

``y = clamp((((acc + bias) * M + 2**(S - 1)) >> S) + zp, lo, hi)`` per output channel: an integer
multiplier ``M`` and right shift ``S`` (round half up), the output zero point, then the activation
function as a clamp (ReLU: ``lo = zp``; ReLU6: ``hi`` = the code of 6).  gemmlowp/TFLite-style, with
the rounding constant added before one arithmetic shift.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from logmac.format.errors import FormatError

MAX_REQUANT_SHIFT = 62
MULTIPLIER_BITS = 31  # M is a normalised 31-bit mantissa in [2**30, 2**31), as gemmlowp's

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def fixed_point_multiplier(real: float) -> tuple[int, int]:
    """``real = M * 2**-S`` with ``M`` in [2**30, 2**31) (gemmlowp's normalised 31-bit mantissa), S in 0..62.

    Multipliers below 2**-32 (dead channels) keep ``S = 62`` with a smaller, possibly zero, ``M``.
    """
    if not math.isfinite(real) or real <= 0:
        raise FormatError(f"requantization multiplier must be finite and positive, got {real}")
    frac, exp = math.frexp(real)  # real = frac * 2**exp, frac in [0.5, 1)
    m = round(frac * (1 << MULTIPLIER_BITS))
    if m == 1 << MULTIPLIER_BITS:
        m, exp = m // 2, exp + 1
    shift = MULTIPLIER_BITS - exp
    if shift > MAX_REQUANT_SHIFT:  # a (near-)dead channel: keep the largest shift and a denormalised (possibly zero) M
        return round(real * 2.0**MAX_REQUANT_SHIFT), MAX_REQUANT_SHIFT
    if shift < 0:
        raise FormatError(f"requantization multiplier {real:.3e} needs a left shift; not supported by the datapath")
    return m, shift


def check_requant(multiplier: np.ndarray | torch.Tensor, shift: np.ndarray | torch.Tensor) -> None:
    """Reject what the requantization stage cannot hold: negative multipliers, shifts outside 0..62."""
    m, s = torch.as_tensor(np.asarray(multiplier)), torch.as_tensor(np.asarray(shift))
    if (m < 0).any() or (s < 0).any() or (s > MAX_REQUANT_SHIFT).any():
        raise FormatError(f"requantization needs multipliers >= 0 and shifts in 0..{MAX_REQUANT_SHIFT}")


def _exact_python(total: np.ndarray, m: np.ndarray, s: np.ndarray, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """The same formula on Python integers, for products that would not fit in int64 (channels on the last axis)."""
    obj = total.astype(object) * m.astype(object)
    y = np.vectorize(lambda v, sh: (v + ((1 << (sh - 1)) if sh else 0)) >> sh, otypes=[object])(obj, s)
    y = np.clip(y, lo - zero_point - 1, hi - zero_point + 1).astype(np.int64)
    return np.clip(y + zero_point, lo, hi)


def requantize(acc: Array, multiplier: np.ndarray, shift: np.ndarray, zero_point: int, lo: int, hi: int,
               bias: np.ndarray | None = None, *, channel_axis: int = -1) -> Array:
    """y = clamp((((acc + bias) * M + 2**(S-1)) >> S) + zp, lo, hi), round half up, per output channel.

    ``acc`` is a numpy array or a torch tensor (any device) and the result is the same kind.  ``channel_axis``
    names its channel axis (1 for NCHW conv outputs).  Runs in int64 when every product fits and on exact
    Python integers when one does not.
    """
    a = torch.as_tensor(acc)
    if a.dtype.is_floating_point:
        raise FormatError(f"accumulators must be integers, got dtype {a.dtype}")
    check_requant(multiplier, shift)
    axis = channel_axis % max(a.ndim, 1)
    m = torch.as_tensor(np.asarray(multiplier, dtype=np.int64), device=a.device)
    s = torch.as_tensor(np.asarray(shift, dtype=np.int64), device=a.device)
    view = [1] * a.ndim
    if a.ndim:
        view[axis] = -1

    def per_channel(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(view) if v.ndim and a.ndim else v

    total = a.to(torch.int64)
    if bias is not None:
        total = total + per_channel(torch.as_tensor(np.asarray(bias, dtype=np.int64), device=a.device))
    absmax = int(total.abs().max()) if total.numel() else 0
    m_max, s_max = (int(m.max()), int(s.max())) if m.numel() and s.numel() else (0, 0)
    if absmax * m_max + (1 << s_max) >= (1 << 62):
        moved = np.moveaxis(total.cpu().numpy(), axis, -1) if a.ndim else total.cpu().numpy()
        y = _exact_python(moved, np.asarray(multiplier), np.asarray(shift), zero_point, lo, hi)
        y = torch.from_numpy(np.ascontiguousarray(np.moveaxis(y, -1, axis) if a.ndim else y)).to(a.device)
    else:
        m, s = per_channel(m), per_channel(s)
        rounding = torch.where(s > 0, torch.ones_like(s) << (s - 1).clamp(min=0), torch.zeros_like(s))
        y = torch.clamp(((total * m + rounding) >> s) + zero_point, lo, hi)
    return y if isinstance(acc, torch.Tensor) else y.cpu().numpy()
