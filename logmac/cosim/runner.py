"""Build (cached) and run the bench under cocotb on Icarus or Verilator, then score against ``logmac.sim``.

One build per simulator and engine configuration; builds live in ``$LOGMAC_BUILD_DIR`` (default
``~/.cache/logmac/cosim``), keyed by the configuration and the source of ``logmac.hw`` and the bench, so a
warm run skips elaboration and compilation.  All jobs of a run share one simulator process.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logmac import toolchain
from logmac.cosim import tbgen
from logmac.cosim.scoreboard import Check, compare
from logmac.cosim.stream import build_commands, read_capture, write_hex
from logmac.cosim.vectors import Expected, Vectors, golden
from logmac.hw.config import HwConfig
from logmac.hw.export import engine_verilog
from logmac.hw.logact_engine import LogActConfig, logact_verilog
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import sched_verilog

TEST_MODULE = "logmac.cosim.tb_cocotb"
CMD_DEPTH = 1 << 17
CAP_DEPTH = 1 << 16


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


def _source_hash(hw, sim: str, waves: bool) -> str:
    h = hashlib.sha256(json.dumps([type(hw).__name__, hw.to_dict(), sim, waves, CMD_DEPTH, CAP_DEPTH,
                                   _environment_key()]).encode())
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
_RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def _environment_key() -> str:
    """Where the simulators' support files live.  Verilator builds refer to cocotb's VPI library and to
    Verilator's runtime sources by absolute path, so a build made from another environment (another
    clone's .venv) must not be reused: it breaks once that environment is gone."""
    import cocotb

    key = json.dumps([sys.prefix, cocotb.__version__])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _runtime_dir(waves: bool) -> Path:
    return cache_root() / f"verilator-runtime-{_environment_key()}{'-waves' if waves else ''}"


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


