"""``logmac quantize --method adalog``: a real run on a tiny calibration, and the errors that name the problem."""

from __future__ import annotations

import csv
import functools

import pytest
from click.testing import CliRunner
from test_adalog_quant import tiny_vit

import logmac.quant.adalog_run as adalog_run
from logmac.cli import main
from logmac.models import LoadedModel
from logmac.quant.adalog_vit import AdaLogConfig


def run(*args: str):
    return CliRunner().invoke(main, ["quantize", *args])


def quantize_and_check(results, blocks: int) -> None:
    out = run("--model", "vit_fmnist", "--method", "adalog", "--w-bits", "4", "--a-bits", "4", "--calib-samples", "4",
              "--eval-limit", "16", "--results", str(results))
    assert out.exit_code == 0, out.output
    assert "AdaLog W4A4 uniform weights, adalog activations" in out.output
    assert f"blocks.{blocks - 1}.mlp.hid_quant: base 2^(" in out.output and "not saved" in out.output
    row = next(csv.DictReader(results.open()))
    assert row["method"] == "adalog" and float(row["emu_same_prediction"]) == 100.0
    assert 0 <= float(row["q_top1"]) <= 100


@pytest.fixture
def quick_fpcs(monkeypatch):
    """FPCS without refinement rounds keeps these runs short."""
    monkeypatch.setattr(adalog_run, "AdaLogConfig", functools.partial(AdaLogConfig, fpcs_rounds=0))


def test_adalog_quantize_smoke_on_a_tiny_vit(tmp_path, monkeypatch, quick_fpcs):
    """The whole command (real Fashion-MNIST calibration and scoring, emulator) on a one-block ViT."""
    import logmac.models as models

    real = models.load_model("vit_fmnist")
    monkeypatch.setattr(models, "load_model", lambda name, path=None: LoadedModel(tiny_vit(), real.info))
    quantize_and_check(tmp_path / "rows.csv", blocks=1)


@pytest.mark.slow
def test_adalog_quantize_house_vit(tmp_path, quick_fpcs):
    quantize_and_check(tmp_path / "rows.csv", blocks=6)


def test_adalog_refuses_to_pretend_it_saved_an_artifact(tmp_path):
    out = run("--model", "vit_fmnist", "--method", "adalog", "-o", str(tmp_path / "m.lmq"))
    assert out.exit_code != 0 and "cannot be saved yet" in out.output
    assert not (tmp_path / "m.lmq").exists()


def test_adalog_bad_settings_and_models_are_named():
    out = run("--model", "vit_fmnist", "--method", "adalog", "--a-bits", "12")
    assert out.exit_code != 0 and "a_bits must be an integer in 2..8" in out.output
    out = run("--model", "vit_fmnist", "--method", "adalog", "--zero", "none")
    assert out.exit_code != 0 and "zero mode" in out.output
    out = run("--model", "resnet18_fmnist", "--method", "adalog")
    assert out.exit_code != 0 and "AdaLog supports vit_fmnist, minilm_l6_v2" in out.output
