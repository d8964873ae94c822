"""Test vectors for the RTL: one layer's integers, codes, decode table and requantization constants, and the
expected results, which always come from ``logmac.sim`` (a trace's own expected arrays are checked against
it too, so trace == emulator == RTL).

Trace files are ``.npz`` with the keys of ``KEYS`` (see ``docs/hw.md``); ``load_vectors`` reads them,
``save_vectors`` writes them, ``random_vectors`` makes constrained-random ones from ``logmac.codes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logmac.codes import (
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    apply_accumulator,
    format_from_dict,
    random_table,
)
from logmac.sim.mac import check_activations, log_matmul_reference, requantize

# npz key -> meaning.  Required unless marked optional.
KEYS = {
    "x": "(N, K) integer activations, as the engine's input port carries them",
    "codes": "(C, K) weight code words (log) or two's-complement integer weights (int engine)",
    "format": "JSON of LogFormat.to_dict() / UniformFormat.to_dict() (a 0-d string array)",
    "table_u": "(C, 2, L) decode-table shifts (log only)",
    "table_h": "(C, 2, L) decode-table half steps (log only)",
    "table_scale": "(C,) channel scales (log only; not used by the integer datapath)",
    "act_bits": "activation bits (scalar)",
    "act_signed": "activations signed (scalar bool)",
    "acc_bits": "accumulator register width (scalar)",
    "overflow_mode": "'saturate' or 'wrap' (0-d string)",
    "req_multiplier": "(C,) requantization multipliers M (optional: no requantization)",
    "req_shift": "(C,) requantization shifts S (with req_multiplier)",
    "req_bias": "(C,) integer bias added to the accumulator (optional, default 0)",
    "req_zero_point": "output zero point (scalar, with req_multiplier)",
    "req_lo": "output clamp low (scalar, with req_multiplier)",
    "req_hi": "output clamp high (scalar, with req_multiplier)",
    "expected_acc": "(N, C) accumulators from the emulator (optional; checked against logmac.sim)",
    "expected_overflow": "(N, C) overflow flags (optional)",
    "expected_y": "(N, C) requantized outputs (optional)",
}


@dataclass
class Vectors:
    """One layer's worth of engine work: N input rows times C output channels of K products."""

    x: np.ndarray
    codes: np.ndarray
    fmt: LogFormat | None
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
    name: str = "vectors"
    trace_expected: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = check_activations(self.x, self.act_bits, self.act_signed)
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.x.ndim != 2 or self.codes.ndim != 2 or self.x.shape[1] != self.codes.shape[1]:
            raise FormatError(f"vectors need x (N, K) and codes (C, K), got {self.x.shape} and {self.codes.shape}")
        if (self.fmt is None) != (self.table is None):
            raise FormatError("log vectors need both a format and a decode table; int vectors neither")
        if self.multiplier is not None:
            C = self.channels
            self.multiplier = np.broadcast_to(np.asarray(self.multiplier, dtype=np.int64), (C,)).copy()
            self.shift = np.broadcast_to(np.asarray(self.shift, dtype=np.int64), (C,)).copy()
            bias = 0 if self.bias is None else self.bias
            self.bias = np.broadcast_to(np.asarray(bias, dtype=np.int64), (C,)).copy()

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


@dataclass
class Expected:
    """What the engine must output, channel-major like the stream: arrays of shape (C, N)."""

    acc: np.ndarray
    overflow: np.ndarray
    y: np.ndarray | None


def golden(v: Vectors) -> Expected:
    """Expected accumulators, overflow flags and outputs, from ``logmac.sim`` (the scoreboard's model)."""
    if v.fmt is not None:
        res = log_matmul_reference(v.x, v.codes, v.table, v.fmt, v.acc_bits, v.overflow)
        acc, ovf = res.acc, res.overflow
    else:
        acc, ovf = apply_accumulator(v.x @ v.codes.T, v.acc_bits, v.overflow)
    y = None
    if v.multiplier is not None:
        y = requantize(acc, v.multiplier, v.shift, v.zero_point, v.lo, v.hi, bias=v.bias)
    exp = Expected(acc.T.copy(), ovf.T.copy(), None if y is None else y.T.copy())
    for key, mine in (("expected_acc", exp.acc), ("expected_overflow", exp.overflow), ("expected_y", exp.y)):
        theirs = v.trace_expected.get(key)
        if theirs is not None and mine is not None and not np.array_equal(np.asarray(theirs).T, mine):
            raise FormatError(f"{v.name}: the trace's {key} disagrees with logmac.sim (emulator and trace differ)")
    return exp


def _scalar(d, key: str, default=None):
    if key not in d:
        if default is None:
            raise FormatError(f"trace file lacks the required key {key!r}")
        return default
    return np.asarray(d[key]).item()


