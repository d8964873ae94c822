"""Multi-bit (PTMQ) codes on the engine: one decode table per channel, the precision switched by a register.

A multi-bit layer stores its top-width log words once.  On the engine every precision uses the *same*
words and the *same* decode table; selecting width b is one write of the precision register
(``regmap.nest_writes`` with ``format.nested.nest_register``: an index floor under which codes decode to zero
and an OR mask on the index) plus that width's requantization constants, which differ because each width
has its own activation steps.  No table reload and no new build.

:func:`build_multibit_commands` turns a :class:`MultiBitVectors` (top words, table, and a schedule of
segments, each a batch of input rows at one precision) into one bench command stream that switches the
precision mid-run; :func:`run_multibit` plays it on Icarus or Verilator and checks every output beat
against ``logmac.sim`` decoding the nested b-bit codes (``cosim.vectors.golden``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import numpy as np

from logmac.cosim import runner
from logmac.cosim.stream import TbLayout, add_gaps, config_rows, data_rows, lane_beats, read_capture
from logmac.cosim.vectors import Vectors, golden, random_requant
from logmac.format import DecodeTable, FormatError, LogFormat
from logmac.format.nested import NestMode, nest_register, nest_table, nest_words, nested_format
from logmac.hw.config import HwConfig
from logmac.hw.regmap import Requant, channel_writes, nest_writes, table_image
from logmac.stimulus import random_table


def multibit_build(lanes: int = 16) -> HwConfig:
    """The engine build the multi-bit checks use: 6-bit words (every precision of 3/4/6-bit PTMQ codes), a
    9-bit signed activation port (uint8 fits) and 56-bit accumulator and bias registers, because the top
    width of a nested log grid can span 31 octaves (multipliers up to 3 * 2**30)."""
    return HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=lanes, acc_bits=56, bias_bits=56, max_k=4096)


@dataclass
class Segment:
    """Input rows run at one precision: ``vectors`` is that width's view (nested codes and table, its
    activations and requantization constants), which is also what ``logmac.sim`` checks against."""

    bits: int
    vectors: Vectors


@dataclass
class MultiBitVectors:
    """One layer's top-width words and table, and the precision schedule to run them with."""

    codes: np.ndarray
    fmt: LogFormat
    table: DecodeTable
    nest: NestMode
    segments: list[Segment]

    def __post_init__(self) -> None:
        if not self.segments:
            raise FormatError("a multi-bit run needs at least one segment")
        first = self.segments[0].vectors
        for seg in self.segments:
            v = seg.vectors
            if not np.array_equal(v.codes, nest_words(self.codes, self.fmt, seg.bits, self.nest)):
                raise FormatError(f"segment W{seg.bits}: its codes are not the '{self.nest}' nesting of the top words")
            want = nest_table(self.table, self.fmt, seg.bits, self.nest)
            if not (np.array_equal(v.table.u, want.u) and np.array_equal(v.table.h, want.h)):
                raise FormatError(f"segment W{seg.bits}: its decode table is not the nesting of the top table")
            if (v.acc_bits, v.overflow, v.act_signed) != (first.acc_bits, first.overflow, first.act_signed):
                raise FormatError("every segment must share the accumulator width, overflow mode and activation sign")

    @property
    def channels(self) -> int:
        return self.codes.shape[0]


def segment_vectors(codes: np.ndarray, fmt: LogFormat, table: DecodeTable, nest: NestMode, bits: int, x: np.ndarray,
                    requant: dict, *, act_bits: int = 8, act_signed: bool = False, acc_bits: int = 32,
                    overflow: str = "saturate") -> Segment:
    """A segment at width ``bits`` of top ``codes``: the nested words and table plus these rows and constants."""
    v = Vectors(x=x, codes=nest_words(codes, fmt, bits, nest), fmt=nested_format(fmt, bits),
                table=nest_table(table, fmt, bits, nest), act_bits=act_bits, act_signed=act_signed, acc_bits=acc_bits,
                overflow=overflow, name=f"W{bits}", **requant)
    return Segment(bits, v)


def build_multibit_commands(hw: HwConfig, mv: MultiBitVectors, rng: np.random.Generator | None = None,
                            gap_prob: float = 0.0, max_gap: int = 4) -> np.ndarray:
    """Per channel: load the table once, then for each segment write the precision register and that width's
    requantization constants and stream its rows (channel-major output, segments in schedule order)."""
    lay = TbLayout.of(hw)
    blocks = []
    for c in range(mv.channels):
        for n, seg in enumerate(mv.segments):
            v = seg.vectors
            rq = None
            if v.multiplier is not None and hw.requant:
                rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
            image = table_image(hw, mv.fmt, mv.table, c) if n == 0 else None
            writes = channel_writes(hw, v.acc_bits, v.overflow, rq, image)
            writes += nest_writes(hw, *nest_register(mv.fmt, seg.bits, mv.nest))
            beats = lane_beats(v.x, hw.act_bits, mv.codes[c], hw.word_bits, hw.lanes)
            blocks += [config_rows(lay, hw.cfg_addr_bits, writes), data_rows(lay, beats)]
    return add_gaps(np.concatenate(blocks), lay, rng, gap_prob, max_gap)


