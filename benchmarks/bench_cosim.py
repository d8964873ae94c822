"""Cosim throughput: MACs checked per second on each simulator, and the built-in suite's size.

    .venv/bin/python benchmarks/bench_cosim.py [--macs 1048576] [--sims verilator,icarus] [--lanes 16,1]
    .venv/bin/python benchmarks/bench_cosim.py --quick    # CI smoke: Icarus, 16 lanes, 16k MACs, no suite

Builds are cached (first run compiles).  "sim MACs/s" counts MACs checked per second of simulator time
(load -> done, the bench running on its own); "end-to-end MACs/s" includes golden model, stimulus files,
simulator start-up and scoring.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from logmac.cosim.runner import CAP_DEPTH, CMD_DEPTH, build, run_vectors
from logmac.cosim.stream import build_commands
from logmac.cosim.suite import format_matrix, throughput_load
from logmac.cosim.vectors import Vectors
from logmac.hw.config import HwConfig


def split_rows(v: Vectors, hw: HwConfig) -> list[Vectors]:
    """``v`` cut into consecutive row tiles, each within the bench's command and capture memories.

    A job's stream is a fixed set-up per channel plus one beat run per row and channel, so two trial streams
    (the first row once and twice) give both terms; each tile then runs as one job of the same simulator process.
    """
    channels = np.arange(v.channels)
    one, two = (len(build_commands(hw, v.tile(np.zeros(n, dtype=np.int64), channels))) for n in (1, 2))
    per_row, fixed = two - one, 2 * one - two
    rows = min((CMD_DEPTH - fixed) // per_row, CAP_DEPTH // v.channels)
    if rows < 1:
        raise ValueError(f"{v.name}: one row of {v.channels} channels exceeds the bench memories; split the channels")
    return [v.tile(np.arange(a, min(a + rows, v.rows)), channels, name=f"{v.name}[{a}:]") for a in range(0, v.rows, rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--macs", type=int, default=1 << 20)
    ap.add_argument("--icarus-macs", type=int, default=1 << 17, help="Icarus is ~30x slower; a smaller load")
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("--lanes", default="16,1")
    ap.add_argument("--quick", action="store_true", help="Icarus only, 16 lanes, 16k MACs, no suite table (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.macs = args.icarus_macs = 1 << 14
        args.sims, args.lanes = "icarus", "16"
    print("| simulator | lanes | MACs checked | cycles | sim s | sim MACs/s | end-to-end MACs/s |")
    print("|---|---|---|---|---|---|---|")
    for sim in args.sims.split(","):
        for lanes in (int(n) for n in args.lanes.split(",")):
            hw = HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=lanes, acc_bits=32, max_k=4096)
            macs = args.macs if sim == "verilator" else args.icarus_macs
            if lanes == 1:
                macs //= 8
            v = throughput_load(np.random.default_rng(0), macs=macs)
            build(hw, sim)  # cached; keeps compilation out of the timing
            t0 = time.perf_counter()
            rep = run_vectors(split_rows(v, hw), sim, hw)
            wall = time.perf_counter() - t0
            assert rep.passed, rep.first_mismatch
            print(f"| {sim} | {lanes} | {rep.macs_checked:,} | {rep.cycles:,} | {rep.sim_seconds:.2f} | "
                  f"{rep.macs_per_second:,.0f} | {rep.macs_checked / wall:,.0f} |")
    if args.quick:
        return
    print()
    print("| simulator | built-in suite: configurations | transactions | MACs checked | mismatches | wall s |")
    print("|---|---|---|---|---|---|")
    for sim in args.sims.split(","):
        vs = format_matrix(np.random.default_rng(0))
        rep = run_vectors(vs, sim, HwConfig(weight_bits=6, act_bits=9, lanes=16, acc_bits=32), bp=64, gap_prob=0.1)
        print(f"| {sim} | {len(vs)} | {rep.transactions:,} | {rep.macs_checked:,} | {rep.mismatches} | "
              f"{rep.wall_seconds:.1f} |")


if __name__ == "__main__":
    main()
