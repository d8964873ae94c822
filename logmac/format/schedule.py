"""Exponent schedules: a layer's log weights compiled offline into the beat stream of the scheduled engine.

Weights are known before inference, so the decode table can run on the host.  Each non-zero weight becomes
one or two *terms* ``(exponent e, sign, multiplier 1 or 3)`` whose values ``+-m * 2**e`` sum to the weight's
integer multiplier (``decode_int``).  A half step ``2**u + 2**(u-1)`` is two terms (``split``: one at ``u``,
one at ``u - 1``) or one term ``3 * 2**(u-1)`` (``select``: the lane adds ``x + 2x``); ``none`` builds take
base-2 tables only.  Two stream variants:

- ``inplace``: tiles of ``lanes`` consecutive activations, tile after tile.  Per tile one beat per exponent
  present in it, highest first; a beat enables the lanes whose weight has a term at that exponent and
  carries ``delta``, the shift down to the next beat's exponent (to 0 after the tile's last group), so the
  tile's partial sum is ``p = (p + sum(+-m x)) << delta`` (Horner) and the tile's last beat adds ``p`` to
  the accumulator.  A tile without any term still takes one empty beat (the feeder steps tile by tile).
- ``bucketed``: one beat per tile; each lane carries its term's exponent and routes ``+-m x`` into that
  exponent's adder tree; the trees are summed with fixed shifts.  ``split`` lanes carry ``u`` and ``h``
  and feed trees ``u`` and ``u - 1``.

An in-place build can store the codes themselves (``store="codes"``) instead of per-beat lane bits: the
weight buffer keeps each weight's code word; per tile a presence mask of the non-zero codes that occur lets
the controller walk only the present levels, highest term exponent first; each beat broadcasts, per sign,
up to ``slots`` level indices (1, or 3 on ``split`` builds, where a half step's lower term shares an
exponent with other levels), and a lane is enabled when its code's index equals one broadcast for its sign
(:func:`coded_lanes`), its sign the code's sign bit.  The Horner stream is the in-place one.

A third, ``permuted`` (terms sorted by exponent, gathered through an index per term), is priced by
:func:`schedule_cost` only.  Schedules serialise to a dict of arrays with a checksum; loading checks them
against the limits of the engine build (:class:`ScheduleLimits`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from logmac.format.arrays import read_npz
from logmac.format.errors import MAX_SHIFT_LIMIT, FormatError
from logmac.format.log import DecodeTable, LogFormat, ZeroMode, split_words

HalfMode = Literal["none", "split", "select"]
Variant = Literal["inplace", "bucketed"]
Store = Literal["terms", "codes"]
HALF_MODES = ("none", "split", "select")
VARIANTS = ("inplace", "bucketed")
STORES = ("terms", "codes")
SCHEDULE_VERSION = 2
_LANE_FIELDS = ("en", "neg", "aux", "exp")  # aux: triple (select) or half (bucketed split)


@dataclass(frozen=True)
class ScheduleLimits:
    """What one engine build accepts: its variant, half-step option, lane count, shift field and longest K;
    a ``codes`` build also its code width (sign + index bits) and whether words carry a zero flag above it."""

    variant: Variant
    half: HalfMode
    lanes: int
    max_shift: int
    max_k: int
    store: Store = "terms"
    code_bits: int = 0
    zero_flag: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise FormatError(f"schedule variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.half not in HALF_MODES:
            raise FormatError(f"half-step mode must be one of {HALF_MODES}, got {self.half!r}")
        if not 1 <= self.lanes <= 256:
            raise FormatError(f"lanes must be 1..256, got {self.lanes}")
        if not 1 <= self.max_shift <= MAX_SHIFT_LIMIT:
            raise FormatError(f"max_shift must be 1..{MAX_SHIFT_LIMIT}, got {self.max_shift}")
        if self.max_k < 1:
            raise FormatError(f"max_k must be >= 1, got {self.max_k}")
        if self.store not in STORES:
            raise FormatError(f"schedule store must be one of {STORES}, got {self.store!r}")
        if self.store == "codes":
            if self.variant != "inplace" or self.half == "select":
                raise FormatError("a codes store is an in-place schedule with 'none' or 'split' half steps")
            if not 2 <= self.code_bits <= 8:
                raise FormatError(f"code_bits must be 2..8, got {self.code_bits}")
        elif self.code_bits or self.zero_flag:
            raise FormatError("code_bits and zero_flag belong to a codes store")

    @property
    def shift_bits(self) -> int:
        return self.max_shift.bit_length()

    @property
    def slots(self) -> int:
        """Level indices a codes beat broadcasts per sign: on ``split`` builds up to three distinct levels have
        a term at one exponent (``2**g``, ``1.5 * 2**g`` and the lower half of ``1.5 * 2**(g+1)``)."""
        return 1 if self.half == "none" else 3

    @property
    def word_bits(self) -> int:
        """Bits of a stored code word on a codes build (the zero flag included)."""
        return self.code_bits + self.zero_flag


@dataclass
class Schedule:
    """A layer's beat stream; beats of channel ``c`` are ``offsets[c]:offsets[c + 1]``.

    Per beat and lane: ``en``, ``neg``, ``aux`` (triple in ``select``, half in bucketed ``split``) and
    ``exp`` (bucketed only).  Per beat: ``delta`` and ``tile_last`` (in place only) and ``last``.
    A codes store adds the stored ``words`` (C, tiles * lanes) and the broadcast ``bidx`` (beats, 2, slots;
    -1: slot unused); its ``en`` and ``neg`` are what the lanes derive from them (:func:`coded_lanes`).
    """

    limits: ScheduleLimits
    k: int
    offsets: np.ndarray
    en: np.ndarray
    neg: np.ndarray
    aux: np.ndarray
    exp: np.ndarray
    delta: np.ndarray
    tile_last: np.ndarray
    last: np.ndarray
    words: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    bidx: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 1), dtype=np.int64))

    @property
    def channels(self) -> int:
        return len(self.offsets) - 1

    @property
    def tiles(self) -> int:
        return -(-self.k // self.limits.lanes)

    @property
    def beats(self) -> np.ndarray:
        """Beats (cycles) per output of each channel."""
        return np.diff(self.offsets)

    def beat_tiles(self) -> np.ndarray:
        """Activation tile each beat presents (the feeder steps on ``tile_last``)."""
        t = np.zeros(len(self.last), dtype=np.int64)
        for c in range(self.channels):
            lo, hi = self.offsets[c], self.offsets[c + 1]
            t[lo:hi] = np.concatenate([[0], np.cumsum(self.tile_last[lo:hi - 1])])
        return t

    def beat_words(self) -> np.ndarray:
        """(beats, lanes) stored code words each beat's lanes hold (codes store)."""
        ch = np.repeat(np.arange(self.channels), self.beats)
        return self.words.reshape(self.channels, self.tiles, self.limits.lanes)[ch, self.beat_tiles()]

    def lane_multipliers(self) -> np.ndarray:
        """(beats, lanes) signed multiplier each lane applies before its exponent: 0, +-1 or +-3."""
        m = np.where(self.aux.astype(bool) & (self.limits.half == "select"), 3, 1)
        return np.where(self.en.astype(bool), np.where(self.neg.astype(bool), -m, m), 0).astype(np.int64)

    def to_dict(self) -> dict:
        """Plain arrays and scalars (``np.savez`` ready), with a checksum over everything."""
        d = {"schedule_version": np.int64(SCHEDULE_VERSION), "variant": np.str_(self.limits.variant),
             "half": np.str_(self.limits.half), "lanes": np.int64(self.limits.lanes),
             "max_shift": np.int64(self.limits.max_shift), "k": np.int64(self.k),
             "store": np.str_(self.limits.store), "code_bits": np.int64(self.limits.code_bits),
             "zero_flag": np.int64(self.limits.zero_flag)}
        for name in ("offsets", "delta", "tile_last", "last", *_LANE_FIELDS, "words", "bidx"):
            d[name] = np.asarray(getattr(self, name), dtype=np.int64)
        d["checksum"] = np.str_(_checksum(d))
        return d

    def save(self, path) -> None:
        np.savez(path, **self.to_dict())


