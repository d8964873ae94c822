"""Area and Fmax of the AdaLog-activation engine next to the integer-multiplier engine (iCE40, yosys/nextpnr).

Same flow, device and cache as ``logmac.hw.area`` (whose rows for ``HwConfig`` builds it reuses): yosys
``synth_ice40`` cell counts of the bare engine, a generic ``synth`` cell count, and Fmax from nextpnr-ice40
with the engine inside a shift-chain wrapper (every input shifted in through one pin, every output folded
into one), so the pin count of a wide engine does not matter.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from logmac import toolchain
from logmac.hw.area import DEVICE, area_report, cached_synthesis, count_cells, run_tool, wrapper_verilog
from logmac.hw.config import HwConfig
from logmac.hw.logact_engine import ENGINE_NAME, LogActConfig, logact_verilog, parameters


@dataclass
class LogActAreaRow:
    """One synthesised build: ``engine`` is ``adalog x log``, ``adalog x int`` or ``int x int``."""

    engine: str
    act_bits: int
    act_max_shift: int | None
    weight_bits: int
    lanes: int
    exact_bits: int
    luts: int
    carries: int
    ffs: int
    cells_generic: int
    fmax_mhz: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _wrapper(cfg: LogActConfig) -> str:
    return wrapper_verilog(parameters(cfg), cfg.cfg_addr_bits, ENGINE_NAME)


def synthesise(cfg: LogActConfig, fmax: bool = True) -> LogActAreaRow:
    """Synthesise one AdaLog-activation build; ``fmax=False`` skips place and route."""
    toolchain.require("yosys", *(("nextpnr-ice40",) if fmax else ()))
    with tempfile.TemporaryDirectory(prefix="logmac-logact-area-") as tmp:
        d = Path(tmp)
        (d / "engine.v").write_text(logact_verilog(cfg))
        (d / "wrap.v").write_text(_wrapper(cfg))
        run_tool(["yosys", "-q", "-p", f"read_verilog engine.v; synth_ice40 -top {ENGINE_NAME}; tee -o ice.txt stat"], d)
        ice = (d / "ice.txt").read_text()
        run_tool(["yosys", "-q", "-p", f"read_verilog engine.v; synth -top {ENGINE_NAME}; tee -o gen.txt stat"], d)
        cells = int(re.search(r"Number of cells:\s+(\d+)", (d / "gen.txt").read_text()).group(1))
        mhz = None
        if fmax:
            run_tool(["yosys", "-q", "-p", "read_verilog engine.v wrap.v; synth_ice40 -top wrap -json wrap.json"], d)
            log = run_tool(["nextpnr-ice40", *DEVICE, "--json", "wrap.json", "--freq", "12", "--timing-allow-fail",
                            "--seed", "1"], d)
            found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
            mhz = float(found[-1]) if found else None
    return LogActAreaRow(f"adalog x {cfg.kind}", cfg.act_code_bits, cfg.act_max_shift, cfg.weight_bits, cfg.lanes,
                         cfg.exact_bits, count_cells(ice, "SB_LUT4"), count_cells(ice, "SB_CARRY"),
                         count_cells(ice, "SB_DFF"), cells, mhz)


def comparison_builds(act_bits: int = 4, weight_bits: int = 4, lanes: tuple[int, ...] = (1, 16),
                      act_max_shifts: tuple[int, ...] = (15, 7)) -> list[LogActConfig | HwConfig]:
    """MAC cores (no requantization stage, which all share) with K <= 1024 and a 24-bit accumulator register:
    AdaLog x log and AdaLog x int at each activation shift cap, and the integer-multiplier engine with unsigned
    activations of the same stored width (AdaLog activations are non-negative)."""
    common = {"lanes": 1, "max_k": 1024, "acc_bits": 24, "requant": False}
    builds: list[LogActConfig | HwConfig] = []
    for n in lanes:
        common["lanes"] = n
        for shift in act_max_shifts:
            builds += [LogActConfig(kind=kind, act_code_bits=act_bits, act_max_shift=shift, weight_bits=weight_bits,
                                    **common) for kind in ("log", "int")]
        builds.append(HwConfig(kind="int", weight_bits=weight_bits, act_bits=act_bits, act_signed=False, **common))
    return builds


def logact_area_report(builds: list[LogActConfig | HwConfig] | None = None, fmax: bool = True,
                       cache: bool = True) -> list[LogActAreaRow]:
    """One row per build (default :func:`comparison_builds`); cached by the exact Verilog synthesised."""
    rows = []
    for b in builds or comparison_builds():
        if isinstance(b, HwConfig):
            r = area_report([b], fmax=fmax, cache=cache)[0]
            rows.append(LogActAreaRow(f"{b.kind} x {b.kind}", b.act_bits, None, b.weight_bits, b.lanes, b.exact_bits,
                                      r.luts, r.carries, r.ffs, r.cells_generic, r.fmax_mhz))
            continue
        rows.append(cached_synthesis(f"{logact_verilog(b)}|{_wrapper(b)}|fmax={fmax}", "logact-", LogActAreaRow,
                                     lambda b=b: synthesise(b, fmax), cache))
    return rows


def format_table(rows: list[LogActAreaRow]) -> str:
    """A markdown table with each row's LUTs relative to the integer engine of the same bits and lanes."""
    out = ["| engine | a bits | act shift cap | w bits | lanes | exact acc bits | LUT4 | carry | FF | generic cells "
           "| Fmax MHz | LUT / int engine |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ints = {(r.act_bits, r.weight_bits, r.lanes): r for r in rows if r.engine == "int x int"}
    for r in rows:
        base = ints.get((r.act_bits, r.weight_bits, r.lanes))
        ratio = f"{r.luts / base.luts:.2f}" if base and base.luts and r is not base else ""
        cap = "" if r.act_max_shift is None else str(r.act_max_shift)
        fm = f"{r.fmax_mhz:.1f}" if r.fmax_mhz else "n/a"
        out.append(f"| {r.engine} | {r.act_bits} | {cap} | {r.weight_bits} | {r.lanes} | {r.exact_bits} | {r.luts} | "
                   f"{r.carries} | {r.ffs} | {r.cells_generic} | {fm} | {ratio} |")
    return "\n".join(out)
