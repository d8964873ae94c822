"""Run vector sets through the exponent-scheduled engine on Icarus or Verilator (``logmac.cosim.runner``'s bench,
build cache, job runner and scoreboard, the engine found through ``runner.DUTS``; only the command stream differs).

Each channel's block writes the accumulator/requant registers (``regmap.channel_writes``), then plays the
channel's compiled schedule (``logmac.format.schedule``) once per input row, the beat's activation tile taken
from the row.  Expected values come from ``logmac.sim`` (``log_matmul_reference`` via ``vectors.golden``),
and the scheduled golden model (``logmac.sim.scheduled``) is held equal to them on every set.  A set with
per-group exponent offsets compiles with its groups' shifts folded into the term exponents
(``compile_schedule(term_shift=)``: a terms-store build whose ``max_shift`` holds table plus group shift) and is
scored against the group-shift reference (``logmac.sim.groups``).
"""

from __future__ import annotations

import time

import numpy as np

from logmac.cosim.runner import Report, plan_jobs, score_jobs
from logmac.cosim.stream import TbLayout, add_gaps, bits_of, config_rows, data_rows
from logmac.cosim.vectors import Expected, Vectors, golden
from logmac.format import FormatError
from logmac.format.schedule import Schedule, compile_schedule
from logmac.hw.regmap import Requant, channel_writes
from logmac.hw.sched_config import SchedConfig, input_layout
from logmac.sim.scheduled import run_schedule


def beat_rows(cfg: SchedConfig, sched: Schedule, c: int, x: np.ndarray) -> np.ndarray:
    """Input beats (bit rows, ``input_layout`` packing) of channel ``c`` for every row of ``x`` (N, K), row-major."""
    lay = input_layout(cfg)
    L = cfg.lanes
    lo, hi = sched.offsets[c], sched.offsets[c + 1]
    tiles = sched.beat_tiles()[lo:hi]
    xt = np.pad(x, ((0, 0), (0, sched.tiles * L - sched.k))).reshape(x.shape[0], sched.tiles, L)[:, tiles, :]
    B, N = hi - lo, x.shape[0]
    rows = np.zeros((N, B, lay.size), dtype=np.uint8)

    def put(name: str, values: np.ndarray, width: int) -> None:
        off = lay[name].offset
        bits = bits_of(values, width).reshape(B, -1)
        rows[:, :, off:off + bits.shape[1]] = bits[None]

    rows[:, :, :L * cfg.act_bits] = bits_of(xt, cfg.act_bits).reshape(N, B, -1)
    present = {n for n, _ in lay}
    fields = {name: getattr(sched, name)[lo:hi] for name in ("en", "neg", "aux", "exp", "delta", "tile_last", "last")}
    if cfg.store == "codes":
        bidx = sched.bidx[lo:hi].reshape(B, -1)
        fields.update(w=sched.beat_words()[lo:hi], bidx=np.maximum(bidx, 0), bval=(bidx >= 0).astype(np.int64))
    widths = {"exp": cfg.shift_bits, "delta": cfg.shift_bits, "w": sched.limits.word_bits, "bidx": cfg.code_bits - 1}
    for name, values in fields.items():
        if name in present:
            put(name, values, widths.get(name, 1))
    return rows.reshape(N * B, -1)


def sched_commands(cfg: SchedConfig, v: Vectors, sched: Schedule, rng: np.random.Generator | None = None,
                   gap_prob: float = 0.0, max_gap: int = 4) -> np.ndarray:
    """The command stream (bit matrix) that runs every channel of ``v`` through its schedule."""
    lay = TbLayout.of(cfg)
    blocks = []
    for c in range(v.channels):
        rq = None
        if v.multiplier is not None and cfg.requant:
            rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
        writes = channel_writes(cfg, v.acc_bits, v.overflow, rq)
        blocks += [config_rows(lay, cfg.cfg_addr_bits, writes), data_rows(lay, beat_rows(cfg, sched, c, v.x))]
    return add_gaps(np.concatenate(blocks), lay, rng, gap_prob, max_gap)


def schedule_for(cfg: SchedConfig, v: Vectors, cache: dict | None = None) -> Schedule:
    """``v``'s compiled schedule; ``cache`` keeps them by weights, so the row tiles of a set compile once."""
    shift = v.term_shift()
    key = (v.codes.tobytes(), v.codes.shape, v.table.u.tobytes(), v.table.h.tobytes(), v.table.scale.tobytes(),
           repr(v.fmt), None if shift is None else shift.tobytes())
    if cache is not None and key in cache:
        return cache[key]
    sched = compile_schedule(v.codes, v.table, v.fmt, cfg.limits(), term_shift=shift)
    if cache is not None:
        cache[key] = sched
    return sched


def scheduled_commands(cfg: SchedConfig, v: Vectors, rng: np.random.Generator | None = None,
                       gap_prob: float = 0.0) -> np.ndarray:
    """Compile ``v``'s schedule, hold the scheduled golden model equal to ``logmac.sim`` on it, and return its
    command stream."""
    sched = schedule_for(cfg, v)
    check_golden(cfg, v, sched)
    return sched_commands(cfg, v, sched, rng, gap_prob)


def check_golden(cfg: SchedConfig, v: Vectors, sched: Schedule, exp: Expected | None = None) -> None:
    """Raise FormatError unless the scheduled golden model equals ``logmac.sim`` on ``v`` (``exp``: its
    expected values when already computed)."""
    exp = golden(v) if exp is None else exp
    got = run_schedule(sched, v.x, v.acc_bits, v.overflow)
    if not (np.array_equal(got.acc.T, exp.acc) and np.array_equal(got.overflow.T, exp.overflow)):
        raise FormatError(f"{v.name}: the scheduled golden model disagrees with logmac.sim")


def run_sched_vectors(vectors: Vectors | list[Vectors], sim: str, cfg: SchedConfig, *, bp: int = 0,
                      gap_prob: float = 0.0, reset_at: int | None = None, seed: int = 0,
                      waves_on_failure: bool = True, workers: int | None = None) -> Report:
    """Compile each set's schedule, run them (``runner.run_jobs``) and score against ``logmac.sim``."""
    t_start = time.perf_counter()
    vs = [vectors] if isinstance(vectors, Vectors) else list(vectors)
    rng = np.random.default_rng(seed)
    lo, hi = cfg.act_range()
    for v in vs:
        if v.x.size and (v.x.min() < lo or v.x.max() > hi):
            raise ValueError(f"{v.name}: activations exceed the build's port [{lo}, {hi}]")
    exps = [golden(v) for v in vs]
    cache: dict = {}
    vs, exps, jobs = plan_jobs(vs, exps, lambda v, gaps: sched_commands(cfg, v, schedule_for(cfg, v, cache), gaps, gap_prob),
                               rng, bp=bp, reset_at=reset_at)
    for v, exp in zip(vs, exps, strict=True):
        check_golden(cfg, v, schedule_for(cfg, v, cache), exp)
    return score_jobs(cfg, sim, vs, exps, jobs, waves_on_failure=waves_on_failure, t_start=t_start,
                      workers=workers)
