"""The AdaLog activation format: index rule, mantissa table, integer levels and zero handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logmac.format import (
    ADALOG_R,
    AdaLogFormat,
    FormatError,
    adalog_decode_float,
    adalog_decode_int,
    adalog_indices,
    adalog_words,
    format_from_dict,
)

adalog_formats = st.builds(
    AdaLogFormat,
    bits=st.sampled_from([2, 3, 4, 5, 6]),
    q=st.integers(10, 138),
    zero=st.sampled_from(["code", "flag"]),
    max_shift=st.integers(0, 15),
)


def test_spec_mantissa_denominators_and_base2_levels():
    """D = 14 / 30 / 126 at 3 / 4 / 6 bits; q = 37 is plain base 2, so every mantissa is D."""
    assert [AdaLogFormat(b, 37).denominator for b in (3, 4, 6)] == [14, 30, 126]
    fmt = AdaLogFormat(4, 37)
    mantissa, shift = fmt.level_shifts()
    assert (mantissa == 30).all() and shift.tolist() == list(range(15))
    assert np.allclose(adalog_decode_float(np.arange(15), 1.0, fmt), 2.0 ** -np.arange(15))


@settings(max_examples=60, deadline=None)
@given(fmt=adalog_formats)
def test_levels_match_the_adaptive_base_within_mantissa_rounding(fmt):
    """level i equals 2**(-i*q/r) up to the (bits+1)-bit mantissa's rounding (half an LSB of D)."""
    index = np.arange(fmt.nonzero_levels)
    exact = 2.0 ** (-index * fmt.q / ADALOG_R)
    decoded = adalog_decode_float(adalog_words(index, fmt), 1.0, fmt)
    assert np.all(np.abs(decoded / exact - 1.0) <= 0.5 / (fmt.denominator / 2) + 1e-12)
    assert np.all(np.diff(decoded) < 0), "levels must fall strictly with the index"
    assert fmt.level_shifts()[1].max() <= fmt.max_shift
    assert adalog_decode_int(adalog_words(index, fmt), fmt).max() < 1 << fmt.level_bits


@settings(max_examples=60, deadline=None)
@given(fmt=adalog_formats, seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 100.0))
def test_encode_is_log_nearest_and_zero_below_the_grid(fmt, seed, scale):
    rng = np.random.default_rng(seed)
    x = scale * np.exp2(-rng.uniform(0, 40, size=200))
    x[:5] = 0.0
    x[5:8] = scale * 3  # above the range: clamp to the top level
    index = adalog_indices(x, scale, fmt)
    words = adalog_words(index, fmt)
    decoded = adalog_decode_float(words, scale, fmt)
    assert (decoded[:5] == 0).all() and np.allclose(decoded[5:8], scale)
    log_pos = -np.log2(np.clip(x / scale, 1e-15, 1)) * ADALOG_R / fmt.q
    inside = index < fmt.nonzero_levels
    assert np.all(np.abs(log_pos[inside] - index[inside]) <= 0.5 + 1e-9)
    assert np.all(log_pos[~inside] >= fmt.nonzero_levels - 0.5 - 1e-9)


def test_zero_words_in_code_and_flag_modes():
    code, flag = AdaLogFormat(3, 37, zero="code"), AdaLogFormat(3, 37, zero="flag")
    assert (code.nonzero_levels, code.storage_bits, code.zero_index) == (7, 3, 7)
    assert (flag.nonzero_levels, flag.storage_bits) == (8, 4)
    assert adalog_decode_int(np.array([7]), code).tolist() == [0]
    assert adalog_decode_int(np.array([8, 7]), flag).tolist() == [0, AdaLogFormat(3, 37, zero="flag").integer_levels()[7]]
    assert adalog_words(np.array([8]), flag).tolist() == [8]  # index 8 is the zero sentinel: flag bit set


def test_shift_cap_turns_deep_levels_into_zero():
    fmt = AdaLogFormat(6, 37, max_shift=5)
    assert fmt.nonzero_levels == 6 and fmt.top_shift == 5
    assert adalog_decode_float(adalog_words(adalog_indices(np.array([2.0**-6]), 1.0, fmt), fmt), 1.0, fmt)[0] == 0


def test_bad_formats_and_inputs_are_named():
    with pytest.raises(FormatError, match="q must be"):
        AdaLogFormat(4, 9)
    with pytest.raises(FormatError, match="need a zero"):
        AdaLogFormat(4, 37, zero="none")
    with pytest.raises(FormatError, match="non-negative"):
        adalog_indices(np.array([-0.1]), 1.0, AdaLogFormat(4, 37))
    with pytest.raises(FormatError, match="scale"):
        adalog_indices(np.array([0.1]), 0.0, AdaLogFormat(4, 37))
    with pytest.raises(FormatError, match="outside the 4-bit"):
        adalog_decode_int(np.array([16]), AdaLogFormat(4, 37))
    assert format_from_dict(AdaLogFormat(4, 20, zero="flag").to_dict()) == AdaLogFormat(4, 20, zero="flag")
