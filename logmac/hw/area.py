"""Area and speed of an engine build: yosys ``synth_ice40`` (LUTs, carry cells, flip-flops), a generic yosys
``synth`` cell count, gate equivalents, and Fmax from nextpnr-ice40.

Gate equivalents (GE, NAND2 = 1): yosys ``synth; dffunmap; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX`` maps the
engine to generic gates (``dffunmap`` first turns enable and reset flip-flops into plain ones plus gates, so
that logic is counted), weighted by ``GE_WEIGHTS``.

Cell counts come from the bare engine.  Fmax comes from the engine inside a small wrapper that shifts all
inputs in through one pin and folds all outputs into one, because an engine's hundreds of ports do not fit
any iCE40 package; the wrapper adds the same shift chain to every design and leaves the engine's paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from logmac import toolchain
from logmac.hw.config import HwConfig
from logmac.hw.export import ENGINE_NAME, engine_verilog, lean_verilog, parameters

DEVICE = ("--hx8k", "--package", "ct256")
FLOW = "ge1"  # part of every cache key: bump when the synthesis flow or the row's fields change
GE_WEIGHTS = {"NAND": 1.0, "NOR": 1.0, "AND": 1.33, "OR": 1.33, "XOR": 2.33, "XNOR": 2.33, "MUX": 2.33,
              "NOT": 0.67, "DFF": 4.67}


@dataclass
class AreaRow:
    """One synthesised build."""

    kind: str
    weight_bits: int
    act_bits: int
    lanes: int
    luts: int
    carries: int
    ffs: int
    cells_generic: int
    fmax_mhz: float | None
    ge: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def wrapper_verilog(p: dict, cfg_addr_bits: int, engine_name: str = ENGINE_NAME, extra_ins: dict | None = None,
                    extra_outs: dict | None = None) -> str:
    """A top level with one input and one output pin around an engine (for place and route).

    ``p`` is the engine's parameter dict (its ``input_fields`` / ``output_fields``); the wide ports are fed
    from a shift chain and folded into one XOR so synthesis keeps every bit.  ``extra_ins`` / ``extra_outs``
    name further ports and their widths.
    """
    ins = {"i__valid": 1, "i__payload": p["input_fields"]["last"]["offset"] + 1, "o__ready": 1, "cfg__we": 1,
           "cfg__addr": cfg_addr_bits, "cfg__data": 64, **(extra_ins or {})}
    outs = {"i__ready": 1, "o__valid": 1, "o__payload": sum(f["width"] for f in p["output_fields"].values()),
            "idle": 1, "overflow_sticky": 1, **(extra_outs or {})}
    n_in, n_out = sum(ins.values()), sum(outs.values())
    lines = ["module wrap(input clk, input rst, input sin, output reg sout);",
             f"  reg [{n_in - 1}:0] chain;", f"  wire [{n_out - 1}:0] o;"]
    conns, lo = [], 0
    for name, w in ins.items():
        conns.append(f".{name}(chain[{lo + w - 1}:{lo}])")
        lo += w
    lo = 0
    for name, w in outs.items():
        conns.append(f".{name}(o[{lo + w - 1}:{lo}])")
        lo += w
    lines += [f"  {engine_name} e(.clk(clk), .rst(rst), {', '.join(conns)});",
              f"  always @(posedge clk) begin chain <= {{chain[{n_in - 2}:0], sin}}; sout <= ^o; end",
              "endmodule"]
    return "\n".join(lines) + "\n"


def run_tool(cmd: list[str], cwd: Path, timeout: int = 3600) -> str:
    """Run a synthesis tool in ``cwd``; its output, or a RuntimeError with the tail of it."""
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{(res.stdout + res.stderr)[-3000:]}")
    return res.stdout + res.stderr


def count_cells(stat: str, cell: str) -> int:
    """Cells of a type (``SB_LUT4``, ``SB_DFF`` and its variants...) in a yosys ``stat`` listing."""
    return sum(int(n) for n in re.findall(rf"^\s*{cell}\S*\s+(\d+)\s*$", stat, re.M))


def gate_equivalents(stat: str) -> float:
    """NAND2 equivalents of a yosys ``stat`` of generic gates; an unweighted cell type is an error."""
    total = 0.0
    for cell, n in re.findall(r"^\s*\$_(\w+?)_\S*\s+(\d+)\s*$", stat, re.M):
        kind = "DFF" if cell.startswith("DFF") else cell
        if kind not in GE_WEIGHTS:
            raise RuntimeError(f"no gate-equivalent weight for yosys cell $_{cell}_")
        total += GE_WEIGHTS[kind] * int(n)
    return round(total, 2)


def synthesise_verilog(verilog: str, wrapper: str, fmax: bool = True, top: str = ENGINE_NAME) -> dict:
    """LUT4, carry, FF, generic-cell and GE counts of module ``top`` in ``verilog``, and (``fmax``) the Fmax of
    ``wrapper`` (a ``wrapper_verilog`` around it) after place and route."""
    toolchain.require("yosys", *(("nextpnr-ice40",) if fmax else ()))
    with tempfile.TemporaryDirectory(prefix="logmac-area-") as tmp:
        d = Path(tmp)
        (d / "engine.v").write_text(verilog)
        (d / "wrap.v").write_text(wrapper)
        run_tool(["yosys", "-q", "-p", f"read_verilog engine.v; synth_ice40 -top {top}; tee -o ice.txt stat"], d)
        ice = (d / "ice.txt").read_text()
        run_tool(["yosys", "-q", "-p", f"read_verilog engine.v; synth -top {top}; tee -o gen.txt stat"], d)
        cells = int(re.search(r"Number of cells:\s+(\d+)", (d / "gen.txt").read_text()).group(1))
        run_tool(["yosys", "-q", "-p", f"read_verilog engine.v; synth -top {top}; dffunmap; "
              "abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX; opt_clean; tee -o ge.txt stat"], d)
        ge = gate_equivalents((d / "ge.txt").read_text())
        mhz = None
        if fmax:
            run_tool(["yosys", "-q", "-p", "read_verilog engine.v wrap.v; synth_ice40 -top wrap -json wrap.json"], d)
            try:
                log = run_tool(["nextpnr-ice40", *DEVICE, "--json", "wrap.json", "--freq", "12", "--timing-allow-fail",
                                "--seed", "1"], d)
            except RuntimeError as exc:  # a build the router cannot finish (nextpnr asserts on the largest ones)
                warnings.warn(f"no Fmax for {top}: place and route failed ({str(exc).splitlines()[-1].strip()})",
                              stacklevel=2)
                log = ""
            found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
            mhz = float(found[-1]) if found else None
    return {"luts": count_cells(ice, "SB_LUT4"), "carries": count_cells(ice, "SB_CARRY"), "ffs": count_cells(ice, "SB_DFF"),
            "cells_generic": cells, "fmax_mhz": mhz, "ge": ge}


def _design(hw: HwConfig, kind: str) -> tuple[str, str]:
    """(Verilog, wrapper) of an ``int``/``log`` engine (``engine_verilog``) or of the ``lean`` engine in its
    deployed form (decoded-field beats and the one shared decoder port, ``lean_verilog``)."""
    if kind != "lean":
        return engine_verilog(hw), wrapper_verilog(parameters(hw), hw.cfg_addr_bits)
    from logmac.hw.lean_lanes import field_bits

    verilog, params = lean_verilog(hw)
    return verilog, wrapper_verilog(params, hw.cfg_addr_bits, extra_ins={"wl_word": hw.word_bits},
                                    extra_outs={"wl_field": field_bits(hw)})


def synthesise(hw: HwConfig, fmax: bool = True, kind: str | None = None) -> AreaRow:
    """Synthesise one build; ``fmax=False`` skips place and route.  ``kind`` defaults to ``hw.kind``."""
    return _row(hw, kind or hw.kind, *_design(hw, kind or hw.kind), fmax)


def _row(hw: HwConfig, kind: str, verilog: str, wrapper: str, fmax: bool) -> AreaRow:
    return AreaRow(kind, hw.weight_bits, hw.act_bits, hw.lanes, **synthesise_verilog(verilog, wrapper, fmax))


def comparison_configs(bits: tuple[int, ...] = (3, 4), lanes: tuple[int, ...] = (1, 16), act_bits: int = 8) -> list[HwConfig]:
    """Log engine and integer-multiplier engine built the same way: MAC core (no requantization stage, which
    both share), signed activations, the same K and accumulator register."""
    return [HwConfig(kind=kind, weight_bits=b, act_bits=act_bits, act_signed=True, lanes=n, max_k=1024, acc_bits=24,
                     requant=False)
            for b in bits for n in lanes for kind in ("log", "int")]


def area_cache_dir() -> Path:
    return Path(os.environ.get("LOGMAC_BUILD_DIR", Path.home() / ".cache" / "logmac")) / "area"


def area_report(configs: list[HwConfig] | None = None, fmax: bool = True, cache: bool = True) -> list[AreaRow]:
    """Synthesise each build (default: ``comparison_configs()``) and return one row each.

    Results are cached under the hash of the exact Verilog synthesised (and the tool versions' outputs
    cannot change without the sources changing here), so a repeated report costs no synthesis.
    """
    return [area_row(hw, hw.kind, fmax, cache) for hw in configs or comparison_configs()]


def area_row(hw: HwConfig, kind: str, fmax: bool = True, cache: bool = True) -> AreaRow:
    """One build's row (``kind``: ``int``, ``log`` or ``lean``), cached by the Verilog synthesised and ``FLOW``."""
    verilog, wrapper = _design(hw, kind)
    return cached_synthesis(f"{FLOW}|{kind}|{verilog}|{wrapper}|fmax={fmax}", "", AreaRow,
                            lambda: _row(hw, kind, verilog, wrapper, fmax), cache)


