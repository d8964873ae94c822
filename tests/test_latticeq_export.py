"""LatticeQ artifacts: export, bit-identical round trip, emulation from the file, clear errors on bad files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from logmac.backends.lattice import emulate_lattice, emulate_lattice_artifact
from logmac.format import artifact as artifact_io
from logmac.format.artifact import ArtifactError
from logmac.quant.fold import fold_batchnorm
from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model
from logmac.quant.methods.latticeq.export import build_lattice_artifact, code_from_layer, load_lattice_model
from logmac.quant.methods.latticeq.model import LatticeConfig, lattice_layers
from logmac.quant.methods.latticeq.search import LatticeError
from logmac.sim.layers import EmulatorError, layer_specs


class _Pad(nn.Conv2d):
    """A TF-'SAME' style conv (static zero padding before the conv), as in EfficientNet-Lite."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         _Pad(8, 8, 3, stride=2, groups=8), nn.ReLU(),
                         nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


def _folded(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    fold_batchnorm(model)
    return model


@pytest.fixture(scope="module")
def quantized():
    x = torch.randn(24, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    fp = _cnn()
    cfg = LatticeConfig(w_bits=3, basis_bits=6, a_bits=8, steps=3, restarts=2, edge="same")
    res = lattice_quantize_model(copy.deepcopy(fp), x, cfg, progress=False)
    return fp, x, cfg, res


def test_round_trip_is_bit_identical(quantized, tmp_path) -> None:
    fp, x, cfg, res = quantized
    art = build_lattice_artifact(res, cfg, "tiny_cnn")
    path = artifact_io.save(art, tmp_path / "m.lmq")
    loaded = artifact_io.load(path)
    assert loaded.settings["method"] == "latticeq" and loaded.meta["folded_bn"] == {"1": "0"}
    originals = {m.name: m for m in lattice_layers(res.model)}
    assert set(loaded.layers) == set(originals) and len(originals) == 4
    for name, q in loaded.layers.items():
        code, orig = code_from_layer(q), originals[name].code
        assert q.op.startswith("lattice_") and q.fmt.bits == 3
        w_a, s_a = code.integer_weights()
        w_b, s_b = orig.integer_weights()
        assert torch.equal(w_a, w_b) and torch.equal(s_a, s_b)
        assert torch.equal(code.decode(), orig.decode())
        assert torch.equal(code.coords, orig.coords)
    model = load_lattice_model(loaded, _folded(fp))
    assert torch.equal(model(x), res.model(x))


def test_emulation_from_artifact_equals_in_memory(quantized, tmp_path) -> None:
    fp, x, cfg, res = quantized
    path = artifact_io.save(build_lattice_artifact(res, cfg, "tiny_cnn"), tmp_path / "m.lmq")
    emu_file, stats_file = emulate_lattice_artifact(artifact_io.load(path), _folded(fp))
    emu_mem, stats_mem = emulate_lattice(res.model)
    out = emu_file(x)
    assert torch.equal(out, emu_mem(x))
    assert {k: v.acc_bits for k, v in stats_file.items()} == {k: v.acc_bits for k, v in stats_mem.items()}
    assert torch.allclose(out, res.model(x), atol=1e-5, rtol=1e-5)


def test_log_emulator_refuses_lattice_layers(quantized) -> None:
    _, _, cfg, res = quantized
    with pytest.raises(EmulatorError, match="lattice_conv2d"):
        layer_specs(build_lattice_artifact(res, cfg, "tiny_cnn"))


def test_inspect_summary_names_the_lattice_format(quantized) -> None:
    _, _, cfg, res = quantized
    rows = artifact_io.summary(build_lattice_artifact(res, cfg, "tiny_cnn"))["layers"]
    assert rows[1]["format"] == "lattice W3 n=3 B6 basis per channel" and rows[1]["bits_per_weight"] == 3


@pytest.mark.parametrize("edit, message", [
    (lambda q: q.extras.__setitem__("basis_int", q.extras["basis_int"] + 1), "odd"),
    (lambda q: q.extras.__setitem__("basis_int", q.extras["basis_int"][:, :2]), "basis_int shape"),
    (lambda q: q.extras.pop("offset_int"), "offset_int"),
    (lambda q: q.attrs["lattice"].__setitem__("dim", 5), "5-vectors"),
    (lambda q: setattr(q, "zero_point", q.zero_point + 1), "zero point"),
])
def test_inconsistent_lattice_layers_are_rejected(quantized, edit, message: str) -> None:
    _, _, cfg, res = quantized
    art = build_lattice_artifact(res, cfg, "tiny_cnn")
    q = art.layers["3"]
    edit(q)
    with pytest.raises(ValueError, match=message):
        artifact_io.to_bytes(art)


def test_a_file_edited_after_export_is_rejected(quantized) -> None:
    _, _, cfg, res = quantized
    data = bytearray(artifact_io.to_bytes(build_lattice_artifact(res, cfg, "tiny_cnn")))
    data[-3] ^= 0xFF
    with pytest.raises(ArtifactError, match="checksum"):
        artifact_io.from_bytes(bytes(data))


def test_export_refusals(quantized) -> None:
    fp, x, _, _ = quantized
    cfg = LatticeConfig(act_mode="quantile", steps=1, restarts=1, edge="same")
    res = lattice_quantize_model(copy.deepcopy(fp), x, cfg, progress=False)
    with pytest.raises(LatticeError, match="quantile"):
        build_lattice_artifact(res, cfg)
    cfg = LatticeConfig(basis_bits=None, steps=1, restarts=1, edge="same")
    res = lattice_quantize_model(copy.deepcopy(fp), x, cfg, progress=False)
    with pytest.raises(LatticeError, match="float basis"):
        build_lattice_artifact(res, cfg)


def test_loading_into_the_wrong_model_is_refused(quantized) -> None:
    _, _, cfg, res = quantized
    art = build_lattice_artifact(res, cfg, "tiny_cnn")
    wrong = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(LatticeError, match="no module|artifact has"):
        load_lattice_model(art, wrong)
    assert np.all(art.layers["0"].codes >= 0)
