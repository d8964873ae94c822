"""Print the scheduled engine's measured table: LUT4 / GE per lane (32-lane minus 16-lane, over 16) against the
integer engine, and cycles per output and stored weight bits on the house ResNet-18 (W3/W4, A8).

Run: .venv/bin/python scripts/sched_table.py   (synthesis results are cached under ~/.cache/logmac/area)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sched_layers import resnet_layers  # noqa: E402

from logmac.format import GridKind  # noqa: E402
from logmac.hw.area import area_report  # noqa: E402
from logmac.hw.config import HwConfig  # noqa: E402
from logmac.hw.sched_area import cycles_per_output, sched_area_rows  # noqa: E402


def per_lane(rows: list[dict], key: str) -> float:
    by = {r["lanes"]: r[key] for r in rows}
    return (by[32] - by[16]) / 16


def main(bits: int = 4) -> None:
    ints = area_report([HwConfig(kind="int", weight_bits=bits, act_bits=8, act_signed=True, lanes=n, max_k=1024,
                                 acc_bits=24, requant=False) for n in (16, 32)], fmax=False)
    int_lut = (ints[1].luts - ints[0].luts) / 16
    print(f"int W{bits}A8: LUT4/lane {int_lut:.1f}, cycles/MAC {1 / 16:.4f} at 16 lanes")
    print("| engine | grid | LUT4/lane | x int | GE/lane | cycles/out (16 l) | dense | LUT4*cyc vs int | bits stored | code |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for grid, halves in ((GridKind.LOG_2, ("none",)), (GridKind.LOG_DYNAMIC, ("split", "select"))):
        layers = list(resnet_layers(bits, grid).values())
        for variant in ("inplace", "bucketed"):
            for half in halves:
                if variant == "bucketed" and grid is GridKind.LOG_DYNAMIC:
                    continue  # not synthesised yet (see the report)
                rows = sched_area_rows(bits, grid.value, 8, [16, 32], variant, half, fmax=False)
                lut = per_lane(rows, "lut4")
                cyc = cycles_per_output(layers, 16, variant, half)
                area_cycles = (rows[0]["lut4"] * cyc["cycles_per_output"]) / (ints[0].luts * cyc["dense_cycles_per_output"])
                print(f"| {variant}/{half} | {grid.value} | {lut:.1f} | {lut / int_lut:.2f} | {per_lane(rows, 'ge'):.0f} | "
                      f"{cyc['cycles_per_output']:.1f} | {cyc['dense_cycles_per_output']:.1f} | {area_cycles:.2f} | "
                      f"{cyc['weight_bits_stored']:.2f} | {cyc['code_bits']:.0f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
