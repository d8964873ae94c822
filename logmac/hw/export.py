"""Verilog export of the engine: a stable top-level port list and a JSON of every parameter.

Ports (Amaranth flattens interface members with ``__``): ``clk``, ``rst``; the input stream
``i__valid``, ``i__ready``, ``i__payload``; the output stream ``o__valid``, ``o__ready``, ``o__payload``;
the config port ``cfg__we``, ``cfg__addr``, ``cfg__data``; status ``idle`` and ``overflow_sticky``.
Payload bit positions are in the JSON (``input_fields`` / ``output_fields``, LSB first).
"""

from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import verilog

from logmac import __version__
from logmac.hw.config import HwConfig
from logmac.hw.contract import DECODE_ENTRY, contract, table
from logmac.hw.engine import MacEngine, input_layout, output_layout
from logmac.hw.lanes import entry_layout
from logmac.hw.lean_engine import LeanMacEngine, lean_input_layout

ENGINE_NAME = "logmac_engine"


def engine_verilog(hw: HwConfig, name: str = ENGINE_NAME) -> str:
    """Elaborate the engine for ``hw`` and return its Verilog (one module tree, top ``name``).

    A ``lean`` build takes the general engine's beats (code words; ``LeanMacEngine(beat="codes")``).
    """
    engine = LeanMacEngine(hw, beat="codes") if hw.lean else MacEngine(hw)
    return verilog.convert(engine, name=name, emit_src=False)


def _fields(layout) -> dict:
    return {name: {"offset": f.offset, "width": f.width} for name, f in layout}


def lean_verilog(hw: HwConfig, name: str = ENGINE_NAME) -> tuple[str, dict]:
    """The lean engine as deployed (decoded-field beats, the shared decoder on ``wl_word`` -> ``wl_field``):
    its Verilog and its payload fields (``input_fields`` / ``output_fields``, LSB first)."""
    v = verilog.convert(LeanMacEngine(hw), name=name, emit_src=False)
    return v, {"input_fields": _fields(lean_input_layout(hw)), "output_fields": _fields(output_layout(hw))}


def parameters(hw: HwConfig, name: str = ENGINE_NAME) -> dict:
    """Everything a user of the Verilog needs: build parameters, derived widths, payload fields, ports, and the
    contract (``logmac.hw.contract``: registers, decode-table entry, arithmetic, reset)."""
    log = hw.kind == "log"
    tables = [table("decode", hw.table_base, hw.table_depth, entry_layout(hw), DECODE_ENTRY,
                    {"sb": hw.shift_bits})] if log else []
    return {
        "module": name,
        "logmac_version": __version__,
        "config": hw.to_dict(),
        "derived": hw.derived(),
        "input_fields": _fields(input_layout(hw)),
        "output_fields": _fields(output_layout(hw)),
        "ports": ["clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload",
                  "cfg__we", "cfg__addr", "cfg__data", "idle", "overflow_sticky"],
        **contract(hw, tables, nest=log),
    }


def export(hw: HwConfig, out_dir: str | Path, name: str = ENGINE_NAME) -> tuple[Path, Path]:
    """Write ``<name>.v`` and ``<name>.json`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    v_path.write_text(engine_verilog(hw, name))
    j_path.write_text(json.dumps(parameters(hw, name), indent=2) + "\n")
    return v_path, j_path
