"""Trace files: one layer's exact integers and the results the hardware must produce, for the RTL suite.

A trace is a plain ``.npz`` (no pickle) that ``logmac.cosim`` replays into the RTL.  Expected values
are computed by the int64 *reference* (``sim.mac``, ``sim.groups`` for a layer with group exponents), never
by the fast path, so a trace checks the RTL and the emulator independently.  Keys (``TRACE_VERSION`` 2; version 1
files, which carry no group exponents, still load), all rows in MAC order:

======================  ============  =====================================================================
key                     dtype, shape  meaning
======================  ============  =====================================================================
``version``             int64 ()      2
``layer``               str ()        layer name (module path) or free text
``format``              str ()        JSON of ``fmt.to_dict()`` (``format.format_from_dict`` reads it)
``x``                   int64 (N, K)  input integers as the MAC sees them (conv: im2col rows, padding = zp)
``codes``               uint16/int16  (C, K) code words (log) or integers (uniform)
``u``, ``h``            uint8         (C, 2, L) decode table (log formats only)
``scale``               float64 (C,)  channel scale (float value of multiplier 1)
``weight_zero_point``   int64 (C,)    uniform asymmetric only
``mult``                int64 (C, K)  signed integer multipliers (decoded, before any group shift)
``group_exp``           int64 (C, G)  optional, with ``group_size`` (int64 ()): per-group exponent offsets
                                      (``format.groups``), G = ceil(K / group_size); ``acc`` includes the shifts
``act_bits``            int64 ()      activation width a
``act_signed``          bool ()       signed activations?
``acc_bits``            int64 ()      accumulator register width
``overflow_mode``       str ()        ``saturate`` or ``wrap``
``acc``                 int64 (N, C)  expected accumulator registers
``overflow``            bool (N, C)   expected overflow flags
``requant_multiplier``  int64 (C,)    optional, with ``requant_shift``, ``bias_int``, ``out_zero_point``,
``requant_shift``       int64 (C,)    ``clamp_lo``, ``clamp_hi`` (int64 ()) and ``y`` (int64 (N, C)),
``y``                   int64 (N, C)  the requantized outputs (computed from the register ``acc``)
======================  ============  =====================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logmac.format import (
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    UniformFormat,
    check_activations,
    decode_int,
    format_from_dict,
    requantize,
)
from logmac.format.arrays import check_arrays, read_npz
from logmac.format.groups import MAX_GROUP_BITS, check_exponent_table
from logmac.sim.groups import group_matmul_reference
from logmac.sim.mac import MacResult, log_matmul_reference, uniform_matmul_reference

TRACE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 2 added group_exp / group_size
REQUANT_KEYS = ("requant_multiplier", "requant_shift", "bias_int", "out_zero_point", "clamp_lo", "clamp_hi", "y")


@dataclass
class Requant:
    """Output requantization of a traced layer: y = clamp(((acc + bias) * M + 2**(S-1)) >> S + zp, lo, hi)."""

    multiplier: np.ndarray
    shift: np.ndarray
    bias: np.ndarray
    zero_point: int
    lo: int
    hi: int


@dataclass
class Trace:
    """A loaded trace: ``arrays`` holds every key of the table above."""

    arrays: dict[str, np.ndarray]

    @property
    def fmt(self) -> LogFormat | UniformFormat:
        return format_from_dict(json.loads(str(self.arrays["format"])))

    @property
    def table(self) -> DecodeTable | None:
        a = self.arrays
        return DecodeTable(a["u"], a["h"], a["scale"]) if "u" in a else None

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


def save_trace(path: str | Path, x_int: np.ndarray, codes: np.ndarray, fmt: LogFormat | UniformFormat, *,
               table: DecodeTable | None = None, weight_zero_point: np.ndarray | None = None, act_bits: int,
               act_signed: bool = False, acc_bits: int, overflow: OverflowMode = "saturate",
               requant: Requant | None = None, layer: str = "", group_exp: np.ndarray | None = None,
               group_size: int | None = None) -> Path:
    """Write a trace for the MAC rows ``x_int`` (N, K) against ``codes`` (C, K); expected values from the reference
    (with ``group_exp`` (C, groups) and ``group_size``: the group-shift reference)."""
    x = check_activations(x_int, act_bits, act_signed)
    codes = np.asarray(codes)
    extra: dict[str, np.ndarray] = {}
    if (group_exp is None) != (group_size is None):
        raise FormatError("group exponents need both group_exp and group_size")
    if group_exp is not None:
        group_exp = np.asarray(group_exp, dtype=np.int64)
        check_trace_groups(group_exp, group_size, codes.shape, layer or "trace")
        extra.update(group_exp=group_exp, group_size=np.int64(group_size))
    if isinstance(fmt, LogFormat):
        if table is None:
            raise FormatError("a log-format trace needs the decode table")
        table.validate(fmt)
        mult = decode_int(codes, table, fmt)
        extra.update(u=table.u.astype(np.uint8), h=table.h.astype(np.uint8), scale=table.scale)
    else:
        mult = codes.astype(np.int64) - (0 if weight_zero_point is None else np.asarray(weight_zero_point)[:, None])
        if weight_zero_point is not None:
            extra["weight_zero_point"] = np.asarray(weight_zero_point, dtype=np.int64)
    res = expected_mac(x, codes, fmt, acc_bits, overflow, table, weight_zero_point, group_exp, group_size)
    arrays = {
        "version": np.int64(TRACE_VERSION), "layer": np.str_(layer), "format": np.str_(json.dumps(fmt.to_dict())),
        "x": x, "codes": codes, "mult": mult, "act_bits": np.int64(act_bits), "act_signed": np.bool_(act_signed),
        "acc_bits": np.int64(acc_bits), "overflow_mode": np.str_(overflow), "acc": res.acc, "overflow": res.overflow,
        **extra,
    }
    if requant is not None:
        y = requantize(res.acc, requant.multiplier, requant.shift, requant.zero_point, requant.lo, requant.hi, requant.bias)
        arrays.update(requant_multiplier=np.asarray(requant.multiplier, dtype=np.int64),
                      requant_shift=np.asarray(requant.shift, dtype=np.int64),
                      bias_int=np.asarray(requant.bias, dtype=np.int64), out_zero_point=np.int64(requant.zero_point),
                      clamp_lo=np.int64(requant.lo), clamp_hi=np.int64(requant.hi), y=y)
    path = Path(path)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending a second ".npz"
        np.savez_compressed(fh, **arrays)
    return path


def expected_mac(x: np.ndarray, codes: np.ndarray, fmt: LogFormat | UniformFormat, acc_bits: int,
                 overflow: OverflowMode, table: DecodeTable | None, weight_zero_point: np.ndarray | None,
                 group_exp: np.ndarray | None, group_size: int | None) -> MacResult:
    """The int64 reference registers of ``x`` against ``codes``: the group-shift reference when the layer has
    group exponents, else the format's own reference MAC."""
    if group_exp is not None:
        return group_matmul_reference(x, codes, fmt, acc_bits, group_exp, group_size, table=table,
                                      weight_zero_point=weight_zero_point, overflow=overflow)
    if isinstance(fmt, LogFormat):
        return log_matmul_reference(x, codes, table, fmt, acc_bits, overflow)
    return uniform_matmul_reference(x, codes, fmt, acc_bits, overflow, weight_zero_point)


