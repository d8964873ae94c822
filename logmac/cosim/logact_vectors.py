"""Test vectors for the AdaLog-activation engine (``logmac.hw.logact_engine``): AdaLog activation words, the
weights (log code words with their decode table, or uniform signed integers), and the expected results, which
always come from ``logmac.sim`` on the decoded integer levels (``format.adalog_decode_int``).

The file format is a plain ``.npz`` (no pickle), written by :func:`save_logact_vectors` and read by
:func:`load_logact_vectors`; both the random generator here and the AdaLog quantizer's real attention tiles
write it.  Keys (``LOGACT_VERSION`` 1):

======================  ============  =====================================================================
key                     dtype, shape  meaning
======================  ============  =====================================================================
``logact_version``      int64 ()      1
``name``                str ()        free text (layer / tile name)
``act_format``          str ()        JSON of ``AdaLogFormat.to_dict()`` (``format.format_from_dict`` reads it)
``act_words``           int64 (N, K)  stored AdaLog words of the N input rows (zero code / flag included)
``weight_format``       str ()        JSON of ``LogFormat.to_dict()`` or of a symmetric ``UniformFormat``
``weights``             int64 (C, K)  log code words, or signed integers of the uniform format
``u``, ``h``, ``scale`` (C, 2, L)     the log decode table (log weights only; scale (C,))
``acc_bits``            int64 ()      accumulator register width
``overflow_mode``       str ()        ``saturate`` or ``wrap``
``acc``                 int64 (N, C)  expected accumulator registers
``overflow``            bool (N, C)   expected overflow flags
``requant_multiplier``  int64 (C,)    optional, with ``requant_shift``, ``bias_int`` (C,), ``out_zero_point``,
``y``                   int64 (N, C)  ``clamp_lo``, ``clamp_hi`` (int64 ()) and the requantized outputs ``y``
``meta``                str ()        optional JSON of free information (model, layer, tile, float scales)
======================  ============  =====================================================================

The golden model: ``logmac.sim.log_matmul(adalog_decode_int(act_words, act_format), weights, table,
weight_format, acc_bits, overflow)`` for log weights, ``logmac.sim.uniform_matmul`` on the same levels for
uniform ones, then ``logmac.format.requantize``.  A file's expected arrays are checked against it on use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from logmac.cosim.vectors import Expected, VectorShape, channel_fields, random_requant
from logmac.format import (
    AdaLogFormat,
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    UniformFormat,
    adalog_decode_int,
    adalog_words,
    format_from_dict,
    requantize,
)
from logmac.format.arrays import check_arrays, read_npz
from logmac.sim.ops import log_matmul, uniform_matmul
from logmac.stimulus import random_table

LOGACT_VERSION = 1
STYLES = ("random", "every_code", "extreme", "overflow")


@dataclass
class LogActVectors(VectorShape):
    """N input rows of AdaLog words times C output channels of K weights, and how to fit and requantize."""

    act_words: np.ndarray
    act_format: AdaLogFormat
    weights: np.ndarray
    weight_format: LogFormat | UniformFormat
    table: DecodeTable | None
    acc_bits: int
    overflow: OverflowMode = "saturate"
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    bias: np.ndarray | None = None
    zero_point: int = 0
    lo: int = -128
    hi: int = 127
    name: str = "logact"
    meta: dict = field(default_factory=dict)
    file_expected: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.act_format, AdaLogFormat):
            raise FormatError(f"{self.name}: act_format must be an AdaLogFormat, got {self.act_format!r}")
        self.act_words = np.asarray(self.act_words, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.int64)
        if self.act_words.ndim != 2 or self.weights.ndim != 2 or self.act_words.shape[1] != self.weights.shape[1]:
            raise FormatError(f"{self.name}: need act_words (N, K) and weights (C, K), got "
                              f"{self.act_words.shape} and {self.weights.shape}")
        adalog_decode_int(self.act_words, self.act_format)  # rejects words the format cannot hold
        if isinstance(self.weight_format, LogFormat):
            if self.table is None:
                raise FormatError(f"{self.name}: log weights need a decode table")
            self.table.validate(self.weight_format)
            if self.table.channels != self.channels:
                raise FormatError(f"{self.name}: {self.channels} weight rows but a {self.table.channels}-channel table")
        elif isinstance(self.weight_format, UniformFormat):
            if self.table is not None:
                raise FormatError(f"{self.name}: uniform weights take no decode table")
            if not self.weight_format.symmetric:
                raise FormatError(f"{self.name}: uniform weights must be symmetric (signed integers, no zero point)")
            fmt = self.weight_format
            if self.weights.size and (self.weights.min() < fmt.qmin or self.weights.max() > fmt.qmax):
                raise FormatError(f"{self.name}: uniform weights span [{self.weights.min()}, {self.weights.max()}], "
                                  f"outside the {fmt.bits}-bit range [{fmt.qmin}, {fmt.qmax}]")
        else:
            raise FormatError(f"{self.name}: weight_format must be a LogFormat or UniformFormat, got {self.weight_format!r}")
        if self.overflow not in ("saturate", "wrap"):
            raise FormatError(f"{self.name}: overflow mode must be 'saturate' or 'wrap', got {self.overflow!r}")
        self.broadcast_requant()

    @property
    def is_log(self) -> bool:
        return isinstance(self.weight_format, LogFormat)

    @property
    def x(self) -> np.ndarray:
        """The activation words, under the name the scoreboard's mismatch message prints."""
        return self.act_words

    @property
    def codes(self) -> np.ndarray:
        """The weights, under the name the scoreboard's mismatch message prints."""
        return self.weights

    def levels(self) -> np.ndarray:
        """The unsigned integer activation levels the MAC multiplies (N, K)."""
        return adalog_decode_int(self.act_words, self.act_format)

    def tile(self, rows: np.ndarray, channels: np.ndarray, name: str | None = None) -> LogActVectors:
        """The sub-problem of the given input rows and output channels (expectations sliced alike)."""
        rows, channels = np.asarray(rows), np.asarray(channels)
        expected = {k: np.asarray(a)[np.ix_(rows, channels)] for k, a in self.file_expected.items()}
        return replace(self, act_words=self.act_words[rows], weights=self.weights[channels], name=name or self.name,
                       file_expected=expected, **channel_fields(self, channels))


