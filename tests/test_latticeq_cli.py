"""``logmac quantize --method latticeq``: options reach LatticeConfig, bad input is a clear error."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import logmac.experiments.latticeq as lattice_run
from logmac.cli import main
from logmac.format import artifact as artifact_io
from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model


def test_cli_passes_lattice_options(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = {}

    def fake(name, cfg, *, eval_limit=None, path=None, **_):
        seen.update(name=name, cfg=cfg, eval_limit=eval_limit)
        return None, {"fp_top1": 90.0, "q_top1": 89.0, "int_top1": 89.0, "quant_seconds": 1.0}

    monkeypatch.setattr(lattice_run, "lattice_registry_model", fake)
    out = CliRunner().invoke(main, ["quantize", "--model", "resnet18_fmnist", "--method", "latticeq", "--w-bits", "3",
                                    "--basis-bits", "6", "--search-steps", "7", "--restarts", "2", "--eval-limit", "50",
                                    "--results", str(tmp_path / "r.csv")])
    assert out.exit_code == 0, out.output
    cfg = seen["cfg"]
    assert (cfg.w_bits, cfg.basis_bits, cfg.steps, cfg.restarts, seen["eval_limit"]) == (3, 6, 7, 2, 50)
    assert "int_top1" in out.output and (tmp_path / "r.csv").read_text().startswith("fp_top1")


@pytest.mark.parametrize("args, message", [
    (["--basis-bits", "1"], "basis_bits"),
    (["--restarts", "0"], "restarts"),
    (["--basis-bits", "0", "-o", "x.lmq"], "float basis"),
    (["--model", "no_such_model"], "no_such_model"),
])
def test_cli_rejects_bad_lattice_input(args: list[str], message: str) -> None:
    base = ["quantize", "--method", "latticeq"] + ([] if "--model" in args else ["--model", "resnet18_fmnist"])
    out = CliRunner().invoke(main, base + args)
    assert out.exit_code != 0 and message in out.output, out.output


def test_cli_writes_an_artifact_that_inspect_shows(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """``-o`` writes the LatticeQ artifact (a tiny model stands in for the registry run); inspect lists it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()
    x = torch.randn(8, 3, 6, 6)

    def fake(name, cfg, **_):
        res = lattice_quantize_model(model, x, replace(cfg, edge="same"), progress=False)  # no 300-step head
        return res, {"fp_top1": 90.0, "q_top1": 89.0, "int_top1": 89.0, "quant_seconds": 1.0}

    monkeypatch.setattr(lattice_run, "lattice_registry_model", fake)
    out_file = tmp_path / "m.lmq"
    out = CliRunner().invoke(main, ["quantize", "--model", "resnet18_fmnist", "--method", "latticeq", "--w-bits", "4",
                                    "--search-steps", "1", "--restarts", "1", "--calib-samples", "8",
                                    "--results", str(tmp_path / "r.csv"), "-o", str(out_file)])
    assert out.exit_code == 0, out.output
    art = artifact_io.load(out_file)
    assert art.meta["metrics"]["integer"] == {"top1": 89.0} and art.settings["steps"] == 1
    shown = CliRunner().invoke(main, ["inspect", str(out_file)])
    assert shown.exit_code == 0 and "lattice W4 n=3 B8 basis per channel" in shown.output, shown.output


def test_emulate_runs_a_lattice_artifact_from_its_file(tmp_path) -> None:
    """``logmac emulate`` on a saved LatticeQ artifact reproduces the integer scores measured at export time
    (same test images), and a forced narrow accumulator is reported as overflow, not hidden."""
    out_file = tmp_path / "lq.lmq"
    made = CliRunner().invoke(main, ["quantize", "--model", "resnet18_fmnist", "--method", "latticeq", "--w-bits", "4",
                                     "--search-steps", "1", "--restarts", "1", "--calib-samples", "16",
                                     "--eval-limit", "64", "--results", str(tmp_path / "r.csv"), "-o", str(out_file)])
    assert made.exit_code == 0, made.output
    at_export = artifact_io.load(out_file).meta["metrics"]
    out = CliRunner().invoke(main, ["emulate", str(out_file), "--limit", "64", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["method"] == "latticeq" and got["samples"] == 64
    assert got["scores"]["emulator"]["top1"] == pytest.approx(at_export["integer"]["top1"])
    assert got["scores"]["fake_quant"]["top1"] == pytest.approx(at_export["quant"]["top1"])
    assert not got["overflows"]
    narrow = CliRunner().invoke(main, ["emulate", str(out_file), "--limit", "8", "--acc-bits", "10"])
    assert narrow.exit_code == 0 and "overflow: none" not in narrow.output, narrow.output
