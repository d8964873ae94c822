"""What the host writes to the engine's config port to run one output channel, and how stream beats pack.

The decode table is loaded as an *image* indexed by the low ``weight_bits`` bits of a word: each entry
holds ``(u, h, neg, zero)`` computed by ``logmac.format.split_words`` and the channel's ``DecodeTable``.
That is how one build serves every zero mode and every code width up to ``weight_bits``: code-mode zero,
a flag bit inside the low bits (narrow codes) and the sign position all become table content, and a
flag bit at position ``weight_bits`` (widest codes, ``flag`` mode) is wired straight to the zero gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logmac.format import DecodeTable, FormatError, LogFormat, OverflowMode, accumulator_range, split_words
from logmac.hw import config as C
from logmac.hw.config import HwConfig

REG_NEST = 9  # precision register of multi-bit (PTMQ) codes: floor | or_mask << 16 | index_mask << 32
NEST_FIELDS = (0, 16, 32)  # bit offsets of floor, or_mask and index_mask in the REG_NEST data word


@dataclass(frozen=True)
class Requant:
    """One output channel's requantization constants (``logmac.format.requantize``)."""

    multiplier: int = 1
    shift: int = 0
    bias: int = 0
    zero_point: int = 0
    lo: int = -(1 << 15)
    hi: int = (1 << 15) - 1


def check_format(hw: HwConfig, fmt: LogFormat) -> None:
    """Raise unless log codes of ``fmt`` run on this build."""
    if hw.kind != "log" or not isinstance(fmt, LogFormat):
        raise FormatError(f"decode tables need a log engine and a LogFormat, got a {hw.kind} engine and {fmt!r}")
    if fmt.bits > hw.weight_bits:
        raise FormatError(f"{fmt.bits}-bit codes do not fit a build for {hw.weight_bits}-bit weights")


def table_image(hw: HwConfig, fmt: LogFormat, table: DecodeTable, channel: int) -> np.ndarray:
    """The table entries (packed ints, ``hw.table_depth`` of them) for one channel."""
    check_format(hw, fmt)
    table.validate(fmt)
    if int(table.u.max(initial=0)) > hw.max_shift:
        raise FormatError(f"decode table shift {int(table.u.max())} exceeds the build's max_shift {hw.max_shift}")
    addr = np.arange(hw.table_depth)
    legal = addr < (1 << fmt.storage_bits)
    sign, index, is_zero = split_words(np.where(legal, addr, 0), fmt)
    u = table.u[channel, sign, index]
    h = table.h[channel, sign, index]
    zero = is_zero | ~legal
    sb = hw.shift_bits
    return (u | (h << sb) | (sign << (sb + 1)) | (zero.astype(np.int64) << (sb + 2))).astype(np.int64)


def _signed_fits(value: int, bits: int, what: str) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= value <= hi:
        raise FormatError(f"{what} {value} does not fit the build's {bits}-bit signed register")
    return value & ((1 << bits) - 1)


def channel_writes(hw: HwConfig, acc_bits: int, overflow: OverflowMode, requant: Requant | None = None,
                   image: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(address, data) config writes that set up one channel: accumulator fit, requantization, table."""
    if acc_bits > hw.acc_bits:
        raise FormatError(f"accumulator width {acc_bits} exceeds the build's acc_bits {hw.acc_bits}")
    _, acc_hi = accumulator_range(acc_bits)
    if overflow not in ("saturate", "wrap"):
        raise FormatError(f"overflow mode must be 'saturate' or 'wrap', got {overflow!r}")
    writes = [(C.REG_ACC_HI, acc_hi), (C.REG_WRAP, int(overflow == "wrap")), (C.REG_CLEAR, 0)]
    if hw.requant:
        rq = requant or Requant()
        if not 0 <= rq.multiplier < (1 << hw.mult_bits):
            raise FormatError(f"requant multiplier {rq.multiplier} outside 0..2**{hw.mult_bits}-1")
        if not 0 <= rq.shift <= 62:
            raise FormatError(f"requant shift {rq.shift} outside 0..62")
        if rq.lo > rq.hi:
            raise FormatError(f"requant clamp lo {rq.lo} > hi {rq.hi}")
        writes += [(C.REG_MULT, rq.multiplier), (C.REG_SHIFT, rq.shift),
                   (C.REG_BIAS, _signed_fits(rq.bias, hw.bias_bits, "bias")),
                   (C.REG_ZP, _signed_fits(rq.zero_point, hw.out_bits, "zero point")),
                   (C.REG_LO, _signed_fits(rq.lo, hw.out_bits, "clamp lo")),
                   (C.REG_HI, _signed_fits(rq.hi, hw.out_bits, "clamp hi"))]
    elif requant is not None:
        raise FormatError("this build has no requantization stage (requant=False)")
    if image is not None:
        writes += [(hw.table_base + a, int(e)) for a, e in enumerate(image)]
    return writes


def int_words(hw: HwConfig, weights: np.ndarray) -> np.ndarray:
    """Two's-complement words of integer weights for the int engine, range-checked."""
    w = np.asarray(weights, dtype=np.int64)
    lo, hi = -(1 << (hw.weight_bits - 1)), (1 << (hw.weight_bits - 1)) - 1
    if w.size and (w.min() < lo or w.max() > hi):
        raise FormatError(f"integer weights span [{w.min()}, {w.max()}], outside {hw.weight_bits}-bit [{lo}, {hi}]")
    return w & ((1 << hw.weight_bits) - 1)


def nest_writes(hw: HwConfig, floor: int, or_mask: int, index_mask: int) -> list[tuple[int, int]]:
    """The (address, data) write that selects a precision of multi-bit log codes on a log engine.

    The values come from ``logmac.format.nested.nest_register``; ``(0, 0, 0)`` is the reset state (every
    word decoded as stored).  Write it only while the engine is idle, like every other setting.
    """
    if hw.kind != "log":
        raise FormatError("the precision register exists on log engines only")
    for what, value in (("floor", floor), ("or_mask", or_mask), ("index_mask", index_mask)):
        if not 0 <= value < (1 << hw.weight_bits):
            raise FormatError(f"precision {what} {value} does not fit the build's {hw.weight_bits}-bit code index")
    data = sum(v << off for v, off in zip((floor, or_mask, index_mask), NEST_FIELDS, strict=True))
    return [(REG_NEST, data)]
