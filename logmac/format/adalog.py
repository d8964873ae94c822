"""Log-coded activations (AdaLog): an adaptive log base whose levels the datapath computes exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from logmac.format.errors import MAX_SHIFT_LIMIT, FormatError, check_bits
from logmac.format.log import ZeroMode

ADALOG_R = 37  # AdaLog's fixed denominator: the base is 2**(q / r)
ADALOG_Q_RANGE = range(10, 139)  # the searched base numerators q (spec section 3.1)
ADALOG_MAX_SHIFT = 15  # deepest down-shift an activation level may have; deeper codes decode to zero


@dataclass(frozen=True)
class AdaLogFormat:
    """A non-negative activation coded on AdaLog's adaptive log base ``b = 2**(q/r)``.

    Index ``i`` stands for ``scale * 2**(-i*q/r)``, which the datapath computes exactly as a shift and a
    (bits+1)-bit mantissa: ``m[(i*q) % r] / D * 2**-floor(i*q/r)`` with ``D = 2**(bits+1) - 2`` and
    ``m[j] = round(2**(-j/r) * D)`` (so ``m`` is in ``[D/2, D]``).  For the integer MAC every level is held
    as an integer ``level[i] = m << (top_shift - floor(i*q/r))`` relative to the deepest level, and the
    constant ``1 / (D * 2**top_shift)`` joins the activation scale, which the output requantization
    absorbs.  Because ``level`` is just an unsigned integer, a log weight times a log activation is still
    the weight's shift-and-add applied to it: the two shifts add and the mantissa is the small factor.

    Zero: AdaLog maps everything at or below the deepest index to 0.  ``code`` mode gives the last index
    to zero (``2**bits - 1`` non-zero levels, ``bits`` bits stored); ``flag`` stores a zero bit beside the
    index (``2**bits`` levels, ``bits + 1`` bits).  Indices whose down-shift exceeds ``max_shift`` are
    also zero, which caps the integer level width at ``bits + 1 + max_shift`` bits; quantizer, emulator
    and RTL all apply the same rule through :attr:`nonzero_levels`.
    """

    bits: int
    q: int
    zero: ZeroMode = ZeroMode.CODE
    max_shift: int = ADALOG_MAX_SHIFT

    def __post_init__(self) -> None:
        check_bits(self.bits)
        object.__setattr__(self, "zero", ZeroMode(self.zero))
        if self.zero is ZeroMode.NONE:
            raise FormatError("AdaLog activations need a zero (use zero mode 'code' or 'flag')")
        if not isinstance(self.q, (int, np.integer)) or int(self.q) not in ADALOG_Q_RANGE:
            raise FormatError(f"AdaLog base numerator q must be an integer in 10..138, got {self.q!r}")
        if not isinstance(self.max_shift, (int, np.integer)) or not 0 <= self.max_shift <= MAX_SHIFT_LIMIT:
            raise FormatError(f"AdaLog max_shift must be in 0..{MAX_SHIFT_LIMIT}, got {self.max_shift!r}")

    @property
    def base(self) -> float:
        return 2.0 ** (self.q / ADALOG_R)

    @property
    def denominator(self) -> int:
        """D: the mantissa table's fixed-point denominator."""
        return (1 << (self.bits + 1)) - 2

    @property
    def index_slots(self) -> int:
        """Index values the stored index field can hold, the zero slot in ``code`` mode included."""
        return 1 << self.bits

    @property
    def nonzero_levels(self) -> int:
        """Indices ``0 .. nonzero_levels - 1`` are levels; every larger index (and the zero flag) is 0."""
        slots = self.index_slots - (1 if self.zero is ZeroMode.CODE else 0)
        within_shift = -(-(self.max_shift + 1) * ADALOG_R // self.q)  # indices i with floor(i*q/r) <= max_shift
        return min(slots, within_shift)

    @property
    def zero_index(self) -> int:
        """The index word that stands for zero in ``code`` mode (and the index stored beside a zero flag)."""
        return self.index_slots - 1 if self.zero is ZeroMode.CODE else 0

    @property
    def storage_bits(self) -> int:
        return self.bits + (1 if self.zero is ZeroMode.FLAG else 0)

    def mantissa_table(self) -> np.ndarray:
        """``m[j] = round(2**(-j/r) * D)`` for ``j`` in ``0 .. r-1`` (int64; no ties occur for j > 0)."""
        j = np.arange(ADALOG_R, dtype=np.float64)
        return np.floor(np.exp2(-j / ADALOG_R) * self.denominator + 0.5).astype(np.int64)

    def level_shifts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per non-zero index: (mantissa ``m``, down-shift ``floor(i*q/r)``), the decode table the RTL loads."""
        products = np.arange(self.nonzero_levels, dtype=np.int64) * self.q
        return self.mantissa_table()[products % ADALOG_R], products // ADALOG_R

    @property
    def top_shift(self) -> int:
        """Down-shift of the deepest non-zero level; integer levels are stored relative to it."""
        return int(self.level_shifts()[1][-1])

    def integer_levels(self) -> np.ndarray:
        """``level[i] = m_i << (top_shift - shift_i)``: the unsigned integer each index feeds the MAC."""
        mantissa, shift = self.level_shifts()
        return mantissa << (self.top_shift - shift)

    @property
    def level_bits(self) -> int:
        """Width of the unsigned integer levels (the MAC's activation width for this format)."""
        return int(self.integer_levels().max()).bit_length()

    @property
    def integer_unit(self) -> float:
        """Float value of integer level 1 at scale 1: ``1 / (D * 2**top_shift)``."""
        return 1.0 / (self.denominator * 2.0**self.top_shift)

    def to_dict(self) -> dict:
        return {"kind": "adalog", "bits": int(self.bits), "q": int(self.q), "zero": self.zero.value,
                "max_shift": int(self.max_shift)}


def adalog_indices(x: torch.Tensor | np.ndarray, scale: float, fmt: AdaLogFormat) -> np.ndarray:
    """AdaLog's index rule: ``round(-log_b(clamp(x/scale, 1e-15, 1)))``; ``nonzero_levels`` or more means 0.

    Returns int64 indices with every zero mapped to ``nonzero_levels`` (a sentinel, not a stored word).
    Rounding is half-up in the log domain, so a value at the geometric midpoint goes to the larger level.
    """
    if not scale > 0 or not math.isfinite(scale):
        raise FormatError(f"AdaLog scale must be a positive finite number, got {scale!r}")
    x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if np.isnan(x).any():
        raise FormatError("AdaLog activations contain NaN")
    if (x < 0).any():
        raise FormatError(f"AdaLog activations must be non-negative (min {x.min():.4g}); shift them first")
    unit = np.clip(x / scale, 1e-15, 1.0)
    index = np.floor(-np.log2(unit) * ADALOG_R / fmt.q + 0.5).astype(np.int64)
    return np.minimum(index, fmt.nonzero_levels)


def adalog_words(indices: np.ndarray, fmt: AdaLogFormat) -> np.ndarray:
    """Stored words (uint16) for indices from :func:`adalog_indices`: zero is the zero index or the flag bit."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.min(initial=0) < 0 or indices.max(initial=0) > fmt.nonzero_levels:
        raise FormatError(f"AdaLog index outside 0..{fmt.nonzero_levels}")
    is_zero = indices == fmt.nonzero_levels
    if fmt.zero is ZeroMode.CODE:
        return np.where(is_zero, fmt.zero_index, indices).astype(np.uint16)
    return np.where(is_zero, 1 << fmt.bits, indices).astype(np.uint16)


def adalog_decode_int(words: np.ndarray, fmt: AdaLogFormat) -> np.ndarray:
    """Unsigned integer levels (int64) of stored words; zero codes give 0. Rejects words the format cannot hold."""
    words = np.asarray(words).astype(np.int64)
    if words.min(initial=0) < 0 or words.max(initial=0) >= 1 << fmt.storage_bits:
        raise FormatError(f"AdaLog word outside the {fmt.storage_bits}-bit format")
    if fmt.zero is ZeroMode.FLAG:
        is_zero = (words >> fmt.bits) == 1
        index = words & (fmt.index_slots - 1)
    else:
        index = words
        is_zero = index == fmt.zero_index
    is_zero = is_zero | (index >= fmt.nonzero_levels)
    levels = np.concatenate([fmt.integer_levels(), [0]])
    return np.where(is_zero, 0, levels[np.minimum(index, fmt.nonzero_levels)])


def adalog_decode_float(words: np.ndarray, scale: float, fmt: AdaLogFormat) -> np.ndarray:
    """Float activations the datapath computes: ``scale * level * integer_unit`` (float64)."""
    return adalog_decode_int(words, fmt).astype(np.float64) * (scale * fmt.integer_unit)
