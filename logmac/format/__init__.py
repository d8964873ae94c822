"""The integer contract that ``quant``, ``sim`` and ``hw`` all read: codes, accumulator, requantization.

Nothing here imports the rest of logmac.  Each module owns one piece of the contract:

- :mod:`.log`         exponent-coded weights: code words, decode tables, encode / decode
- :mod:`.uniform`     the uniform (linear) weight baseline
- :mod:`.adalog`      log-coded activations (AdaLog)
- :mod:`.nested`      PTMQ's nested multi-bit log codes
- :mod:`.accumulator` activation range, exact accumulator width, saturate / wrap fit
- :mod:`.requant`     requantization (the only rounding) and its fixed-point multiplier
- :mod:`.activation`  the uniform activation code ``clamp(round(x / s) + zp, lo, hi)`` and its range
- :mod:`.packing`     code words packed at their bit width
"""

from __future__ import annotations

from logmac.format.accumulator import OverflowMode, accumulator_bits, accumulator_range, apply_accumulator
from logmac.format.activation import activation_absmax, activation_codes, activation_range, check_activations
from logmac.format.adalog import (
    ADALOG_MAX_SHIFT,
    ADALOG_Q_RANGE,
    ADALOG_R,
    AdaLogFormat,
    adalog_decode_float,
    adalog_decode_int,
    adalog_indices,
    adalog_words,
)
from logmac.format.errors import MAX_BITS, MAX_SHIFT_LIMIT, MIN_BITS, SQRT2, FormatError
from logmac.format.log import (
    DecodeTable,
    GridKind,
    LogFormat,
    ZeroMode,
    base2_counts,
    decode_float,
    decode_int,
    encode,
    grid_half_exponents,
    grid_span,
    level_values,
    make_words,
    multipliers,
    shift_span,
    split_words,
    table_from_exponents,
    zero_threshold_ratio,
)
from logmac.format.packing import pack, unpack
from logmac.format.requant import MAX_REQUANT_SHIFT, check_requant, fixed_point_multiplier, requantize
from logmac.format.uniform import UniformFormat

WeightFormat = LogFormat | UniformFormat


WeightFormat = LogFormat | UniformFormat


def format_from_dict(d: dict) -> WeightFormat | AdaLogFormat:
    """Rebuild a format from ``to_dict()`` output, rejecting unknown kinds and keys."""
    if not isinstance(d, dict):
        raise FormatError(f"a format is a JSON object with a 'kind', got {d!r}")
    d = dict(d)
    kind = d.pop("kind", None)
    try:
        if kind == "log":
            return LogFormat(**d)
        if kind == "uniform":
            return UniformFormat(**d)
        if kind == "adalog":
            return AdaLogFormat(**d)
    except FormatError:
        raise
    except (TypeError, ValueError) as exc:  # unknown fields, or a value no enum member has
        raise FormatError(f"bad {kind} format fields {sorted(d)}: {exc}") from exc
    raise FormatError(f"unknown format kind {kind!r} (expected 'log', 'uniform' or 'adalog')")


__all__ = [
    "requantize",
    "fixed_point_multiplier",
    "check_requant",
    "MAX_REQUANT_SHIFT",
    "check_activations",
    "activation_range",
    "activation_codes",
    "ADALOG_MAX_SHIFT",
    "ADALOG_Q_RANGE",
    "ADALOG_R",
    "AdaLogFormat",
    "DecodeTable",
    "FormatError",
    "GridKind",
    "LogFormat",
    "MAX_BITS",
    "MAX_SHIFT_LIMIT",
    "MIN_BITS",
    "OverflowMode",
    "SQRT2",
    "UniformFormat",
    "WeightFormat",
    "ZeroMode",
    "accumulator_bits",
    "accumulator_range",
    "activation_absmax",
    "adalog_decode_float",
    "adalog_decode_int",
    "adalog_indices",
    "adalog_words",
    "apply_accumulator",
    "base2_counts",
    "decode_float",
    "decode_int",
    "encode",
    "format_from_dict",
    "grid_half_exponents",
    "grid_span",
    "level_values",
    "make_words",
    "multipliers",
    "pack",
    "shift_span",
    "split_words",
    "table_from_exponents",
    "unpack",
    "zero_threshold_ratio",
]
