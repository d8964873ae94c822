"""Cosim throughput: MACs checked per second of simulator time and end to end, per simulator, engine and lanes.

    .venv/bin/python benchmarks/bench_cosim.py [--macs 1048576] [--icarus-macs 1048576] [--sims verilator,icarus]
                                               [--workers 1,2] [--no-suite]
    .venv/bin/python benchmarks/bench_cosim.py --quick    # CI smoke: Icarus, general 16-lane engine, 16k MACs

Engines: the general engine (``HwConfig``) at 16, 32 and 64 lanes, the AdaLog-activation engine (``LogActConfig``)
and the exponent-scheduled engine (``SchedConfig``) at 16 lanes, each on one layer-like load (K = 1024,
16 channels).  Builds are cached and made before the timing.  "sim" counts MACs checked per second of simulator
time (``start`` to ``done``, the bench running on its own, summed over processes); "end to end" is the whole
``run_*_vectors`` call: the golden model, command streams, stimulus files, simulator start-up, the run, capture
read and compare.  The goal columns divide by issue 19's goals (Verilator 1 M MACs/s end to end and 10 M of
simulator time, Icarus 100 k end to end).  The phase table splits one run of the general 16-lane load into its
steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logmac.cosim.logact_runner import run_logact_vectors
from logmac.cosim.logact_suite import LOG_BUILD as LOGACT_BUILD
from logmac.cosim.logact_vectors import random_logact_vectors
from logmac.cosim.runner import Report, build, plan_jobs, run_jobs, run_vectors
from logmac.cosim.sched_runner import run_sched_vectors
from logmac.cosim.scoreboard import compare
from logmac.cosim.stream import build_commands, read_capture, write_stimulus
from logmac.cosim.suite import format_matrix, throughput_load
from logmac.cosim.vectors import golden
from logmac.format import AdaLogFormat, LogFormat
from logmac.hw.config import HwConfig
from logmac.hw.sched_config import SchedConfig

GOAL_END_TO_END = {"verilator": 1e6, "icarus": 1e5}
GOAL_SIM = {"verilator": 1e7}
K, CHANNELS = 1024, 16


@dataclass(frozen=True)
class Engine:
    """One engine kind at one lane count: its build, a load of about ``macs`` MACs and the call that checks it."""

    name: str
    lanes: int
    build: object
    load: Callable[[np.random.Generator, int], object]
    run: Callable[..., Report]


def general(lanes: int) -> HwConfig:
    return HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=lanes, acc_bits=32, max_k=4096)


def logact_load(rng: np.random.Generator, macs: int):
    return random_logact_vectors(AdaLogFormat(4, 37), LogFormat(4), rng, rows=max(1, macs // (K * CHANNELS)), k=K,
                                 channels=CHANNELS)


def engines() -> list[Engine]:
    sched = SchedConfig(variant="inplace", half="split", lanes=16, act_bits=9, max_shift=7, max_k=K, acc_bits=32,
                        out_bits=8)
    return [*(Engine("general", lanes, general(lanes), lambda rng, macs: throughput_load(rng, macs, K, CHANNELS),
                     run_vectors) for lanes in (16, 32, 64)),
            Engine("logact", 16, LOGACT_BUILD, logact_load, run_logact_vectors),
            Engine("sched", 16, sched, lambda rng, macs: throughput_load(rng, macs, K, CHANNELS), run_sched_vectors)]


def ratio(value: float, goal: float | None) -> str:
    return f"{value / goal:.2f}x" if goal else "-"


def throughput_table(sims: list[str], kinds: list[Engine], workers: list[int], macs: dict[str, int]) -> None:
    print("| simulator | engine | lanes | processes | MACs checked | cycles | sim s | sim MACs/s | end-to-end s | "
          "end-to-end MACs/s | end to end / goal | sim / goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sim in sims:
        for eng in kinds:
            v = eng.load(np.random.default_rng(0), macs[sim])
            build(eng.build, sim)  # cached; keeps compilation out of the timing
            for n in workers:
                t0 = time.perf_counter()
                rep = eng.run(v, sim, eng.build, workers=n)
                wall = time.perf_counter() - t0
                assert rep.passed, rep.first_mismatch
                sim_rate, e2e_rate = rep.macs_per_second, rep.macs_checked / wall
                print(f"| {sim} | {eng.name} | {eng.lanes} | {n} | {rep.macs_checked:,} | {rep.cycles:,} | "
                      f"{rep.sim_seconds:.3f} | {sim_rate:,.0f} | {wall:.2f} | {e2e_rate:,.0f} | "
                      f"{ratio(e2e_rate, GOAL_END_TO_END[sim])} | "
                      f"{ratio(sim_rate, GOAL_SIM.get(sim)) if eng.lanes == 16 else '-'} |", flush=True)


def phase_table(sims: list[str], macs: dict[str, int]) -> None:
    """Where the end-to-end time of one general 16-lane run goes (one simulator process)."""
    print("| simulator | MACs | golden model s | command streams s | stimulus file s | simulator process s "
          "(of which simulation) | capture read + compare s |")
    print("|---|---|---|---|---|---|---|")
    hw = general(16)
    for sim in sims:
        v = throughput_load(np.random.default_rng(0), macs[sim], K, CHANNELS)
        build(hw, sim)
        t0 = time.perf_counter()
        exps = [golden(v)]
        t1 = time.perf_counter()
        tiles, exps, jobs = plan_jobs([v], exps, lambda t, gaps: build_commands(hw, t, gaps), np.random.default_rng(0))
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for n, job in enumerate(jobs):
                write_stimulus(job.cmds, Path(tmp) / f"{n}.bin")
        t3 = time.perf_counter()
        results, _ = run_jobs(hw, sim, jobs, workers=1)
        t4 = time.perf_counter()
        checks = [compare(tile, exp, read_capture(hw, res.capture)) for tile, exp, res in zip(tiles, exps, results, strict=True)]
        t5 = time.perf_counter()
        assert sum(c.mismatches for c in checks) == 0
        simulated = sum(r.seconds for r in results)
        print(f"| {sim} | {v.macs:,} | {t1 - t0:.3f} | {t2 - t1:.3f} | {t3 - t2:.3f} | "
              f"{t4 - t3 - (t3 - t2):.3f} ({simulated:.3f}) | {t5 - t4:.3f} |", flush=True)


def suite_table(sims: list[str]) -> None:
    print("| simulator | built-in suite: configurations | transactions | MACs checked | mismatches | wall s |")
    print("|---|---|---|---|---|---|")
    for sim in sims:
        vs = format_matrix(np.random.default_rng(0))
        rep = run_vectors(vs, sim, HwConfig(weight_bits=6, act_bits=9, lanes=16, acc_bits=32), bp=64, gap_prob=0.1)
        print(f"| {sim} | {len(vs)} | {rep.transactions:,} | {rep.macs_checked:,} | {rep.mismatches} | "
              f"{rep.wall_seconds:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--macs", type=int, default=1 << 20, help="MACs per Verilator run")
    ap.add_argument("--icarus-macs", type=int, default=1 << 20, help="MACs per Icarus run")
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("--engines", default="general,logact,sched", help="engine kinds (general runs 16, 32, 64 lanes)")
    ap.add_argument("--workers", default="1,2", help="simulator processes side by side, each measured")
    ap.add_argument("--no-suite", action="store_true", help="skip the phase and built-in suite tables")
    ap.add_argument("--quick", action="store_true", help="Icarus, general 16-lane engine, 16k MACs, one process "
                                                         "(CI smoke)")
    args = ap.parse_args()
    sims = args.sims.split(",")
    kinds = [e for e in engines() if e.name in args.engines.split(",")]
    workers = [int(n) for n in args.workers.split(",")]
    macs = {"verilator": args.macs, "icarus": args.icarus_macs}
    if args.quick:
        sims, workers, macs = ["icarus"], [1], {"icarus": 1 << 14}
        kinds = [e for e in kinds if e.name == "general" and e.lanes == 16]
    throughput_table(sims, kinds, workers, macs)
    if args.quick or args.no_suite:
        return
    print()
    phase_table(sims, macs)
    print()
    suite_table(sims)


if __name__ == "__main__":
    main()
