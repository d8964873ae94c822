"""``logmac quantize --method adalog``: a real run on a tiny calibration, and the errors that name the problem."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_adalog_quant import tiny_vit

import logmac.quant.methods.adalog.vit as adalog_vit
from logmac.cli import main
from logmac.models import LoadedModel
from logmac.quant.methods.adalog.vit import AdaLogConfig


def run(*args: str):
    return CliRunner().invoke(main, ["quantize", *args])


def quantize_and_check(results, blocks: int, *extra: str) -> dict:
    out = run("--model", "vit_fmnist", "--method", "adalog", "--w-bits", "4", "--a-bits", "4", "--calib-samples", "4",
              "--eval-limit", "16", "--results", str(results), *extra)
    assert out.exit_code == 0, out.output
    weights = extra[extra.index("--adalog-weights") + 1] if "--adalog-weights" in extra else "uniform"
    assert f"AdaLog W4A4 {weights} weights, adalog activations" in out.output
    assert f"blocks.{blocks - 1}.mlp.hid_quant: base 2^(" in out.output
    row = next(csv.DictReader(results.open()))
    assert row["method"] == "adalog" and float(row["emu_same_prediction"]) == 100.0
    assert 0 <= float(row["q_top1"]) <= 100
    return row


@pytest.fixture
def quick_fpcs(monkeypatch):
    """FPCS without refinement rounds keeps these runs short."""
    monkeypatch.setattr(adalog_vit, "AdaLogConfig", functools.partial(AdaLogConfig, fpcs_rounds=0))


def test_adalog_quantize_smoke_on_a_tiny_vit(tmp_path, monkeypatch, quick_fpcs):
    """The whole command (real Fashion-MNIST calibration and scoring, emulator) on a one-block ViT."""
    import logmac.models as models

    real = models.load_model("vit_fmnist")
    monkeypatch.setattr(models, "load_model", lambda name, path=None, **_: LoadedModel(tiny_vit(), real.info))
    quantize_and_check(tmp_path / "rows.csv", blocks=1)


@pytest.mark.slow
def test_adalog_quantize_house_vit(tmp_path, quick_fpcs):
    quantize_and_check(tmp_path / "rows.csv", blocks=6)


@pytest.mark.parametrize("weights", ["uniform", "log"])
def test_an_adalog_artifact_inspects_and_emulates_from_the_file(tmp_path, monkeypatch, quick_fpcs, weights):
    """Saved with -o, the file lists its activation quantizers and the emulator reproduces the export-time scores."""
    import logmac.models as models

    real = models.load_model("vit_fmnist")
    monkeypatch.setattr(models, "load_model", lambda name, path=None, **_: LoadedModel(tiny_vit(), real.info))
    path = tmp_path / "vit.lmq"
    row = quantize_and_check(tmp_path / "rows.csv", 1, "--adalog-weights", weights, "-o", str(path))
    shown = CliRunner().invoke(main, ["inspect", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "blocks.0.mlp.hid_quant" in shown.output and "AdaLog A4 base 2^(" in shown.output
    emulated = CliRunner().invoke(main, ["emulate", str(path), "--limit", "16", "--json"])
    assert emulated.exit_code == 0, emulated.output
    result = json.loads(emulated.output)
    scores = result["scores"]
    assert result["method"] == "adalog" and round(scores["float"]["top1"], 2) == float(row["fp_top1"])
    assert round(scores["fake_quant"]["top1"], 2) == float(row["q_top1"])
    assert round(scores["emulator"]["top1"], 2) == float(row["emu_top1"])
    assert result["emulator_vs_fake_quant"]["same_prediction"] == 100.0 and not result["overflows"]


def test_an_adalog_artifact_with_a_broken_activation_is_refused(tmp_path):
    from logmac.format import AdaLogFormat, FormatError
    from logmac.format.artifact import ActivationLayer, Artifact, ArtifactError, from_bytes, to_bytes

    good = ActivationLayer("a", "adalog", 4, np.asarray(2.0), fmt=AdaLogFormat(4, 20), offset=0.17)
    assert from_bytes(to_bytes(Artifact(layers={}, activations={"a": good}))).activations["a"].fmt.q == 20
    for bad, message in [
        (ActivationLayer("a", "adalog", 4, np.asarray(-1.0), fmt=AdaLogFormat(4, 20)), "finite and positive"),
        (ActivationLayer("a", "adalog", 3, np.asarray(1.0), fmt=AdaLogFormat(4, 20)), "3-bit AdaLog format"),
        (ActivationLayer("a", "uniform", 4, np.ones(2), zero_point=np.asarray([0, 16])), "integers in 0..15"),
        (ActivationLayer("a", "uniform", 4, np.ones(2), zero_point=np.zeros(3)), "zero point shape"),
        (ActivationLayer("a", "softmax", 4, np.ones(1)), "kind must be one of"),
    ]:
        with pytest.raises(FormatError, match=message):
            to_bytes(Artifact(layers={}, activations={"a": bad}))
    data = bytearray(to_bytes(Artifact(layers={}, activations={"a": good})))
    at = data.index(b"0.17")  # the offset, inside the JSON header
    data[at:at + 4] = b"0.18"  # an edited header no longer matches its checksum
    with pytest.raises(ArtifactError, match="checksum"):
        from_bytes(bytes(data))


def test_adalog_refuses_to_save_a_model_it_cannot_rebuild(tmp_path):
    out = run("--model", "minilm_l6_v2", "--method", "adalog", "-o", str(tmp_path / "m.lmq"))
    assert out.exit_code != 0 and "cannot be saved yet" in out.output
    assert not (tmp_path / "m.lmq").exists()


def test_adalog_bad_settings_and_models_are_named():
    out = run("--model", "vit_fmnist", "--method", "adalog", "--a-bits", "12")
    assert out.exit_code != 0 and "a_bits must be an integer in 2..8" in out.output
    out = run("--model", "vit_fmnist", "--method", "adalog", "--zero", "none")
    assert out.exit_code != 0 and "zero mode" in out.output
    out = run("--model", "resnet18_fmnist", "--method", "adalog")
    assert out.exit_code != 0 and "AdaLog supports vit_fmnist, minilm_l6_v2" in out.output
