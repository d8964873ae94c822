"""Area and speed of an engine build: yosys ``synth_ice40`` (LUTs, carry cells, flip-flops), a generic yosys
``synth`` cell count, and Fmax from nextpnr-ice40.

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
from dataclasses import asdict, dataclass
from pathlib import Path

from logmac import toolchain
from logmac.hw.config import HwConfig
from logmac.hw.export import ENGINE_NAME, engine_verilog, parameters

DEVICE = ("--hx8k", "--package", "ct256")


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

    def as_dict(self) -> dict:
        return asdict(self)


def wrapper_verilog(p: dict, cfg_addr_bits: int, engine_name: str = ENGINE_NAME) -> str:
    """A top level with one input and one output pin around an engine (for place and route).

    ``p`` is the engine's parameter dict (its ``input_fields`` / ``output_fields``); the wide ports are fed
    from a shift chain and folded into one XOR so synthesis keeps every bit.
    """
    ins = {"i__valid": 1, "i__payload": p["input_fields"]["last"]["offset"] + 1, "o__ready": 1, "cfg__we": 1,
           "cfg__addr": cfg_addr_bits, "cfg__data": 64}
    outs = {"i__ready": 1, "o__valid": 1, "o__payload": sum(f["width"] for f in p["output_fields"].values()),
            "idle": 1, "overflow_sticky": 1}
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


def _run(cmd: list[str], cwd: Path, timeout: int = 3600) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{(res.stdout + res.stderr)[-3000:]}")
    return res.stdout + res.stderr


def _count(stat: str, cell: str) -> int:
    return sum(int(n) for n in re.findall(rf"^\s*{cell}\S*\s+(\d+)\s*$", stat, re.M))


def synthesise(hw: HwConfig, fmax: bool = True) -> AreaRow:
    """Synthesise one build; ``fmax=False`` skips place and route."""
    toolchain.require("yosys", *(("nextpnr-ice40",) if fmax else ()))
    with tempfile.TemporaryDirectory(prefix="logmac-area-") as tmp:
        d = Path(tmp)
        (d / "engine.v").write_text(engine_verilog(hw))
        (d / "wrap.v").write_text(wrapper_verilog(parameters(hw), hw.cfg_addr_bits))
        ice = _run(["yosys", "-q", "-p", f"read_verilog engine.v; synth_ice40 -top {ENGINE_NAME}; tee -o ice.txt stat"], d)
        ice = (d / "ice.txt").read_text()
        gen = _run(["yosys", "-q", "-p", f"read_verilog engine.v; synth -top {ENGINE_NAME}; tee -o gen.txt stat"], d)
        gen = (d / "gen.txt").read_text()
        cells = int(re.search(r"Number of cells:\s+(\d+)", gen).group(1))
        mhz = None
        if fmax:
            _run(["yosys", "-q", "-p", "read_verilog engine.v wrap.v; synth_ice40 -top wrap -json wrap.json"], d)
            log = _run(["nextpnr-ice40", *DEVICE, "--json", "wrap.json", "--freq", "12", "--timing-allow-fail",
                        "--seed", "1"], d)
            found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
            mhz = float(found[-1]) if found else None
    return AreaRow(hw.kind, hw.weight_bits, hw.act_bits, hw.lanes, _count(ice, "SB_LUT4"), _count(ice, "SB_CARRY"),
                   _count(ice, "SB_DFF"), cells, mhz)


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
    rows = []
    for hw in configs or comparison_configs():
        wrapper = wrapper_verilog(parameters(hw), hw.cfg_addr_bits)
        rows.append(cached_synthesis(f"{engine_verilog(hw)}|{wrapper}|fmax={fmax}", "", AreaRow,
                                     lambda hw=hw: synthesise(hw, fmax), cache))
    return rows


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
