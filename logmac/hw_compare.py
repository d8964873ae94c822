"""``logmac hw compare`` with the exponent-scheduled engines.

A scheduled engine's cycles per output depend on the weights (how many exponent groups each tile of
activations holds), so they are measured on real quantized layers: the shipped house ResNet-18's conv and
linear weights rounded to a LogART grid.  That needs ``logmac.models`` and ``logmac.quant``, which sit above
``logmac.hw``, so the scheduled engines are registered into ``logmac.hw.compare`` from here, and the
``compare`` command joins the ``hw`` group here.
"""

from __future__ import annotations

import functools
import json

import click
import numpy as np

from logmac.format import DecodeTable, GridKind, LogFormat
from logmac.format.schedule import HalfMode, Store, Variant
from logmac.hw import compare
from logmac.hw.commands import hw
from logmac.hw.sched_area import cycles_per_output, sched_area_rows

# registered name -> (variant, half-step option on log_dynamic, store); log_2 builds take no half-step hardware
SCHED_ENGINES: dict[str, tuple[Variant, HalfMode, Store]] = {
    "sched-inplace": ("inplace", "split", "terms"),
    "sched-coded": ("inplace", "split", "codes"),
}


def resnet_layers(bits: int, grid: GridKind, names: tuple[str, ...] | None = None
                  ) -> dict[str, tuple[np.ndarray, DecodeTable, LogFormat]]:
    """(codes (C, K), table, format) of each conv / linear layer of the house ResNet-18, weights rounded to the
    nearest level of a LogART grid (DBS and ABS per channel; no calibration data needed)."""
    from logmac.models.house import load_house
    from logmac.quant.loggrid import quantize_rtn, search_grid, words_from

    fmt = LogFormat(bits, grid)
    model = load_house("resnet18_fmnist")
    out = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if w is None or w.dim() not in (2, 4) or (names and name not in names):
            continue
        w2d = w.detach().reshape(w.shape[0], -1).double()
        grid_ = search_grid(w2d, fmt, dbs=True, sfs=False, asym=True, alphas=np.array([1.0]))
        _, sign, index, is_zero = quantize_rtn(w2d, grid_.levels(), fmt)
        out[name] = (words_from(fmt, sign, index, is_zero).reshape(w2d.shape), grid_.table(), fmt)
    return out


@functools.cache
def house_layers(bits: int, grid: str) -> tuple[tuple[np.ndarray, DecodeTable, LogFormat, int], ...]:
    """Every house layer's codes with its output count (``compare.HOUSE_RESNET18_LAYERS``)."""
    layers = resnet_layers(bits, GridKind(grid))
    return tuple((*layers[name], n_out) for name, _, _, n_out in compare.HOUSE_RESNET18_LAYERS)


@functools.cache
def sched_cost(lanes: int, grid: str, bits: int, variant: Variant, half: HalfMode, store: Store) -> dict:
    return cycles_per_output(list(house_layers(bits, grid)), lanes, variant, half, store)


def sched_note(row: dict, variant: Variant, half: HalfMode, store: Store) -> str:
    """Why a scheduled engine loses, from the measured row and its schedule on the house layers."""
    cost = sched_cost(row["lanes"], row["grid"], row["weight_bits"], variant, half, store)
    q = row["ratio_vs_int"]
    parts = []
    beats = cost["cycles_per_output"] / cost["dense_cycles_per_output"]
    if q["lut4_x_cycles_per_mac"] > 0.5:
        parts.append(f"{beats:.1f}x beats: {cost['min_beats_per_tile']:.1f}-{cost['max_beats_per_tile']:.1f} "
                     f"exponent groups per {row['lanes']}-activation tile (layer means); at one beat a tile "
                     f"{q['lut4_x_cycles_per_mac'] / beats:.2f}x (LUT4 of the whole core); sorted by exponent "
                     f"(permuted) {cost['permuted_cycles_per_output'] / cost['dense_cycles_per_output']:.1f}x "
                     f"beats but a {cost['permuted_index_bits']:.0f}-bit activation index per weight")
    if q["lut4_per_lane"] > 1:
        parts.append(f"{q['lut4_per_lane']:.2f}x LUT4 per lane")
    if row["weight_bits_stored"] > 1.25 * cost["code_bits"]:
        what = "en + neg bits per lane per beat" if store == "terms" else "presence mask and decode table"
        parts.append(f"stores {row['weight_bits_stored'] / cost['code_bits']:.2f}x the {cost['code_bits']:.0f}-bit "
                     f"code ({what})")
    return "; ".join(parts)


def sched_engine(variant: Variant, half: HalfMode, store: Store) -> compare.Engine:
    """A ``compare`` entry for one scheduled-engine kind, built as the dense engines' MAC core."""

    def rows(wb: int, grid: str, act_bits: int, lanes: tuple[int, ...], fmax: bool) -> list[dict]:
        keep = ("engine", "grid", "weight_bits", "act_bits", "lanes", "lut4", "ge", "fmax_mhz")
        return [{k: r[k] for k in keep} for r in sched_area_rows(wb, grid, act_bits, lanes, variant, half, store,
                                                                 fmax=fmax, max_k=compare.MAX_K)]

    return compare.Engine(
        rows,
        lambda lanes, grid, wb: sched_cost(lanes, grid, wb, variant, half, store)["cycles_per_output"],
        lambda wb, grid, lanes: sched_cost(lanes, grid, wb, variant, half, store)["weight_bits_stored"],
        lambda row: sched_note(row, variant, half, store))


def register_sched_engines() -> None:
    for name, spec in SCHED_ENGINES.items():
        compare.register_engine(name, sched_engine(*spec))


@hw.command("compare")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the rows as a JSON list")
@click.option("--quick", is_flag=True, help="one small configuration (log_2, 3-bit weights, 2 and 4 lanes), no Fmax")
@click.option("--engines", help="comma-separated engine names (int always runs); default: every registered one")
@click.option("--no-fmax", is_flag=True, help="skip nextpnr place and route (minutes per large build)")
def compare_cmd(json_out: str | None, quick: bool, engines: str | None, no_fmax: bool) -> None:
    """Every engine (int, log, lean, the scheduled ones and any registered) per lane and per MAC against int."""
    register_sched_engines()
    names = ("int", *(n for n in engines.split(",") if n != "int")) if engines else None
    try:
        if quick:
            rows = compare.compare_rows(grids=("log_2",), weight_bits=(3,), lanes=(2, 4), engines=names, fmax=False)
        else:
            rows = compare.compare_rows(engines=names, fmax=not no_fmax)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(compare.format_table(rows))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump(rows, fh, indent=2)
