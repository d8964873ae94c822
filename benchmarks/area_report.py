"""Area and Fmax of the log engine vs the integer-multiplier engine (iCE40 via yosys + nextpnr).

    .venv/bin/python benchmarks/area_report.py [--bits 3,4] [--lanes 1,16] [--no-fmax] [--json rows.json]

Same as ``logmac hw area``; prints a markdown table for docs/hw.md.
"""

from __future__ import annotations

from logmac.hw.commands import area_cmd

if __name__ == "__main__":
    area_cmd()
