"""Cosim throughput: MACs checked per second on each simulator, and the built-in suite's size.

    .venv/bin/python benchmarks/bench_cosim.py [--macs 1048576] [--sims verilator,icarus] [--lanes 16,1]

Builds are cached (first run compiles).  "sim MACs/s" counts MACs checked per second of simulator time
(load -> done, the bench running on its own); "end-to-end MACs/s" includes golden model, stimulus files,
simulator start-up and scoring.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from logmac.cosim.runner import build, run_vectors
from logmac.cosim.suite import format_matrix, throughput_load
from logmac.hw.config import HwConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--macs", type=int, default=1 << 20)
    ap.add_argument("--icarus-macs", type=int, default=1 << 17, help="Icarus is ~30x slower; a smaller load")
    ap.add_argument("--sims", default="verilator,icarus")
    ap.add_argument("--lanes", default="16,1")
    args = ap.parse_args()
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
            rep = run_vectors(v, sim, hw)
            wall = time.perf_counter() - t0
            assert rep.passed, rep.first_mismatch
            print(f"| {sim} | {lanes} | {rep.macs_checked:,} | {rep.cycles:,} | {rep.sim_seconds:.2f} | "
                  f"{rep.macs_per_second:,.0f} | {rep.macs_checked / wall:,.0f} |")
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
