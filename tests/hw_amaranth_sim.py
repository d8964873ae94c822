"""Drive the engine with Amaranth's own simulator (the compile-free tier): the bench's command stream,
played the way the Verilog bench plays it, with optional back-pressure and gaps."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from logmac.cosim.stream import GAP_BITS, KIND_CFG, TbLayout
from logmac.hw import config as C
from logmac.hw.config import HwConfig
from logmac.hw.engine import MacEngine
from logmac.hw.lean_engine import LeanMacEngine


def _field(row: np.ndarray, lo: int, width: int) -> int:
    return int(sum(int(b) << i for i, b in enumerate(row[lo:lo + width])))


def run_commands(hw: HwConfig, cmds: np.ndarray, ready_prob: float = 1.0, seed: int = 0,
                 max_cycles: int = 100_000) -> list[int]:
    """Return the raw output payloads (ints) in order."""
    lay = TbLayout.of(hw)
    dut = LeanMacEngine(hw, beat="codes") if getattr(hw, "lean", False) else MacEngine(hw)  # LogActConfig: no lean
    rng = np.random.default_rng(seed)
    out: list[int] = []

    async def bench(ctx):
        ptr, waited = 0, 0
        for _ in range(max_cycles):
            if ptr >= len(cmds) and ctx.get(dut.idle):
                return
            row = cmds[ptr] if ptr < len(cmds) else None
            ready = bool(rng.random() < ready_prob)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.cfg.we, 0)
            fire = False
            if row is not None and waited >= _field(row, lay.payload_bits, GAP_BITS):
                if _field(row, lay.payload_bits + GAP_BITS, 2) == KIND_CFG:
                    if ctx.get(dut.idle):
                        ctx.set(dut.cfg.addr, _field(row, C.CFG_DATA_BITS, hw.cfg_addr_bits))
                        ctx.set(dut.cfg.data, _field(row, 0, C.CFG_DATA_BITS))
                        ctx.set(dut.cfg.we, 1)
                        fire = True
                else:
                    ctx.set(dut.i.payload.as_value(), _field(row, 0, lay.in_bits))
                    ctx.set(dut.i.valid, 1)
                    fire = bool(ctx.get(dut.i.ready))
            if ctx.get(dut.o.valid) and ready:
                out.append(int(ctx.get(dut.o.payload.as_value())))
            await ctx.tick()
            ptr, waited = (ptr + 1, 0) if fire else (ptr, waited + 1)
        raise TimeoutError("engine did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out
