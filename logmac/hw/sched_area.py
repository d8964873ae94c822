"""Area and speed of scheduled-engine builds with the flow of ``logmac.hw.area`` (yosys ``synth_ice40`` LUT4s,
generic gates weighted as NAND2 equivalents, nextpnr Fmax), and cycles per output from the schedule cost model.

Builds match ``area.comparison_configs`` (MAC core without the shared requantization stage, signed
activations, K up to 1024, a 24-bit accumulator register) so rows compare with the integer engine's.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from logmac import toolchain
from logmac.format import DecodeTable, GridKind, LogFormat
from logmac.format.schedule import HalfMode, Variant, schedule_cost
from logmac.hw.area import DEVICE, _run, cached_synthesis, wrapper_verilog
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import SCHED_ENGINE_NAME, sched_parameters, sched_verilog

GE_WEIGHTS = {"NAND": 1.0, "NOR": 1.0, "AND": 1.33, "OR": 1.33, "XOR": 2.33, "XNOR": 2.33, "MUX": 2.33,
              "NOT": 0.67, "DFF": 4.67}


@dataclass
class SchedAreaRow:
    engine: str
    grid: str
    weight_bits: int
    act_bits: int
    lanes: int
    lut4: int
    carries: int
    ffs: int
    ge: float
    fmax_mhz: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def nand2_equivalents(stat: str) -> float:
    """NAND2-equivalent gates of a ``synth; abc -g ...`` cell listing (any flip-flop counts as a DFF)."""
    total = 0.0
    for name, n in re.findall(r"^\s*\$_(\w+?)_\s+(\d+)\s*$", stat, re.M):
        kind = "DFF" if "DFF" in name else name
        if kind not in GE_WEIGHTS:
            raise RuntimeError(f"no gate-equivalent weight for yosys cell $_{name}_")
        total += GE_WEIGHTS[kind] * int(n)
    return total


def sched_build(weight_bits: int, grid: str, act_bits: int, lanes: int, variant: Variant, half: HalfMode) -> SchedConfig:
    """The build a ``weight_bits`` grid needs: its shift field, and no half-step hardware on log_2."""
    fmt = LogFormat(weight_bits, GridKind(grid))
    return SchedConfig(variant=variant, half="none" if fmt.grid is GridKind.LOG_2 else half, lanes=lanes,
                       act_bits=act_bits, act_signed=True, max_shift=fmt.max_shift, max_k=1024, acc_bits=24,
                       requant=False)


def _synthesise(cfg: SchedConfig, grid: str, weight_bits: int, fmax: bool) -> SchedAreaRow:
    toolchain.require("yosys", *(("nextpnr-ice40",) if fmax else ()))
    top = SCHED_ENGINE_NAME
    with tempfile.TemporaryDirectory(prefix="logmac-sched-area-") as tmp:
        d = Path(tmp)
        (d / "engine.v").write_text(sched_verilog(cfg))
        _run(["yosys", "-q", "-p", f"read_verilog engine.v; synth_ice40 -top {top}; tee -o ice.txt stat"], d)
        ice = (d / "ice.txt").read_text()
        _run(["yosys", "-q", "-p", f"read_verilog engine.v; synth -top {top}; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX; "
              "opt_clean; tee -o gen.txt stat"], d)
        gen = (d / "gen.txt").read_text()
        mhz = None
        if fmax:
            (d / "wrap.v").write_text(wrapper_verilog(sched_parameters(cfg), cfg.cfg_addr_bits, top))
            _run(["yosys", "-q", "-p", "read_verilog engine.v wrap.v; synth_ice40 -top wrap -json wrap.json"], d)
            log = _run(["nextpnr-ice40", *DEVICE, "--json", "wrap.json", "--freq", "12", "--timing-allow-fail",
                        "--seed", "1"], d)
            found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
            mhz = float(found[-1]) if found else None

    def count(cell: str) -> int:
        return sum(int(n) for n in re.findall(rf"^\s*{cell}\S*\s+(\d+)\s*$", ice, re.M))

    return SchedAreaRow(f"sched_{cfg.variant}_{cfg.half}", grid, weight_bits, cfg.act_bits, cfg.lanes,
                        count("SB_LUT4"), count("SB_CARRY"), count("SB_DFF"), nand2_equivalents(gen), mhz)


def sched_area_rows(weight_bits: int, grid: str, act_bits: int, lanes_list: list[int], variant: Variant,
                    half: HalfMode, fmax: bool = True, cache: bool = True) -> list[dict]:
    """One synthesised row per lane count (keys: engine, grid, weight_bits, act_bits, lanes, lut4, ge, fmax_mhz,
    carries, ffs), cached under the hash of the Verilog like ``area.area_report``."""
    rows = []
    for lanes in lanes_list:
        cfg = sched_build(weight_bits, grid, act_bits, lanes, variant, half)
        key = f"{sched_verilog(cfg)}|{grid}|{weight_bits}|fmax={fmax}|ge-v1"
        rows.append(cached_synthesis(key, "sched-", SchedAreaRow,
                                     lambda cfg=cfg: _synthesise(cfg, grid, weight_bits, fmax), cache).as_dict())
    return rows


def cycles_per_output(layers: list[tuple[np.ndarray, DecodeTable, LogFormat]], lanes: int, variant: Variant,
                      half: HalfMode, max_k: int = 1 << 16) -> dict:
    """Cycles (beats) per output, weighted by each layer's outputs, and the stored weight bits, over real layers
    given as (codes (C, K), table, format); ``dense_cycles`` is what a one-tile-a-cycle engine needs."""
    beats = dense = macs = stored = code = half_terms = 0.0
    for codes, table, fmt in layers:
        h = "none" if fmt.grid is GridKind.LOG_2 else half
        cfg = sched_build(fmt.bits, fmt.grid.value, 8, lanes, variant, h)
        cost = schedule_cost(codes, table, fmt, cfg.limits().__class__(variant, h, lanes, fmt.max_shift, max_k))
        C, K = codes.shape
        beats += cost["beats_per_output"] * C
        dense += cost["dense_beats_per_output"] * C
        macs += C * K
        stored += cost["weight_bits_stored"] * C * K
        code += fmt.storage_bits * C * K
        half_terms += cost["half_step_share"] * C * K
    outputs = sum(c.shape[0] for c, _, _ in layers)
    return {"cycles_per_output": beats / outputs, "dense_cycles_per_output": dense / outputs,
            "cycles_per_mac": beats / macs, "dense_cycles_per_mac": dense / macs,
            "weight_bits_stored": stored / macs, "code_bits": code / macs, "half_step_share": half_terms / macs}
