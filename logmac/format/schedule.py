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

A third, ``permuted`` (terms sorted by exponent, gathered through an index per term), is priced by
:func:`schedule_cost` only.  Schedules serialise to a dict of arrays with a checksum; loading checks them
against the limits of the engine build (:class:`ScheduleLimits`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from logmac.format.errors import MAX_SHIFT_LIMIT, FormatError
from logmac.format.log import DecodeTable, LogFormat, split_words

HalfMode = Literal["none", "split", "select"]
Variant = Literal["inplace", "bucketed"]
HALF_MODES = ("none", "split", "select")
VARIANTS = ("inplace", "bucketed")
SCHEDULE_VERSION = 1
_LANE_FIELDS = ("en", "neg", "aux", "exp")  # aux: triple (select) or half (bucketed split)


@dataclass(frozen=True)
class ScheduleLimits:
    """What one engine build accepts: its variant, half-step option, lane count, shift field and longest K."""

    variant: Variant
    half: HalfMode
    lanes: int
    max_shift: int
    max_k: int

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

    @property
    def shift_bits(self) -> int:
        return self.max_shift.bit_length()


@dataclass
class Schedule:
    """A layer's beat stream; beats of channel ``c`` are ``offsets[c]:offsets[c + 1]``.

    Per beat and lane: ``en``, ``neg``, ``aux`` (triple in ``select``, half in bucketed ``split``) and
    ``exp`` (bucketed only).  Per beat: ``delta`` and ``tile_last`` (in place only) and ``last``.
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

    def lane_multipliers(self) -> np.ndarray:
        """(beats, lanes) signed multiplier each lane applies before its exponent: 0, +-1 or +-3."""
        m = np.where(self.aux.astype(bool) & (self.limits.half == "select"), 3, 1)
        return np.where(self.en.astype(bool), np.where(self.neg.astype(bool), -m, m), 0).astype(np.int64)

    def to_dict(self) -> dict:
        """Plain arrays and scalars (``np.savez`` ready), with a checksum over everything."""
        d = {"schedule_version": np.int64(SCHEDULE_VERSION), "variant": np.str_(self.limits.variant),
             "half": np.str_(self.limits.half), "lanes": np.int64(self.limits.lanes),
             "max_shift": np.int64(self.limits.max_shift), "k": np.int64(self.k)}
        for name in ("offsets", "delta", "tile_last", "last", *_LANE_FIELDS):
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
        try:
            with np.load(source, allow_pickle=False) as f:
                source = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            raise FormatError(f"cannot read schedule {source}: {exc}") from exc
    need = {"schedule_version", "variant", "half", "lanes", "max_shift", "k", "offsets", "delta", "tile_last",
            "last", *_LANE_FIELDS, "checksum"}
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
    if int(source["lanes"]) != limits.lanes:
        raise FormatError(f"schedule for {int(source['lanes'])} lanes, the build has lanes={limits.lanes}")
    if int(source["max_shift"]) > limits.max_shift:
        raise FormatError(f"schedule shifts up to {int(source['max_shift'])}, beyond the build's max_shift="
                          f"{limits.max_shift}")
    if not 1 <= int(source["k"]) <= limits.max_k:
        raise FormatError(f"schedule K={int(source['k'])} outside 1..max_k={limits.max_k} of the build")
    sched = Schedule(limits, int(source["k"]), *(np.asarray(source[n], dtype=np.int64) for n in
                     ("offsets", "en", "neg", "aux", "exp", "delta", "tile_last", "last")))
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


# ----------------------------------------------------------------------------------------------
# Compiler
# ----------------------------------------------------------------------------------------------

def weight_terms(words: np.ndarray, table: DecodeTable, fmt: LogFormat, half: HalfMode
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per weight (C, K): ``u``, ``h``, ``neg``, ``nonzero`` from the table, and ``e`` (C, K, 2): the
    exponents of its terms (-1: no term); ``select`` puts a half step at ``u - 1`` with multiplier 3."""
    table.validate(fmt)
    sign, index, is_zero = split_words(words, fmt)
    if words.shape[0] != table.channels:
        raise FormatError(f"codes have {words.shape[0]} channels but the decode table has {table.channels}")
    ch = np.arange(words.shape[0])[:, None]
    u, h = table.u[ch, sign, index], table.h[ch, sign, index]
    nz = ~is_zero
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


def compile_schedule(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits) -> Schedule:
    """The beat stream that computes every channel's exact dot product on a build with ``limits``."""
    words = np.asarray(words)
    if words.ndim != 2:
        raise FormatError(f"codes must be (C, K), got shape {words.shape}")
    C, K = words.shape
    if K > limits.max_k:
        raise FormatError(f"K={K} exceeds the build's max_k={limits.max_k}")
    if int(table.u.max(initial=0)) > limits.max_shift:
        raise FormatError(f"decode table shift {int(table.u.max())} beyond the build's max_shift={limits.max_shift}")
    u, h, neg, nz, e = weight_terms(words, table, fmt, limits.half)
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


# ----------------------------------------------------------------------------------------------
# Cost model
# ----------------------------------------------------------------------------------------------

def beat_bits(limits: ScheduleLimits) -> int:
    """Schedule bits one beat carries besides the activations (what the weight memory must store)."""
    lane = 2 + (limits.half == "select")  # en, neg (+ triple)
    if limits.variant == "bucketed":
        lane += limits.shift_bits + (limits.half == "split")
        return limits.lanes * lane + 1  # + last
    return limits.lanes * lane + limits.shift_bits + 2  # + delta, tile_last, last


def schedule_cost(words: np.ndarray, table: DecodeTable, fmt: LogFormat, limits: ScheduleLimits) -> dict:
    """Beats per output (padding included), stored schedule bits per weight and their parts, for the built
    variant and for the cost-only ``permuted`` one (terms sorted by exponent and gathered by index)."""
    sched = compile_schedule(words, table, fmt, limits)
    C, K = np.asarray(words).shape
    _, h, _, nz, e = weight_terms(np.asarray(words), table, fmt, limits.half)
    L = limits.lanes
    stored = sched.beats.sum() * beat_bits(limits) / (C * K)
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
        "beats_per_output": float(sched.beats.mean()),
        "dense_beats_per_output": float(sched.tiles),
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
