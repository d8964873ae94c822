"""Properties of the weight-code format: every grid kind, zero mode and width 2..8."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logmac.format import (
    MAX_BITS,
    MIN_BITS,
    SQRT2,
    FormatError,
    GridKind,
    LogFormat,
    UniformFormat,
    ZeroMode,
    accumulator_bits,
    activation_absmax,
    apply_accumulator,
    decode_float,
    decode_int,
    encode,
    format_from_dict,
    grid_half_exponents,
    level_values,
    make_words,
    multipliers,
    pack,
    split_words,
    table_from_exponents,
    unpack,
    zero_threshold_ratio,
)
from logmac.stimulus import random_table

ALL_COMBOS = list(itertools.product(range(MIN_BITS, MAX_BITS + 1), GridKind, ZeroMode, (True, False)))


def supported(bits: int, grid: GridKind, zero: ZeroMode, approx: bool) -> LogFormat | None:
    try:
        return LogFormat(bits, grid, approx, zero)
    except FormatError as exc:
        assert "shift limit" in str(exc)
        return None


@st.composite
def formats(draw) -> LogFormat:
    combo = draw(st.sampled_from(ALL_COMBOS))
    fmt = supported(*combo)
    if fmt is None:
        from hypothesis import assume

        assume(False)
    return fmt


def test_every_combination_is_supported_or_refused_clearly():
    refused = [c for c in ALL_COMBOS if supported(*c) is None]
    # 7- and 8-bit log grids span more than 31 octaves; everything up to 6 bits is supported.
    assert {c[0] for c in refused} == {7, 8}
    assert all(supported(*c) is not None for c in ALL_COMBOS if c[0] <= 6)


@pytest.mark.parametrize("bits", [1, 9, 3.0, "4"])
def test_bits_out_of_range_is_an_error(bits):
    with pytest.raises(FormatError, match="bits must be an integer in 2..8"):
        LogFormat(bits)


def test_spec_level_tables_for_4_bit_dynamic_grid():
    """algorithms.md section 6.1: the integer multipliers of the 4-bit DBS grids."""
    fmt = LogFormat(4, GridKind.LOG_DYNAMIC, True, ZeroMode.FLAG)
    expected = {4: [1, 2, 4, 8, 12, 16, 24, 32], 2: [1, 2, 3, 4, 6, 8, 12, 16], 6: [1, 2, 4, 8, 16, 32, 48, 64]}
    for n_base2, mults in expected.items():
        k = np.broadcast_to(grid_half_exponents(8, 0, n_base2), (1, 2, 8))
        table = table_from_exponents(fmt, k, np.ones(1))
        words = make_words(np.zeros(8), np.arange(8), np.zeros(8), fmt)[None, :]
        assert decode_int(words, table, fmt)[0].tolist() == mults


@settings(max_examples=150, deadline=None)
@given(fmt=formats(), seed=st.integers(0, 2**32 - 1))
def test_decode_of_every_code_matches_the_formula(fmt, seed):
    rng = np.random.default_rng(seed)
    table = random_table(fmt, 3, rng)
    all_words = np.arange(1 << fmt.storage_bits)
    words = np.broadcast_to(all_words, (3, all_words.size))
    ints = decode_int(words, table, fmt)
    floats = decode_float(words, table, fmt)
    sign, index, is_zero = split_words(words, fmt)
    for c, w in itertools.product(range(3), range(all_words.size)):
        if is_zero[c, w]:
            assert ints[c, w] == 0 and floats[c, w] == 0
            continue
        u, h = table.u[c, sign[c, w], index[c, w]], table.h[c, sign[c, w], index[c, w]]
        mag = 2**u + (2 ** (u - 1) if h else 0)
        exact = 2.0**u * ((1.5 if fmt.hardware_approx else SQRT2) if h else 1.0)
        s = -1 if sign[c, w] else 1
        assert ints[c, w] == s * mag
        assert math.isclose(floats[c, w], s * exact * table.scale[c], rel_tol=1e-12)


@settings(max_examples=150, deadline=None)
@given(fmt=formats(), seed=st.integers(0, 2**32 - 1))
def test_encode_decode_round_trip(fmt, seed):
    """Encoding a decoded weight gives back its code; encoding any weight picks the log-nearest level."""
    rng = np.random.default_rng(seed)
    table = random_table(fmt, 4, rng)
    words = encode(rng.normal(size=(4, 64)) * table.scale[:, None] * 4, table, fmt)
    assert np.array_equal(encode(decode_float(words, table, fmt), table, fmt), words)

    w = rng.normal(size=(4, 200)) * table.scale[:, None] * 8
    got = decode_float(encode(w, table, fmt), table, fmt)
    levels = level_values(table, fmt)
    first = 1 if fmt.zero is ZeroMode.CODE else 0
    for c in range(4):
        for x, y in zip(w[c], got[c], strict=True):
            s = 1 if x < 0 else 0
            cand = levels[c, s, first:] * table.scale[c]
            best = cand[np.argmin(np.abs(np.log(abs(x)) - np.log(cand)))]
            if y != 0:
                assert np.sign(y) == np.sign(x)
                assert math.isclose(abs(y), best, rel_tol=1e-12) or math.isclose(
                    abs(np.log(abs(x)) - np.log(abs(y))), abs(np.log(abs(x)) - np.log(best)), rel_tol=1e-9)
            zero_below = cand[0] * zero_threshold_ratio(fmt) if fmt.zero is not ZeroMode.NONE else 0.0
            assert (y == 0) == (abs(x) < zero_below)


def test_encode_rejects_nan_and_channel_mismatch():
    fmt = LogFormat(4)
    table = random_table(fmt, 2, np.random.default_rng(0))
    with pytest.raises(FormatError, match="NaN or Inf"):
        encode(np.array([[np.nan, 1.0], [1.0, 1.0]]), table, fmt)
    with pytest.raises(FormatError, match="3 channels but the decode table has 2"):
        encode(np.ones((3, 2)), table, fmt)


def test_out_of_range_code_is_an_error():
    fmt = LogFormat(3, zero=ZeroMode.CODE)
    table = random_table(fmt, 1, np.random.default_rng(0))
    with pytest.raises(FormatError, match="does not fit in 3 bits"):
        decode_int(np.array([[8]]), table, fmt)


def test_illegal_tables_are_rejected():
    fmt = LogFormat(3, GridKind.LOG_2, zero=ZeroMode.NONE)
    good = random_table(fmt, 1, np.random.default_rng(0))
    bad_order = type(good)(good.u[:, :, ::-1], good.h, good.scale)
    with pytest.raises(FormatError, match="increase strictly"):
        bad_order.validate(fmt)
    half = good.h.copy()
    half[0, 0, 1] = 1
    with pytest.raises(FormatError, match="log_2 table cannot hold half-step"):
        type(good)(good.u, half, good.scale).validate(fmt)
    with pytest.raises(FormatError, match="shift u out of range"):
        type(good)(good.u + fmt.max_shift, good.h, good.scale).validate(fmt)


@settings(max_examples=100, deadline=None)
@given(width=st.integers(1, 16), count=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(width, count, seed):
    words = np.random.default_rng(seed).integers(0, 1 << width, size=count)
    packed = pack(words, width)
    assert packed.size == (count * width + 7) // 8
    assert np.array_equal(unpack(packed, width, count), words)


def test_pack_rejects_words_that_do_not_fit_and_unpack_wrong_sizes():
    with pytest.raises(FormatError, match="does not fit in 3 bits"):
        pack(np.array([8]), 3)
    with pytest.raises(FormatError, match="need 2"):
        unpack(np.zeros(3, np.uint8), 4, 4)


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 20000), act_bits=st.integers(1, 16), signed=st.booleans(), m_max=st.integers(1, 2**31))
def test_accumulator_width_holds_worst_case_and_is_tight(k, act_bits, signed, m_max):
    bits = accumulator_bits(k, act_bits, signed, m_max)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x_neg = -(1 << (act_bits - 1)) if signed else 0
    x_pos = activation_absmax(act_bits, signed) if not signed else (1 << (act_bits - 1)) - 1
    worst = [k * x * m for x in (x_neg, x_pos) for m in (-m_max, m_max)]
    assert all(lo <= v <= hi for v in worst)
    # one bit fewer cannot hold the bound the rule is built on
    bound = k * activation_absmax(act_bits, signed) * m_max
    assert bound > (1 << (bits - 2)) - 1


def test_accumulator_rule_matches_spec_table():
    """algorithms.md section 6.3 worked values (unsigned 8-bit activations)."""
    assert accumulator_bits(576, 8, False, 8) == 22
    assert accumulator_bits(4096, 8, False, 128) == 28
    assert accumulator_bits(11008, 8, False, 32) == 28
    assert accumulator_bits(4096, 4, False, 8) == 20


def test_overflow_contract_saturates_wraps_and_flags():
    exact = np.array([-600, -512, 0, 511, 512, 1500])
    sat, flag = apply_accumulator(exact, 10, "saturate")
    assert sat.tolist() == [-512, -512, 0, 511, 511, 511]
    assert flag.tolist() == [True, False, False, False, True, True]
    wrapped, flag2 = apply_accumulator(exact, 10, "wrap")
    assert wrapped.tolist() == [424, -512, 0, 511, -512, 476]
    assert np.array_equal(flag, flag2)
    with pytest.raises(FormatError, match="saturate' or 'wrap"):
        apply_accumulator(exact, 10, "clip")


def test_format_dict_round_trip_and_errors():
    for fmt in (LogFormat(3, GridKind.LOG_SQRT2, False, ZeroMode.FLAG), UniformFormat(4, symmetric=False)):
        assert format_from_dict(fmt.to_dict()) == fmt
    with pytest.raises(FormatError, match="unknown format kind"):
        format_from_dict({"kind": "float"})
    with pytest.raises(FormatError, match="bad log format fields"):
        format_from_dict({"kind": "log", "bits": 3, "colour": "red"})


@settings(max_examples=100, deadline=None)
@given(fmt=formats(), seed=st.integers(0, 2**32 - 1))
def test_format_max_multiplier_bounds_every_table(fmt, seed):
    table = random_table(fmt, 4, np.random.default_rng(seed))
    assert table.max_multiplier() <= fmt.max_multiplier
    if fmt.grid is not GridKind.LOG_2:
        # a half step at the very top is legal, and the format's bound must still hold it
        assert multipliers(np.int64(fmt.max_shift), np.int64(1)) == fmt.max_multiplier
