"""Soak: random configurations drawn from the whole matrix, run until N MACs have been checked bit for bit.

The fixed regression (``tests/test_cosim*.py``) checks chosen corners; the soak checks what nobody chose.  Each
configuration is one vector set with its own draw of engine family (general log, lean log, int baseline, AdaLog
activations x log / uniform weights, scheduled in place / bucketed / coded), code width, grid, zero mode,
approximation flag, stimulus style, run-time accumulator width (narrow ones force overflow), saturate or wrap,
requantization constants, back-pressure, idle gaps and a reset mid-stream.  Real layers (codes of a shipped model,
registered with :func:`register_layers` by a module above ``cosim``, since models and quantizers sit above it)
join the log families.  Every family has one build (``runner``'s cache), and a batch of configurations of one
family runs in one simulator process, so the soak pays a process start per batch, not per configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from logmac.cosim import logact_vectors
from logmac.cosim.logact_runner import logact_commands
from logmac.cosim.logact_suite import INT_BUILD as LOGACT_INT
from logmac.cosim.logact_suite import LOG_BUILD as LOGACT_LOG
from logmac.cosim.logact_vectors import LogActVectors, random_logact_vectors
from logmac.cosim.runner import CAP_DEPTH, CMD_DEPTH, Job, fit_tiles, score_jobs
from logmac.cosim.sched_runner import scheduled_commands
from logmac.cosim.stream import build_commands
from logmac.cosim.vectors import Expected, Vectors, golden, random_requant, random_vectors
from logmac.format import AdaLogFormat, DecodeTable, GridKind, LogFormat, UniformFormat, ZeroMode
from logmac.hw.config import HwConfig
from logmac.hw.sched_config import SchedConfig

STYLES = ("random", "random", "extreme", "overflow", "every_code")
ACC_WIDTHS = (8, 12, 16, 20, 24, 32)  # 8..20 overflow under extreme and overflow stimulus
BACK_PRESSURE = (0, 0, 32, 128, 220)
GAPS = (0.0, 0.0, 0.05, 0.3)
RESET_PROB = 0.1


@dataclass(frozen=True)
class Layer:
    """One real layer's log codes (C, K) with its decode table and format."""

    name: str
    codes: np.ndarray
    table: DecodeTable
    fmt: LogFormat


LAYER_SOURCES: list[Callable[[], list[Layer]]] = []


def register_layers(source: Callable[[], list[Layer]]) -> None:
    """Add real layers to the log families' draws (called by a module that can load models)."""
    if source not in LAYER_SOURCES:
        LAYER_SOURCES.append(source)


@dataclass(frozen=True)
class Family:
    """One engine build and how to draw a configuration for it and turn it into a command stream."""

    name: str
    build: Any
    draw: Callable[[np.random.Generator, int, list[Layer]], Vectors | LogActVectors]
    commands: Callable[[Any, Any, np.random.Generator, float], np.ndarray]


