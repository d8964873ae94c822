"""PTMQ: nested log codes, shared rounding, the multi-bit artifact, the emulator's run-time switch, the CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_quant_pipeline import CALIB, tiny_net

from logmac.backends.multibit import MultiBitEmulator
from logmac.cli import main
from logmac.format import (
    FormatError,
    LogFormat,
    decode_float,
    decode_int,
    level_values,
)
from logmac.format import artifact as artifact_io
from logmac.format.artifact import ArtifactError
from logmac.format.nested import NEST_MODES, nest_register, nest_table, nest_words, nested_format
from logmac.quant import QuantConfig, QuantError
from logmac.quant.export import build_artifact
from logmac.quant.methods.ptmq.artifact import artifact_at
from logmac.quant.methods.ptmq.calibrate import PtmqConfig, ptmq_quantize, set_precision
from logmac.quant.methods.ptmq.layer import MultiBitLayer, multibit_layers
from logmac.sim.emulator import Emulator
from logmac.sim.layers import EmulatorError
from logmac.stimulus import random_table


@pytest.mark.parametrize("zero", ["code", "flag"])
@pytest.mark.parametrize("mode", NEST_MODES)
def test_nested_codes_are_the_engine_register_view_of_the_top_code(zero: str, mode: str) -> None:
    """Decoding the nested b-bit words with the nested table == decoding the top words with the top table,
    indices under the register's floor gated to zero and its OR mask applied (what the RTL does)."""
    rng = np.random.default_rng(3)
    top = LogFormat(6, zero=zero)
    table = random_table(top, 4, rng)
    words = rng.integers(0, 1 << top.storage_bits, size=(4, 200))
    for b in (2, 3, 4, 6):
        low = nest_words(words, top, b, mode)
        floor, or_mask, index_mask = nest_register(top, b, mode)
        gated = np.where((words & index_mask) < floor, 0, decode_int(words | or_mask, table, top))
        assert np.array_equal(decode_int(low, nest_table(table, top, b, mode), nested_format(top, b)), gated)


def test_coarsen_keeps_the_top_levels_and_prefix_shares_the_top_level() -> None:
    rng = np.random.default_rng(4)
    top = LogFormat(6)
    table = random_table(top, 3, rng)
    levels = level_values(table, top)
    coarse = level_values(nest_table(table, top, 3, "coarsen"), nested_format(top, 3))
    assert np.array_equal(coarse[:, :, 1:], levels[:, :, -3:])  # same anchor, same steps, fewer levels
    prefix = level_values(nest_table(table, top, 3, "prefix"), nested_format(top, 3))
    assert np.array_equal(prefix[:, :, -1], levels[:, :, -1])
    assert np.array_equal(prefix[:, :, 1:], levels[:, :, [15, 23, 31]])  # every 8th level, top included
    words = rng.integers(0, 64, size=(3, 50))
    canonical = np.where(words & 31 == 0, 0, words)  # "-0" becomes the canonical zero word
    assert np.array_equal(nest_words(words, top, 6, "coarsen"), canonical)  # the top width reads itself
    with pytest.raises(FormatError, match="zero"):
        nested_format(LogFormat(6, zero="none"), 3)
    with pytest.raises(FormatError, match="cannot be read"):
        nest_words(words, top, 7, "coarsen")


def _layer(method: str, nest: str = "coarsen") -> MultiBitLayer:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3)
    cfg = QuantConfig(method=method, learn_rounding=True)
    layer = MultiBitLayer("c", conv, cfg, [3, 4, 6], [8, 8, 8], nest)
    layer.fit_all()
    return layer


@pytest.mark.parametrize("nest", NEST_MODES)
def test_log_shared_rounding_gives_nested_codes_at_every_width(nest: str) -> None:
    layer = _layer("log_dynamic", nest)
    (v,) = layer.start_shared_rounding()
    with torch.no_grad():
        v.copy_(torch.randn_like(v) * 3)
    layer.quant_on = True
    layer.set_hard(True)
    hard = {}
    for b in (3, 4, 6):  # the hard nested weight the reconstruction sees == decoding the nested words
        layer.set_precision(b)
        hard[b] = layer.effective_weight().detach().double()
    layer.finish_shared_rounding(keep=True)
    top = layer.states[6]
    fmt = top.cfg.weight_format()
    for b in (3, 4):
        st = layer.states[b]
        assert np.array_equal(st.words, nest_words(top.words, fmt, b, nest))
        dec = decode_float(st.words, st.grid.table(), st.cfg.weight_format()).reshape(hard[b].shape)
        assert torch.allclose(hard[b], torch.from_numpy(dec), rtol=1e-6, atol=0)
    assert not np.array_equal(layer.states[3].words, nest_words(np.zeros_like(top.words), fmt, 3, nest))