def golden(v: LogActVectors) -> Expected:
    """Expected accumulators, overflow flags and outputs (arrays (C, N), stream order) from ``logmac.sim``."""
    levels = v.levels()
    act_bits = v.act_format.level_bits
    if v.is_log:
        res = log_matmul(levels, v.weights, v.table, v.weight_format, v.acc_bits, v.overflow, act_bits=act_bits)
    else:
        res = uniform_matmul(levels, v.weights, v.weight_format, v.acc_bits, v.overflow, act_bits=act_bits)
    acc, ovf = np.asarray(res.acc, dtype=np.int64), np.asarray(res.overflow, dtype=bool)
    y = None
    if v.multiplier is not None:
        y = requantize(acc, v.multiplier, v.shift, v.zero_point, v.lo, v.hi, bias=v.bias)
    exp = Expected(acc.T.copy(), ovf.T.copy(), None if y is None else y.T.copy())
    for key, mine in (("acc", exp.acc), ("overflow", exp.overflow), ("y", exp.y)):
        theirs = v.file_expected.get(key)
        if theirs is not None and mine is not None and not np.array_equal(np.asarray(theirs).T, mine):
            raise FormatError(f"{v.name}: the file's {key} disagrees with logmac.sim")
    return exp


def save_logact_vectors(v: LogActVectors, path: str | Path) -> Path:
    """Write ``v`` (expected values computed by ``logmac.sim``) as a LOGACT_VERSION 1 ``.npz``."""
    exp = golden(v)
    arrays = {
        "logact_version": np.int64(LOGACT_VERSION), "name": np.str_(v.name),
        "act_format": np.str_(json.dumps(v.act_format.to_dict())), "act_words": v.act_words,
        "weight_format": np.str_(json.dumps(v.weight_format.to_dict())), "weights": v.weights,
        "acc_bits": np.int64(v.acc_bits), "overflow_mode": np.str_(v.overflow),
        "acc": exp.acc.T, "overflow": exp.overflow.T, "meta": np.str_(json.dumps(v.meta)),
    }
    if v.table is not None:
        arrays.update(u=v.table.u.astype(np.uint8), h=v.table.h.astype(np.uint8), scale=v.table.scale)
    if v.multiplier is not None:
        arrays.update(requant_multiplier=v.multiplier, requant_shift=v.shift, bias_int=v.bias,
                      out_zero_point=np.int64(v.zero_point), clamp_lo=np.int64(v.lo), clamp_hi=np.int64(v.hi),
                      y=exp.y.T)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


