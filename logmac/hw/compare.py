"""``logmac hw compare``: every engine against the integer-multiplier engine at the same weight and activation bits.

One row per engine x grid x weight bits x lanes.  Per-lane figures are ``(32-lane total - 16-lane total) / 16``
(or between the two lane counts asked for), so shared control drops out.  Cycles per output are measured on
the house ResNet-18's real layers (``HOUSE_RESNET18_LAYERS``).  Engines come from ``ENGINES``, a registry of
builders; other engines plug in with :func:`register_engine`.  All builds are MAC cores: the requantization
stage, shared by every engine, is left out (as in ``logmac.hw.area``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from logmac.hw.area import area_row
from logmac.hw.config import HwConfig
from logmac.hw.lean_lanes import field_bits

# (layer, K, output channels, outputs) of logmac.models.house.build_resnet18() on a 1x28x28 input
# (outputs = output pixels x channels); tests/test_compare.py checks them against the model.
HOUSE_RESNET18_LAYERS: tuple[tuple[str, int, int, int], ...] = (
    ("conv1", 9, 16, 12544),
    ("layer1.0.conv1", 144, 16, 3136), ("layer1.0.conv2", 144, 16, 3136),
    ("layer1.1.conv1", 144, 16, 3136), ("layer1.1.conv2", 144, 16, 3136),
    ("layer2.0.conv1", 144, 32, 1568), ("layer2.0.conv2", 288, 32, 1568), ("layer2.0.downsample.0", 16, 32, 1568),
    ("layer2.1.conv1", 288, 32, 1568), ("layer2.1.conv2", 288, 32, 1568),
    ("layer3.0.conv1", 288, 64, 1024), ("layer3.0.conv2", 576, 64, 1024), ("layer3.0.downsample.0", 32, 64, 1024),
    ("layer3.1.conv1", 576, 64, 1024), ("layer3.1.conv2", 576, 64, 1024),
    ("layer4.0.conv1", 576, 128, 512), ("layer4.0.conv2", 1152, 128, 512), ("layer4.0.downsample.0", 64, 128, 512),
    ("layer4.1.conv1", 1152, 128, 512), ("layer4.1.conv2", 1152, 128, 512),
    ("fc", 128, 10, 10),
)
MAX_K = max(k for _, k, _, _ in HOUSE_RESNET18_LAYERS)


def macs_per_output() -> float:
    """Mean K over every output of the network."""
    return sum(k * n for _, k, _, n in HOUSE_RESNET18_LAYERS) / sum(n for *_, n in HOUSE_RESNET18_LAYERS)


def dense_cycles_per_output(lanes: int) -> float:
    """``ceil(K / lanes)`` beats per output, averaged over every output of the network."""
    return (sum(math.ceil(k / lanes) * n for _, k, _, n in HOUSE_RESNET18_LAYERS)
            / sum(n for *_, n in HOUSE_RESNET18_LAYERS))


def per_weight(bits_per_channel: float) -> float:
    """Bits loaded once per output channel (a decode table), spread over that channel's K weights."""
    return bits_per_channel * sum(c for _, _, c, _ in HOUSE_RESNET18_LAYERS) / sum(
        k * c for _, k, c, _ in HOUSE_RESNET18_LAYERS)


@dataclass(frozen=True)
class Engine:
    """How ``compare`` builds and costs one engine kind.

    rows(weight_bits, grid, act_bits, lanes_list, fmax) -> dicts with keys engine, grid, weight_bits, act_bits,
    lanes, lut4, ge, fmax_mhz (one per lane count); cycles_per_output(lanes, grid, weight_bits) on the house
    layers; weight_bits_stored(weight_bits, grid, lanes): bits the engine's weight store holds per weight, tables
    amortised; note(row): why the engine loses to ``int`` in that row ("" when it does not or no reason is
    measured), called once the row's ratios are in.
    """

    rows: Callable[[int, str, int, tuple[int, ...], bool], list[dict]]
    cycles_per_output: Callable[[int, str, int], float]
    weight_bits_stored: Callable[[int, str, int], float]
    note: Callable[[dict], str] = lambda row: ""


def core_config(kind: str, weight_bits: int, act_bits: int, lanes: int) -> HwConfig:
    """The MAC core every dense engine is built as: signed activations, K up to the largest house layer."""
    return HwConfig(kind="int" if kind == "int" else "log", weight_bits=weight_bits, act_bits=act_bits,
                    act_signed=True, lanes=lanes, max_k=MAX_K, acc_bits=24, requant=False)


def _dense_rows(kind: str) -> Callable[[int, str, int, tuple[int, ...], bool], list[dict]]:
    def rows(weight_bits: int, grid: str, act_bits: int, lanes_list: tuple[int, ...], fmax: bool) -> list[dict]:
        out = []
        for lanes in lanes_list:
            r = area_row(core_config(kind, weight_bits, act_bits, lanes), kind, fmax)
            out.append({"engine": kind, "grid": grid, "weight_bits": weight_bits, "act_bits": act_bits, "lanes": lanes,
                        "lut4": r.luts, "ge": r.ge, "fmax_mhz": r.fmax_mhz})
        return out
    return rows


