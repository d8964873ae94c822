"""End-to-end quantization of small networks: artifact contents, integer equivalence, determinism, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from logmac import format as codes_format
from logmac.format import artifact as artifact_io
from logmac.format import requantize
from logmac.quant import QuantConfig, QuantError, quantize_model
from logmac.quant.modules import QuantLayer, set_quant


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU6()
        self.block = BasicBlock(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.relu(self.bn(self.stem(x)))).mean((2, 3)))


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


CALIB = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def run(cfg: QuantConfig, net: nn.Module | None = None):
    return quantize_model(net if net is not None else tiny_net(), CALIB, cfg, model_name="tiny", progress=False)


@pytest.mark.parametrize("cfg", [
    QuantConfig(method="log_dynamic", w_bits=3, learn_rounding=True, iters=20, batch_size=16, hardware_approx=True),
    QuantConfig(method="log_sqrt2", w_bits=4, zero="flag", batch_size=16),
    QuantConfig(method="linear_mse", w_bits=3, learn_rounding=True, iters=20, batch_size=16),
    QuantConfig(method="log_2", w_bits=4, a_bits=32, granularity="tensor", batch_size=16),
], ids=lambda c: c.label())
def test_artifact_decodes_to_the_fake_quant_weights(cfg: QuantConfig, tmp_path) -> None:
    res = run(cfg)
    path = artifact_io.save(res.artifact, tmp_path / "m.lmq")
    art = artifact_io.load(path)
    assert set(art.layers) == {"stem", "block.conv1", "block.conv2", "fc"}
    assert art.meta["folded_bn"] == {"bn": "stem", "block.bn1": "block.conv1", "block.bn2": "block.conv2"}
    assert art.settings == cfg.to_dict()
    layers = {m.name: m for m in res.model.modules() if isinstance(m, QuantLayer)}
    for name, q in art.layers.items():
        if q.table is not None:
            w = codes_format.decode_float(q.codes, q.table, q.fmt)
        else:
            w = (q.codes.astype(np.float64) - q.zero_point.reshape(-1, *[1] * (q.codes.ndim - 1))) \
                * q.scale.reshape(-1, *[1] * (q.codes.ndim - 1))
        np.testing.assert_array_equal(w.astype(np.float32), layers[name].qweight.numpy())
        assert (q.attrs["act_in"] is None) == (cfg.a_bits == 32)


def test_integer_layers_match_the_fake_quant_model() -> None:
    """acc = x_q . W_int, out_scale * (acc + bias_int) and the requantized hand-off reproduce the float path."""
    res = run(QuantConfig(method="log_dynamic", w_bits=4, batch_size=16, hardware_approx=True))
    q1, q2 = res.artifact.layers["block.conv1"], res.artifact.layers["block.conv2"]
    assert q1.attrs["requant"]["next"] == "block.conv2" and q1.attrs["requant"]["activation"] == "relu"
    assert res.artifact.layers["stem"].attrs["requant"] is None  # ReLU6 then a residual block: float hand-off
    layer = res.model.block.conv1
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    hook2 = res.model.block.conv2.register_forward_pre_hook(lambda m, i: seen.update(x2=i[0]))
    res.model(CALIB[:4])
    hook.remove()
    hook2.remove()
    act = q1.attrs["act_in"]
    x_q = torch.clamp(torch.round(seen["x"] / act["scale"]) + act["zero_point"], 0, act["qmax"]).double()
    w_int = torch.from_numpy(codes_format.decode_int(q1.codes, q1.table, q1.fmt)).double()
    x_pad = nn.functional.pad(x_q, (1, 1, 1, 1), value=act["zero_point"])
    acc = nn.functional.conv2d(x_pad, w_int).round().long()
    per_ch = {k: torch.from_numpy(q1.extras[k])[None, :, None, None] for k in ("out_scale", "bias_int")}
    y = per_ch["out_scale"] * (acc + per_ch["bias_int"])
    rel = (y - seen["y"].double()).abs().max() / seen["y"].abs().max()
    assert rel < 1e-3  # only the bias is rounded to accumulator units
    acc_last = acc.permute(0, 2, 3, 1).numpy()
    r = q1.attrs["requant"]
    y_int = requantize(acc_last, q1.extras["requant_multiplier"], q1.extras["requant_shift"], r["out_zero_point"],
                       *r["clamp"], bias=q1.extras["bias_int"])
    a2 = q2.attrs["act_in"]
    x2_q = torch.clamp(torch.round(seen["x2"] / a2["scale"]) + a2["zero_point"], 0, a2["qmax"]).permute(0, 2, 3, 1)
    diff = np.abs(y_int - x2_q.numpy())
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02


def test_same_seed_same_codes() -> None:
    cfg = QuantConfig(method="log_dynamic", w_bits=3, learn_rounding=True, iters=15, batch_size=16, seed=7)
    a, b = run(cfg).artifact, run(copy.deepcopy(cfg)).artifact
    for name in a.layers:
        np.testing.assert_array_equal(a.layers[name].codes, b.layers[name].codes)
        np.testing.assert_array_equal(a.layers[name].scale, b.layers[name].scale)


def test_learned_rounding_beats_round_to_nearest() -> None:
    """On the residual block LLR lowers the hard-rounded reconstruction error; it is never kept if worse."""
    x = CALIB[:16]
    ref = tiny_net()(x)
    errs = {}
    for llr in (False, True):
        res = run(QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, learn_rounding=llr, iters=300, batch_size=16))
        with torch.no_grad():
            errs[llr] = float((res.model(x) - ref).pow(2).mean())
    assert res.losses["block"]["learned"] < 0.9 * res.losses["block"]["rtn"]
    assert all(v["learned"] <= v["rtn"] or not v["kept_learned"] for v in res.losses.values())
    assert errs[True] < errs[False]


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "log_cubic"}, "unknown method"),
    ({"w_bits": 9}, "w_bits must be"),
    ({"w_bits": 1}, "w_bits must be"),
    ({"a_bits": 20}, "a_bits"),
    ({"method": "log_2", "w_bits": 7}, "shift limit"),
])
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(QuantError, match=message):
        QuantConfig(**kwargs)


def test_bad_models_and_data() -> None:
    with pytest.raises(QuantError, match="calibration samples"):
        quantize_model(tiny_net(), CALIB[:3], QuantConfig(), progress=False)
    net = tiny_net()
    net.fc.weight.data[0, 0] = float("nan")
    with pytest.raises(QuantError, match="fc has NaN"):
        quantize_model(net, CALIB, QuantConfig(batch_size=16), progress=False)


def test_unsupported_layer_is_named_and_kept_float() -> None:
    class WithConv1d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean(-1))

    res = quantize_model(WithConv1d(), torch.randn(16, 1, 10), QuantConfig(batch_size=8), progress=False)
    assert "kept in float" in res.float_modules["conv"] and set(res.artifact.layers) == {"fc"}


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet18_fmnist", "--method", "log_cubic"], "log_cubic"),
    (["--model", "resnet18_fmnist", "--w-bits", "9"], "9 is not in the range"),
    (["--model", "resnet18_fmnist", "--a-bits", "40"], "a_bits"),
    (["--model", "no_such_model"], "no_such_model"),
])
def test_cli_rejects_bad_input(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from logmac.cli import main

    out = CliRunner().invoke(main, ["quantize", *args])
    assert out.exit_code != 0 and message in out.output


def test_static_same_padding_conv_is_quantized() -> None:
    class SameConv(nn.Conv2d):
        def __init__(self) -> None:
            super().__init__(2, 4, 3, stride=2)
            self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.static_padding(x))

    net = nn.Sequential(SameConv(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(16, 2, 8, 8)
    ref = net(x)
    res = quantize_model(net, x, QuantConfig(w_bits=6, method="log_dynamic", batch_size=8), progress=False)
    assert res.artifact.layers["0"].attrs["pre_pad"] == [0, 1, 0, 1]
    with torch.no_grad():
        assert (res.model(x) - ref).abs().max() < 0.25 * ref.abs().max()
        set_quant(res.model, False)
        torch.testing.assert_close(res.model(x), ref)


@pytest.mark.parametrize("method", ["log_dynamic", "linear_mse"])
def test_emulator_runs_the_artifact_like_the_fake_quant_model(method: str) -> None:
    """Cross-room contract: logmac.sim's integer Emulator on our artifact tracks our fake-quant model."""
    from logmac.quant.fold import fold_batchnorm
    from logmac.sim.emulator import Emulator

    res = run(QuantConfig(method=method, w_bits=4, batch_size=16, hardware_approx=True))
    fp = tiny_net()
    fold_batchnorm(fp)
    emu = Emulator(res.artifact, fp)
    x = CALIB[:16]
    with torch.no_grad():
        fake = res.model(x)
    out = emu(x)
    assert (out - fake).abs().max() < 0.05 * fake.abs().max()
    assert (out.argmax(1) == fake.argmax(1)).float().mean() >= 0.9


def test_ablation_rows_and_results_files(tmp_path) -> None:
    from logmac.experiments.registry import ablation_configs, append_csv, markdown_table

    configs = ablation_configs(QuantConfig(w_bits=3))
    assert len({(c.dbs, c.sfs, c.abs, c.learn_rounding) for c in configs}) == 16
    rows = [{"label": c.label(), "method": c.method, "dbs": c.dbs, "sfs": c.sfs, "abs": c.abs,
             "learn_rounding": c.learn_rounding, "q_perplexity": 10.0 + i} for i, c in enumerate(configs[:2])]
    path = append_csv(rows[0], tmp_path / "r.csv")
    append_csv({**rows[1], "extra": 1}, path)
    assert path.read_text().splitlines()[0].endswith("extra") and len(path.read_text().splitlines()) == 3
    table = markdown_table(rows, "perplexity").splitlines()
    assert len(table) == 4 and "| – | – | – | – |" in table[2] and "11.0" in table[3]
