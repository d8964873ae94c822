"""Grid search, rounding and export arithmetic of logmac.quant against the logmac.format contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from logmac import format as codes_format
from logmac.format import LogFormat, fixed_point_multiplier
from logmac.quant.fold import FoldError, fold_batchnorm
from logmac.quant.loggrid import LogGrid, quantize_rtn, search_grid, words_from
from logmac.quant.rounding import LogRounding, UniformRounding
from logmac.quant.uniform import fake_uniform, uniform_range

FORMATS = [
    LogFormat(bits, grid=grid, hardware_approx=hw, zero=zero)
    for bits in (3, 4)
    for grid in ("log_2", "log_sqrt2", "log_dynamic")
    for hw in (False, True)
    for zero in ("code", "flag", "none")
]


def _weights(seed: int, c: int = 12, k: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, k, generator=g, dtype=torch.float64) * torch.rand(c, 1, generator=g, dtype=torch.float64)
    w[0, :] = w[0, :].abs()  # one channel with a single sign
    w[1, :5] = 0.0  # exact zeros
    w[2] *= torch.where(w[2] < 0, 0.05, 1.0)  # strongly sign-asymmetric channel
    return w


def _search(w: torch.Tensor, fmt: LogFormat, **kw) -> LogGrid:
    opts = {"dbs": True, "sfs": True, "asym": True, "alphas": np.linspace(1, 0.5, 11)}
    opts.update(kw)
    return search_grid(w, fmt, **opts)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.bits}b-{f.grid.value}-hw{int(f.hardware_approx)}-{f.zero.value}")
def test_rtn_matches_codes_encode_and_decode(fmt: LogFormat) -> None:
    """The search's fast rounding is exactly codes.encode; its values are exactly codes.decode_float."""
    w = _weights(1)
    grid = _search(w, fmt)
    table = grid.table()
    words = codes_format.encode(w, table, fmt)
    value, sign, index, zero = quantize_rtn(w, grid.levels(), fmt)
    np.testing.assert_array_equal(words_from(fmt, sign, index, zero), words)
    np.testing.assert_array_equal(value.numpy(), codes_format.decode_float(words, table, fmt))


@pytest.mark.parametrize("fmt", FORMATS[::5], ids=lambda f: f"{f.bits}b-{f.grid.value}-{f.zero.value}")
def test_log_rounding_starts_at_rtn_and_exports_what_it_computes(fmt: LogFormat) -> None:
    w = _weights(2)
    grid = _search(w, fmt)
    r = LogRounding(w, grid.levels(), fmt)
    hard = r(hard=True)
    rtn = quantize_rtn(w, grid.levels(), fmt)[0]
    assert (hard != rtn).double().mean() < 1e-3  # only exact ties may differ
    with torch.no_grad():
        r.v.normal_(generator=torch.Generator().manual_seed(3))  # arbitrary learned decisions
    words = words_from(fmt, *r.indices())
    np.testing.assert_array_equal(codes_format.decode_float(words, grid.table(), fmt), r(hard=True).numpy())
    soft_start = LogRounding(w, grid.levels(), fmt)(hard=False)
    learn = r.learn
    torch.testing.assert_close(soft_start[learn], w[learn], rtol=1e-3, atol=1e-12)  # starts at w (h clamped off 0, 1)


def test_search_components_never_increase_the_error() -> None:
    """DBS/SFS/ABS only add candidates, so the per-channel MSE can only drop."""
    fmt = LogFormat(3, grid="log_dynamic", zero="code")
    w = _weights(4)

    def err(grid: LogGrid) -> torch.Tensor:
        return ((quantize_rtn(w, grid.levels(), fmt)[0] - w) ** 2).sum(1)

    base = err(_search(w, fmt, dbs=False, sfs=False, asym=False))
    full = err(_search(w, fmt))
    assert torch.all(full <= base + 1e-12) and full.sum() < 0.8 * base.sum()
    asym = _search(w, fmt, dbs=False, sfs=False, asym=True)
    assert asym.top_k[2, 0] > asym.top_k[2, 1]  # the small negative side gets its own, lower top


def test_hessian_score_prefers_the_channel_output_error() -> None:
    fmt = LogFormat(3, grid="log_dynamic")
    w = _weights(5, k=16)
    x = torch.randn(512, 16, dtype=torch.float64) * torch.logspace(-2, 1, 16, dtype=torch.float64)
    hess = (x.T @ x / 512)[None]

    def out_err(grid: LogGrid) -> float:
        d = quantize_rtn(w, grid.levels(), fmt)[0] - w
        return float(((d @ x.T) ** 2).sum())

    assert out_err(_search(w, fmt, hess=hess.float())) <= out_err(_search(w, fmt))