def check_trace_groups(group_exp: np.ndarray, group_size: int, codes_shape: tuple[int, ...], source: str) -> None:
    """Raise FormatError unless ``group_exp`` is (C, ceil(K / group_size)) integers within the widest group
    exponent field (``format.groups.MAX_GROUP_BITS``) for codes of shape (C, K)."""
    c, k = codes_shape
    check_exponent_table(group_exp, group_size, c, k, MAX_GROUP_BITS, source)


# What save_trace writes: key -> (kind, allowed ranks); requantization constants are per channel or scalar.
TRACE_SCHEMA = {
    "version": ("int", (0,)), "layer": ("str", (0,)), "format": ("str", (0,)), "overflow_mode": ("str", (0,)),
    "x": ("int", (2,)), "codes": ("int", (2,)), "mult": ("int", (2,)), "acc": ("int", (2,)), "y": ("int", (2,)),
    "overflow": ("bool", (2,)), "act_bits": ("int", (0,)), "act_signed": ("bool", (0,)), "acc_bits": ("int", (0,)),
    "u": ("uint", (3,)), "h": ("uint", (3,)), "scale": ("float", (1,)), "weight_zero_point": ("int", (1,)),
    "requant_multiplier": ("int", (0, 1)), "requant_shift": ("int", (0, 1)), "bias_int": ("int", (0, 1)),
    "out_zero_point": ("int", (0,)), "clamp_lo": ("int", (0,)), "clamp_hi": ("int", (0,)),
    "group_exp": ("int", (2,)), "group_size": ("int", (0,)),
}


def load_trace(path: str | Path) -> Trace:
    """Read a trace, checking its version, its keys and that its shapes agree."""
    path = Path(path)
    arrays = read_npz(path, "trace file")
    check_arrays(arrays, TRACE_SCHEMA, str(path))
    version = int(arrays.get("version", -1))
    if version not in READABLE_VERSIONS:
        raise FormatError(f"{path}: trace version {version}, this logmac reads versions {READABLE_VERSIONS}")
    if 0 < sum(k in arrays for k in ("u", "h", "scale")) < 3:
        raise FormatError(f"{path}: a decode table needs all of u, h and scale")
    try:
        format_from_dict(json.loads(str(arrays.get("format", "{}"))))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: the format entry is not JSON ({exc})") from exc
    need = {"layer", "format", "x", "codes", "mult", "act_bits", "act_signed", "acc_bits", "overflow_mode", "acc", "overflow"}
    missing = sorted(need - arrays.keys())
    has_requant = [k in arrays for k in REQUANT_KEYS]
    if missing or (any(has_requant) and not all(has_requant)):
        raise FormatError(f"{path}: trace misses keys {missing or [k for k in REQUANT_KEYS if k not in arrays]}")
    n, k = arrays["x"].shape
    c = arrays["codes"].shape[0]
    if arrays["codes"].shape != (c, k) or arrays["acc"].shape != (n, c) or arrays["overflow"].shape != (n, c):
        shapes = {key: arrays[key].shape for key in ("x", "codes", "acc", "overflow")}
        raise FormatError(f"{path}: inconsistent shapes {shapes}")
    has_groups = [key in arrays for key in ("group_exp", "group_size")]
    if any(has_groups):
        if not all(has_groups):
            raise FormatError(f"{path}: group exponents need both group_exp and group_size, got {has_groups}")
        if version < 2:
            raise FormatError(f"{path}: a version {version} trace carries no group exponents (version 2 added them)")
        check_trace_groups(arrays["group_exp"], int(arrays["group_size"]), (c, k), str(path))
    return Trace(arrays)
