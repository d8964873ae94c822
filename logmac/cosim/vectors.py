"""Test vectors for the RTL: one layer's integers, codes, decode table and requantization constants, and the
expected results, which always come from ``logmac.sim`` (a trace's own expected arrays are checked against
it too, so trace == emulator == RTL).

Trace files are the emulator's ``.npz`` traces (``logmac.sim.trace``: keys ``x``, ``codes``, ``format``,
``u``/``h``/``scale``, ``act_bits``, ``act_signed``, ``acc_bits``, ``overflow_mode``, ``acc``, ``overflow``
and optionally ``requant_multiplier``, ``requant_shift``, ``bias_int``, ``out_zero_point``, ``clamp_lo``,
``clamp_hi``, ``y``, ``weight_zero_point``, and ``group_exp`` with ``group_size`` for a layer with per-group
exponent offsets, whose expected values come from ``logmac.sim.groups``); ``load_vectors`` reads them,
``save_vectors`` writes them, ``random_vectors`` makes constrained-random ones from ``logmac.format``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from logmac.format import (
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    UniformFormat,
    activation_range,
    check_activations,
    requantize,
)
from logmac.format.groups import column_shifts
from logmac.sim import trace as sim_trace
from logmac.stimulus import random_table


class VectorShape:
    """Rows, K, channels and MACs of a vector set whose activations are ``x`` (N, K) and weights ``codes`` (C, K);
    and its requantization constants broadcast to one per channel."""

    x: np.ndarray
    codes: np.ndarray
    multiplier: np.ndarray | None
    shift: np.ndarray | None
    bias: np.ndarray | None

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def k(self) -> int:
        return self.x.shape[1]

    @property
    def channels(self) -> int:
        return self.codes.shape[0]

    @property
    def macs(self) -> int:
        return self.rows * self.k * self.channels

    def broadcast_requant(self) -> None:
        """``multiplier``, ``shift`` and ``bias`` (0 when absent) as one int64 per channel, when requantizing."""
        if self.multiplier is not None:
            c = self.channels
            self.multiplier = np.broadcast_to(np.asarray(self.multiplier, dtype=np.int64), (c,)).copy()
            self.shift = np.broadcast_to(np.asarray(self.shift, dtype=np.int64), (c,)).copy()
            self.bias = np.broadcast_to(np.asarray(0 if self.bias is None else self.bias, dtype=np.int64), (c,)).copy()


@dataclass
class Vectors(VectorShape):
    """One layer's worth of engine work: N input rows times C output channels of K products."""

    x: np.ndarray
    codes: np.ndarray
    fmt: LogFormat | UniformFormat
    table: DecodeTable | None
    act_bits: int
    act_signed: bool
    acc_bits: int
    overflow: OverflowMode = "saturate"
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    bias: np.ndarray | None = None
    zero_point: int = 0
    lo: int = -128
    hi: int = 127
    weight_zero_point: np.ndarray | None = None
    name: str = "vectors"
    trace_expected: dict = field(default_factory=dict)
    group_exp: np.ndarray | None = None  # (C, ceil(K / group_size)) per-group exponent offsets, or None
    group_size: int | None = None

    def __post_init__(self) -> None:
        self.x = check_activations(self.x, self.act_bits, self.act_signed)
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.x.ndim != 2 or self.codes.ndim != 2 or self.x.shape[1] != self.codes.shape[1]:
            raise FormatError(f"vectors need x (N, K) and codes (C, K), got {self.x.shape} and {self.codes.shape}")
        if isinstance(self.fmt, LogFormat) != (self.table is not None):
            raise FormatError("log vectors need a decode table, uniform (int) vectors none")
        if (self.group_exp is None) != (self.group_size is None):
            raise FormatError(f"{self.name}: group exponents need both group_exp and group_size")
        if self.group_exp is not None:
            sim_trace.check_trace_groups(self.group_exp, self.group_size, self.codes.shape, self.name)
            self.group_exp = np.asarray(self.group_exp, dtype=np.int64)
            self.group_size = int(self.group_size)
        self.broadcast_requant()

    @property
    def has_groups(self) -> bool:
        return self.group_exp is not None

    def term_shift(self) -> np.ndarray | None:
        """(C, K) left shift of each weight's group (``format.groups.column_shifts``), or None without groups."""
        return None if self.group_exp is None else column_shifts(self.group_exp, self.k, self.group_size)[0]

    @property
    def is_log(self) -> bool:
        return isinstance(self.fmt, LogFormat)

    @property
    def int_weights(self) -> np.ndarray:
        """Signed integer weights of uniform vectors (codes minus the weight zero point)."""
        zp = 0 if self.weight_zero_point is None else np.asarray(self.weight_zero_point, dtype=np.int64)[:, None]
        return self.codes - zp

    def tile(self, rows: np.ndarray, channels: np.ndarray, name: str | None = None) -> Vectors:
        """The sub-problem of the given input rows and output channels (expectations sliced alike)."""
        rows, channels = np.asarray(rows), np.asarray(channels)
        expected = {k: np.asarray(a)[np.ix_(rows, channels)] for k, a in self.trace_expected.items()}
        return replace(self, x=self.x[rows], codes=self.codes[channels], name=name or self.name, trace_expected=expected,
                       **channel_fields(self, channels, ("weight_zero_point", "group_exp")))