def test_uniform_shared_rounding_is_one_v_at_per_width_steps() -> None:
    layer = _layer("linear_mse")
    (v,) = layer.start_shared_rounding()
    with torch.no_grad():
        v.copy_(torch.randn_like(v) * 3)
    up = (v.detach() >= 0).double()
    layer.finish_shared_rounding(keep=True)
    w = layer.weight2d().double()
    for b in (3, 4, 6):
        scale, zp = layer.states[b].uniform
        want = torch.clamp(torch.floor(w / scale[:, None].double()) + up + zp[:, None], 0, (1 << b) - 1)
        assert np.array_equal(layer.states[b].words, want.long().numpy())
    scales = [float(layer.states[b].uniform[0][0]) for b in (3, 4, 6)]
    assert scales[0] > scales[1] > scales[2]  # per-width steps


@pytest.fixture(scope="module")
def quantized():
    net = tiny_net()
    cfg = QuantConfig(method="log_dynamic", learn_rounding=True, iters=6, calib_samples=48, batch_size=16,
                      hardware_approx=True, act_init="percentile")
    res = ptmq_quantize(net, CALIB, cfg, PtmqConfig(bits=(6, 3, 4), a_bits=(8, 6, 8)))
    return res


def test_multibit_artifact_round_trips_every_width(quantized, tmp_path) -> None:
    res = quantized
    path = artifact_io.save(res.artifact, tmp_path / "m.lmq")
    loaded = artifact_io.load(path)
    assert loaded.settings["ptmq"]["bits"] == [3, 4, 6] and loaded.settings["ptmq"]["a_bits"] == [6, 8, 8]
    for b in (3, 4, 6):
        set_precision(res.model, b)
        single = build_artifact(res.model, {}, {}, {})
        view = artifact_at(loaded, b)
        assert view.settings["w_bits"] == b
        for name, want in single.layers.items():
            got = view.layers[name]
            assert got.fmt == want.fmt and np.array_equal(got.codes, want.codes)
            assert np.array_equal(got.table.u, want.table.u) and np.array_equal(got.table.h, want.table.h)
            assert got.attrs["act_in"] == want.attrs["act_in"] and got.attrs["requant"] == want.attrs["requant"]
            for key in ("bias_int", "out_scale"):
                assert np.array_equal(got.extras[key], want.extras[key])
    set_precision(res.model, 6)
    assert artifact_at(loaded, 3).layers["stem"].attrs["act_in"]["bits"] == 6
    with pytest.raises(ArtifactError, match="holds widths"):
        artifact_at(loaded, 5)
    bad = copy.deepcopy(loaded)
    bad.layers["stem"].extras["p3/u"] = bad.layers["stem"].extras["p4/u"][:, :, :4]
    with pytest.raises(ArtifactError, match="nesting"):
        artifact_at(bad, 3)
    with pytest.raises(ArtifactError, match="not a multi-bit"):
        artifact_at(artifact_at(loaded, 4), 4)


def test_emulator_switches_precision_at_run_time(quantized) -> None:
    art = quantized.artifact
    emu = MultiBitEmulator(art, _float_twin())
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    outs = {}
    for b in (3, 6, 4, 3):
        emu.set_precision(b)
        y = emu(x)
        ref = Emulator(artifact_at(art, b), _float_twin())(x)
        assert torch.equal(y, ref), f"W{b} after switching differs from a separate {b}-bit emulator"
        outs[b] = y
    assert not torch.equal(outs[3], outs[6])
    with pytest.raises(EmulatorError, match="holds widths"):
        emu.set_precision(5)


def _float_twin() -> torch.nn.Module:
    from logmac.quant.fold import fold_batchnorm

    net = tiny_net()
    fold_batchnorm(net)
    return net


def test_ptmq_config_rejects_bad_settings() -> None:
    with pytest.raises(QuantError, match="one activation width"):
        PtmqConfig(bits=(3, 4), a_bits=(8,))
    with pytest.raises(QuantError, match="distinct"):
        PtmqConfig(bits=(4, 4), a_bits=(8, 8))
    with pytest.raises(QuantError, match="nesting"):
        PtmqConfig(bits=(3, 4), a_bits=(8, 8), nest="suffix")


