"""The weight-code format: the one source of truth that ``quant``, ``sim`` and ``hw`` all read.

A log weight is stored as an n-bit *code word*: a sign bit and an (n-1)-bit level index
(``word = sign << (n-1) | index``).  Each output channel has a *decode table* that maps
``(sign, index)`` to a pair ``(u, h)``: the level's integer multiplier is ``2**u`` when ``h == 0``
and ``2**u + 2**(u-1)`` (the "1+1/2" approximation of ``2**u * sqrt(2)``) when ``h == 1``.  The float
weight is ``channel_scale * level``, where the level is that multiplier, or with the approximation
switched off the exact ``2**u * sqrt(2)``.  One table per sign lets the asymmetric range (ABS) give the
two signs different level sets with the same decoder.  See ``shared/notes/datapath.md``.

Zero handling (``ZeroMode``):

- ``code``: index 0 means zero (either sign), so each sign has ``L - 1`` levels; n bits per weight.
- ``flag``: a separate zero bit above the code (``word = zero << n | sign << (n-1) | index``);
  ``L`` levels per sign, n + 1 bits per weight.
- ``none``: no zero; magnitudes below the smallest level clamp to it; n bits per weight.

Uniform (linear) weights, the baseline, use ``UniformFormat``: two's complement integers with a
per-channel float scale, decoded by the same integer MAC with a real multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from logmac.format.errors import MAX_SHIFT_LIMIT, SQRT2, FormatError, check_bits


class GridKind(str, Enum):
    """Which exponent grid the levels lie on."""

    LOG_2 = "log_2"
    LOG_SQRT2 = "log_sqrt2"
    LOG_DYNAMIC = "log_dynamic"


class ZeroMode(str, Enum):
    """How zero is represented (see the module docstring)."""

    CODE = "code"
    FLAG = "flag"
    NONE = "none"



def base2_counts(grid: GridKind, n_levels: int) -> range:
    """How many of a channel's ``n_levels`` levels may sit on the base-2 part of the grid.

    log_2 uses base 2 only, log_sqrt2 sqrt(2) only, and log_dynamic (DBS) any mix per channel.
    """
    grid = GridKind(grid)
    if grid is GridKind.LOG_2:
        return range(n_levels, n_levels + 1)
    if grid is GridKind.LOG_SQRT2:
        return range(0, 1)
    return range(0, n_levels + 1)


def grid_span(n_levels: int, n_base2: int) -> int:
    """Largest shift u a channel with this grid needs, whatever the parity of its top exponent."""
    return max(1, *(shift_span(grid_half_exponents(n_levels, top_k, n_base2)) for top_k in (0, 1)))


def shift_span(half_exponents: np.ndarray) -> int:
    """Largest shift u that levels at these half-octave exponents need once e_ref keeps every shift a
    left shift (the same e_ref rule as :func:`table_from_exponents`)."""
    k = np.asarray(half_exponents, dtype=np.int64)
    octave = k // 2
    return int(octave.max() - (octave - k % 2).min())


def grid_half_exponents(n_levels: int, top_k: int, n_base2: int) -> np.ndarray:
    """Ascending level exponents, in half-octave units, of one sign of one channel.

    The top ``n_levels - n_base2`` levels step by sqrt(2) down from ``sqrt(2)**top_k``; below them
    ``n_base2`` levels step by 2 from the largest power of two under the smallest sqrt(2) level
    (LogART's mixed grid; pure base 2 when ``n_base2 == n_levels``).
    """
    if not 0 <= n_base2 <= n_levels:
        raise FormatError(f"n_base2 must be in 0..{n_levels}, got {n_base2}")
    n_sqrt2 = n_levels - n_base2
    sqrt2_part = np.arange(top_k - n_sqrt2 + 1, top_k + 1, dtype=np.int64)
    top_octave = (top_k - n_sqrt2) // 2
    base2_part = 2 * np.arange(top_octave - n_base2 + 1, top_octave + 1, dtype=np.int64)
    return np.concatenate([base2_part, sqrt2_part])


@dataclass(frozen=True)
class LogFormat:
    """An n-bit exponent code: sign + (n-1)-bit level index on a log grid.

    ``max_shift`` is the largest shift ``u`` a decode table may hold (the decoder's shift width is
    ``max_shift.bit_length()``); by default it is the grid's natural span rounded up to a full field,
    which leaves head-room for the asymmetric-range extension.
    """

    bits: int
    grid: GridKind = GridKind.LOG_DYNAMIC
    hardware_approx: bool = True
    zero: ZeroMode = ZeroMode.CODE
    max_shift: int = field(default=-1)

    def __post_init__(self) -> None:
        check_bits(self.bits)
        object.__setattr__(self, "grid", GridKind(self.grid))
        object.__setattr__(self, "zero", ZeroMode(self.zero))
        spans = {n2: grid_span(self.nonzero_levels, n2) for n2 in base2_counts(self.grid, self.nonzero_levels)}
        if self.max_shift == -1:
            field_max = (1 << max(spans.values()).bit_length()) - 1
            object.__setattr__(self, "max_shift", min(MAX_SHIFT_LIMIT, field_max))
        if not isinstance(self.max_shift, (int, np.integer)) or not 1 <= self.max_shift <= MAX_SHIFT_LIMIT:
            raise FormatError(f"max_shift must be in 1..{MAX_SHIFT_LIMIT}, got {self.max_shift!r}")
        if min(spans.values()) > self.max_shift:
            raise FormatError(
                f"a {self.bits}-bit {self.grid.value} grid ({self.zero.value} zero) spans "
                f"{min(spans.values())} octaves, beyond the datapath's shift limit of {self.max_shift}; "
                f"use fewer bits or a sqrt(2)/dynamic grid"
            )

    @property
    def levels_per_sign(self) -> int:
        """L = 2**(n-1): index slots per sign, including the zero slot in ``code`` mode."""
        return 1 << (self.bits - 1)

    @property
    def nonzero_levels(self) -> int:
        """Non-zero levels each sign can reach."""
        return self.levels_per_sign - (1 if self.zero is ZeroMode.CODE else 0)

    @property
    def storage_bits(self) -> int:
        """Bits stored per weight, the zero flag included."""
        return self.bits + (1 if self.zero is ZeroMode.FLAG else 0)

    @property
    def base2_choices(self) -> list[int]:
        """Base-2 level counts (DBS choices) whose grid fits within ``max_shift``."""
        n = self.nonzero_levels
        return [n2 for n2 in base2_counts(self.grid, n) if grid_span(n, n2) <= self.max_shift]

    @property
    def shift_bits(self) -> int:
        """Width of the ``u`` field in a decode-table entry."""
        return self.max_shift.bit_length()

    @property
    def max_multiplier(self) -> int:
        """Largest integer multiplier any table of this format can hold (a half step at the top shift
        on grids that have half steps)."""
        half = 0 if self.grid is GridKind.LOG_2 else 1
        return int(multipliers(np.int64(self.max_shift), np.int64(half)))

    def to_dict(self) -> dict:
        return {
            "kind": "log",
            "bits": int(self.bits),
            "grid": self.grid.value,
            "hardware_approx": bool(self.hardware_approx),
            "zero": self.zero.value,
            "max_shift": int(self.max_shift),
        }




# ----------------------------------------------------------------------------------------------
# Code words
# ----------------------------------------------------------------------------------------------

def make_words(sign: np.ndarray, index: np.ndarray, zero: np.ndarray | None, fmt: LogFormat) -> np.ndarray:
    """Assemble code words (uint16) from sign bits, level indices and (``flag`` mode) zero bits."""
    sign = np.asarray(sign).astype(np.uint16)
    index = np.asarray(index).astype(np.uint16)
    words = (sign << (fmt.bits - 1)) | index
    if fmt.zero is ZeroMode.FLAG:
        if zero is None:
            raise FormatError("flag zero mode needs the zero bits")
        words = words | (np.asarray(zero).astype(np.uint16) << fmt.bits)
    return words


def split_words(words: np.ndarray, fmt: LogFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split code words into (sign, index, is_zero), checking every word fits the format."""
    words = np.asarray(words)
    if words.size and (words.min() < 0 or int(words.max()) >= (1 << fmt.storage_bits)):
        bad = int(words.max()) if words.max() >= (1 << fmt.storage_bits) else int(words.min())
        raise FormatError(f"code word {bad} does not fit in {fmt.storage_bits} bits of {fmt.to_dict()}")
    words = words.astype(np.int64)
    index = words & (fmt.levels_per_sign - 1)
    sign = (words >> (fmt.bits - 1)) & 1
    if fmt.zero is ZeroMode.FLAG:
        is_zero = ((words >> fmt.bits) & 1).astype(bool)
    elif fmt.zero is ZeroMode.CODE:
        is_zero = index == 0
    else:
        is_zero = np.zeros(words.shape, dtype=bool)
    return sign, index, is_zero


# ----------------------------------------------------------------------------------------------
# Decode tables
# ----------------------------------------------------------------------------------------------

@dataclass
class DecodeTable:
    """Per-channel, per-sign map from level index to (shift u, half h), plus the channel scale.

    ``u`` and ``h`` have shape (channels, 2, L), sign 0 = positive.  ``scale`` (channels,) is the
    float value of multiplier 1 for that channel (alpha * 2**e_ref); it folds into requantization.
    In ``code`` zero mode entry 0 is the zero slot and must hold (0, 0).
    """

    u: np.ndarray
    h: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        self.u = np.asarray(self.u, dtype=np.int64)
        self.h = np.asarray(self.h, dtype=np.int64)
        self.scale = np.asarray(self.scale, dtype=np.float64)

    @property
    def channels(self) -> int:
        return self.u.shape[0]

    def validate(self, fmt: LogFormat) -> None:
        """Raise FormatError unless this table is a legal decoder for ``fmt``."""
        L = fmt.levels_per_sign
        shape = (self.scale.shape[0], 2, L) if self.scale.ndim == 1 else None
        if shape is None or self.u.shape != shape or self.h.shape != shape:
            raise FormatError(
                f"decode table shapes u{self.u.shape} h{self.h.shape} scale{self.scale.shape} "
                f"do not match (channels, 2, {L}) for {fmt.bits}-bit codes"
            )
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise FormatError("decode table channel scales must be finite and positive")
        if np.any((self.h != 0) & (self.h != 1)):
            raise FormatError("decode table half-step bits h must be 0 or 1")
        if self.u.min(initial=0) < 0 or self.u.max(initial=0) > fmt.max_shift:
            raise FormatError(f"decode table shift u out of range 0..{fmt.max_shift}")
        if np.any((self.h == 1) & (self.u < 1)):
            raise FormatError("a half-step entry (h=1) needs u >= 1 so that x << (u-1) is a left shift")
        if fmt.grid is GridKind.LOG_2 and np.any(self.h):
            raise FormatError("a log_2 table cannot hold half-step (sqrt 2) entries")
        first = 1 if fmt.zero is ZeroMode.CODE else 0
        if first and np.any(self.u[:, :, 0] | self.h[:, :, 0]):
            raise FormatError("in 'code' zero mode table entry 0 is the zero slot and must be (0, 0)")
        levels = level_values(self, fmt, hardware=True)[:, :, first:]
        if levels.shape[-1] > 1 and np.any(np.diff(levels, axis=-1) <= 0):
            raise FormatError("decode table levels must increase strictly with the index")

    def max_multiplier(self) -> int:
        """Largest integer multiplier this table can produce (for the accumulator rule)."""
        return int(multipliers(self.u, self.h).max(initial=1))


def multipliers(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Integer multiplier the datapath applies for table entries: 2**u + h * 2**(u-1)."""
    u = np.asarray(u, dtype=np.int64)
    h = np.asarray(h, dtype=np.int64)
    return (np.int64(1) << u) + h * ((np.int64(1) << np.maximum(u, 1)) >> 1)


def level_values(table: DecodeTable, fmt: LogFormat, hardware: bool | None = None) -> np.ndarray:
    """Float magnitude of every table entry in units of the channel scale, shape (C, 2, L).

    ``hardware=True`` gives what the datapath computes (1.5 for a half step); ``False`` the exact
    sqrt(2) level; ``None`` follows ``fmt.hardware_approx``.
    """
    hw = fmt.hardware_approx if hardware is None else hardware
    base = np.ldexp(1.0, table.u)
    half = 1.5 if hw else SQRT2
    return np.where(table.h == 1, base * half, base)


def table_from_exponents(fmt: LogFormat, half_exponents: np.ndarray, alpha: np.ndarray) -> DecodeTable:
    """Build a decode table from each level's exponent in half-octave units.

    ``half_exponents`` has shape (C, 2, nonzero_levels), ascending along the last axis: level k is worth
    ``alpha * sqrt(2)**k``.  The channel's reference exponent e_ref = min(floor(k/2) - (k mod 2)) keeps
    every shift a left shift; it folds into ``scale = alpha * 2**e_ref``.  Levels on even k have h = 0.
    """
    k = np.asarray(half_exponents, dtype=np.int64)
    C = k.shape[0]
    if k.shape != (C, 2, fmt.nonzero_levels):
        raise FormatError(f"half_exponents must have shape (C, 2, {fmt.nonzero_levels}), got {k.shape}")
    octave, half = np.floor_divide(k, 2), np.mod(k, 2)
    e_ref = (octave - half).min(axis=(1, 2))
    u = octave - e_ref[:, None, None]
    first = 1 if fmt.zero is ZeroMode.CODE else 0
    full_u = np.zeros((C, 2, fmt.levels_per_sign), dtype=np.int64)
    full_h = np.zeros_like(full_u)
    full_u[:, :, first:] = u
    full_h[:, :, first:] = half
    scale = np.asarray(alpha, dtype=np.float64) * np.ldexp(1.0, e_ref)
    table = DecodeTable(full_u, full_h, scale)
    table.validate(fmt)
    return table


# ----------------------------------------------------------------------------------------------
# Encode / decode
# ----------------------------------------------------------------------------------------------

def zero_threshold_ratio(fmt: LogFormat) -> float:
    """Below ``ratio * smallest level`` a weight encodes to zero: the geometric midpoint to the next
    level one grid step down (an octave; half an octave on the pure sqrt 2 grid)."""
    return 2.0 ** -0.25 if fmt.grid is GridKind.LOG_SQRT2 else 2.0 ** -0.5


def encode(weights: torch.Tensor | np.ndarray, table: DecodeTable, fmt: LogFormat) -> np.ndarray:
    """Encode float weights (C, ...) to code words by nearest level in the log domain.

    Decision thresholds sit at geometric midpoints of adjacent levels (as the datapath computes
    them when ``fmt.hardware_approx``), so rounding is ``round(log(|w|))`` on the grid.
    """
    w = torch.as_tensor(weights).detach().to(torch.float64)
    if not torch.isfinite(w).all():
        raise FormatError("cannot encode NaN or Inf weights")
    C = w.shape[0]
    if C != table.channels:
        raise FormatError(f"weights have {C} channels but the decode table has {table.channels}")
    flat = w.reshape(C, -1)
    first = 1 if fmt.zero is ZeroMode.CODE else 0
    levels = torch.as_tensor(level_values(table, fmt), dtype=torch.float64, device=w.device)[:, :, first:]
    mid = torch.sqrt(levels[:, :, 1:] * levels[:, :, :-1])  # (C, 2, n-1)
    sign = (flat < 0).to(torch.int64)
    mag = flat.abs() / torch.as_tensor(table.scale, dtype=torch.float64, device=w.device)[:, None]
    index = torch.zeros_like(sign)
    for s in (0, 1):
        rows_mid = mid[:, s, :]  # (C, n-1)
        pos = torch.searchsorted(rows_mid.contiguous(), mag.contiguous(), right=False)
        index = torch.where(sign == s, pos, index)
    index = index + first
    bottom = torch.gather(levels[:, :, 0], 1, sign)  # smallest level of each element's sign
    is_zero = (mag < bottom * zero_threshold_ratio(fmt)) if fmt.zero is not ZeroMode.NONE else None
    if is_zero is not None:  # canonical zero: sign 0, index 0 (plus the flag bit in 'flag' mode)
        index = torch.where(is_zero, torch.zeros_like(index), index)
        sign = torch.where(is_zero, torch.zeros_like(sign), sign)
    zero_np = None if is_zero is None else is_zero.cpu().numpy()
    words = make_words(sign.cpu().numpy(), index.cpu().numpy(), zero_np, fmt)
    return words.reshape(tuple(w.shape))


def decode_int(words: np.ndarray, table: DecodeTable, fmt: LogFormat) -> np.ndarray:
    """Signed integer multipliers (int64, shape of ``words``) exactly as the datapath applies them."""
    sign, index, is_zero = split_words(words, fmt)
    C = words.shape[0]
    if C != table.channels:
        raise FormatError(f"codes have {C} channels but the decode table has {table.channels}")
    ch = np.arange(C).reshape((C,) + (1,) * (words.ndim - 1))
    mult = multipliers(table.u[ch, sign, index], table.h[ch, sign, index])
    return np.where(is_zero, 0, np.where(sign == 1, -mult, mult))


def decode_float(words: np.ndarray, table: DecodeTable, fmt: LogFormat, hardware: bool | None = None) -> np.ndarray:
    """Float weights (float64): channel scale times the signed level value.

    With ``hardware=None`` a half step is 1.5 when ``fmt.hardware_approx`` and exactly sqrt(2) otherwise.
    """
    sign, index, is_zero = split_words(words, fmt)
    C = words.shape[0]
    ch = np.arange(C).reshape((C,) + (1,) * (words.ndim - 1))
    vals = level_values(table, fmt, hardware)[ch, sign, index]
    vals = np.where(is_zero, 0.0, np.where(sign == 1, -vals, vals))
    return vals * table.scale.reshape((C,) + (1,) * (words.ndim - 1))


