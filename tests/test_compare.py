"""``logmac hw compare``: the JSON schema, ratios taken from the same run's int rows, and the house layer table."""

from __future__ import annotations

import json
import math

import torch
from click.testing import CliRunner

from logmac.cli import main
from logmac.hw.compare import HOUSE_RESNET18_LAYERS, dense_cycles_per_output
from logmac.models.house import build_resnet18

FIELDS = {"engine", "grid", "weight_bits", "act_bits", "lanes", "lut4", "lut4_per_lane", "ge", "ge_per_lane", "fmax_mhz",
          "cycles_per_output", "weight_bits_stored", "ratio_vs_int", "note"}
DENSE = {"int", "log", "lean"}


def test_compare_quick_json(tmp_path) -> None:
    out = tmp_path / "compare.json"
    res = CliRunner().invoke(main, ["hw", "compare", "--quick", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert {r["engine"] for r in rows} >= DENSE | {"sched-inplace", "sched-coded"}
    for r in rows:
        assert set(r) == FIELDS, set(r) ^ FIELDS
        assert set(r["ratio_vs_int"]) == {"lut4_per_lane", "ge_per_lane", "lut4_x_cycles_per_mac"}
        base = next(b for b in rows if b["engine"] == "int" and b["lanes"] == r["lanes"] and b["grid"] == r["grid"]
                    and b["weight_bits"] == r["weight_bits"] and b["act_bits"] == r["act_bits"])
        q = r["ratio_vs_int"]
        assert math.isclose(q["lut4_per_lane"], r["lut4_per_lane"] / base["lut4_per_lane"], abs_tol=1e-3)
        assert math.isclose(q["ge_per_lane"], r["ge_per_lane"] / base["ge_per_lane"], abs_tol=1e-3)
        want = r["lut4"] * r["cycles_per_output"] / (base["lut4"] * base["cycles_per_output"])
        assert math.isclose(q["lut4_x_cycles_per_mac"], want, rel_tol=1e-3)
        dense = round(dense_cycles_per_output(r["lanes"]), 3)
        if r["engine"] in DENSE:
            assert r["cycles_per_output"] == dense
        else:  # a tile takes a beat per exponent group present in it
            assert r["cycles_per_output"] > dense
            assert r["weight_bits_stored"] > r["weight_bits"]
        if q["lut4_x_cycles_per_mac"] > 1 and r["engine"].startswith("sched"):
            assert "exponent groups per" in r["note"], r
        lo, hi = sorted({b["lanes"] for b in rows})
        pair = {b["lanes"]: b for b in rows if b["engine"] == r["engine"] and b["grid"] == r["grid"]
                and b["weight_bits"] == r["weight_bits"]}
        assert math.isclose(r["lut4_per_lane"], (pair[hi]["lut4"] - pair[lo]["lut4"]) / (hi - lo), abs_tol=0.01)
    assert "| lean |" in res.output and "| sched-coded |" in res.output
    coded = {r["lanes"]: r for r in rows if r["engine"] == "sched-coded"}
    terms = {r["lanes"]: r for r in rows if r["engine"] == "sched-inplace"}
    for n, r in coded.items():  # the same exponent groups, whatever the store
        assert r["cycles_per_output"] == terms[n]["cycles_per_output"]
    assert coded[4]["weight_bits_stored"] < coded[2]["weight_bits_stored"]  # the presence mask is per tile


def test_house_layer_table_matches_the_model() -> None:
    """K, output channels and outputs of every conv / linear layer of the house ResNet-18 on 1x28x28."""
    model = build_resnet18().eval()
    seen = []

    def hook(name):
        def record(mod, _inp, out):
            if isinstance(mod, torch.nn.Conv2d):
                k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups
                seen.append((name, k, mod.out_channels, out[0].numel()))
            else:
                seen.append((name, mod.in_features, mod.out_features, out[0].numel()))
        return record

    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert tuple(seen) == HOUSE_RESNET18_LAYERS


def test_fmax_lanes_routes_only_the_named_builds() -> None:
    """The demo places and routes the 16-lane builds only; the other lane count reports area with no Fmax."""
    from logmac.hw.compare import compare_rows

    rows = compare_rows(grids=("log_2",), weight_bits=(3,), lanes=(2, 4), engines=("int", "lean"), fmax_lanes=(2,))
    assert {r["lanes"] for r in rows if r["fmax_mhz"]} == {2}
    assert all(r["fmax_mhz"] is None and r["lut4"] > 0 for r in rows if r["lanes"] == 4)
