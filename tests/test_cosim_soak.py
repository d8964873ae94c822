"""The soak (``logmac.cosim.soak``): a tiny one on each simulator, through the CLI on Verilator, with real house
layers registered; and a flipped expected bit must come back as a reported mismatch with its waveform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import logmac.cosim_soak  # noqa: F401 - registers the house ResNet-18 layers with the soak
from logmac.cli import main
from logmac.cosim import soak
from logmac.toolchain import check_tool

pytestmark = pytest.mark.cosim
# one family a simulator keeps the tier short (each family is one simulator process and one build); the other
# families are covered by their own cosim tests, and every family by the documented soak runs (docs/hw.md)
CI_FAMILIES = {"verilator": ("sched-coded",), "icarus": ("general",)}


def require(sim: str) -> None:
    problem = check_tool(sim).problem
    if problem:
        pytest.fail(f"the soak needs {sim}: {problem}")


def test_tiny_soak_on_verilator_through_the_cli(tmp_path) -> None:
    require("verilator")
    out = tmp_path / "soak.json"
    res = CliRunner().invoke(main, ["cosim", "--sim", "verilator", "--soak-macs", "20000", "--seed", "3",
                                    "--soak-families", ",".join(CI_FAMILIES["verilator"]), "--json", str(out)])
    print(res.output)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["macs_checked"] >= 20000 and rep["mismatches"] == 0 and rep["macs_per_second"] > 0
    assert all(rep["families"][f]["macs"] > 0 for f in CI_FAMILIES["verilator"])
    assert "MACs checked" in res.output and "configurations" in res.output


def test_tiny_soak_on_icarus_with_real_layers() -> None:
    require("icarus")
    rep = soak.run_soak(20000, seed=4, sim="icarus", families=CI_FAMILIES["icarus"])
    print(rep.summary())
    assert rep.passed and rep.macs_checked >= 20000
    assert all(t.macs > 0 for t in rep.families.values())
    assert any(c["name"].startswith("layer resnet18") for c in rep.configurations), "no real layer was drawn"
    assert any(c["overflow"] == "wrap" for c in rep.configurations)


def test_a_flipped_expected_bit_is_reported_with_its_waveform(monkeypatch) -> None:
    require("icarus")
    real = soak.expected
    flipped = []

    def wrong(v):
        exp = real(v)
        if not flipped:
            exp.acc[0, 0] ^= 1 << 3
            flipped.append(v.name)
        return exp

    monkeypatch.setattr(soak, "expected", wrong)
    rep = soak.run_soak(3000, seed=5, sim="icarus", families=("general",))
    print(rep.summary())
    assert rep.mismatches == 1 and not rep.passed
    assert f"[general, build {soak.FAMILIES['general'].build.key()}] {flipped[0]}: transaction 0 (channel 0, row 0)" \
        in rep.first_mismatch and "acc rtl=" in rep.first_mismatch
    assert rep.waveform is not None and Path(rep.waveform).exists()