def channel_fields(v: Any, channels: np.ndarray, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The per-output-channel fields of a vector set (decode table, requantization constants and ``extra``)
    cut to ``channels``; absent ones stay None.  Both vector kinds tile with it."""
    out: dict[str, Any] = {n: None if getattr(v, n) is None else np.asarray(getattr(v, n))[channels]
                           for n in ("multiplier", "shift", "bias", *extra)}
    t = v.table
    out["table"] = None if t is None else DecodeTable(t.u[channels], t.h[channels], t.scale[channels])
    return out


@dataclass
class Expected:
    """What the engine must output, channel-major like the stream: arrays of shape (C, N)."""

    acc: np.ndarray
    overflow: np.ndarray
    y: np.ndarray | None


def golden(v: Vectors) -> Expected:
    """Expected accumulators, overflow flags and outputs, from ``logmac.sim`` (the scoreboard's model; the
    group-shift reference for vectors with group exponents)."""
    res = sim_trace.expected_mac(v.x, v.codes, v.fmt, v.acc_bits, v.overflow, v.table, v.weight_zero_point,
                                 v.group_exp, v.group_size)
    acc, ovf = res.acc, res.overflow
    y = None
    if v.multiplier is not None:
        y = requantize(acc, v.multiplier, v.shift, v.zero_point, v.lo, v.hi, bias=v.bias)
    exp = Expected(acc.T.copy(), ovf.T.copy(), None if y is None else y.T.copy())
    for key, mine in (("acc", exp.acc), ("overflow", exp.overflow), ("y", exp.y)):
        theirs = v.trace_expected.get(key)
        if theirs is not None and mine is not None and not np.array_equal(np.asarray(theirs).T, mine):
            raise FormatError(f"{v.name}: the trace's {key} disagrees with logmac.sim (emulator and trace differ)")
    return exp


def load_vectors(path: str | Path) -> Vectors:
    """Read an emulator trace (``logmac.sim.trace.load_trace`` checks version, keys and shapes)."""
    t = sim_trace.load_trace(path)
    a = t.arrays
    rq = {}
    if "requant_multiplier" in a:
        rq = {"multiplier": a["requant_multiplier"], "shift": a["requant_shift"], "bias": a["bias_int"],
              "zero_point": int(a["out_zero_point"]), "lo": int(a["clamp_lo"]), "hi": int(a["clamp_hi"])}
    groups = {"group_exp": a["group_exp"], "group_size": int(a["group_size"])} if "group_exp" in a else {}
    return Vectors(x=a["x"], codes=a["codes"], fmt=t.fmt, table=t.table, act_bits=int(a["act_bits"]),
                   act_signed=bool(a["act_signed"]), acc_bits=int(a["acc_bits"]), overflow=str(a["overflow_mode"]),
                   weight_zero_point=a.get("weight_zero_point"), name=str(a["layer"]) or Path(path).stem,
                   trace_expected={k: a[k] for k in ("acc", "overflow", "y") if k in a}, **rq, **groups)


def save_vectors(v: Vectors, path: str | Path) -> Path:
    """Write ``v`` as an emulator trace (expected values computed by ``logmac.sim``)."""
    rq = None
    if v.multiplier is not None:
        rq = sim_trace.Requant(v.multiplier, v.shift, v.bias, v.zero_point, v.lo, v.hi)
    return sim_trace.save_trace(path, v.x, v.codes, v.fmt, table=v.table, weight_zero_point=v.weight_zero_point,
                                act_bits=v.act_bits, act_signed=v.act_signed, acc_bits=v.acc_bits,
                                overflow=v.overflow, requant=rq, layer=v.name, group_exp=v.group_exp,
                                group_size=v.group_size)


def random_requant(channels: int, acc_bits: int, out_bits: int, rng: np.random.Generator,
                   mult_bits: int = 31) -> dict:
    """Requantization constants that keep outputs mostly inside the clamp (some saturate on purpose)."""
    mult = rng.integers(1 << (mult_bits - 2), 1 << mult_bits, size=channels)
    shift = np.clip(acc_bits // 2 + mult_bits - out_bits + rng.integers(-3, 4, size=channels), 0, 62)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return {"multiplier": mult, "shift": shift, "bias": rng.integers(-(1 << 12), 1 << 12, size=channels),
            "zero_point": int(rng.integers(-8, 9)), "lo": int(lo + rng.integers(0, 4)), "hi": hi}


def random_vectors(fmt: LogFormat | UniformFormat, rng: np.random.Generator, *, rows: int = 8, k: int = 40, channels: int = 3,
                   act_bits: int = 8, act_signed: bool = True, acc_bits: int = 24, overflow: OverflowMode = "saturate",
                   style: str = "random", requant: bool = True, out_bits: int = 8) -> Vectors:
    """Constrained-random vectors.

    ``style``: ``random`` (uniform codes and activations), ``every_code`` (K runs through every legal word),
    ``extreme`` (activations at the range ends, largest codes), ``overflow`` (extreme and all one sign, so a
    narrow accumulator overflows).
    """
    lo_x, hi_x = activation_range(act_bits, act_signed)
    x = rng.integers(lo_x, hi_x + 1, size=(rows, k))
    if isinstance(fmt, LogFormat):
        table = random_table(fmt, channels, rng)
        words = rng.integers(0, 1 << fmt.storage_bits, size=(channels, k))
        top = np.array([(1 << (fmt.bits - 1)) - 1, (1 << fmt.bits) - 1])  # largest index of each sign
    else:
        table = None
        words = rng.integers(fmt.qmin, fmt.qmax + 1, size=(channels, k))
        top = np.array([fmt.qmax, fmt.qmin])
    if style == "every_code":
        base = np.arange(k) % (1 << fmt.storage_bits)
        words = np.stack([np.roll(base, c) for c in range(channels)])
        if table is None:
            words = words + fmt.qmin
    elif style in ("extreme", "overflow"):
        x = rng.choice(np.array([lo_x, hi_x, 0, min(1, hi_x), max(-1, lo_x)]), size=(rows, k))
        words = rng.choice(top, size=(channels, k))
        if style == "overflow":
            x = np.where(rng.random((rows, k)) < 0.9, np.where(np.arange(rows)[:, None] % 2 == 0, hi_x, lo_x), x)
            words = np.broadcast_to(top[0], (channels, k)).copy()
    elif style != "random":
        raise ValueError(f"unknown stimulus style {style!r}")
    rq = random_requant(channels, acc_bits, out_bits, rng) if requant else {}
    return Vectors(x=x, codes=words, fmt=fmt, table=table, act_bits=act_bits, act_signed=act_signed,
                   acc_bits=acc_bits, overflow=overflow, name=f"{style}", **rq)