RQ_KEYS = ("requant_multiplier", "requant_shift", "bias_int", "out_zero_point", "clamp_lo", "clamp_hi", "y")
# What save_logact_vectors writes: key -> (kind, allowed ranks).
LOGACT_SCHEMA = {
    "logact_version": ("int", (0,)), "name": ("str", (0,)), "act_format": ("str", (0,)),
    "weight_format": ("str", (0,)), "overflow_mode": ("str", (0,)), "meta": ("str", (0,)),
    "act_words": ("int", (2,)), "weights": ("int", (2,)), "acc": ("int", (2,)), "y": ("int", (2,)),
    "overflow": ("bool", (2,)), "acc_bits": ("int", (0,)), "u": ("uint", (3,)), "h": ("uint", (3,)),
    "scale": ("float", (1,)), "requant_multiplier": ("int", (0, 1)), "requant_shift": ("int", (0, 1)),
    "bias_int": ("int", (0, 1)), "out_zero_point": ("int", (0,)), "clamp_lo": ("int", (0,)), "clamp_hi": ("int", (0,)),
}


def load_logact_vectors(path: str | Path) -> LogActVectors:
    """Read a file written by :func:`save_logact_vectors`; a wrong version, missing key or bad shape is an error."""
    a = read_npz(path, "AdaLog vector file")
    check_arrays(a, LOGACT_SCHEMA, str(path))
    version = int(a.get("logact_version", -1))
    if version != LOGACT_VERSION:
        raise FormatError(f"{path}: logact_version {version}, this reader understands {LOGACT_VERSION}")
    need = ["name", "act_format", "act_words", "weight_format", "weights", "acc_bits", "overflow_mode", "acc", "overflow"]
    missing = [k for k in need if k not in a]
    if missing:
        raise FormatError(f"{path}: missing keys {missing}")
    for group in (("u", "h", "scale"), RQ_KEYS):
        if 0 < sum(k in a for k in group) < len(group):
            raise FormatError(f"{path}: {', '.join(group)} come together; this file has only some of them")
    try:
        act_format = format_from_dict(json.loads(str(a["act_format"])))
        weight_format = format_from_dict(json.loads(str(a["weight_format"])))
        meta = json.loads(str(a.get("meta", "{}")))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: a format or meta entry is not JSON ({exc})") from exc
    if not isinstance(act_format, AdaLogFormat) or isinstance(weight_format, AdaLogFormat) or not isinstance(meta, dict):
        raise FormatError(f"{path}: act_format must be AdaLog, weight_format log or uniform, meta a JSON object")
    table = DecodeTable(a["u"], a["h"], a["scale"]) if "u" in a else None
    rq = {}
    if "requant_multiplier" in a:
        rq = {"multiplier": a["requant_multiplier"], "shift": a["requant_shift"], "bias": a["bias_int"],
              "zero_point": int(a["out_zero_point"]), "lo": int(a["clamp_lo"]), "hi": int(a["clamp_hi"])}
    v = LogActVectors(act_words=a["act_words"], act_format=act_format, weights=a["weights"], weight_format=weight_format,
                      table=table, acc_bits=int(a["acc_bits"]), overflow=str(a["overflow_mode"]),
                      name=str(a["name"]) or Path(path).stem, meta=meta,
                      file_expected={k: a[k] for k in ("acc", "overflow", "y") if k in a}, **rq)
    for key in ("acc", "overflow"):
        if a[key].shape != (v.rows, v.channels):
            raise FormatError(f"{path}: {key} has shape {a[key].shape}, expected (N, C) = {(v.rows, v.channels)}")
    return v


def _act_words_for(fmt: AdaLogFormat, indices: np.ndarray) -> np.ndarray:
    """Stored words (int64) of level indices; index ``fmt.nonzero_levels`` stands for zero."""
    return adalog_words(indices, fmt).astype(np.int64)