def load_vectors(path: str | Path) -> Vectors:
    """Read a trace ``.npz`` (keys in ``KEYS``), rejecting missing keys and inconsistent shapes."""
    try:
        d = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read trace file {path}: {exc}") from exc
    for key in ("x", "codes", "format", "act_bits", "act_signed", "acc_bits"):
        if key not in d:
            raise FormatError(f"trace file {path} lacks the required key {key!r}")
    unknown = sorted(set(d) - set(KEYS))
    if unknown:
        raise FormatError(f"trace file {path} has unknown keys {unknown}")
    fmt = format_from_dict(json.loads(str(_scalar(d, "format"))))
    table = None
    if isinstance(fmt, LogFormat):
        if "table_u" not in d or "table_h" not in d:
            raise FormatError(f"trace file {path} holds log codes but no table_u/table_h")
        scale = d.get("table_scale", np.ones(d["table_u"].shape[0]))
        table = DecodeTable(d["table_u"], d["table_h"], scale)
        table.validate(fmt)
    else:
        fmt = None
    has_rq = "req_multiplier" in d
    return Vectors(
        x=d["x"], codes=d["codes"], fmt=fmt, table=table,
        act_bits=int(_scalar(d, "act_bits")), act_signed=bool(_scalar(d, "act_signed")),
        acc_bits=int(_scalar(d, "acc_bits")), overflow=str(_scalar(d, "overflow_mode", "saturate")),
        multiplier=d.get("req_multiplier"), shift=d.get("req_shift") if has_rq else None, bias=d.get("req_bias"),
        zero_point=int(_scalar(d, "req_zero_point", 0)) if has_rq else 0,
        lo=int(_scalar(d, "req_lo")) if has_rq else -128, hi=int(_scalar(d, "req_hi")) if has_rq else 127,
        name=Path(path).stem,
        trace_expected={k: d[k] for k in ("expected_acc", "expected_overflow", "expected_y") if k in d},
    )


def save_vectors(v: Vectors, path: str | Path, with_expected: bool = True) -> None:
    """Write ``v`` as a trace file that ``load_vectors`` reads back."""
    out = {"x": v.x, "codes": v.codes, "act_bits": v.act_bits, "act_signed": v.act_signed,
           "acc_bits": v.acc_bits, "overflow_mode": np.array(v.overflow)}
    if v.fmt is not None:
        out.update(format=np.array(json.dumps(v.fmt.to_dict())), table_u=v.table.u, table_h=v.table.h,
                   table_scale=v.table.scale)
    else:
        out["format"] = np.array(json.dumps({"kind": "uniform", "bits": 8, "symmetric": True}))
    if v.multiplier is not None:
        out.update(req_multiplier=v.multiplier, req_shift=v.shift, req_bias=v.bias, req_zero_point=v.zero_point,
                   req_lo=v.lo, req_hi=v.hi)
    if with_expected:
        exp = golden(v)
        out.update(expected_acc=exp.acc.T, expected_overflow=exp.overflow.T)
        if exp.y is not None:
            out["expected_y"] = exp.y.T
    np.savez(path, **out)


def random_requant(channels: int, acc_bits: int, out_bits: int, rng: np.random.Generator,
                   mult_bits: int = 31) -> dict:
    """Requantization constants that keep outputs mostly inside the clamp (some saturate on purpose)."""
    mult = rng.integers(1 << (mult_bits - 2), 1 << mult_bits, size=channels)
    shift = np.clip(acc_bits // 2 + mult_bits - out_bits + rng.integers(-3, 4, size=channels), 0, 62)
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return {"multiplier": mult, "shift": shift, "bias": rng.integers(-(1 << 12), 1 << 12, size=channels),
            "zero_point": int(rng.integers(-8, 9)), "lo": int(lo + rng.integers(0, 4)), "hi": hi}


def random_vectors(fmt: LogFormat | None, rng: np.random.Generator, *, rows: int = 8, k: int = 40, channels: int = 3,
                   act_bits: int = 8, act_signed: bool = True, acc_bits: int = 24, overflow: OverflowMode = "saturate",
                   int_bits: int = 4, style: str = "random", requant: bool = True, out_bits: int = 8) -> Vectors:
    """Constrained-random vectors.

    ``style``: ``random`` (uniform codes and activations), ``every_code`` (K runs through every legal word),
    ``extreme`` (activations at the range ends, largest codes), ``overflow`` (extreme and all one sign, so a
    narrow accumulator overflows).
    """
    lo_x, hi_x = (-(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1) if act_signed else (0, (1 << act_bits) - 1)
    x = rng.integers(lo_x, hi_x + 1, size=(rows, k))
    if fmt is not None:
        table = random_table(fmt, channels, rng)
        words = rng.integers(0, 1 << fmt.storage_bits, size=(channels, k))
        top = np.array([(1 << (fmt.bits - 1)) - 1, (1 << fmt.bits) - 1])  # largest index of each sign
    else:
        table = None
        words = rng.integers(-(1 << (int_bits - 1)), 1 << (int_bits - 1), size=(channels, k))
        top = np.array([(1 << (int_bits - 1)) - 1, -(1 << (int_bits - 1))])
    if style == "every_code":
        span = (1 << fmt.storage_bits) if fmt is not None else (1 << int_bits)
        base = np.arange(k) % span
        words = np.stack([np.roll(base, c) for c in range(channels)])
        if fmt is None:
            words = words - (1 << (int_bits - 1))
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
