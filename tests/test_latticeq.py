"""LatticeQ: Babai rounding, basis quantization, the search, and the exactness of the integer path."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from logmac.backends.lattice import emulate_lattice, grouped_lattice_matmul, lattice_int_weights
from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model
from logmac.quant.methods.latticeq.model import LatticeConfig, lattice_layers
from logmac.quant.methods.latticeq.search import (
    LatticeError,
    LatticeSpec,
    babai,
    bias_correction,
    gram_schmidt,
    quantize_basis,
    quantize_weight,
    search_basis,
)
from logmac.sim.gemm import exact_matmul
from logmac.sim.layers import EmulatorError

FAST = dict(steps=3, restarts=2)


def _basis(seed: int, n: int, batch: int = 1) -> torch.Tensor:
    """A random, reasonably conditioned basis (identity plus noise), float64."""
    gen = torch.Generator().manual_seed(seed)
    return torch.eye(n, dtype=torch.float64) + 0.4 * torch.randn(batch, n, n, generator=gen, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 4), scale=st.floats(0.05, 3.0))
def test_babai_residual_inside_gram_schmidt_box(seed: int, n: int, scale: float) -> None:
    """Unclamped nearest-plane leaves a residual with |<e, b~_i>| <= |b~_i|^2 / 2 for every i, so
    |e|^2 <= sum |b~_i|^2 / 4: never farther than half the Gram-Schmidt box diagonal."""
    basis = _basis(seed, n) * scale
    v = torch.randn(1, 50, n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 4
    c = babai(v, basis)
    assert torch.equal(c, torch.round(c))
    e = v - c @ basis
    gs = gram_schmidt(basis)
    norm2 = (gs * gs).sum(-1)  # (1, n)
    proj = torch.einsum("pgn,pin->pgi", e, gs)
    assert (proj.abs() <= norm2[:, None, :] / 2 + 1e-9).all()
    assert ((e * e).sum(-1) <= norm2.sum(-1) / 4 + 1e-9).all()


def test_babai_is_exact_nearest_point_for_orthogonal_basis() -> None:
    """With orthogonal basis vectors nearest-plane is the true closest lattice point (brute force in 2-D)."""
    theta = 0.7
    rot = torch.tensor([[torch.cos(torch.tensor(theta)), torch.sin(torch.tensor(theta))],
                        [-torch.sin(torch.tensor(theta)), torch.cos(torch.tensor(theta))]], dtype=torch.float64)
    basis = (torch.diag(torch.tensor([0.3, 0.7], dtype=torch.float64)) @ rot)[None]
    v = torch.rand(1, 200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 2
    c = babai(v, basis)
    grid = torch.stack(torch.meshgrid(torch.arange(-12, 13.0), torch.arange(-12, 13.0), indexing="ij"), -1)
    points = grid.reshape(-1, 2).double() @ basis[0]
    best = torch.cdist(v[0], points).min(1).values
    assert torch.allclose((v - c @ basis).norm(dim=-1)[0], best, atol=1e-12)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_coordinates_are_clamped_to_b_bits(bits: int) -> None:
    spec = LatticeSpec(bits=bits, dim=2)
    c = babai(torch.randn(1, 100, 2, dtype=torch.float64) * 1e3, torch.eye(2, dtype=torch.float64)[None], spec.coord_range)
    assert c.min() == -(1 << (bits - 1)) + 1 and c.max() == 1 << (bits - 1)


@pytest.mark.parametrize("units", [1, 6])  # per layer, per channel
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_basis_gives_odd_integers_on_its_step(units: int, bits: int) -> None:
    basis = _basis(3, 3, units)
    q, step = quantize_basis(basis, bits)
    assert step.shape == (units,)
    ints = q / step[:, None, None]
    assert torch.allclose(ints, torch.round(ints), atol=1e-9)
    assert (torch.round(ints).remainder(2) == 1).all() and ints.abs().max() <= (1 << bits) - 1 + 1e-9
    assert ((q - basis).abs() <= step[:, None, None] + 1e-12).all()


@pytest.mark.parametrize("per_channel", [True, False])
def test_search_lowers_the_cubic_loss(per_channel: bool) -> None:
    w = torch.randn(8, 18, generator=torch.Generator().manual_seed(1))
    w = w / w.abs().max()
    spec = LatticeSpec(bits=4, basis_bits=8, dim=3, per_channel=per_channel, steps=10, restarts=2)
    basis = search_basis(w, spec)
    assert basis.shape == ((8 if per_channel else 1), 3, 3)
    units = 8 if per_channel else 1
    c = babai(w.reshape(units, -1, 3), basis, spec.coord_range)
    err = ((c @ basis).reshape(8, -1) - w).abs().pow(3).sum()
    start = LatticeSpec(bits=4, basis_bits=8, dim=3, per_channel=per_channel, steps=0, restarts=1)
    b0 = search_basis(w, start)
    c0 = babai(w.reshape(units, -1, 3), b0, spec.coord_range)
    assert err < ((c0 @ b0).reshape(8, -1) - w).abs().pow(3).sum()


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bias_corr", [True, False])
def test_quantized_basis_works_per_layer_and_per_channel(per_channel: bool, bias_corr: bool) -> None:
    """The basis grid applies in both modes (the reference code drops it per layer) and the decoded
    weight is exactly scale * integer weight."""
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.1
    code = quantize_weight(w, LatticeSpec(bits=3, basis_bits=5, dim=3, per_channel=per_channel,
                                          bias_corr=bias_corr, **FAST))
    b_int = code.basis_int()
    assert b_int.shape[0] == (6 if per_channel else 1)
    assert torch.allclose(b_int.double() * code.lsb[:, None, None], code.basis, rtol=0, atol=1e-12)
    assert b_int.abs().max() <= 31 and (b_int.remainder(2) == 1).all()
    w_int, scale = code.integer_weights()
    assert torch.equal(code.decode(), (scale[:, None] * w_int.double()).reshape(w.shape))
    lo, hi = LatticeSpec(bits=3).coord_range
    assert code.coords.min() >= lo and code.coords.max() <= hi
    assert ((code.decode() - w.double()).norm() / w.norm()) < 0.5


def test_channel_normalisation_fits_small_channels() -> None:
    """Channels 1000x below the layer maximum: per-channel normalisation lets the search fit them."""
    w = torch.randn(8, 12, generator=torch.Generator().manual_seed(5)) * torch.logspace(0, -3, 8)[:, None]
    errs = {}
    for norm in ("layer", "channel"):
        code = quantize_weight(w, LatticeSpec(dim=2, normalize=norm, steps=10, restarts=2))
        errs[norm] = ((code.decode().float() - w).norm(dim=1) / w.norm(dim=1))[-3:].mean()
    assert errs["channel"] < 0.1 and 2 * errs["channel"] < errs["layer"]


def test_bias_correction_restores_mean_and_spread() -> None:
    w = torch.randn(4, 30, dtype=torch.float64)
    w_hat = 0.8 * torch.round(w * 2) / 2 + 0.05
    eta, mu = bias_correction(w, w_hat)
    fixed = eta[:, None] * (w_hat + mu[:, None])
    assert torch.allclose(fixed.std(1), w.std(1), rtol=1e-5)
    assert torch.allclose((w_hat + mu[:, None]).mean(1), w.mean(1))


def test_float_basis_has_no_integer_form_but_decodes() -> None:
    w = torch.randn(4, 6)
    code = quantize_weight(w, LatticeSpec(basis_bits=None, dim=2, **FAST))
    assert code.decode().shape == w.shape
    with pytest.raises(LatticeError, match="basis_bits"):
        code.integer_weights()


@pytest.mark.parametrize("kw", [dict(bits=1), dict(bits=9), dict(basis_bits=1), dict(dim=0), dict(restarts=0),
                                dict(normalize="row"), dict(normalize="channel", per_channel=False)])
def test_bad_specs_are_rejected(kw: dict) -> None:
    with pytest.raises(LatticeError):
        LatticeSpec(**kw)


def test_bad_weights_are_rejected() -> None:
    with pytest.raises(LatticeError, match="vectors of 4"):
        quantize_weight(torch.randn(3, 6), LatticeSpec(dim=4, **FAST))
    with pytest.raises(LatticeError, match="NaN"):
        quantize_weight(torch.tensor([[float("nan"), 1.0]]), LatticeSpec(dim=2, **FAST))
    with pytest.raises(LatticeError, match="output-channel"):
        quantize_weight(torch.randn(6), LatticeSpec(dim=2, **FAST))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.sampled_from([1, 2, 3]), groups=st.integers(1, 4),
       per_channel=st.booleans(), basis_bits=st.sampled_from([3, 8, 12]), a_bits=st.sampled_from([4, 8]))
def test_both_integer_paths_match_the_exact_product(seed: int, n: int, groups: int, per_channel: bool,
                                                    basis_bits: int, a_bits: int) -> None:
    """(a) decoded integer GEMM and (b) per-group basis transform give the same int64 accumulators, and
    scaled back they equal the fake-quant weight times the dequantized input."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(5, n * groups, generator=gen)
    code = quantize_weight(w, LatticeSpec(bits=4, basis_bits=basis_bits, dim=n, per_channel=per_channel,
                                          steps=2, restarts=1, seed=seed))
    x = torch.randint(0, 1 << a_bits, (7, n * groups), generator=gen)
    weights, scale = lattice_int_weights(code)
    acc_a = exact_matmul(weights, x.reshape(1, 1, 7, -1))[0, 0].to(torch.int64)
    w_int, _ = code.integer_weights()
    assert torch.equal(acc_a, x @ w_int.T)
    assert torch.equal(grouped_lattice_matmul(x, code), acc_a)
    fake = x.double() @ code.decode().T
    assert torch.allclose(acc_a.double() * scale, fake, rtol=1e-12, atol=1e-12)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.ReLU(),
                         nn.Conv2d(16, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10)).eval()


