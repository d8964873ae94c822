"""Model-level emulation: fast == reference engine bit for bit, close to fake-quant, traces, placement, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_sim_support import export_model
from torch import nn

from logmac import sim
from logmac.format import LogFormat, UniformFormat
from logmac.format import artifact as art
from logmac.sim.layers import EmulatorError, fake_quant_model


class Tiny(nn.Module):
    """conv -> ReLU -> depthwise -> ReLU6 -> 1x1, a float residual add, average pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv3 = nn.Conv2d(8, 8, 1, stride=1)
        self.act, self.act6 = nn.ReLU(), nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        z = self.conv3(self.act6(self.conv2(y))) + y
        return self.fc(torch.flatten(self.pool(z), 1))


REQUANT = {"conv1": ("conv2", "relu"), "conv2": ("conv3", "relu6")}


@pytest.fixture(scope="module", params=[LogFormat(4), LogFormat(3, "log_2"), UniformFormat(4)], ids=["log4", "log3", "uni4"])
def setup(request):
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(16, 1, 8, 8)
    artifact = art.from_bytes(art.to_bytes(export_model(model, x, request.param, requant=REQUANT)))
    return model, artifact, x


def test_fast_equals_reference_engine_and_fake_quant_is_close(setup):
    model, artifact, x = setup
    emu = sim.Emulator(artifact, copy.deepcopy(model))
    fast = emu(x)
    ref = sim.Emulator(artifact, copy.deepcopy(model), engine="reference")(x)
    assert torch.equal(fast, ref)
    fq = fake_quant_model(artifact, copy.deepcopy(model)).eval()
    with torch.no_grad():
        fake = fq(x)
    # differences come only from integer requantization (M rounded to 31 bits, bias in accumulator units,
    # round half up vs half even): a few output LSBs at most
    assert (fast - fake).abs().max() < 0.1 * fake.abs().max()
    assert all(s.overflows == 0 for s in emu.overflow_report().values())


def test_fast_equals_reference_on_non_square_maps(setup):
    """Channels-last buffers and the requantized hand-off keep (N, C, H, W) straight when C, H, W all differ."""
    model, artifact, _ = setup
    x = torch.randn(3, 1, 5, 11, generator=torch.Generator().manual_seed(4))
    fast = sim.Emulator(artifact, copy.deepcopy(model))(x)
    assert torch.equal(fast, sim.Emulator(artifact, copy.deepcopy(model), engine="reference")(x))


def test_placement_lists_int_and_float_ops(setup):
    model, artifact, _ = setup
    rows = sim.Emulator(artifact, copy.deepcopy(model)).placement()
    where = {r["op"]: r["where"] for r in rows}
    assert [where[n] for n in ("conv1", "conv2", "conv3", "fc")] == ["int"] * 4
    assert where["pool"] == "float32" and "add" in {r["kind"] for r in rows if r["where"] == "float32"}
    assert "requant -> conv2" in next(r["detail"] for r in rows if r["op"] == "conv1")


def test_narrow_accumulator_overflow_is_counted(setup):
    model, artifact, x = setup
    emu = sim.Emulator(artifact, copy.deepcopy(model), acc_bits=10, overflow="wrap")
    emu(x)
    assert sum(s.overflows for s in emu.overflow_report().values()) > 0


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc"])
def test_capture_writes_a_trace_the_fast_path_reproduces(setup, tmp_path, layer):
    model, artifact, x = setup
    emu = sim.Emulator(artifact, copy.deepcopy(model))
    tr = sim.load_trace(emu.capture(layer, x, tmp_path / f"{layer}.npz", max_rows=40))
    assert tr["x"].shape[0] == 40 or layer == "fc"
    np.testing.assert_array_equal(tr["x"] @ tr["mult"].T, tr["acc"])
    assert ("y" in tr.arrays) == (layer in REQUANT)


def test_bad_models_and_artifacts(setup):
    model, artifact, x = setup
    wrong = copy.deepcopy(model)
    wrong.fc = nn.Linear(8, 6)
    with pytest.raises(EmulatorError, match="fc"):
        sim.Emulator(artifact, wrong)
    broken = copy.deepcopy(artifact)
    broken.layers["fc"].attrs["act_in"] = None
    with pytest.raises(EmulatorError, match="--a-bits"):
        sim.Emulator(broken, copy.deepcopy(model))
    # an op between a requantized pair that is not identity/ReLU: the emulator refuses to guess
    odd = copy.deepcopy(model)
    odd.act6 = nn.Sigmoid()
    with pytest.raises(EmulatorError, match="input codes differ"):
        sim.Emulator(artifact, odd)(x)
    with pytest.raises(EmulatorError, match="no quantized layer"):
        sim.Emulator(artifact, copy.deepcopy(model)).capture("nope", x, "unused.npz")


def test_emulate_command(setup, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from logmac.backends import float_model
    from logmac.cli import main

    model, artifact, _ = setup
    head = copy.deepcopy(model)
    path = art.save(artifact, tmp_path / "tiny.lmq")
    monkeypatch.setattr(float_model, "build_float_model", lambda a: copy.deepcopy(head))
    try:
        from logmac.models.data import fashion_mnist

        fashion_mnist("test", limit=1)
    except Exception:  # noqa: BLE001 - the data package is set up by scripts/setup.sh
        pytest.skip("Fashion-MNIST not installed")
    out = CliRunner().invoke(main, ["emulate", str(path), "--data", "fashion-mnist", "--limit", "24", "--placement",
                                    "--trace", "conv1",
                                    "--trace-out", str(tmp_path / "t.npz")])
    assert out.exit_code == 0, out.output
    assert "top1       float" in out.output and "emulator vs fake-quant: same prediction" in out.output
    assert "int      conv1" in out.output
    assert sim.load_trace(tmp_path / "t.npz")["acc"].shape[1] == 8
    bad = CliRunner().invoke(main, ["emulate", str(tmp_path / "missing.lmq")])
    assert bad.exit_code != 0 and "no such artifact" in bad.output


class Nudge(nn.Module):
    """Moves every value by about one float32 ulp: different floats, the same codes after quantization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * (1 + 2**-22)


def test_requantized_handoff_is_checked_by_value_or_by_codes(setup):
    """The next layer takes its predecessor's integers after one comparison of the float input with what was
    sent (the quantizer round trip is proven once per pair), and falls back to quantizing and comparing codes
    when the input was changed; both agree with the reference engine."""
    model, artifact, x = setup
    emu = sim.Emulator(artifact, copy.deepcopy(model))
    assert emu.layers["conv2"].trusted_handoff and emu.layers["conv3"].trusted_handoff
    nudged = copy.deepcopy(model)
    nudged.act = Nudge()
    ref = sim.Emulator(artifact, copy.deepcopy(nudged), engine="reference")(x)
    assert torch.equal(sim.Emulator(artifact, nudged)(x), ref)


def test_handoff_to_a_different_quantizer_is_not_trusted(setup):
    model, artifact, x = setup
    other = copy.deepcopy(artifact)
    other.layers["conv2"].attrs["act_in"]["scale"] *= 1.5
    emu = sim.Emulator(other, copy.deepcopy(model))
    assert not emu.layers["conv2"].trusted_handoff
    with pytest.raises(EmulatorError, match="input codes differ"):
        emu(x)