def cached_synthesis(verilog_key: str, prefix: str, row_type: type, synth, cache: bool):
    """One area row, read from the cache under the hash of ``verilog_key`` or synthesised (``synth()``) and stored."""
    key = hashlib.sha256(verilog_key.encode()).hexdigest()[:20]
    path = area_cache_dir() / f"{prefix}{key}.json"
    if cache and path.is_file():
        return row_type(**json.loads(path.read_text()))
    row = synth()
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row.as_dict()))
    return row


def format_table(rows: list[AreaRow]) -> str:
    """A markdown table with the log/int ratio of LUTs next to each log row."""
    head = "| engine | w bits | a bits | lanes | LUT4 | carry | FF | generic cells | Fmax MHz | LUT log/int |\n" \
           "|---|---|---|---|---|---|---|---|---|---|"
    out = [head]
    ints = {(r.weight_bits, r.act_bits, r.lanes): r for r in rows if r.kind == "int"}
    for r in rows:
        base = ints.get((r.weight_bits, r.act_bits, r.lanes))
        ratio = f"{r.luts / base.luts:.2f}" if r.kind == "log" and base and base.luts else ""
        fm = f"{r.fmax_mhz:.1f}" if r.fmax_mhz else "n/a"
        out.append(f"| {r.kind} | {r.weight_bits} | {r.act_bits} | {r.lanes} | {r.luts} | {r.carries} | {r.ffs} | "
                   f"{r.cells_generic} | {fm} | {ratio} |")
    return "\n".join(out)