def random_logact_vectors(act_format: AdaLogFormat, weight_format: LogFormat | UniformFormat,
                          rng: np.random.Generator, *, rows: int = 4, k: int = 40, channels: int = 2,
                          acc_bits: int = 48, overflow: OverflowMode = "saturate", style: str = "random",
                          requant: bool = True, out_bits: int = 8) -> LogActVectors:
    """Constrained-random vectors.

    ``style``: ``random`` (any storable activation word, zero codes and out-of-range indices included; any
    weight), ``every_code`` (K runs through every storable activation word against every weight word),
    ``extreme`` (largest levels and zeros against the largest weights of both signs), ``overflow`` (largest
    level against the largest positive weight, so a narrow accumulator overflows).
    """
    if style not in STYLES:
        raise ValueError(f"unknown stimulus style {style!r}; choose from {STYLES}")
    n_words = 1 << act_format.storage_bits
    acts = rng.integers(0, n_words, size=(rows, k))
    if isinstance(weight_format, LogFormat):
        table = random_table(weight_format, channels, rng)
        weights = rng.integers(0, 1 << weight_format.storage_bits, size=(channels, k))
        top = np.array([(1 << (weight_format.bits - 1)) - 1, (1 << weight_format.bits) - 1])  # largest of each sign
        n_weight_words = 1 << weight_format.storage_bits
    else:
        table = None
        weights = rng.integers(weight_format.qmin, weight_format.qmax + 1, size=(channels, k))
        top = np.array([weight_format.qmax, weight_format.qmin])
        n_weight_words = weight_format.qmax - weight_format.qmin + 1
    largest = _act_words_for(act_format, np.array([0]))[0]  # index 0 is the largest level
    zero = _act_words_for(act_format, np.array([act_format.nonzero_levels]))[0]
    if style == "every_code":
        acts = np.stack([np.roll(np.arange(k) % n_words, r) for r in range(rows)])
        base = np.arange(k) % n_weight_words
        weights = np.stack([np.roll(base, 3 * c) for c in range(channels)])
        if table is None:
            weights = weights + weight_format.qmin
    elif style in ("extreme", "overflow"):
        second = _act_words_for(act_format, np.array([min(1, act_format.nonzero_levels - 1)]))[0]
        acts = rng.choice(np.array([largest, largest, zero, second]), size=(rows, k))
        weights = rng.choice(top, size=(channels, k))
        if style == "overflow":
            acts = np.where(rng.random((rows, k)) < 0.9, largest, acts)
            weights = np.broadcast_to(top[0], (channels, k)).copy()
    rq = random_requant(channels, acc_bits, out_bits, rng) if requant else {}
    return LogActVectors(act_words=acts, act_format=act_format, weights=weights, weight_format=weight_format,
                         table=table, acc_bits=acc_bits, overflow=overflow, name=style, **rq)


def vectors_from_attention_tiles(tiles: dict[str, np.ndarray] | str | Path, name: str = "attn") -> list[LogActVectors]:
    """Real attn@V tiles (``logmac.backends.adalog.capture_attention_tiles`` output, or its saved ``.npz``) as vectors.

    Each tile is one (image, head): the post-Softmax AdaLog words (T, T) are the activation rows, the V
    multipliers ``v_code - zp_v`` (T, D) the uniform weights (transposed to (D, T)); the tile's own exact
    accumulators and overflow flags become the file expectations, so a run checks tile == logmac.sim == RTL.
    """
    if not isinstance(tiles, dict):
        tiles = read_npz(tiles, "attention-tile capture")
    missing = [k for k in ("a_words", "v_mult", "acc", "overflow", "bits", "q", "zero", "max_shift", "acc_bits")
               if k not in tiles]
    if missing:
        raise FormatError(f"attention tiles lack {missing}")
    fmt = AdaLogFormat(int(tiles["bits"]), int(tiles["q"]), zero=str(tiles["zero"]), max_shift=int(tiles["max_shift"]))
    v_mult = np.asarray(tiles["v_mult"], dtype=np.int64)
    weight_bits = max(2, int(np.abs(v_mult).max(initial=1)).bit_length() + 1)
    where = tiles.get("tile_image_head")
    out = []
    for n in range(len(tiles["a_words"])):
        label = f"{name}{n}" if where is None else f"{name}_image{int(where[n][0])}_head{int(where[n][1])}"
        out.append(LogActVectors(act_words=tiles["a_words"][n], act_format=fmt, weights=v_mult[n].T,
                                 weight_format=UniformFormat(weight_bits), table=None, acc_bits=int(tiles["acc_bits"]),
                                 name=label, file_expected={"acc": tiles["acc"][n], "overflow": tiles["overflow"][n]}))
    return out
