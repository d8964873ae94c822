"""Area and Fmax of the log engine vs the integer-multiplier engine (iCE40 via yosys + nextpnr).

    .venv/bin/python benchmarks/area_report.py [--bits 3,4] [--lanes 1,16] [--no-fmax] [--json rows.json]
    .venv/bin/python benchmarks/area_report.py --quick     # CI smoke: 4 bits, 1 lane, no place and route

Same as ``logmac hw area``; prints a markdown table for docs/hw.md.
"""

from __future__ import annotations

import sys

from logmac.hw.commands import area_cmd

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--quick" in argv:
        argv = [a for a in argv if a != "--quick"] + ["--bits", "4", "--lanes", "1", "--no-fmax"]
    area_cmd(args=argv)
