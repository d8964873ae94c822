"""Area and speed of scheduled-engine builds with the flow of ``logmac.hw.area`` (yosys ``synth_ice40`` LUT4s,
generic gates weighted as NAND2 equivalents, nextpnr Fmax), and cycles per output from the schedule cost model.

Builds are MAC cores like ``area.comparison_configs`` (no requantization stage, which every engine shares,
signed activations, a 24-bit accumulator register) so rows compare with the integer engine's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from logmac.format import DecodeTable, GridKind, LogFormat, ZeroMode
from logmac.format.schedule import HalfMode, Store, Variant, schedule_cost
from logmac.hw.area import FLOW, cached_synthesis, synthesise_verilog, wrapper_verilog
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import SCHED_ENGINE_NAME, sched_parameters, sched_verilog


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


def engine_name(variant: Variant, half: HalfMode, store: Store = "terms") -> str:
    return f"sched_coded_{half}" if store == "codes" else f"sched_{variant}_{half}"


def sched_build(weight_bits: int, grid: str, act_bits: int, lanes: int, variant: Variant, half: HalfMode,
                store: Store = "terms", max_k: int = 1024) -> SchedConfig:
    """The build a ``weight_bits`` grid needs: its shift field, no half-step hardware on log_2, and (codes) a
    code word of the format's width."""
    fmt = LogFormat(weight_bits, GridKind(grid))
    coded = store == "codes"
    return SchedConfig(variant=variant, half="none" if fmt.grid is GridKind.LOG_2 else half, store=store,
                       code_bits=fmt.bits if coded else 0, zero_flag=coded and fmt.zero is ZeroMode.FLAG,
                       lanes=lanes, act_bits=act_bits, act_signed=True, max_shift=fmt.max_shift, max_k=max_k,
                       acc_bits=24, requant=False)


def sched_area_rows(weight_bits: int, grid: str, act_bits: int, lanes_list: tuple[int, ...] | list[int],
                    variant: Variant, half: HalfMode, store: Store = "terms", fmax: bool = True, cache: bool = True,
                    max_k: int = 1024) -> list[dict]:
    """One synthesised row per lane count (keys: engine, grid, weight_bits, act_bits, lanes, lut4, carries, ffs,
    ge, fmax_mhz), cached under the hash of the Verilog like ``area.area_row``."""
    rows = []
    for lanes in lanes_list:
        cfg = sched_build(weight_bits, grid, act_bits, lanes, variant, half, store, max_k)
        verilog = sched_verilog(cfg)
        wrapper = wrapper_verilog(sched_parameters(cfg), cfg.cfg_addr_bits, SCHED_ENGINE_NAME)

        def synth(cfg=cfg, verilog=verilog, wrapper=wrapper) -> SchedAreaRow:
            r = synthesise_verilog(verilog, wrapper, fmax, top=SCHED_ENGINE_NAME)
            return SchedAreaRow(engine_name(cfg.variant, cfg.half, cfg.store), grid, weight_bits, act_bits, cfg.lanes,
                                r["luts"], r["carries"], r["ffs"], r["ge"], r["fmax_mhz"])

        key = f"{FLOW}|{verilog}|{wrapper}|{grid}|{weight_bits}|fmax={fmax}"
        rows.append(cached_synthesis(key, "sched-", SchedAreaRow, synth, cache).as_dict())
    return rows


def cycles_per_output(layers: list[tuple[np.ndarray, DecodeTable, LogFormat, int]], lanes: int, variant: Variant,
                      half: HalfMode, store: Store = "terms") -> dict:
    """Cycles (beats) per output and stored weight bits over real layers given as (codes (C, K), table, format,
    outputs of the layer), each layer weighted by its outputs (cycles) or its weights (bits);
    ``dense_cycles_per_output`` is what a one-tile-a-cycle engine needs on the same layers, and
    ``min/max_beats_per_tile`` the range of the layers' mean beats per tile; ``permuted_*``: the cost-only
    variant that sorts each channel's terms by exponent (beats, and its activation index width)."""
    beats = dense = permuted = outputs = macs = stored = code = weights = 0.0
    per_tile = []
    for codes, table, fmt, n_out in layers:
        cfg = sched_build(fmt.bits, fmt.grid.value, 8, lanes, variant, half, store, max(codes.shape[1], 1))
        cost = schedule_cost(codes, table, fmt, cfg.limits())
        C, K = codes.shape
        beats += cost["beats_per_output"] * n_out
        per_tile.append(cost["beats_per_output"] / cost["dense_beats_per_output"])
        dense += cost["dense_beats_per_output"] * n_out
        permuted += cost["permuted_beats_per_output"] * n_out
        outputs += n_out
        macs += n_out * K
        stored += cost["weight_bits_stored"] * C * K
        code += fmt.storage_bits * C * K
        weights += C * K
    return {"cycles_per_output": beats / outputs, "dense_cycles_per_output": dense / outputs,
            "cycles_per_mac": beats / macs, "weight_bits_stored": stored / weights, "code_bits": code / weights,
            "min_beats_per_tile": min(per_tile), "max_beats_per_tile": max(per_tile),
            "permuted_cycles_per_output": permuted / outputs,
            "permuted_index_bits": max(math.ceil(math.log2(max(c.shape[1], 2))) for c, *_ in layers)}