@pytest.mark.parametrize("act_mode", ["mse", "max"])
def test_integer_model_matches_fake_quant(act_mode: str) -> None:
    model = _small_cnn()
    x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    fp = model(x)
    res = lattice_quantize_model(model, x, LatticeConfig(act_mode=act_mode, **FAST), progress=False)
    layers = lattice_layers(res.model)
    assert [lay.code.dim for lay in layers] == [1, 3, 2, 2] and layers[-1].code.bits == 8
    fake = res.model(x)
    assert (fake - fp).norm() / fp.norm() < 0.1
    emu, stats = emulate_lattice(res.model)
    out = emu(x)
    assert torch.allclose(out, fake, atol=1e-5, rtol=1e-5)
    assert all(s.overflows == 0 and s.outputs > 0 for s in stats.values())
    narrow, stats = emulate_lattice(res.model, acc_bits=8)
    narrow(x)
    assert sum(s.overflows for s in stats.values()) > 0


def test_per_channel_activations_are_fake_quant_only() -> None:
    model = _small_cnn()
    x = torch.randn(16, 3, 12, 12)
    res = lattice_quantize_model(model, x, LatticeConfig(act_mode="quantile", edge="same", **FAST), progress=False)
    assert [lay.code.dim for lay in lattice_layers(res.model)] == [3, 3, 2, 2]
    assert torch.isfinite(res.model(x)).all()
    with pytest.raises(EmulatorError, match="per-channel"):
        emulate_lattice(res.model)


