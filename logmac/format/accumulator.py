"""The accumulator contract: activation range, exact-sum width, and the fit to the register (saturate or wrap)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from logmac.format.activation import activation_absmax
from logmac.format.errors import FormatError


def accumulator_bits(k: int, act_bits: int, act_signed: bool, max_multiplier: int, bias_absmax: int = 0) -> int:
    """Two's-complement width that holds any sum of ``k`` products (plus a bias) without overflow.

    |acc| <= k * max|x| * max|M| + |bias|; the width is that bound's bit length plus the sign bit.
    """
    if k < 1 or max_multiplier < 1 or bias_absmax < 0:
        raise FormatError(f"accumulator rule needs k >= 1 and max_multiplier >= 1, got k={k}, M={max_multiplier}")
    bound = k * activation_absmax(act_bits, act_signed) * max_multiplier + bias_absmax
    return bound.bit_length() + 1


OverflowMode = Literal["saturate", "wrap"]


def accumulator_range(acc_bits: int) -> tuple[int, int]:
    """Smallest and largest value of an ``acc_bits``-bit two's-complement accumulator."""
    if not 2 <= acc_bits <= 63:
        raise FormatError(f"accumulator width must be 2..63 bits, got {acc_bits}")
    return -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1


def apply_accumulator(exact: np.ndarray, acc_bits: int, mode: OverflowMode) -> tuple[np.ndarray, np.ndarray]:
    """The accumulator's overflow contract, shared by the emulator and the RTL.

    The engine sums products exactly (its adder tree and guard bits are wide enough for any
    configured K); only the result is fitted to the ``acc_bits`` register.  ``saturate`` clamps it,
    ``wrap`` keeps its low ``acc_bits`` bits as two's complement.  The returned flag is set wherever
    the exact sum was out of range, so overflow never passes silently.
    """
    lo, hi = accumulator_range(acc_bits)
    exact = np.asarray(exact, dtype=np.int64)
    overflow = (exact < lo) | (exact > hi)
    if mode == "saturate":
        return np.clip(exact, lo, hi), overflow
    if mode == "wrap":
        span = np.int64(1) << np.int64(acc_bits)
        return ((exact - lo) & (span - 1)) + lo, overflow
    raise FormatError(f"overflow mode must be 'saturate' or 'wrap', got {mode!r}")

