"""GPTQ rounding on every grid: lower output error than round-to-nearest, legal codes, artifact == fake-quant."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from logmac import format as codes_format
from logmac.format import LogFormat
from logmac.format import artifact as artifact_io
from logmac.quant import QuantConfig, quantize_model
from logmac.quant.gptq import gptq_round, inverse_cholesky, log_rounder, uniform_rounder
from logmac.quant.llm import decoder_blocks
from logmac.quant.loggrid import quantize_rtn, search_grid
from logmac.quant.modules import QuantLayer
from logmac.quant.uniform import uniform_codes, uniform_range
from tests.test_quant_llm import IDS, toy

GRIDS = ["log_2", "log_sqrt2", "log_dynamic", "linear_minmax"]


def correlated_layer(seed: int = 0, C: int = 48, K: int = 64, N: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (C, K) and inputs (N, K) whose features are strongly correlated (a random mixing of few factors)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(K // 4, K, generator=g, dtype=torch.float64)
    x = torch.randn(N, K // 4, generator=g, dtype=torch.float64) @ mix + 0.1 * torch.randn(N, K, generator=g,
                                                                                           dtype=torch.float64)
    return torch.randn(C, K, generator=g, dtype=torch.float64) * 0.05, x


def fitted_rounder(method: str, bits: int, w: torch.Tensor, hess: torch.Tensor):
    """The grid fitted as the pipeline fits it, its nearest rounding and a function from values to codes."""
    if method.startswith("log"):
        fmt = LogFormat(bits, grid=method)
        grid = search_grid(w, fmt, dbs=True, sfs=True, asym=True, alphas=np.linspace(1, 0.5, 6), hess=hess[None])
        levels = grid.levels()
        return (lambda v: quantize_rtn(v, levels, fmt)[0]), log_rounder(levels, fmt), \
            (lambda q: codes_format.decode_float(codes_format.encode(q, grid.table(), fmt), grid.table(), fmt))
    scale, zp = uniform_range(w, bits, mse=False)
    return (lambda v: (uniform_codes(v, scale, zp, bits) - zp[:, None]) * scale[:, None]), \
        uniform_rounder(scale, zp, bits), \
        (lambda q: (uniform_codes(q, scale, zp, bits).double() - zp[:, None]) * scale[:, None])


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("method", GRIDS)
def test_gptq_beats_nearest_and_lands_on_the_grid(method: str, bits: int, act_order: bool) -> None:
    w, x = correlated_layer()
    hess = 2 * x.T @ x / len(x)
    rtn, nearest, through_codes = fitted_rounder(method, bits, w, hess)
    q, start = gptq_round(w, hess, nearest, act_order=act_order)
    out_err = {name: torch.linalg.norm(x @ (w - v).T) for name, v in (("rtn", rtn(w)), ("gptq", q))}
    assert out_err["gptq"] < 0.9 * out_err["rtn"], out_err
    torch.testing.assert_close(nearest(start[:, 5], slice(None)), q[:, 5], rtol=0, atol=0)
    assert torch.equal(torch.as_tensor(through_codes(q)), q)  # every value is a level the codes decode to


def test_not_positive_definite_hessian_is_damped_further_and_logged(caplog) -> None:
    w, x = correlated_layer(C=8, K=16, N=4)  # 4 rows: H has rank 4 of 16
    hess = 2 * x.T @ x / len(x)
    hess[0, 0] = -1.0  # not positive semi-definite: no damping of 0.01 mean(diag) fixes it
    with caplog.at_level(logging.WARNING, logger="logmac.quant.gptq"):
        u = inverse_cholesky(hess, name="bad")
    assert torch.isfinite(u).all() and "bad: Hessian not positive definite" in caplog.text
    q, _ = gptq_round(w, -torch.eye(16, dtype=torch.float64), uniform_rounder(*uniform_range(w, 3, mse=False), 3))
    assert torch.isfinite(q).all()  # even a Hessian no damping can fix rounds (to nearest) instead of failing


@pytest.mark.parametrize("method", GRIDS)
def test_gptq_artifact_decodes_to_fake_quant_and_runs_on_the_emulator(method: str, tmp_path) -> None:
    from logmac.sim.emulator import Emulator
    from logmac.sim.layers import fake_quant_model

    model = toy()
    cfg = QuantConfig(method=method, w_bits=3, a_bits=8, rounding="gptq", act_order=True, batch_size=4)
    res = quantize_model(model, IDS, cfg, task="lm", blocks=decoder_blocks(model), progress=False)
    assert "GPTQ" in cfg.label()
    art = artifact_io.load(artifact_io.save(res.artifact, tmp_path / "g.lmq"))
    layers = {m.name: m for m in res.model.modules() if isinstance(m, QuantLayer)}
    for name, q in art.layers.items():
        if q.table is not None:
            w = codes_format.decode_float(q.codes, q.table, q.fmt)
            codes_format.split_words(q.codes, q.fmt)  # raises on an illegal word
        else:
            assert q.codes.min() >= 0 and q.codes.max() < 8
            w = (q.codes.astype(np.float64) - q.zero_point[:, None]) * q.scale[:, None]
        np.testing.assert_array_equal(w.astype(np.float32), layers[name].qweight.numpy())
    emu = Emulator(art, toy())
    with torch.no_grad():
        fake = fake_quant_model(art, toy())(IDS)
        torch.testing.assert_close(fake, res.model(IDS), rtol=1e-4, atol=1e-4)
    assert (emu(IDS) - fake).abs().max() < 0.02 * fake.abs().max()


def test_gptq_is_the_start_of_learned_rounding() -> None:
    model = toy()
    cfg = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, rounding="gptq", learn_rounding=True, iters=20,
                      batch_size=4)
    res = quantize_model(model, IDS, cfg, task="lm", blocks=decoder_blocks(model), progress=False)
    assert all(v["learned"] <= v["rtn"] for v in res.losses.values() if v["kept_learned"])
    assert all(m.round_start is None for m in res.model.modules() if isinstance(m, QuantLayer))