def test_same_seed_same_codes() -> None:
    x = torch.randn(16, 3, 12, 12)
    a = lattice_quantize_model(_small_cnn(), x, LatticeConfig(**FAST), progress=False)
    b = lattice_quantize_model(_small_cnn(), copy.deepcopy(x), LatticeConfig(**FAST), progress=False)
    for la, lb in zip(lattice_layers(a.model), lattice_layers(b.model), strict=True):
        assert torch.equal(la.code.coords, lb.code.coords) and torch.equal(la.qweight, lb.qweight)


def test_per_channel_normalisation_in_a_model() -> None:
    model = _small_cnn()
    x = torch.randn(16, 3, 12, 12)
    res = lattice_quantize_model(model, x, LatticeConfig(normalize="channel", **FAST), progress=False)
    layers = lattice_layers(res.model)
    assert len(set(layers[1].code.d.tolist())) > 1 and len(set(layers[-1].code.d.tolist())) == 1
    emu, _ = emulate_lattice(res.model)
    assert torch.allclose(emu(x), res.model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(act_mode="abs"), dict(edge="none"), dict(granularity="row"), dict(a_bits=1),
                                dict(w_bits=12), dict(normalize="channel", granularity="tensor")])
def test_bad_configs_are_rejected(kw: dict) -> None:
    with pytest.raises(LatticeError):
        LatticeConfig(**kw)
