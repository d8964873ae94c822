"""The cocotb test that runs inside the simulator: load, start, one long wait, collect.

It reads a job list (JSON, path in ``$LOGMAC_JOBS``) written by ``logmac.cosim.runner``; for each job it
moves the job's binary stimulus to the file the bench reads, pulses ``load`` and ``start`` (optionally resets
mid-stream and starts again), waits for ``done`` and moves the capture to the job's capture path.  The clock
is the bench's own, so between ``start`` and ``done`` the simulator runs without calling Python.  Checking
is done by the host against ``logmac.sim``; this test fails only when the bench does not finish in time.

Only cocotb and the standard library are imported here: the simulator loads this module at every start.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout


async def _pulse(dut, name: str) -> None:
    getattr(dut, name).value = 1
    await RisingEdge(dut.clk)
    getattr(dut, name).value = 0


async def _reset(dut, cycles: int = 3) -> None:
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


@cocotb.test()
async def run_jobs(dut) -> None:
    spec = json.loads(Path(os.environ["LOGMAC_JOBS"]).read_text())
    stimulus, capture = Path(spec["stimulus_file"]), Path(spec["capture_file"])
    for name in ("load", "start", "bp", "seed", "n_cmds"):
        getattr(dut, name).value = 0
    await _reset(dut)
    results = []
    for job in spec["jobs"]:
        capture.unlink(missing_ok=True)
        os.replace(job["stim"], stimulus)
        dut.n_cmds.value = job["n_cmds"]
        dut.bp.value = job["bp"]
        dut.seed.value = job["seed"]
        await _pulse(dut, "load")
        t0 = time.perf_counter()
        await _pulse(dut, "start")
        if job.get("reset_at"):
            await ClockCycles(dut.clk, job["reset_at"])
            await _reset(dut)
            await _pulse(dut, "start")
        await with_timeout(RisingEdge(dut.done), job["timeout_ns"], "ns")
        wall = time.perf_counter() - t0
        await RisingEdge(dut.clk)
        if capture.exists():
            shutil.move(capture, job["capture"])
        results.append({"n_out": int(dut.n_out.value), "cycles": int(dut.cycles.value), "seconds": wall,
                        "sticky": int(dut.sticky.value)})
    Path(spec["results"]).write_text(json.dumps(results))