def build(hw: HwConfig | LogActConfig | SchedConfig, sim: str, waves: bool = False) -> tuple[Path, float]:
    """Build the bench for ``hw`` on ``sim`` unless a cached build exists; return (build dir, seconds)."""
    from cocotb_tools.runner import get_runner

    if sim not in toolchain.SIMULATORS:
        raise ValueError(f"simulator must be one of {toolchain.SIMULATORS}, got {sim!r}")
    toolchain.require(sim)
    bdir = cache_root() / f"{sim}-{_source_hash(hw, sim, waves)}{'-waves' if waves else ''}"
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
        args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast"] \
            if sim == "verilator" else []
        if sim == "verilator":
            _seed_runtime(bdir, waves)
        old = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include CXX=c++"
        try:
            get_runner(sim).build(sources=[src / "engine.v", src / "tb.v"], hdl_toplevel=tbgen.TOP, build_dir=bdir,
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


def run_jobs(hw: HwConfig | LogActConfig | SchedConfig, sim: str, jobs: list[Job], waves: bool = False,
             keep: bool = False) -> tuple[list[JobResult], Path]:
    """Run ``jobs`` in one simulator process; return their results and the run directory."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    bdir, _ = build(hw, sim, waves)
    rdir = cache_root() / "runs" / f"{sim}-{uuid.uuid4().hex[:10]}"
    rdir.mkdir(parents=True)
    spec = {"results": str(rdir / "results.json"), "jobs": []}
    for n, job in enumerate(jobs):
        if len(job.cmds) > CMD_DEPTH or job.expected_beats > CAP_DEPTH:
            raise ValueError(f"job {n} has {len(job.cmds)} commands / {job.expected_beats} outputs; the bench holds "
                             f"{CMD_DEPTH} / {CAP_DEPTH}: split the vectors")
        write_hex(job.cmds, rdir / f"stim{n}.hex")
        slack = (1 + job.bp / 64) * 4
        spec["jobs"].append({"stim": str(rdir / f"stim{n}.hex"), "capture": str(rdir / f"capture{n}.hex"),
                             "n_cmds": len(job.cmds), "bp": job.bp, "seed": job.seed, "reset_at": job.reset_at,
                             "timeout_cycles": int(len(job.cmds) * 8 * slack + 10_000)})
    (rdir / "jobs.json").write_text(json.dumps(spec))
    xml = rdir / "results.xml"
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)  # the runner exits the process under pytest otherwise
    try:
        get_runner(sim).test(test_module=TEST_MODULE, hdl_toplevel=tbgen.TOP, hdl_toplevel_lang="verilog",
                             build_dir=bdir, test_dir=rdir,
                             results_xml=str(xml), extra_env={"LOGMAC_JOBS": str(rdir / "jobs.json")}, waves=waves,
                             plusargs=[f"+dumpfile_path={rdir / 'waves.fst'}"] if waves and sim == "icarus" else [],
                             log_file=rdir / "sim.log")
    except SystemExit as exc:
        raise CosimError(f"{sim} simulation exited with {exc.code}; log in {rdir / 'sim.log'}") from exc
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    try:
        tests, failed = get_results(xml)
    except RuntimeError as exc:
        raise CosimError(f"{sim}: {exc}; log in {rdir / 'sim.log'}") from exc
    if tests != 1 or failed or not (rdir / "results.json").exists():
        tail = (rdir / "sim.log").read_text()[-3000:] if (rdir / "sim.log").exists() else ""
        raise CosimError(f"{sim}: cocotb ran {tests} test(s), {failed} failed (bench timeout?); run dir {rdir}\n{tail}")
    raw = json.loads((rdir / "results.json").read_text())
    results = [JobResult(r["n_out"], r["cycles"], r["seconds"], r["sticky"],
                         rdir / f"capture{n}.hex" if (rdir / f"capture{n}.hex").exists() else None)
               for n, r in enumerate(raw)]
    return results, rdir


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


def run_vectors(vectors: Vectors | list[Vectors], sim: str = "verilator", config: HwConfig | None = None, *,
                bp: int = 0, gap_prob: float = 0.0, reset_at: int | None = None, seed: int = 0,
                waves_on_failure: bool = True) -> Report:
    """Run vector sets through the RTL on ``sim`` and score every transaction against ``logmac.sim``.

    On a mismatch the failing run is repeated with waves on and its directory kept; ``Report.waveform``
    names the file.
    """
    t_start = time.perf_counter()
    vs = [vectors] if isinstance(vectors, Vectors) else list(vectors)
    hw = config or config_for(vs)
    rng = np.random.default_rng(seed)
    jobs, exps = [], []
    for _n, v in enumerate(vs):
        check_fits(hw, v)
        exps.append(golden(v))
        cmds = build_commands(hw, v, rng, gap_prob=gap_prob)
        jobs.append(Job(cmds, bp=bp, seed=int(rng.integers(1, 1 << 16)), reset_at=reset_at,
                        expected_beats=v.rows * v.channels))
    return score_jobs(hw, sim, vs, exps, jobs, waves_on_failure=waves_on_failure, t_start=t_start)


def score_jobs(hw: HwConfig | LogActConfig | SchedConfig, sim: str, vs: list, exps: list[Expected], jobs: list[Job], *,
               waves_on_failure: bool = True, t_start: float | None = None) -> Report:
    """Run one job per vector set in one simulator process and compare every capture with its expected arrays
    (and the sticky flag); on a mismatch re-run the first failing job with waves and keep its directory."""
    t_start = time.perf_counter() if t_start is None else t_start
    results, rdir = run_jobs(hw, sim, jobs)
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
        wave = next((p for p in wdir.iterdir() if p.suffix in (".vcd", ".fst")), None)
        rep.waveform = str(wave) if wave else str(wdir)
    if not rep.mismatches or rep.waveform:
        shutil.rmtree(rdir, ignore_errors=True)  # passing runs leave nothing behind; the waves run is kept
    rep.wall_seconds = time.perf_counter() - t_start
    return rep
