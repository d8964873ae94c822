"""AdaLog quantizers against the logmac.format format, FPCS, the RepQ fold and the GELU bias reparameterisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from logmac.format import AdaLogFormat, FormatError, adalog_decode_float, adalog_indices, adalog_words
from logmac.models.house import build_vit
from logmac.quant.config import QuantError
from logmac.quant.methods.adalog.quantizers import (
    GELU_OFFSET,
    REDUCED_BUDGET,
    SPEC_BUDGET,
    AdaLogQuant,
    UniformQuant,
    fpcs_adalog,
    fpcs_uniform,
)
from logmac.quant.methods.adalog.vit import (
    AdaLogConfig,
    AdaLogMlp,
    activation_errors,
    quantize_vit,
    repq_fold,
    set_quant,
)
from logmac.quant.modules import QuantLayer
from logmac.quant.uniform import fake_uniform


def tiny_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_vit(embed_dim=24, depth=1, num_heads=2, patch_size=7).eval()


@pytest.mark.parametrize("bits,q,zero", [(3, 16, "code"), (4, 37, "code"), (4, 23, "flag"), (6, 12, "code")])
def test_adalog_eval_output_is_the_codes_format(bits, q, zero):
    """Eval mode is exactly adalog_indices -> adalog_words -> adalog_decode_float, the shift included."""
    quant = AdaLogQuant(bits, q=q, scale=2.5, offset=GELU_OFFSET, zero=zero)
    quant.enabled = True
    quant.eval()
    x = torch.rand(500) * 3.0 - GELU_OFFSET
    fmt = AdaLogFormat(bits, q, zero=zero)
    expected = adalog_decode_float(adalog_words(adalog_indices(x.double() + GELU_OFFSET, 2.5, fmt), fmt), 2.5, fmt)
    assert torch.equal(quant(x), torch.from_numpy(expected).float())
    levels = quant.levels(x).astype(np.float64) * quant.level_scale
    assert np.allclose(levels, expected, rtol=0, atol=1e-12)


def test_adalog_training_mode_is_exact_power_with_straight_through_gradient():
    quant = AdaLogQuant(4, q=20, scale=1.0)
    quant.enabled = True
    x = torch.rand(300, requires_grad=True)
    train = quant.train()(x)
    train.sum().backward()
    # straight-through round: d/dx s*2**(-round(e)*q/r) = value / x, about 1 (exactly 1 without rounding)
    assert torch.allclose(x.grad, train.detach() / x.detach(), rtol=1e-4)
    evaluated = quant.eval()(x.detach())
    nonzero = evaluated > 0
    assert torch.equal(nonzero, train.detach() > 0)
    # the eval levels are the (bits+1)-bit mantissa table: within half an LSB of D/2 of the exact power
    fmt = quant.fmt
    assert torch.all((evaluated[nonzero] / train.detach()[nonzero] - 1).abs() <= 1.0 / fmt.denominator + 1e-6)


def test_adalog_rejects_bad_settings_and_negative_input():
    with pytest.raises(FormatError, match="q must be an integer"):
        AdaLogQuant(4, q=5)
    with pytest.raises(FormatError, match="need a zero"):
        AdaLogQuant(4, zero="none")
    quant = AdaLogQuant(4)
    quant.enabled = True
    quant.eval()
    with pytest.raises(FormatError, match="non-negative"):
        quant(torch.tensor([-0.5, 0.2]))
    with pytest.raises(QuantError, match="non-negative"):
        fpcs_adalog(torch.tensor([-1.0, 0.5]), AdaLogQuant(4), lambda t: 0.0, search_scale=False)


@pytest.mark.parametrize("budget,stride", [(SPEC_BUDGET, 1), (REDUCED_BUDGET, 2)])
def test_fpcs_adalog_beats_every_searched_q(budget, stride):
    """Post-Softmax: the spec budget scores every q in 10..138, the reduced one every second q (and neighbours)."""
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(64, 17) * 3, dim=-1)
    v = torch.randn(17, 8)
    target = a @ v
    calls = []

    def score(a_hat: torch.Tensor) -> float:
        calls.append(1)
        return float((a_hat @ v - target).pow(2).sum())

    quant = AdaLogQuant(3)
    quant.eval()  # scored as the datapath computes it (training mode is the exact power, no mantissa table)
    fpcs_adalog(a, quant, score, search_scale=False, budget=budget)
    if stride == 1:
        assert len(calls) == 129
    else:
        assert 65 <= len(calls) <= 65 + 2 * budget.keep_q
    best = score(quant(a))
    for q in range(10, 139, stride):
        probe = AdaLogQuant(3, q=q)
        probe.enabled = True
        probe.eval()
        assert best <= score(probe(a)) + 1e-12


def test_fpcs_adalog_post_gelu_searches_the_scale():
    torch.manual_seed(1)
    h = F.gelu(torch.randn(64, 16) * 2)
    w = torch.randn(4, 16)
    quant = AdaLogQuant(4, offset=GELU_OFFSET)
    fpcs_adalog(h, quant, lambda c: float((F.linear(c - GELU_OFFSET, w) - F.linear(h, w)).pow(2).sum()),
                search_scale=True, rounds=1)
    top = float((h + GELU_OFFSET).max())
    assert 0 < quant.scale <= top * 1.2 and quant.q in range(10, 139)


@pytest.mark.parametrize("bits,first", [(3, 128), (4, 128), (6, 128)])
def test_fpcs_uniform_spec_budget_candidate_count(bits, first):
    """Spec 3.3: 128 first candidates (min(16, 2^b) zero points x 128/num_zp scales), then 5 rounds of 8 scales
    around each of the top 16."""
    x = torch.randn(256, 8)
    calls = []
    fpcs_uniform(x, bits, lambda c: calls.append(1) or float((c - x).pow(2).sum()))
    assert len(calls) == first + 5 * 16 * 8
    calls.clear()
    fpcs_uniform(x, 4, lambda c: calls.append(1) or float((c - x).pow(2).sum()), budget=REDUCED_BUDGET)
    assert len(calls) == 4 * 16 + 3 * 8 * 8


def test_gelu_minimum_rounding_below_the_shift_is_zero_not_an_error():
    """Values a few ulps below -GELU_OFFSET (what a vectorised float32 GELU may return) code as zero.

    The input is built here, one float32 ulp step at a time below -GELU_OFFSET, instead of asking the
    host's GELU kernel for its minimum: that minimum differs between CPUs (AVX2 vs AVX-512 kernels).
    """
    quant = AdaLogQuant(6, q=20, scale=3.0, offset=GELU_OFFSET)
    quant.enabled = True
    quant.eval()
    below = torch.tensor(-GELU_OFFSET, dtype=torch.float32)
    for _ in range(4):  # four ulps below the offset, as float32 kernels have been seen to return
        below = torch.nextafter(below, torch.tensor(-1.0))
    h = torch.stack([below, torch.tensor(0.0), torch.tensor(0.5)])
    assert float((h + GELU_OFFSET).min()) < 0
    assert torch.isfinite(quant(h)).all() and float(quant(h).min()) >= 0
    assert quant.levels(below.reshape(1)).tolist() == [0]
    with pytest.raises(FormatError, match="non-negative"):
        quant(torch.tensor([-0.2]))


def test_fpcs_uniform_no_worse_than_min_max_and_zero_point_zero_for_non_negative():
    torch.manual_seed(2)
    x = torch.randn(512, 16) ** 3  # heavy tails: clipping should pay off
    score = lambda c: float((c - x).pow(2).sum())  # noqa: E731
    s, z = fpcs_uniform(x, 4, score)
    lo, hi = float(x.min()), float(x.max())
    s_mm = (hi - lo) / 15
    z_mm = round(-lo / s_mm)
    assert score(fake_uniform(x, torch.tensor(s), torch.tensor(z), 4)) <= score(
        fake_uniform(x, torch.tensor(s_mm), torch.tensor(float(z_mm)), 4))
    positive = torch.rand(100, 4)
    _, z_pos = fpcs_uniform(positive, 4, lambda c: float((c - positive).pow(2).sum()))
    assert z_pos == 0.0
    with pytest.raises(QuantError, match="non-finite"):
        fpcs_uniform(torch.tensor([1.0, float("nan")]), 4, score)


def test_repq_fold_keeps_fp_output_and_turns_per_channel_codes_into_per_tensor():
    torch.manual_seed(3)
    norm = nn.LayerNorm(12)
    norm.weight.data = torch.rand(12) * 3 + 0.1
    norm.bias.data = torch.randn(12)
    linear = nn.Linear(12, 5)
    x = torch.randn(200, 12)
    layer = QuantLayer("fc", linear, AdaLogConfig().layer_config())
    before_ln, before = norm(x).detach(), layer(norm(x)).detach()
    from logmac.quant.uniform import uniform_range

    scale_c, zp_c = uniform_range(before_ln.double().T.contiguous(), 4, mse=True)
    repq_fold(norm, layer, before_ln, 4)
    after_ln = norm(x).detach()
    assert torch.allclose(layer(after_ln), before, atol=1e-4)
    s, z = scale_c.mean(), torch.round(zp_c.mean())
    per_channel = torch.clamp(torch.round(before_ln.double() / scale_c) + zp_c, 0, 15)
    per_tensor = torch.clamp(torch.round(after_ln.double() / s) + z, 0, 15)
    # the same integer codes up to float rounding at exact ties
    assert (per_channel != per_tensor).double().mean() < 0.002


def test_gelu_bias_reparameterisation_is_exact_in_float():
    vit = tiny_vit()
    mlp = AdaLogMlp("mlp", vit.blocks[0].mlp, AdaLogConfig(w_bits=4, a_bits=4))
    mlp.fc2.fit()
    mlp.fc2.quant_on = True
    mlp.reparameterise_bias()
    h = F.gelu(torch.randn(40, 96))
    w = mlp.fc2.effective_weight().double()
    shifted = F.linear(h.double() + GELU_OFFSET, w, mlp.fc2_shifted_bias.double())
    plain = F.linear(h.double(), w, mlp.fc2.bias.double())
    assert torch.allclose(shifted, plain, atol=1e-5)


@pytest.mark.parametrize("acts,weights", [("adalog", "uniform"), ("uniform", "log")])
def test_quantize_vit_keeps_fp_path_and_quantizes(acts, weights):
    vit = tiny_vit()
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        fp = vit(images)
    res = quantize_vit(vit, images, AdaLogConfig(w_bits=4, a_bits=4, acts=acts, weights=weights, calib_samples=8,
                                                   fpcs_rounds=0))
    with torch.no_grad():
        set_quant(res.model, False)
        assert torch.allclose(res.model(images), fp, atol=1e-4), "the RepQ fold changed the FP network"
        set_quant(res.model, True)
        quant = res.model(images)
    assert torch.isfinite(quant).all() and not torch.allclose(quant, fp)
    assert bool(res.quantizers) == (acts == "adalog")
    attn = res.model.blocks[0].attn
    assert isinstance(attn.attn_quant, AdaLogQuant if acts == "adalog" else UniformQuant)
    assert attn.v_quant.scale.shape == (1, 2, 1, 1), "V is quantized per head"


def test_target_bits_and_activation_errors():
    """target_bits sets only the post-Softmax / post-GELU quantizers; activation_errors measures them per block."""
    vit = tiny_vit()
    images = torch.randn(8, 1, 28, 28)
    res = quantize_vit(vit, images, AdaLogConfig(w_bits=8, a_bits=8, target_bits=3, calib_samples=8, fpcs_rounds=0))
    block = res.model.blocks[0]
    assert block.attn.attn_quant.bits == 3 and block.mlp.hid_quant.bits == 3
    assert block.attn.v_quant.bits == 8 and block.mlp.in_quant.bits == 8
    errors = activation_errors(res.model, images)
    assert set(errors) == {"softmax", "gelu", "attn_v", "fc2"}
    assert all(len(v) == 1 and 0 < v[0] < 1 for v in errors.values())
    assert all(m.record is None for m in res.model.modules() if hasattr(m, "record"))
    with torch.no_grad():
        assert torch.isfinite(res.model(images)).all()


def test_config_errors_name_the_problem():
    with pytest.raises(QuantError, match="acts"):
        AdaLogConfig(acts="log")
    with pytest.raises(QuantError, match="a_bits"):
        AdaLogConfig(a_bits=1)
    with pytest.raises(QuantError, match="zero mode"):
        AdaLogConfig(zero="none")
    with pytest.raises(QuantError, match="fpcs_rounds"):
        AdaLogConfig(fpcs_rounds=-1)
    with pytest.raises(QuantError, match="fpcs must be"):
        AdaLogConfig(fpcs="huge")
    with pytest.raises(QuantError, match="target_bits"):
        AdaLogConfig(target_bits=1)
    with pytest.raises(QuantError, match="w_bits"):
        AdaLogConfig(w_bits=9)
    with pytest.raises(QuantError, match=r"\(N, C, H, W\)"):
        quantize_vit(tiny_vit(), torch.randn(8, 784), AdaLogConfig())
    with pytest.raises(QuantError, match="timm VisionTransformer"):
        quantize_vit(nn.Sequential(nn.Linear(4, 4)), torch.randn(8, 1, 28, 28), AdaLogConfig())