def _checksum(d: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(k for k in d if k != "checksum"):
        a = np.asarray(d[key])
        h.update(key.encode() + str(a.dtype.kind).encode() + str(a.shape).encode())
        h.update(a.astype(np.int64).tobytes() if a.dtype.kind in "iub" else str(a).encode())
    return h.hexdigest()[:24]


def load_schedule(source, limits: ScheduleLimits) -> Schedule:
    """Read a schedule (a ``to_dict`` dict or an ``.npz`` path) and check it runs on a build with ``limits``."""
    if not isinstance(source, dict):
        source = read_npz(source, "schedule")
    need = {"schedule_version", "variant", "half", "lanes", "max_shift", "k", "offsets", "delta", "tile_last",
            "last", *_LANE_FIELDS, "store", "code_bits", "zero_flag", "words", "bidx", "checksum"}
    missing = sorted(need - set(source))
    if missing:
        raise FormatError(f"schedule is missing {missing}")
    if str(source["checksum"]) != _checksum(source):
        raise FormatError("schedule checksum mismatch: the file is corrupt or was edited")
    if int(source["schedule_version"]) != SCHEDULE_VERSION:
        raise FormatError(f"schedule version {int(source['schedule_version'])}, this reader knows {SCHEDULE_VERSION}")
    if str(source["variant"]) != limits.variant or str(source["half"]) != limits.half:
        raise FormatError(f"a {source['variant']}/{source['half']} schedule cannot run on a "
                          f"{limits.variant}/{limits.half} build")
    if (str(source["store"]), int(source["code_bits"]), bool(source["zero_flag"])) != \
            (limits.store, limits.code_bits, limits.zero_flag):
        raise FormatError(f"a {source['store']} schedule of {int(source['code_bits'])}-bit codes (zero flag "
                          f"{bool(source['zero_flag'])}) cannot run on a {limits.store} build of "
                          f"{limits.code_bits}-bit codes (zero flag {limits.zero_flag})")
    if int(source["lanes"]) != limits.lanes:
        raise FormatError(f"schedule for {int(source['lanes'])} lanes, the build has lanes={limits.lanes}")
    if int(source["max_shift"]) > limits.max_shift:
        raise FormatError(f"schedule shifts up to {int(source['max_shift'])}, beyond the build's max_shift="
                          f"{limits.max_shift}")
    if not 1 <= int(source["k"]) <= limits.max_k:
        raise FormatError(f"schedule K={int(source['k'])} outside 1..max_k={limits.max_k} of the build")
    sched = Schedule(limits, int(source["k"]), *(np.asarray(source[n], dtype=np.int64) for n in
                     ("offsets", "en", "neg", "aux", "exp", "delta", "tile_last", "last", "words", "bidx")))
    validate(sched)
    return sched


def validate(s: Schedule) -> None:
    """Raise FormatError unless ``s`` is a well-formed stream for its limits."""
    lim, n = s.limits, len(s.last)
    if s.offsets.ndim != 1 or len(s.offsets) < 2 or s.offsets[0] != 0 or s.offsets[-1] != n \
            or np.any(np.diff(s.offsets) < 1):
        raise FormatError("schedule offsets must rise from 0 to the beat count, at least one beat per channel")
    for name in _LANE_FIELDS:
        if getattr(s, name).shape != (n, lim.lanes):
            raise FormatError(f"schedule field {name} must have shape ({n}, {lim.lanes})")
    for name in ("delta", "tile_last", "last"):
        if getattr(s, name).shape != (n,):
            raise FormatError(f"schedule field {name} must have shape ({n},)")
    for name in ("en", "neg", "aux", "tile_last", "last"):
        if np.any((getattr(s, name) != 0) & (getattr(s, name) != 1)):
            raise FormatError(f"schedule field {name} must be 0 or 1")
    for name in ("exp", "delta"):
        a = getattr(s, name)
        if a.size and (a.min() < 0 or a.max() > lim.max_shift):
            raise FormatError(f"schedule {name} {int(a.max())} beyond the build's max_shift={lim.max_shift}")
    ends = np.zeros(n, dtype=bool)
    ends[s.offsets[1:] - 1] = True
    if not np.array_equal(s.last.astype(bool), ends):
        raise FormatError("schedule 'last' must mark exactly each channel's final beat")
    if lim.half != "select" and lim.variant == "inplace" and s.aux.any():
        raise FormatError("only 'select' builds have a triple bit in the in-place stream")
    if lim.half == "none" and s.aux.any():
        raise FormatError("a 'none' half-step build takes no half-step (aux) bits")
    tiles_per_channel = np.add.reduceat(s.tile_last, s.offsets[:-1])
    if lim.variant == "bucketed":
        if not (np.all(s.tile_last == 1) and np.all(s.delta == 0)):
            raise FormatError("a bucketed schedule has one beat per tile and no delta")
        if lim.half == "split" and np.any(s.aux.astype(bool) & (s.exp < 1)):
            raise FormatError("a half-step lane at exponent 0 would need a right shift")
    elif s.exp.any():
        raise FormatError("an in-place schedule carries no per-lane exponents")
    if np.any(tiles_per_channel != s.tiles):
        raise FormatError(f"every channel must step through all {s.tiles} tiles of K={s.k}")
    if lim.store == "codes":
        _validate_codes(s, tiles_per_channel)


def _validate_codes(s: Schedule, tiles_per_channel: np.ndarray) -> None:
    lim = s.limits
    if s.words.shape != (s.channels, s.tiles * lim.lanes) or s.bidx.shape != (len(s.last), 2, lim.slots):
        raise FormatError(f"a codes schedule needs words ({s.channels}, {s.tiles * lim.lanes}) and bidx "
                          f"({len(s.last)}, 2, {lim.slots})")
    if s.words.size and (s.words.min() < 0 or s.words.max() >= 1 << lim.word_bits):
        raise FormatError(f"stored code words must fit {lim.word_bits} bits")
    if s.bidx.size and (s.bidx.min() < -1 or s.bidx.max() >= 1 << (lim.code_bits - 1)):
        raise FormatError(f"broadcast indices must be -1 or fit {lim.code_bits - 1} bits")
    en, neg = coded_lanes(lim, s.beat_words(), s.bidx)
    if not (np.array_equal(en, s.en) and np.array_equal(neg, s.neg)):
        raise FormatError("a codes schedule's lane bits must be those its words and broadcasts give")


def coded_lanes(limits: ScheduleLimits, words: np.ndarray, bidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lane rule of a codes build: (beats, lanes) stored words and (beats, 2, slots) broadcast indices to
    ``en`` (the word is not a flagged zero and its index is broadcast for its sign) and ``neg`` (its sign)."""
    cb = limits.code_bits
    w = np.asarray(words, dtype=np.int64)
    sign, idx = (w >> (cb - 1)) & 1, w & ((1 << (cb - 1)) - 1)
    flag = (w >> cb) & 1 if limits.zero_flag else np.zeros_like(w)
    sel = np.take_along_axis(np.asarray(bidx, dtype=np.int64), sign[..., None], axis=1)  # (beats, lanes, slots)
    en = (sel == idx[..., None]).any(axis=-1) & (flag == 0)
    return en.astype(np.int64), (en & (sign == 1)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Compiler
# ----------------------------------------------------------------------------------------------

def weight_terms(words: np.ndarray, table: DecodeTable, fmt: LogFormat, half: HalfMode,
                 term_shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per weight (C, K): ``u``, ``h``, ``neg``, ``nonzero`` from the table, and ``e`` (C, K, 2): the
    exponents of its terms (-1: no term); ``select`` puts a half step at ``u - 1`` with multiplier 3.

    ``term_shift`` (C, K), >= 0: added to every weight's exponents (``u`` included), which is how per-group
    exponent offsets (``logmac.format.groups.column_shifts``) reach a schedule: ``(w << s) * x`` is a term of
    ``w``'s at ``u + s``, so the engine runs the stream unchanged."""
    table.validate(fmt)
    sign, index, is_zero = split_words(words, fmt)
    if words.shape[0] != table.channels:
        raise FormatError(f"codes have {words.shape[0]} channels but the decode table has {table.channels}")
    ch = np.arange(words.shape[0])[:, None]
    u, h = table.u[ch, sign, index], table.h[ch, sign, index]
    nz = ~is_zero
    if term_shift is not None:
        term_shift = np.asarray(term_shift, dtype=np.int64)
        if term_shift.shape != words.shape or (term_shift.size and term_shift.min() < 0):
            raise FormatError(f"term shifts must be non-negative integers of the codes' shape {words.shape}, got "
                              f"{term_shift.shape}")
        u = u + term_shift
    if half == "none" and np.any(h[nz] == 1):
        raise FormatError("half-step weights need a 'split' or 'select' build (half='none' takes base-2 tables)")
    e = np.full(words.shape + (2,), -1, dtype=np.int64)
    half_nz = nz & (h == 1)
    if half == "select":
        e[..., 0] = np.where(nz, u - h, -1)
    else:
        e[..., 0] = np.where(nz, u, -1)
        e[..., 1] = np.where(half_nz, u - 1, -1)
    return u, h, sign.astype(bool), nz, e


def _check_fits(words: np.ndarray, table: DecodeTable, limits: ScheduleLimits,
                term_shift: np.ndarray | None = None) -> np.ndarray:
    words = np.asarray(words)
    if words.ndim != 2:
        raise FormatError(f"codes must be (C, K), got shape {words.shape}")
    if words.shape[1] > limits.max_k:
        raise FormatError(f"K={words.shape[1]} exceeds the build's max_k={limits.max_k}")
    if int(table.u.max(initial=0)) > limits.max_shift:
        raise FormatError(f"decode table shift {int(table.u.max())} beyond the build's max_shift={limits.max_shift}")
    if term_shift is not None and np.any(term_shift):
        if limits.store == "codes":
            raise FormatError("group exponent shifts need a terms-store build (a codes store walks the table's levels)")
        top = int(table.u.max(initial=0)) + int(np.max(term_shift))
        if top > limits.max_shift:
            raise FormatError(f"decode table shift plus group shift reaches {top}, beyond the build's "
                              f"max_shift={limits.max_shift}")
    return words


def compile_schedule(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits,
                     term_shift: np.ndarray | None = None) -> Schedule:
    """The beat stream that computes every channel's exact dot product on a build with ``limits``;
    ``term_shift`` (C, K) shifts each weight's terms (group exponents, see :func:`weight_terms`)."""
    words = _check_fits(words, table, limits, term_shift)
    C, K = words.shape
    if limits.store == "codes":
        return _compile_codes(words, table, fmt, limits)
    u, h, neg, nz, e = weight_terms(words, table, fmt, limits.half, term_shift)
    L = limits.lanes
    T = -(-K // L)
    pad = T * L - K

    def tiles(a: np.ndarray, fill) -> np.ndarray:
        return np.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2), constant_values=fill).reshape(
            (C, T, L) + a.shape[2:])

    u, h, neg, nz, e = tiles(u, 0), tiles(h, 0), tiles(neg, False), tiles(nz, False), tiles(e, -1)
    triple = nz & (h == 1) & (limits.half == "select")
    rows: dict[str, list] = {name: [] for name in ("en", "neg", "aux", "exp", "delta", "tile_last", "last")}
    offsets = [0]
    zeros = np.zeros(L, dtype=np.int64)
    for c in range(C):
        for t in range(T):
            if limits.variant == "bucketed":
                aux = (h[c, t] == 1) & nz[c, t] if limits.half == "split" else triple[c, t]
                exp = np.where(nz[c, t], u[c, t] - triple[c, t].astype(np.int64), 0)
                beats = [(nz[c, t], neg[c, t] & nz[c, t], aux, exp, 0)]
            else:
                present = sorted({int(v) for v in e[c, t].ravel() if v >= 0}, reverse=True)
                beats = []
                for i, g in enumerate(present):
                    hit = (e[c, t] == g).any(axis=-1)
                    nxt = present[i + 1] if i + 1 < len(present) else 0
                    beats.append((hit, neg[c, t] & hit, triple[c, t] & hit, zeros, g - nxt))
                beats = beats or [(zeros, zeros, zeros, zeros, 0)]
            for n, (en_, ng, ax, ex, d) in enumerate(beats):
                for name, v in (("en", en_), ("neg", ng), ("aux", ax), ("exp", ex)):
                    rows[name].append(np.asarray(v, dtype=np.int64))
                rows["delta"].append(d)
                rows["tile_last"].append(int(n == len(beats) - 1))
                rows["last"].append(int(n == len(beats) - 1 and t == T - 1))
        offsets.append(len(rows["last"]))
    sched = Schedule(limits, K, np.array(offsets, dtype=np.int64),
                     *(np.array(rows[n], dtype=np.int64).reshape(-1, L) for n in ("en", "neg", "aux", "exp")),
                     *(np.array(rows[n], dtype=np.int64) for n in ("delta", "tile_last", "last")))
    validate(sched)
    return sched


def stored_words(words: np.ndarray, fmt: LogFormat, limits: ScheduleLimits) -> np.ndarray:
    """A format's code words re-packed for a codes build: sign at bit ``code_bits - 1``, the index below it,
    the zero flag (flag builds) at ``code_bits``; narrower formats keep their indices."""
    if fmt.bits > limits.code_bits:
        raise FormatError(f"{fmt.bits}-bit codes do not fit the build's code_bits={limits.code_bits}")
    if fmt.zero is ZeroMode.FLAG and not limits.zero_flag:
        raise FormatError("codes with a zero flag need a zero_flag build")
    sign, index, is_zero = split_words(words, fmt)
    out = (sign << (limits.code_bits - 1)) | index
    return out | (is_zero.astype(np.int64) << limits.code_bits) if limits.zero_flag else out


def _tile_beats(terms: list[tuple[int, int, int]], slots: int) -> list[tuple[np.ndarray, int]]:
    """(broadcast (2, slots), delta) beats of one tile from its present levels' terms (exponent, sign, index),
    highest exponent first; one empty beat if there is none."""
    exps = sorted({g for g, _, _ in terms}, reverse=True)
    beats = []
    for n, g in enumerate(exps):
        per_sign = [sorted(i for e, s, i in terms if e == g and s == sign) for sign in (0, 1)]
        count = max(-(-len(ids) // slots) for ids in per_sign)
        for b in range(count):
            bidx = np.full((2, slots), -1, dtype=np.int64)
            for sign, ids in enumerate(per_sign):
                chunk = ids[b * slots:(b + 1) * slots]
                bidx[sign, :len(chunk)] = chunk
            last = b == count - 1
            beats.append((bidx, (g - (exps[n + 1] if n + 1 < len(exps) else 0)) if last else 0))
    return beats or [(np.full((2, slots), -1, dtype=np.int64), 0)]


def _compile_codes(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits) -> Schedule:
    nz = weight_terms(words, table, fmt, limits.half)[3]
    sign, index, _ = split_words(words, fmt)
    C, K = words.shape
    L, T = limits.lanes, -(-K // limits.lanes)
    stored = np.pad(stored_words(words, fmt, limits), ((0, 0), (0, T * L - K)))
    present = np.pad(nz, ((0, 0), (0, T * L - K))).reshape(C, T, L)
    sign_t, index_t = (np.pad(a, ((0, 0), (0, T * L - K))).reshape(C, T, L) for a in (sign, index))
    bidx, delta, tile_last, last, offsets = [], [], [], [], [0]
    for c in range(C):
        for t in range(T):
            terms = set()
            for s_, i in {(int(a), int(b)) for a, b in zip(sign_t[c, t][present[c, t]], index_t[c, t][present[c, t]],
                                                            strict=True)}:
                uu, hh = int(table.u[c, s_, i]), int(table.h[c, s_, i])
                terms.add((uu, s_, i))
                if hh and uu >= 1:  # split: the lower half term (at u = 0 it rounds away, as in decode_int)
                    terms.add((uu - 1, s_, i))
            beats = _tile_beats(sorted(terms), limits.slots)
            for n, (b, d) in enumerate(beats):
                bidx.append(b)
                delta.append(d)
                tile_last.append(int(n == len(beats) - 1))
                last.append(int(n == len(beats) - 1 and t == T - 1))
        offsets.append(len(last))
    n = len(last)
    sched = Schedule(limits, K, np.array(offsets, dtype=np.int64), np.zeros((n, L), np.int64),
                     np.zeros((n, L), np.int64), np.zeros((n, L), np.int64), np.zeros((n, L), np.int64),
                     np.array(delta, dtype=np.int64), np.array(tile_last, dtype=np.int64),
                     np.array(last, dtype=np.int64), stored, np.array(bidx, dtype=np.int64).reshape(n, 2, -1))
    sched.en, sched.neg = coded_lanes(limits, sched.beat_words(), sched.bidx)
    validate(sched)
    return sched


# ----------------------------------------------------------------------------------------------
# Cost model
# ----------------------------------------------------------------------------------------------

def code_store_bits(fmt: LogFormat, limits: ScheduleLimits) -> tuple[int, int, int]:
    """What a codes build stores: bits per weight (the code word), presence-mask bits per tile (one per
    non-zero code of ``fmt``) and decode-table bits per channel (``u`` and, on split builds, ``h`` per non-zero
    code), the table read by the controller, not by the lanes."""
    codes = 2 * fmt.nonzero_levels
    return limits.word_bits, codes, codes * (limits.shift_bits + (limits.half == "split"))


def beat_bits(limits: ScheduleLimits) -> int:
    """Schedule bits one beat carries besides the activations (what the weight memory must store)."""
    lane = 2 + (limits.half == "select")  # en, neg (+ triple)
    if limits.variant == "bucketed":
        lane += limits.shift_bits + (limits.half == "split")
        return limits.lanes * lane + 1  # + last
    return limits.lanes * lane + limits.shift_bits + 2  # + delta, tile_last, last


def tile_beats(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits) -> np.ndarray:
    """(C, tiles) beats :func:`compile_schedule` gives each tile, counted without building the stream (whole
    networks at small lane counts): bucketed one; in place one per exponent present (at least one); codes the
    same, a beat taking ``slots`` levels per sign at one exponent."""
    words = _check_fits(words, table, limits)
    C, K = words.shape
    L, T = limits.lanes, -(-K // limits.lanes)
    _, h, _, nz, e = weight_terms(words, table, fmt, limits.half)
    if limits.variant == "bucketed":
        return np.ones((C, T), dtype=np.int64)
    E = np.arange(limits.max_shift + 1)
    if limits.store == "terms":
        e_t = np.pad(e, ((0, 0), (0, T * L - K), (0, 0)), constant_values=-1).reshape(C, T, 2 * L)
        present = (e_t[..., None] == E).any(axis=2)  # (C, T, exponents)
        return np.maximum(1, present.sum(axis=-1))
    sign, index, _ = split_words(words, fmt)
    P = fmt.levels_per_sign
    code = np.where(nz, sign * P + index, 2 * P)  # 2 * P: no level
    code_t = np.pad(code, ((0, 0), (0, T * L - K)), constant_values=2 * P).reshape(C, T, L)
    present = (code_t[..., None] == np.arange(2 * P)).any(axis=2).reshape(C, T, 2, P)
    u, hh = table.u[:, :, :P], table.h[:, :, :P]  # (C, 2, P)
    at = (u[..., None] == E) | ((hh[..., None] == 1) & (u[..., None] - 1 == E))  # a term of level i at g
    count = np.einsum("ctsp,cspg->ctsg", present.astype(np.int64), at.astype(np.int64))
    return np.maximum(1, (-(-count // limits.slots)).max(axis=2).sum(axis=-1))


def schedule_cost(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits) -> dict:
    """Beats per output (padding included), stored schedule bits per weight and their parts, for the built
    variant and for the cost-only ``permuted`` one (terms sorted by exponent and gathered by index)."""
    beats = tile_beats(words, table, fmt, limits).sum(axis=1)
    C, K = np.asarray(words).shape
    _, h, _, nz, e = weight_terms(np.asarray(words), table, fmt, limits.half)
    L = limits.lanes
    tiles = -(-K // L)
    if limits.store == "codes":
        word, mask, table_bits = code_store_bits(fmt, limits)
        stored = word + tiles * mask / K + table_bits / K
    else:
        stored = beats.sum() * beat_bits(limits) / (C * K)
    # permuted: per channel ceil(n_e / lanes) beats per exponent e; each lane slot stores an index of the
    # activation (log2 K) or of a position in a lanes-wide gather window (log2 lanes), plus sign, enable.
    terms = e.reshape(C, -1)
    perm_beats = np.array([max(1, sum(-(-int((row == g).sum()) // L) for g in np.unique(row[row >= 0])))
                           for row in terms])
    idx_bits = max(1, math.ceil(math.log2(max(K, 2))))
    perm_lane = idx_bits + 2 + (limits.half == "select")
    perm_stored = perm_beats.sum() * (L * perm_lane + limits.shift_bits + 1) / (C * K)
    return {
        "variant": limits.variant,
        "half": limits.half,
        "lanes": L,
        "k": K,
        "channels": C,
        "code_bits": fmt.storage_bits,
        "beats_per_output": float(beats.mean()),
        "dense_beats_per_output": float(tiles),
        "index_bits_per_weight": 0.0,
        "schedule_bits_per_weight": float(stored),
        "weight_bits_stored": float(stored),
        "stored_vs_code": float(stored / fmt.storage_bits),
        "nonzero_share": float(nz.mean()),
        "half_step_share": float((nz & (h == 1)).sum() / max(1, nz.sum())),
        "terms_per_weight": float((terms >= 0).sum() / (C * K)),
        "permuted_beats_per_output": float(perm_beats.mean()),
        "permuted_index_bits_per_weight": float(perm_beats.sum() * L * idx_bits / (C * K)),
        "permuted_gather_index_bits": math.ceil(math.log2(max(L, 2))),
        "permuted_weight_bits_stored": float(perm_stored),
    }