def test_every_layer_is_multibit_and_lone_layers_were_reconstructed(quantized) -> None:
    layers = multibit_layers(quantized.model)
    assert {m.name for m in layers} == {"stem", "block.conv1", "block.conv2", "fc"}
    assert {"stem", "fc"} <= set(quantized.losses)  # lone layers get the GD loss too
    assert all(f"learned_w{b}" in quantized.losses["fc"] for b in (3, 4, 6))  # every width is scored


def test_cli_quantize_ptmq_smoke(tmp_path) -> None:
    out = tmp_path / "r18.lmq"
    result = CliRunner().invoke(main, [
        "quantize", "--model", "resnet18_fmnist", "--method", "ptmq", "--bits", "3,4", "--ptmq-codes", "log_2",
        "--iters", "2", "--calib-samples", "16", "--batch-size", "16", "--eval-limit", "32", "--act-init",
        "percentile", "--results", str(tmp_path / "r.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "W3A8" in result.output and "W4A8" in result.output
    art = artifact_io.load(out)
    assert art.settings["ptmq"]["bits"] == [3, 4]
    low = artifact_at(art, 3).layers["fc"]
    assert low.fmt == nested_format(art.layers["fc"].fmt, 3)
    assert np.array_equal(low.codes, nest_words(art.layers["fc"].codes, art.layers["fc"].fmt, 3, "coarsen"))
    bad = CliRunner().invoke(main, ["quantize", "--model", "resnet18_fmnist", "--method", "ptmq", "--bits", "3,x"])
    assert bad.exit_code != 0 and "comma-separated" in bad.output


def test_per_width_weight_step_round_trips_and_emulates() -> None:
    """``width_scale``: lower log widths get their own per-channel step (stored as p{b}/scale), the file and
    the emulator at every width match the fake-quant model's export; the top width is unchanged."""
    net = tiny_net()
    cfg = QuantConfig(method="log_dynamic", learn_rounding=True, iters=4, calib_samples=32, batch_size=16,
                      hardware_approx=True, act_init="percentile")
    res = ptmq_quantize(net, CALIB, cfg, PtmqConfig(bits=(3, 4, 6), a_bits=(8, 8, 8), width_scale=True,
                                                    fp_weight=1.0, own_inputs=True))
    art = res.artifact
    assert any("p3/scale" in layer.extras for layer in art.layers.values())
    assert all("p6/scale" not in layer.extras for layer in art.layers.values())
    emu = MultiBitEmulator(art, _float_twin())
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for b in (3, 6, 4):
        set_precision(res.model, b)
        single = build_artifact(res.model, {}, {}, {})
        view = artifact_at(art, b)
        for name, want in single.layers.items():
            got = view.layers[name]
            assert np.array_equal(got.codes, want.codes) and np.array_equal(got.scale, want.scale)
            assert np.array_equal(got.extras["out_scale"], want.extras["out_scale"])
        emu.set_precision(b)
        assert torch.equal(emu(x), Emulator(view, _float_twin())(x))


def test_one_backend_call_runs_every_stored_width(quantized) -> None:
    """``logmac.backends.predict`` on a PTMQ artifact: each width's emulator equals a separate single-width
    emulator, its fake-quant equals the single-width fake-quant model, and widths it does not hold are refused."""
    from logmac.backends import open_backend, predict
    from logmac.format import FormatError
    from logmac.sim.layers import fake_quant_model

    art = quantized.artifact
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    for b in (3, 4, 6):
        got = predict(art, x, "emulator", width=b, model=_float_twin())  # one batch, as the reference runs
        assert torch.equal(got.outputs, Emulator(artifact_at(art, b), _float_twin())(x)) and got.overflows == {}
        fq = predict(art, x, "fake_quant", width=b, model=_float_twin()).outputs
        assert torch.equal(fq, fake_quant_model(artifact_at(art, b), _float_twin())(x))
    assert open_backend(art, "float", model=_float_twin()).method == "ptmq"
    with pytest.raises(ArtifactError, match="holds widths"):
        predict(art, x, "emulator", width=5, model=_float_twin())
    with pytest.raises(FormatError, match="backend kind"):
        predict(art, x, "rtl", model=_float_twin())
    with pytest.raises(FormatError, match="multi-bit"):
        predict(artifact_at(art, 4), x, "emulator", width=4, model=_float_twin())