def _sizes(rng: np.random.Generator, macs: int, k: int, lanes: int, max_channels: int = 16) -> tuple[int, int]:
    """Rows and channels of about ``macs`` MACs at this K that fit the bench's command and capture memories."""
    channels = int(rng.integers(1, min(max_channels, max(1, macs // k)) + 1))
    beats = -(-k // lanes)
    rows = max(1, macs // (k * channels))
    rows = min(rows, 256, (CMD_DEPTH // 2) // (beats * channels), CAP_DEPTH // (2 * channels))
    return max(rows, 1), channels


def _k(rng: np.random.Generator, max_k: int, macs: int) -> int:
    """Dot-product length, log-uniform over 1..max_k (short tails and long layers alike), at most ``macs``."""
    return int(np.exp(rng.uniform(0, np.log(max(2, min(max_k, macs))))))


def _log_vectors(rng: np.random.Generator, macs: int, layers: list[Layer], *, max_bits: int, max_k: int,
                 lanes: int, acc_top: int) -> Vectors:
    acc = int(rng.choice([a for a in ACC_WIDTHS if a <= acc_top]))
    mode = str(rng.choice(["saturate", "wrap"]))
    signed = bool(rng.integers(2))
    fitting = [ly for ly in layers if ly.codes.shape[1] <= max_k and ly.fmt.bits <= max_bits]
    if fitting and rng.random() < 0.3:
        ly = fitting[int(rng.integers(len(fitting)))]
        k = ly.codes.shape[1]
        rows, channels = _sizes(rng, macs, k, lanes, min(16, ly.codes.shape[0]))
        ch = np.sort(rng.choice(ly.codes.shape[0], channels, replace=False))
        lo, hi = (-128, 127) if signed else (0, 255)
        return Vectors(x=rng.integers(lo, hi + 1, size=(rows, k)), codes=ly.codes[ch], fmt=ly.fmt,
                       table=DecodeTable(ly.table.u[ch], ly.table.h[ch], ly.table.scale[ch]), act_bits=8,
                       act_signed=signed, acc_bits=acc, overflow=mode, name=f"layer {ly.name}",
                       **random_requant(channels, acc, 8, rng))
    fmt = LogFormat(int(rng.integers(2, max_bits + 1)), list(GridKind)[int(rng.integers(len(GridKind)))],
                    hardware_approx=bool(rng.integers(2)), zero=list(ZeroMode)[int(rng.integers(len(ZeroMode)))])
    style = str(rng.choice(STYLES))
    k = (1 << fmt.storage_bits) * int(rng.integers(1, 3)) if style == "every_code" else _k(rng, max_k, macs)
    rows, channels = _sizes(rng, macs, k, lanes)
    v = random_vectors(fmt, rng, rows=rows, k=k, channels=channels, act_signed=signed, acc_bits=acc, overflow=mode,
                       style=style)
    v.name = f"{style} {fmt.bits}-bit {fmt.grid.value} zero={fmt.zero.value}"
    return v


def _int_vectors(rng: np.random.Generator, macs: int, layers: list[Layer]) -> Vectors:
    fmt = UniformFormat(int(rng.integers(2, 9)))
    style = str(rng.choice(STYLES[:-1]))
    k = _k(rng, 4096, macs)
    rows, channels = _sizes(rng, macs, k, 16)
    acc = int(rng.choice(ACC_WIDTHS))
    v = random_vectors(fmt, rng, rows=rows, k=k, channels=channels, act_signed=bool(rng.integers(2)), acc_bits=acc,
                       overflow=str(rng.choice(["saturate", "wrap"])), style=style)
    v.name = f"{style} int{fmt.bits}"
    return v


def _logact_vectors(rng: np.random.Generator, macs: int, log_weights: bool) -> LogActVectors:
    afmt = AdaLogFormat(int(rng.integers(2, 7)), int(rng.integers(10, 139)),
                        zero=(ZeroMode.CODE, ZeroMode.FLAG)[int(rng.integers(2))])
    if log_weights:
        wfmt = LogFormat(int(rng.integers(2, 6)), list(GridKind)[int(rng.integers(len(GridKind)))],
                         zero=list(ZeroMode)[int(rng.integers(len(ZeroMode)))])
    else:
        wfmt = UniformFormat(int(rng.choice([2, 4, 8])))
    style = str(rng.choice(STYLES))
    k = (1 << afmt.storage_bits) if style == "every_code" else _k(rng, 1024, macs)
    rows, channels = _sizes(rng, macs, k, 16)
    v = random_logact_vectors(afmt, wfmt, rng, rows=rows, k=k, channels=channels, style=style,
                              acc_bits=int(rng.choice(ACC_WIDTHS + (48,))),
                              overflow=str(rng.choice(["saturate", "wrap"])))
    v.name = f"{style} adalog{afmt.bits} q={afmt.q} x {wfmt!r}"
    return v


def _general_commands(hw: HwConfig, v: Vectors, rng: np.random.Generator, gaps: float) -> np.ndarray:
    return build_commands(hw, v, rng, gap_prob=gaps)


def _logact_commands(hw, v: LogActVectors, rng: np.random.Generator, gaps: float) -> np.ndarray:
    return logact_commands(hw, v, rng, gap_prob=gaps)


def _sched_commands(cfg: SchedConfig, v: Vectors, rng: np.random.Generator, gaps: float) -> np.ndarray:
    return scheduled_commands(cfg, v, rng, gaps)  # holds the scheduled golden model equal to logmac.sim too


def _stream(fam: Family, v: Vectors | LogActVectors, rng: np.random.Generator | None, gaps: float) -> np.ndarray:
    """``fam``'s command stream of ``v`` (the ``runner.Commands`` form: the generator for its idle gaps)."""
    return fam.commands(fam.build, v, rng, gaps)


def _general(hw: HwConfig, max_bits: int) -> Callable:
    """The log-code draw sized for a build (its widest codes, longest K, lanes and accumulator register)."""
    return lambda rng, macs, layers: _log_vectors(rng, macs, layers, max_bits=max_bits, max_k=hw.max_k,
                                                  lanes=hw.lanes, acc_top=hw.acc_bits)


GENERAL = HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=16, acc_bits=32, max_k=4096)
SCHED = dict(lanes=8, act_bits=9, max_shift=7, max_k=1024, acc_bits=32, out_bits=8)
_SCHED_BUILDS = {
    "sched-inplace": SchedConfig(variant="inplace", half="split", **SCHED),
    "sched-bucketed": SchedConfig(variant="bucketed", half="select", **SCHED),
    "sched-coded": SchedConfig(variant="inplace", half="split", store="codes", code_bits=4, zero_flag=True, **SCHED),
}
FAMILIES: dict[str, Family] = {
    "general": Family("general", GENERAL, _general(GENERAL, 6), _general_commands),
    "lean": Family("lean", HwConfig(**{**GENERAL.to_dict(), "lean": True}), _general(GENERAL, 6), _general_commands),
    "int": Family("int", HwConfig(kind="int", weight_bits=8, act_bits=9, lanes=16, acc_bits=32),
                  _int_vectors, _general_commands),
    "logact-log": Family("logact-log", LOGACT_LOG, lambda rng, macs, _: _logact_vectors(rng, macs, True),
                         _logact_commands),
    "logact-int": Family("logact-int", LOGACT_INT, lambda rng, macs, _: _logact_vectors(rng, macs, False),
                         _logact_commands),
    **{name: Family(name, cfg, _general(cfg, 4), _sched_commands) for name, cfg in _SCHED_BUILDS.items()},
}


def expected(v: Vectors | LogActVectors) -> Expected:
    """What the engine must output, from ``logmac.sim`` (the one place the soak asks the model)."""
    return logact_vectors.golden(v) if isinstance(v, LogActVectors) else golden(v)


@dataclass
class FamilyTally:
    """What one family's batches checked (a row of the summary)."""

    configurations: int = 0
    transactions: int = 0
    macs: int = 0
    overflows: int = 0
    mismatches: int = 0
    sim_seconds: float = 0.0


@dataclass
class SoakReport:
    """What a soak checked: totals, a tally per family, every configuration drawn and the first mismatch."""

    sim: str
    seed: int
    macs_checked: int = 0
    transactions: int = 0
    overflows: int = 0  # results whose expected overflow flag is 1 (the fit and sticky flag under test)
    mismatches: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    families: dict[str, FamilyTally] = field(default_factory=dict)
    configurations: list[dict] = field(default_factory=list)
    first_mismatch: str | None = None
    waveform: str | None = None

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.macs_checked > 0

    @property
    def macs_per_second(self) -> float:
        """MACs checked per second of wall time (stimulus, golden model, builds and simulation)."""
        return self.macs_checked / self.wall_seconds if self.wall_seconds else 0.0

    def summary(self) -> str:
        sim_rate = self.macs_checked / self.sim_seconds if self.sim_seconds else 0.0
        lines = [f"simulator       {self.sim} (seed {self.seed})",
                 f"MACs checked    {self.macs_checked:,}",
                 f"transactions    {self.transactions:,}",
                 f"configurations  {len(self.configurations)}",
                 f"overflowing     {self.overflows:,} results",
                 f"mismatches      {self.mismatches}",
                 f"wall time       {self.wall_seconds:.1f} s ({self.macs_per_second:,.0f} MACs/s)",
                 f"simulator time  {self.sim_seconds:.1f} s ({sim_rate:,.0f} MACs/s)",
                 f"{'family':<15} {'configs':>8} {'MACs':>13} {'overflows':>10} {'mismatches':>10} {'sim s':>8}"]
        lines += [f"{name:<15} {t.configurations:>8} {t.macs:>13,} {t.overflows:>10,} {t.mismatches:>10} "
                  f"{t.sim_seconds:>8.1f}"
                  for name, t in self.families.items()]
        if self.first_mismatch:
            lines.append(f"first mismatch  {self.first_mismatch}")
        if self.waveform:
            lines.append(f"waveform        {self.waveform}")
        return "\n".join(lines)


def _layers() -> list[Layer]:
    return [ly for source in LAYER_SOURCES for ly in source()]


def run_soak(macs: int, seed: int = 0, sim: str = "verilator", *, families: tuple[str, ...] | None = None,
             batch_macs: int | None = None) -> SoakReport:
    """Check random configurations on ``sim`` until ``macs`` MACs have been checked.

    Families take turns, one batch (one simulator process) each; a batch holds configurations of about
    ``batch_macs`` MACs in total (default: an equal share of ``macs`` per family, within limits that keep a
    process start small next to its work and the stimulus files small).  The first failing batch is re-run
    with waves and its directory kept.
    """
    t0 = time.perf_counter()
    names = tuple(families or FAMILIES)
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown soak families {unknown}; known: {sorted(FAMILIES)}")
    top = 4_000_000 if sim == "verilator" else 300_000
    batch = batch_macs or int(np.clip(-(-macs // len(names)), 1000, top))
    rng = np.random.default_rng(seed)
    rep = SoakReport(sim, seed, families={n: FamilyTally() for n in names})
    layers = _layers()
    turn = 0
    while rep.macs_checked < macs:
        fam = FAMILIES[names[turn % len(names)]]
        turn += 1
        target = min(batch, macs - rep.macs_checked)
        vs, exps, jobs, drawn = [], [], [], 0
        while drawn < target:
            v = fam.draw(rng, int(min(target - drawn, target // 4 + 1) * rng.uniform(0.5, 1.5)) + 1, layers)
            bp, gaps = int(rng.choice(BACK_PRESSURE)), float(rng.choice(GAPS))
            reset_at = int(rng.integers(5, 2000)) if rng.random() < RESET_PROB else None
            cmds = fam.commands(fam.build, v, rng, gaps)
            # a scheduled set can outgrow the bench (a beat per exponent group of a tile): it runs as tiles
            for tile, exp, tile_cmds in fit_tiles(v, expected(v), partial(_stream, fam, gaps=gaps), rng, cmds):
                vs.append(tile)
                exps.append(exp)
                jobs.append(Job(tile_cmds, bp=bp, seed=int(rng.integers(1, 1 << 16)), reset_at=reset_at,
                                expected_beats=tile.rows * tile.channels))
            rep.configurations.append({"family": fam.name, "name": v.name, "rows": v.rows, "k": v.k,
                                       "channels": v.channels, "acc_bits": v.acc_bits, "overflow": v.overflow,
                                       "bp": bp, "gaps": gaps, "reset_at": reset_at})
            drawn += v.macs
        r = score_jobs(fam.build, sim, vs, exps, jobs, waves_on_failure=rep.waveform is None)
        tally = rep.families[fam.name]
        tally.configurations += len(vs)
        overflows = sum(int(e.overflow.sum()) for e in exps)
        tally.overflows += overflows
        rep.overflows += overflows
        for name, value in (("transactions", r.transactions), ("macs", r.macs_checked),
                            ("mismatches", r.mismatches), ("sim_seconds", r.sim_seconds)):
            setattr(tally, name, getattr(tally, name) + value)
        rep.macs_checked += r.macs_checked
        rep.transactions += r.transactions
        rep.mismatches += r.mismatches
        rep.sim_seconds += r.sim_seconds
        if r.first_mismatch and rep.first_mismatch is None:
            rep.first_mismatch = f"[{fam.name}, build {fam.build.key()}] {r.first_mismatch}"
            rep.waveform = r.waveform
        if r.macs_checked == 0:
            raise RuntimeError(f"soak batch of {fam.name} checked no MAC")
    rep.wall_seconds = time.perf_counter() - t0
    return rep
