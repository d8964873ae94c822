"""Support for the emulator tests (no tests here): hypothesis strategies for formats, tables, codes, activations."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from logmac.codes import (
    MAX_BITS,
    MIN_BITS,
    DecodeTable,
    FormatError,
    GridKind,
    LogFormat,
    ZeroMode,
    grid_half_exponents,
    table_from_exponents,
)


@st.composite
def log_formats(draw: st.DrawFn) -> LogFormat:
    bits = draw(st.integers(MIN_BITS, MAX_BITS))
    try:
        return LogFormat(bits, draw(st.sampled_from(GridKind)), draw(st.booleans()), draw(st.sampled_from(ZeroMode)))
    except FormatError:
        assume(False)
        raise


def make_table(fmt: LogFormat, channels: int, rng: np.random.Generator) -> DecodeTable:
    """A legal table with per-channel DBS mix, anchor and a sign-asymmetric (ABS) offset up to the shift limit."""
    n = fmt.nonzero_levels
    exps = np.empty((channels, 2, n), dtype=np.int64)
    for c in range(channels):
        n2 = int(rng.choice(fmt.base2_choices))
        top = int(rng.integers(-10, 6))
        exps[c, 0] = grid_half_exponents(n, top, n2)
        for offset in range(int(rng.integers(0, 2 * fmt.max_shift + 1)), -1, -1):
            both = np.stack([exps[c, 0], grid_half_exponents(n, top - offset, n2)])
            octave = both // 2
            if int(octave.max() - (octave - both % 2).min()) <= fmt.max_shift:
                exps[c, 1] = both[1]
                break
        if rng.integers(2):
            exps[c] = exps[c, ::-1]
    return table_from_exponents(fmt, exps, rng.uniform(0.05, 1.0, size=channels))


def random_words(fmt: LogFormat, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 1 << fmt.storage_bits, size=shape).astype(np.uint16)


def activations(rng: np.random.Generator, shape: tuple[int, ...], bits: int, signed: bool, extreme: bool) -> np.ndarray:
    """Random a-bit integers; ``extreme`` draws only the two ends of the range (the worst case for overflow)."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if extreme:
        return rng.choice(np.array([lo, hi]), size=shape).astype(np.int64)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int64)