def dense_note(row: dict, lane: str) -> str:
    """Why a one-tile-a-cycle log engine loses: its lane (``lane`` names what each lane carries) is larger."""
    q = row["ratio_vs_int"]["lut4_per_lane"]
    return f"{q:.2f}x LUT4 per lane: {lane} per lane against a {row['weight_bits']}x{row['act_bits']} multiplier" \
        if q > 1 else ""


def _table_bits(weight_bits: int) -> int:
    """The run-time decode table a log channel loads: ``table_depth`` entries of ``(u, h, neg, zero)``."""
    hw = core_config("log", weight_bits, 8, 1)
    return hw.table_depth * (hw.shift_bits + 3)


ENGINES: dict[str, Engine] = {
    "int": Engine(_dense_rows("int"), lambda lanes, grid, wb: dense_cycles_per_output(lanes), lambda wb, grid, n: wb),
    "log": Engine(_dense_rows("log"), lambda lanes, grid, wb: dense_cycles_per_output(lanes),
                  lambda wb, grid, n: wb + per_weight(_table_bits(wb)), lambda row: dense_note(row, "a decode-table read "
                                                                                     "port and a barrel shifter")),
    # the lean engine's buffer holds decoded fields; the table is still loaded once per channel, at the decoder
    "lean": Engine(_dense_rows("lean"), lambda lanes, grid, wb: dense_cycles_per_output(lanes),
                   lambda wb, grid, n: field_bits(core_config("log", wb, 8, 1)) + per_weight(_table_bits(wb)),
                   lambda row: dense_note(row, "a barrel shifter and a 0/x/3x select")),
}


def register_engine(name: str, engine: Engine) -> None:
    """Add an engine kind to ``compare`` (for example the exponent-scheduled variants)."""
    ENGINES[name] = engine


def compare_rows(grids: tuple[str, ...] = ("log_2", "log_dynamic"), weight_bits: tuple[int, ...] = (3, 4),
                 act_bits: int = 8, lanes: tuple[int, int] = (16, 32), engines: tuple[str, ...] | None = None,
                 fmax: bool = True, fmax_lanes: tuple[int, ...] | None = None) -> list[dict]:
    """One row per engine x grid x weight bits x lane count, with per-lane figures and ratios to ``int``.

    ``fmax_lanes`` limits place and route (the slow step, minutes per large build) to those lane counts; the
    other builds report area only.  ``None``: every lane count when ``fmax``.
    """
    lo, hi = lanes
    if not 0 < lo < hi:
        raise ValueError(f"lanes must be two increasing counts, got {lanes}")
    routed = set(lanes if fmax_lanes is None else fmax_lanes) if fmax else set()
    names = tuple(engines or ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown or "int" not in names:
        raise ValueError(f"unknown engines {unknown}; known {sorted(ENGINES)}; 'int' is the reference and must run")
    rows = []
    for grid in grids:
        for wb in weight_bits:
            group, cost = [], {}
            for name in names:
                eng = ENGINES[name]
                built = {r["lanes"]: r for n in lanes for r in eng.rows(wb, grid, act_bits, (n,), n in routed)}
                per_lut = (built[hi]["lut4"] - built[lo]["lut4"]) / (hi - lo)
                per_ge = (built[hi]["ge"] - built[lo]["ge"]) / (hi - lo)
                for n in lanes:
                    cycles = eng.cycles_per_output(n, grid, wb)
                    cost[name, n] = built[n]["lut4"] * cycles / macs_per_output()
                    group.append({**built[n], "engine": name, "lut4_per_lane": round(per_lut, 2),
                                  "ge_per_lane": round(per_ge, 2), "cycles_per_output": round(cycles, 3),
                                  "weight_bits_stored": round(eng.weight_bits_stored(wb, grid, n), 4)})
            ref = {r["lanes"]: r for r in group if r["engine"] == "int"}
            for r in group:
                base, n = ref[r["lanes"]], r["lanes"]
                r["ratio_vs_int"] = {"lut4_per_lane": round(r["lut4_per_lane"] / base["lut4_per_lane"], 3),
                                     "ge_per_lane": round(r["ge_per_lane"] / base["ge_per_lane"], 3),
                                     "lut4_x_cycles_per_mac": round(cost[r["engine"], n] / cost["int", n], 3)}
            for r in group:
                r["note"] = ENGINES[r["engine"]].note(r)
            rows += group
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of ``compare_rows`` for people."""
    out = ["| engine | grid | w | a | lanes | LUT4 | LUT4/lane | GE | GE/lane | Fmax MHz | cycles/out | w bits stored "
           "| LUT4/lane vs int | GE/lane vs int | LUT4 x cycles/MAC vs int | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = r["ratio_vs_int"]
        fm = f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "n/a"
        out.append(f"| {r['engine']} | {r['grid']} | {r['weight_bits']} | {r['act_bits']} | {r['lanes']} | {r['lut4']} | "
                   f"{r['lut4_per_lane']:.1f} | {r['ge']:.0f} | {r['ge_per_lane']:.1f} | {fm} | "
                   f"{r['cycles_per_output']:.2f} | {r['weight_bits_stored']:.3f} | {q['lut4_per_lane']:.2f} | "
                   f"{q['ge_per_lane']:.2f} | {q['lut4_x_cycles_per_mac']:.2f} | {r['note']} |")
    return "\n".join(out)