def test_uniform_mse_range_and_adaround_start() -> None:
    w = _weights(6).float()
    s_mm, z_mm = uniform_range(w, 3, mse=False)
    s_mse, z_mse = uniform_range(w, 3, mse=True)
    e_mm = (fake_uniform(w, s_mm[:, None], z_mm[:, None], 3) - w).pow(2).sum()
    e_mse = (fake_uniform(w, s_mse[:, None], z_mse[:, None], 3) - w).pow(2).sum()
    assert e_mse < e_mm
    r = UniformRounding(w, s_mse, z_mse, 3)
    rtn = fake_uniform(w, s_mse[:, None], z_mse[:, None], 3)
    assert (r(hard=True) - rtn).abs().max() < 1e-5 or (r(hard=True) != rtn).float().mean() < 1e-3
    assert r.codes().min() >= 0 and r.codes().max() <= 7


@pytest.mark.parametrize("real", [1e-6, 0.00371, 0.5, 0.999999999, 1.0, 3.7])
def test_fixed_point_multiplier(real: float) -> None:
    m, s = fixed_point_multiplier(real)
    assert 1 << 30 <= m < 1 << 31 and 0 <= s <= 62
    assert math.isclose(m / 2**s, real, rel_tol=2**-30)
    with pytest.raises(ValueError):
        fixed_point_multiplier(0.0)


def test_fixed_point_multiplier_of_a_dead_channel() -> None:
    m, s = fixed_point_multiplier(1.846e-11)  # seen on an EfficientNet-Lite0 channel
    assert s == 62 and m == round(1.846e-11 * 2**62) and m < 1 << 30
    assert fixed_point_multiplier(1e-30) == (0, 62)


@pytest.mark.parametrize("zero", ["code", "none"])
def test_dead_channel_gets_a_finite_scale_and_integer_bias(zero: str) -> None:
    """An all-zero channel (seen in EfficientNet-Lite0) used to get scale ~2^-1022 and an overflowing bias."""
    from logmac.quant import QuantConfig
    from logmac.quant.pipeline import quantize_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[0].weight[2] = 0
    res = quantize_model(net, torch.randn(16, 3, 8, 8), QuantConfig(w_bits=4, a_bits=8, calib_samples=16,
                         batch_size=8, zero=zero), progress=False)
    layer = res.artifact.layers["0"]
    assert np.isfinite(layer.scale).all() and layer.scale[2] > 1e-12
    assert np.abs(layer.extras["bias_int"]).max() < 2**31
    if zero == "code":
        assert (net[0].qweight[2] == 0).all()


def test_fold_batchnorm_keeps_output_and_catches_misordered_pairs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(3, 2, 6, 6)
    ref = net(x)
    folded = fold_batchnorm(net, x)
    assert folded == {"1": "0"} and isinstance(net[1], nn.Identity)
    torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-5)

    class Swapped(nn.Module):  # BN registered after the conv but applied before it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)
            self.bn.running_mean.fill_(3.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    with pytest.raises(FoldError):
        fold_batchnorm(Swapped().eval(), torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize("zero", ["code", "flag", "none"])
def test_sorted_scorer_equals_the_rounding_error(zero: str) -> None:
    """The O(n log K) search score is the diagonal-weighted error of quantize_rtn."""
    from logmac.quant.loggrid import SortedScorer

    fmt = LogFormat(4, grid="log_dynamic", zero=zero)
    w = _weights(7)
    d = torch.rand(w.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    levels = _search(w, fmt).levels()
    ref = ((quantize_rtn(w, levels, fmt)[0] - w) ** 2 * d).sum(1)
    torch.testing.assert_close(SortedScorer(w, d, fmt)(levels), ref, rtol=1e-10, atol=1e-12)


def test_the_value_sampler_keeps_a_seeded_sample_and_every_range_end():
    from logmac.quant.uniform import ValueSampler

    x = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(1))
    per_tensor, per_channel = ValueSampler(64, seed=7), ValueSampler(64, seed=7, channel_axis=1)
    per_tensor.add(x)
    per_channel.add(x)
    flat, rows = per_tensor.take(), per_channel.take()
    assert flat.shape == (1, 66) and rows.shape == (5, 66)
    assert float(flat.min()) == float(x.min()) and float(flat.max()) == float(x.max())
    assert torch.equal(rows.amin(1), x.movedim(1, 0).reshape(5, -1).amin(1))
    again = ValueSampler(64, seed=7)
    again.add(x)
    assert torch.equal(again.take(), flat) and per_tensor.take() is None
    small = ValueSampler(1000, seed=0)
    small.add(x)
    assert torch.equal(small.take(), x.reshape(1, -1))  # under the cap every value is kept, nothing added