def run_multibit(runs: MultiBitVectors | list[MultiBitVectors], sim: str = "verilator", hw: HwConfig | None = None, *,
                 bp: int = 0, gap_prob: float = 0.0, seed: int = 0) -> runner.Report:
    """Play each schedule (one bench job each, one simulator process) through the RTL on ``sim``; every
    output beat must equal ``logmac.sim`` at the precision its segment ran at."""
    t0 = time.perf_counter()
    runs = [runs] if isinstance(runs, MultiBitVectors) else list(runs)
    hw = hw or multibit_build()
    rng = np.random.default_rng(seed)
    jobs, exps = [], []
    for mv in runs:
        for seg in mv.segments:
            runner.check_fits(hw, seg.vectors)
        exps.append([golden(seg.vectors) for seg in mv.segments])
        n_out = sum(seg.vectors.rows for seg in mv.segments) * mv.channels
        jobs.append(runner.Job(build_multibit_commands(hw, mv, rng, gap_prob), bp=bp,
                               seed=int(rng.integers(1, 1 << 16)), expected_beats=n_out))
    results, rdir = runner.run_jobs(hw, sim, jobs)
    rep = runner.Report(sim, hw.to_dict())
    for mv, exp, res in zip(runs, exps, results, strict=True):
        _score_run(rep, mv, exp, res, read_capture(hw, res.capture))
    if not rep.mismatches:
        shutil.rmtree(rdir, ignore_errors=True)
    rep.wall_seconds = time.perf_counter() - t0
    return rep


def _score_run(rep: runner.Report, mv: MultiBitVectors, exps: list, res: runner.JobResult, cap) -> None:
    """Add one job's transactions, MACs and mismatches (first one described) to ``rep``."""
    C = mv.channels
    labels = [(c, seg.bits, r) for c in range(C) for seg in mv.segments for r in range(seg.vectors.rows)]
    want_acc = np.concatenate([e.acc[c] for c in range(C) for e in exps])
    want_ovf = np.concatenate([e.overflow[c] for c in range(C) for e in exps])
    want_y = np.concatenate([e.y[c] for c in range(C) for e in exps]) if all(e.y is not None for e in exps) else None
    n = min(len(want_acc), len(cap.acc))
    bad = (cap.acc[:n] != want_acc[:n]) | (cap.overflow[:n] != want_ovf[:n])
    if want_y is not None and cap.y is not None:
        bad |= cap.y[:n] != want_y[:n]
    k = mv.codes.shape[1]
    rep.transactions += n
    rep.macs_checked += n * k
    rep.mismatches += int(bad.sum()) + abs(len(want_acc) - len(cap.acc))
    rep.cycles += res.cycles
    rep.sim_seconds += res.seconds
    first = None
    if bad.any():
        t = int(np.argmax(bad))
        c, bits, r = labels[t]
        first = (f"channel {c}, W{bits} row {r}: acc rtl={int(cap.acc[t])} sim={int(want_acc[t])}"
                 + (f", y rtl={int(cap.y[t])} sim={int(want_y[t])}" if want_y is not None else ""))
    elif len(cap.acc) != len(want_acc):
        first = f"the engine produced {len(cap.acc)} output beats, the emulator expects {len(want_acc)}"
    want_sticky = int(exps[-1].overflow[-1].any())  # cleared at every segment's set-up
    if res.sticky != want_sticky:
        rep.mismatches += 1
        first = first or f"sticky overflow rtl={res.sticky} sim={want_sticky}"
    rep.first_mismatch = rep.first_mismatch or first


def random_multibit(fmt: LogFormat, schedule: list[int], nest: NestMode, rng: np.random.Generator, *, rows: int = 4,
                    k: int = 37, channels: int = 3, acc_bits: int = 32) -> MultiBitVectors:
    """Random top words and table, and per scheduled precision its own random activations and requantization."""
    table = random_table(fmt, channels, rng)
    codes = rng.integers(0, 1 << fmt.storage_bits, size=(channels, k))
    segs = []
    for bits in schedule:
        x = rng.integers(0, 256, size=(rows, k))
        segs.append(segment_vectors(codes, fmt, table, nest, bits, x, random_requant(channels, acc_bits, 8, rng),
                                    acc_bits=acc_bits))
    return MultiBitVectors(codes, fmt, table, nest, segs)
