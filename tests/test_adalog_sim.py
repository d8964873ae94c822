"""The AdaLog integer emulation: exact against int64 references, and against the fake-quant ViT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_adalog_quant import tiny_vit

from logmac.backends.adalog import capture_attention_tiles, compare_vit, save_attention_vectors
from logmac.format import (
    AdaLogFormat,
    FormatError,
    LogFormat,
    adalog_decode_int,
    adalog_words,
    make_words,
)
from logmac.quant.methods.adalog.vit import AdaLogConfig, quantize_vit
from logmac.sim import IntWeights, int_matmul, log_matmul, log_matmul_reference
from logmac.sim.adalog import adalog_acc_bits, attention_values
from logmac.stimulus import random_table


def random_words(fmt: AdaLogFormat, shape, rng) -> np.ndarray:
    """Random stored words, the zero sentinel included."""
    return adalog_words(rng.integers(0, fmt.nonzero_levels + 1, size=shape), fmt)


@pytest.mark.parametrize("bits,q,zero", [(3, 16, "code"), (4, 23, "flag"), (6, 12, "code")])
def test_attention_values_equal_int64_reference(bits, q, zero):
    rng = np.random.default_rng(bits)
    fmt = AdaLogFormat(bits, q, zero=zero)
    levels = adalog_decode_int(random_words(fmt, (2, 3, 17, 17), rng), fmt)
    v = rng.integers(-15, 16, size=(2, 3, 17, 8))
    acc_bits = adalog_acc_bits(17, fmt, 15)
    res = attention_values(levels, v, acc_bits)
    assert np.array_equal(res.acc, np.einsum("bhik,bhkd->bhid", levels, v))
    assert not res.overflow.any()


def test_attention_values_flags_overflow_and_rejects_bad_input():
    fmt = AdaLogFormat(4, 37)
    top = np.full((1, 1, 4, 4), int(fmt.integer_levels()[0]))
    res = attention_values(top, np.full((1, 1, 4, 2), 15), acc_bits=8)
    assert res.overflow.all() and (res.acc == 127).all(), "saturates at the register's maximum"
    with pytest.raises(FormatError, match="integers"):
        attention_values(np.ones((1, 1, 4, 4)), np.ones((1, 1, 4, 2), dtype=np.int64), 20)
    with pytest.raises(FormatError, match="shape mismatch"):
        attention_values(np.ones((1, 1, 4, 4), dtype=np.int64), np.ones((1, 1, 3, 2), dtype=np.int64), 20)
    with pytest.raises(FormatError, match="unsigned"):
        attention_values(-np.ones((1, 1, 4, 4), dtype=np.int64), np.ones((1, 1, 4, 2), dtype=np.int64), 20)


@pytest.mark.parametrize("w_bits,grid", [(3, "log_dynamic"), (4, "log_sqrt2"), (4, "log_2")])
def test_log_weights_times_adalog_levels_is_the_log_mac(w_bits, grid):
    """An AdaLog level fed to the log MAC: fast path == the shift-and-add int64 reference, == decoded product."""
    rng = np.random.default_rng(w_bits)
    act = AdaLogFormat(4, 19)
    wfmt = LogFormat(w_bits, grid=grid, hardware_approx=True)
    table = random_table(wfmt, 6, rng)
    words = make_words(rng.integers(0, 2, (6, 40)), rng.integers(0, wfmt.levels_per_sign, (6, 40)), None, wfmt)
    levels = adalog_decode_int(random_words(act, (5, 40), rng), act)
    acc_bits = 40
    fast = log_matmul(levels, words, table, wfmt, acc_bits, act_bits=act.level_bits)
    ref = log_matmul_reference(levels, words, table, wfmt, acc_bits)
    assert np.array_equal(fast.acc, ref.acc)
    mult = IntWeights.from_log(words, table, wfmt).mult[0].numpy()
    assert np.array_equal(int_matmul(levels, IntWeights.from_log(words, table, wfmt), acc_bits).acc, levels @ mult.T)


@pytest.fixture(scope="module")
def quantized():
    """Tiny ViTs quantized once per (activations, weights) setting, with their calibration images."""
    made: dict[tuple[str, str], tuple[torch.nn.Module, torch.Tensor]] = {}

    def get(acts: str, weights: str):
        if (acts, weights) not in made:
            vit = tiny_vit(1)
            images = torch.randn(24, 1, 28, 28, generator=torch.Generator().manual_seed(5))
            quantize_vit(vit, images[:8], AdaLogConfig(w_bits=4, a_bits=4, acts=acts, weights=weights,
                                                       calib_samples=8, fpcs_rounds=0))
            made[acts, weights] = vit, images
        return made[acts, weights]

    return get


@pytest.mark.parametrize("acts,weights", [("adalog", "uniform"), ("uniform", "uniform"), ("adalog", "log")])
def test_emulated_vit_matches_fake_quant(quantized, acts, weights):
    vit, images = quantized(acts, weights)
    labels = torch.randint(0, 10, (24,))
    cmp = compare_vit(vit, images, labels)
    assert cmp["same_prediction"] == 100.0 and cmp["overflows"] == 0
    assert cmp["max_logit_diff"] < 1e-4
    assert set(cmp["acc_bits"]) == {"blocks.0.attn@v", "blocks.0.mlp.fc2"}


def test_captured_attention_tiles_are_exact_and_saved_for_the_rtl(quantized, tmp_path):
    vit, images = quantized("adalog", "uniform")
    tiles = capture_attention_tiles(vit, images[:8], tiles=3)
    fmt = AdaLogFormat(int(tiles["bits"]), int(tiles["q"]), zero=str(tiles["zero"]))
    levels = adalog_decode_int(tiles["a_words"], fmt)
    assert np.array_equal(tiles["acc"], np.einsum("nik,nkd->nid", levels, tiles["v_mult"]))
    assert tiles["a_words"].shape == (3, 17, 17) and tiles["v_mult"].shape == (3, 17, 12)
    logact = pytest.importorskip("logmac.cosim.logact_vectors")
    paths = save_attention_vectors(tiles, tmp_path)
    assert len(paths) == 3
    for path in paths:
        logact.golden(logact.load_logact_vectors(path))  # raises if the file disagrees with logmac.sim


def test_capture_needs_adalog_softmax_codes(quantized):
    vit, images = quantized("uniform", "uniform")
    with pytest.raises(FormatError, match="AdaLog post-Softmax"):
        capture_attention_tiles(vit, images)
