"""What 'multi-bit' means for an exponent code: every lower bit-width is a function of the top code.

A PTMQ artifact stores one n-bit log code word per weight (n = the highest bit-width) and one decode
table per channel.  A b-bit precision (b < n) is read from the same words; two nestings are defined:

``coarsen`` (default)
    The b-bit grid is the n-bit grid's *top* levels (same anchor, same steps, fewer levels): the b-bit
    index is ``index_n - (L_n - L_b)``; the deepest levels merge into zero.  Learned rounding shared
    across widths is then exact: the b-bit exponent is the same ``floor + h(V)`` clamped higher.
``prefix``
    The b-bit index is the top ``b - 1`` bits of the n-bit index (``index_n >> d``, d = n - b); each
    b-bit level is the n-bit level at the top of its bucket (``index_n | (2**d - 1)``), so the top
    level is shared and the step grows by ``2**d``.

Both are, in hardware, the *same* decode table: ``coarsen`` gates indices below a floor to zero and
``prefix`` additionally sets the low ``d`` index bits before the table read.  :func:`nest_register`
gives those two values (plus the index-field mask); the emulator decodes with :func:`nest_words` and
:func:`nest_table`, which are the same map written as a b-bit code and table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from logmac.format.errors import FormatError
from logmac.format.log import DecodeTable, LogFormat, ZeroMode, make_words, split_words

NestMode = Literal["coarsen", "prefix"]
NEST_MODES: tuple[str, ...] = ("coarsen", "prefix")


def nested_format(top: LogFormat, bits: int) -> LogFormat:
    """The b-bit format read out of ``top`` codes: same grid kind and zero mode, the top's shift field
    (the b-bit table is a sub-table of the top one, so its shifts need the same range)."""
    check_nestable(top, bits)
    return LogFormat(bits, top.grid, hardware_approx=top.hardware_approx, zero=top.zero, max_shift=top.max_shift)


def check_nestable(top: LogFormat, bits: int) -> None:
    """Raise FormatError unless ``bits``-bit codes can be read out of ``top`` codes."""
    if not isinstance(top, LogFormat):
        raise FormatError(f"nesting is defined for log formats, got {top!r}")
    if not 2 <= bits <= top.bits:
        raise FormatError(f"a {bits}-bit precision cannot be read out of {top.bits}-bit codes (need 2..{top.bits})")
    if top.zero is ZeroMode.NONE:
        raise FormatError("multi-bit log codes need a zero (zero mode 'code' or 'flag'): the merged deepest "
                          "levels of a lower precision decode to zero")


@dataclass(frozen=True)
class NestMap:
    """How b-bit indices come out of n-bit indices: ``floor`` (n-bit indices below it are zero at b bits),
    ``or_mask`` (index bits set before the table read) and ``offset`` (index_b = (index_n | or_mask) >> shift
    - offset)."""

    floor: int
    or_mask: int
    shift: int
    offset: int


def nest_map(top: LogFormat, bits: int, mode: NestMode) -> NestMap:
    """The index map of ``mode`` from ``top`` codes to ``bits``-bit codes."""
    check_nestable(top, bits)
    d = top.bits - bits
    first = 1 if top.zero is ZeroMode.CODE else 0
    if mode == "coarsen":
        offset = top.levels_per_sign - (1 << (bits - 1))
        return NestMap(floor=offset + first, or_mask=0, shift=0, offset=offset)
    if mode == "prefix":
        return NestMap(floor=(1 << d) * first, or_mask=(1 << d) - 1, shift=d, offset=0)
    raise FormatError(f"unknown nesting {mode!r}; choose one of {', '.join(NEST_MODES)}")


def nest_words(words: np.ndarray, top: LogFormat, bits: int, mode: NestMode) -> np.ndarray:
    """The b-bit code words a precision of ``bits`` reads out of ``top`` code words (same shape)."""
    sign, index, is_zero = split_words(words, top)
    nm = nest_map(top, bits, mode)
    zero = is_zero | (index < nm.floor)
    low = ((index | nm.or_mask) >> nm.shift) - nm.offset
    low = np.where(zero, 0, low)  # the canonical zero: sign 0, index 0 (plus the flag bit in 'flag' mode)
    fmt = nested_format(top, bits)
    return make_words(np.where(zero, 0, sign), low, zero if top.zero is ZeroMode.FLAG else None, fmt)


def nest_table(table: DecodeTable, top: LogFormat, bits: int, mode: NestMode) -> DecodeTable:
    """The b-bit decode table: entry j is the top table's entry at the n-bit index b-bit index j stands for."""
    nm = nest_map(top, bits, mode)
    first = 1 if top.zero is ZeroMode.CODE else 0
    slots = np.arange(1 << (bits - 1))
    src = ((slots + nm.offset) << nm.shift) | nm.or_mask
    u, h = table.u[:, :, src].copy(), table.h[:, :, src].copy()
    if first:
        u[:, :, 0] = 0
        h[:, :, 0] = 0
    out = DecodeTable(u, h, table.scale.copy())
    out.validate(nested_format(top, bits))
    return out


def nest_register(top: LogFormat, bits: int, mode: NestMode) -> tuple[int, int, int]:
    """``(floor, or_mask, index_mask)`` for the engine's precision register (``logmac.hw.regmap``):
    indices below ``floor`` decode to zero and ``or_mask`` is OR'ed into the index before the table read."""
    nm = nest_map(top, bits, mode)
    return nm.floor, nm.or_mask, top.levels_per_sign - 1
