"""logmac.hw: the shift-based log MAC engine in Amaranth, its Verilog export and area report."""

from __future__ import annotations

from logmac.hw.area import area_report
from logmac.hw.config import HwConfig, HwConfigError
from logmac.hw.engine import MacEngine
from logmac.hw.export import engine_verilog, export

__all__ = ["HwConfig", "HwConfigError", "MacEngine", "area_report", "engine_verilog", "export"]
