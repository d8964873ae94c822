"""Per-group exponent offsets: fake-quant == artifact decode, fast emulator == int64 group-shift reference,
the search never loses to one grid per channel, and malformed group fields are refused on load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from logmac.format import FormatError, decode_float
from logmac.format import artifact as artifact_io
from logmac.format.groups import GROUP_EXP, group_factors
from logmac.quant import QuantConfig, quantize_model
from logmac.quant.config import QuantError
from logmac.quant.groupexp import search_group_exponents
from logmac.quant.llm import decoder_blocks
from logmac.quant.loggrid import quantize_rtn, search_grid
from logmac.quant.modules import QuantLayer
from logmac.sim.emulator import Emulator
from logmac.sim.layers import fake_quant_model
from tests.test_quant_llm import IDS, toy


def quantize(method: str, group_size: int, *, learn: bool = False, a_bits: int = 8):
    cfg = QuantConfig(method=method, w_bits=3, a_bits=a_bits, rounding="gptq", learn_rounding=learn, iters=10,
                      batch_size=4, group_size=group_size, alpha_steps=3)
    model = toy()
    return quantize_model(model, IDS, cfg, task="lm", blocks=decoder_blocks(model), progress=False)


def decoded(q) -> np.ndarray:
    """A layer's float weight from the artifact alone: channel decode times each group's power of two."""
    C = q.weight_shape[0]
    if q.table is not None:
        w = decode_float(q.codes, q.table, q.fmt).reshape(C, -1)
    else:
        w = (q.codes.reshape(C, -1).astype(np.float64) - q.zero_point[:, None]) * q.scale[:, None]
    return w * group_factors(q.extras[GROUP_EXP], w.shape[1], q.attrs["group_size"])


@pytest.mark.parametrize(("method", "group_size", "learn"), [("log_dynamic", 16, False), ("log_dynamic", 24, True),
                                                             ("linear_mse", 16, True)])
def test_group_artifact_is_the_fake_quant_model_and_the_emulator_is_exact(method, group_size, learn, tmp_path) -> None:
    res = quantize(method, group_size, learn=learn)
    art = artifact_io.load(artifact_io.save(res.artifact, tmp_path / "g.lmq"))
    layers = {m.name: m for m in res.model.modules() if isinstance(m, QuantLayer)}
    moved = 0
    for name, q in art.layers.items():
        assert q.attrs["group_size"] == group_size and q.attrs["group_bits"] == 2
        moved += int((q.extras[GROUP_EXP] != 0).sum())
        np.testing.assert_array_equal(decoded(q).astype(np.float32), layers[name].qweight.reshape(q.weight_shape[0], -1).numpy())
    assert moved  # the search shifted some groups, so the checks above exercise the shifts
    with torch.no_grad():
        fake = fake_quant_model(art, toy())(IDS)
        torch.testing.assert_close(fake, res.model(IDS), rtol=1e-4, atol=1e-4)
        fast = Emulator(art, toy())(IDS)
        ref = Emulator(art, toy(), engine="reference")(IDS)
    torch.testing.assert_close(fast, ref, rtol=0, atol=0)  # shifted multipliers == shifted group partial sums
    assert (fast - fake).abs().max() < 0.02 * fake.abs().max()


def test_group_exponents_never_lose_to_the_channel_grid() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 128, generator=g, dtype=torch.float64) * torch.rand(1, 128, generator=g, dtype=torch.float64) ** 3
    diag = torch.rand(24, 128, generator=g, dtype=torch.float64) + 0.1
    fmt = QuantConfig(method="log_dynamic", w_bits=3).weight_format()
    levels = search_grid(w, fmt, dbs=True, sfs=True, asym=True, alphas=np.linspace(1, 0.5, 6)).levels()

    def nearest(v: torch.Tensor) -> torch.Tensor:
        return quantize_rtn(v, levels, fmt)[0]

    exps = search_group_exponents(w, nearest, 32, 2, diag)
    f = torch.from_numpy(group_factors(exps, 128, 32))
    grouped = (diag * (w - nearest(w / f) * f) ** 2).reshape(24, 4, 32).sum(-1)
    channel = (diag * (w - nearest(w)) ** 2).reshape(24, 4, 32).sum(-1)
    assert (grouped <= channel).all() and (grouped < channel).any()
    assert exps.min() >= -2 and exps.max() <= 1


@pytest.fixture(scope="module")
def grouped_artifact() -> artifact_io.Artifact:
    """Float activations, 24-input groups: K = 32 and 128 both end in a short group."""
    return quantize("log_dynamic", 24, a_bits=32).artifact


def without_groups(art: artifact_io.Artifact) -> artifact_io.Artifact:
    layers = {n: replace(q, extras={k: v for k, v in q.extras.items() if k != GROUP_EXP},
                         attrs={k: v for k, v in q.attrs.items() if k not in ("group_size", "group_bits")})
              for n, q in art.layers.items()}
    return replace(art, layers=layers)


def test_inspect_counts_the_group_exponents(grouped_artifact) -> None:
    info = artifact_io.summary(grouped_artifact)
    base = artifact_io.summary(without_groups(grouped_artifact))
    group_bytes = sum((q.extras[GROUP_EXP].size * 2 + 7) // 8 for q in grouped_artifact.layers.values())
    assert info["stored_bytes"] - base["stored_bytes"] == group_bytes
    assert info["stored_bits_per_weight"] > base["stored_bits_per_weight"]
    assert "group exponents 2b/24" in info["layers"][0]["format"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda q: q.extras.__setitem__(GROUP_EXP, q.extras[GROUP_EXP][:, :-1]), "expected integers"),
    (lambda q: q.extras.__setitem__(GROUP_EXP, q.extras[GROUP_EXP] + 3), "outside the 2-bit range"),
    (lambda q: q.attrs.pop("group_size"), "together"),
    (lambda q: q.attrs.__setitem__("group_size", 0), "positive integer"),
])
def test_bad_group_fields_are_refused_on_load(edit, message, grouped_artifact, tmp_path) -> None:
    art = artifact_io.from_bytes(artifact_io.to_bytes(grouped_artifact))  # a copy to damage
    edit(next(iter(art.layers.values())))
    with pytest.raises((FormatError, artifact_io.ArtifactError), match=message):
        artifact_io.load(artifact_io.save(art, tmp_path / "bad.lmq"))


@pytest.mark.parametrize("kw", [{"group_size": -64}, {"group_bits": 0}, {"group_size": 64, "granularity": "tensor"}])
def test_bad_group_settings_are_refused(kw) -> None:
    with pytest.raises(QuantError):
        QuantConfig(**kw)
