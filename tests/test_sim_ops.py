"""The fast emulator path equals the int64 reference bit for bit: matmul, conv, requantize, pooling, add."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from test_sim_support import activations, log_formats, make_table, random_words

from logmac import sim
from logmac.format import DecodeTable, FormatError, LogFormat, UniformFormat, accumulator_bits, decode_int
from logmac.sim.gemm import IntWeights, exact_matmul, gemm_plan

SETTINGS = settings(max_examples=150, deadline=None)


def python_requantize(acc, m, s, zp, lo, hi, bias=None):
    """The requantization formula element by element on Python integers (channels on the last axis)."""
    acc = np.asarray(acc, dtype=np.int64)
    bias = np.zeros(acc.shape[-1], dtype=np.int64) if bias is None else np.asarray(bias)
    out = np.empty(acc.shape, dtype=np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        total = (int(acc[idx]) + int(bias[c])) * int(m[c]) + ((1 << (int(s[c]) - 1)) if s[c] else 0)
        out[idx] = min(max((total >> int(s[c])) + zp, lo), hi)
    return out


def acc_bits_near(need: int, data: st.DataObject) -> int:
    """An accumulator width from a few bits too narrow (forced overflow) to one bit spare."""
    return data.draw(st.integers(max(2, need - 8), min(63, need + 1)))


@SETTINGS
@given(fmt=log_formats(), n=st.integers(1, 5), c=st.integers(1, 6), k=st.integers(1, 48), a_bits=st.integers(1, 16),
       signed=st.booleans(), extreme=st.booleans(), mode=st.sampled_from(["saturate", "wrap"]),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_log_matmul_matches_reference(fmt, n, c, k, a_bits, signed, extreme, mode, seed, data):
    rng = np.random.default_rng(seed)
    table = make_table(fmt, c, rng)
    words = random_words(fmt, (c, k), rng)
    x = activations(rng, (n, k), a_bits, signed, extreme)
    need = accumulator_bits(k, a_bits, signed, table.max_multiplier())
    acc_bits = acc_bits_near(need, data)
    ref = sim.log_matmul_reference(x, words, table, fmt, acc_bits, mode)
    fast = sim.log_matmul(x, words, table, fmt, acc_bits, mode, act_bits=a_bits, act_signed=signed)
    np.testing.assert_array_equal(fast.acc, ref.acc)
    np.testing.assert_array_equal(fast.overflow, ref.overflow)
    if acc_bits >= need:
        assert not ref.overflow.any()


@SETTINGS
@given(bits=st.integers(2, 8), symmetric=st.booleans(), n=st.integers(1, 5), c=st.integers(1, 6), k=st.integers(1, 48),
       a_bits=st.integers(1, 16), extreme=st.booleans(), mode=st.sampled_from(["saturate", "wrap"]),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_uniform_matmul_matches_reference(bits, symmetric, n, c, k, a_bits, extreme, mode, seed, data):
    rng = np.random.default_rng(seed)
    fmt = UniformFormat(bits, symmetric)
    q = rng.integers(fmt.qmin, fmt.qmax + 1, size=(c, k))
    zp = None if symmetric else rng.integers(0, fmt.qmax + 1, size=c)
    x = activations(rng, (n, k), a_bits, False, extreme)
    acc_bits = acc_bits_near(accumulator_bits(k, a_bits, False, 2 * fmt.max_multiplier), data)
    ref = sim.uniform_matmul_reference(x, q, fmt, acc_bits, mode, zp)
    fast = sim.uniform_matmul(x, q, fmt, acc_bits, mode, zero_point=zp)
    np.testing.assert_array_equal(fast.acc, ref.acc)
    np.testing.assert_array_equal(fast.overflow, ref.overflow)


@pytest.mark.parametrize(("x_max", "m_max", "k", "path"), [
    (255, 32, 64, "float32"),            # one float32 GEMM
    (255, 128, 1500, "float32"),         # float32 in K chunks summed in float64
    (32767, 2**16, 600, "float64"),      # too many float32 chunks
    (65535, 2**31, 4096, "int64"),       # beyond 2**53: int64
])
def test_every_gemm_path_is_exact(x_max, m_max, k, path):
    rng = np.random.default_rng(k)
    mult = rng.integers(-m_max, m_max + 1, size=(3, k))
    mult[:, 0] = m_max  # the bound is reached
    x = rng.integers(0, x_max + 1, size=(k, 7))
    x[0] = x_max
    w = IntWeights(torch.as_tensor(mult))
    assert gemm_plan(w, x_max, torch.device("cpu"))[0] == path
    got = exact_matmul(w, torch.as_tensor(x.T).reshape(1, 1, 7, k))[0, 0].to(torch.int64).numpy().T
    want = np.array([[sum(int(a) * int(b) for a, b in zip(row, col, strict=True)) for col in x.T] for row in mult])
    np.testing.assert_array_equal(got, want)


def test_one_float32_gemm_when_the_row_bound_holds():
    """Big multipliers in different columns per row: the column bound needs chunks, the row bound (tighter)
    allows one float32 GEMM, and its sums still equal exact int64 ones at the bound."""
    k, x_max = 64, 255
    big = (2**24 - 1) // x_max - (k - 1)  # row sum of |M| = big + (k - 1), times x_max just below 2**24
    mult = np.ones((k, k), dtype=np.int64)
    np.fill_diagonal(mult, big)
    mult[1::2] *= -1
    w = IntWeights(torch.as_tensor(mult))
    assert float(w.col_absmax.sum()) * x_max >= 2**24
    assert gemm_plan(w, x_max, torch.device("cpu")) == ("float32", [(0, k)])
    x = np.full((3, k), x_max)
    x[1, ::2] = 0
    got = exact_matmul(w, torch.as_tensor(x).reshape(1, 1, 3, k))[0, 0]
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.to(torch.int64).numpy(), x @ mult.T)
    assert int(np.abs(x @ mult.T).max()) > 2**24 - 2 * x_max


def conv_reference(x, words, table, fmt, groups, stride, padding, pad_value, acc_bits, mode):
    """Naive loop conv: every output pixel is one call of the int64 reference MAC on its patch."""
    N, Cin, H, W = x.shape
    Cout, Cg, kh, kw = words.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=pad_value)
    Ho, Wo = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    out = np.zeros((N, Cout, Ho, Wo), dtype=np.int64)
    flags = np.zeros_like(out, dtype=bool)
    per = Cout // groups
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        sub = DecodeTable(table.u[sl], table.h[sl], table.scale[sl])
        for i in range(Ho):
            for j in range(Wo):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * stride:i * stride + kh, j * stride:j * stride + kw].reshape(N, -1)
                res = sim.log_matmul_reference(patch, words[sl].reshape(per, -1), sub, fmt, acc_bits, mode)
                out[:, sl, i, j], flags[:, sl, i, j] = res.acc, res.overflow
    return out, flags


@settings(max_examples=60, deadline=None)
@given(fmt=log_formats(), groups=st.sampled_from([1, 2, "depthwise"]), cin_per=st.integers(1, 3), cout_per=st.integers(1, 3),
       ksize=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), hw=st.integers(3, 7),
       seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(["saturate", "wrap"]), data=st.data())
def test_conv2d_matches_loop_reference(fmt, groups, cin_per, cout_per, ksize, stride, padding, hw, seed, mode, data):
    rng = np.random.default_rng(seed)
    if groups == "depthwise":
        groups, cin_per = 3, 1
    cin, cout = groups * cin_per, groups * cout_per
    table = make_table(fmt, cout, rng)
    words = random_words(fmt, (cout, cin_per, ksize, ksize), rng)
    x = activations(rng, (2, cin, hw, hw), 8, False, data.draw(st.booleans()))
    zp = int(rng.integers(0, 256))
    acc_bits = acc_bits_near(accumulator_bits(cin_per * ksize * ksize, 8, False, table.max_multiplier()), data)
    ref, ref_flag = conv_reference(x, words, table, fmt, groups, stride, padding, zp, acc_bits, mode)
    w = IntWeights.from_log(words, table, fmt, groups=groups)
    got = sim.conv2d(x, w, ksize, acc_bits, mode, stride=stride, padding=padding, pad_value=zp, act_bits=8)
    np.testing.assert_array_equal(got.acc, ref)
    np.testing.assert_array_equal(got.overflow, ref_flag)


@settings(max_examples=60, deadline=None)
@given(cin=st.integers(1, 12), cout=st.integers(1, 4), ksize=st.integers(1, 3), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), hw=st.integers(3, 9), a_bits=st.sampled_from([8, 12, 16]),
       m_bits=st.sampled_from([4, 11, 12, 20, 31]), seed=st.integers(0, 2**32 - 1))
@example(cin=8, cout=3, ksize=3, stride=1, padding=1, dilation=1, hw=9, a_bits=8, m_bits=11, seed=1)  # taps, 3 chunks
@example(cin=8, cout=3, ksize=3, stride=2, padding=1, dilation=1, hw=9, a_bits=8, m_bits=11, seed=1)  # im2col, 3 chunks
@example(cin=8, cout=3, ksize=3, stride=1, padding=1, dilation=1, hw=9, a_bits=16, m_bits=31, seed=1)  # int64
def test_channels_last_conv_paths_are_exact(cin, cout, ksize, stride, padding, dilation, hw, a_bits, m_bits, seed):
    """Per-tap GEMMs and channels-last im2col, in one or several float32 tap chunks, float64 or the int64
    fallback (wide activations and multipliers push the bound across each limit), equal exact int64 sums."""
    rng = np.random.default_rng(seed)
    mult = rng.integers(-(2**m_bits), 2**m_bits + 1, size=(cout, cin, ksize, ksize))
    mult[0] = 2**m_bits  # the bound is reached
    x = rng.integers(0, 2**a_bits, size=(2, cin, hw, hw))
    x[0] = 2**a_bits - 1
    zp = int(rng.integers(0, 2**a_bits))
    span = dilation * (ksize - 1) + 1
    assume(hw + 2 * padding >= span)
    w = IntWeights(torch.as_tensor(mult.reshape(cout, -1)))
    x_absmax = max(int(x.max()), zp)
    got = sim.ops.conv_exact(torch.as_tensor(x), w, ksize, x_absmax, stride=stride, padding=padding, dilation=dilation,
                             pad_value=zp).to(torch.int64).numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=zp).astype(object)
    Ho = (xp.shape[2] - span) // stride + 1
    want = np.zeros((2, cout, Ho, Ho), dtype=object)
    for i in range(ksize):
        for j in range(ksize):
            patch = xp[:, :, i * dilation:i * dilation + stride * (Ho - 1) + 1:stride,
                       j * dilation:j * dilation + stride * (Ho - 1) + 1:stride]
            want += np.einsum("nchw,oc->nohw", patch, mult[:, :, i, j].astype(object))
    np.testing.assert_array_equal(got, want.astype(np.int64))


@SETTINGS
@given(c=st.integers(1, 6), acc_bits=st.integers(1, 40), m_bits=st.integers(0, 31), s_max=st.integers(0, 62),
       zp=st.integers(-128, 255), seed=st.integers(0, 2**32 - 1))
def test_requant_affine_equals_int64_requantization(c, acc_bits, m_bits, s_max, zp, seed):
    """The float64 multiply-add requantization equals the reference wherever it claims to be exact."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 2**m_bits + 1, size=c)
    s = rng.integers(0, s_max + 1, size=c)
    bias = rng.integers(-(2**acc_bits), 2**acc_bits, size=c)
    acc = rng.integers(-(2**acc_bits), 2**acc_bits, size=(50, c))
    acc[0] = 2**acc_bits - 1  # the bound is reached
    acc[1] = -(2**acc_bits)
    acc[2] = (-bias * m + (np.ldexp(1.0, s) / 2).astype(np.int64)) // np.maximum(m, 1)  # near rounding ties
    acc = np.clip(acc, -(2**acc_bits), 2**acc_bits)
    bound = 2.0**acc_bits + np.abs(bias)
    affine = sim.ops.requant_affine(m, s, zp, bias, bound)
    if m_bits + acc_bits + 1 < 50 and s_max < 40:
        assert affine is not None
    if affine is None:
        return
    lo, hi = sorted(rng.integers(-300, 300, size=2).tolist())
    got = torch.addcmul(affine[1], torch.as_tensor(acc, dtype=torch.float32 if acc_bits < 24 else torch.float64),
                        affine[0]).floor_().clamp_(lo, hi)
    want = python_requantize(acc, m, s, zp, lo, hi, bias)
    np.testing.assert_array_equal(got.to(torch.int64).numpy(), want)


@SETTINGS
@given(shape=st.sampled_from([(7,), (3, 5), (2, 4, 3, 3)]), acc_mag=st.integers(1, 40), m_bits=st.integers(0, 32),
       s_max=st.integers(0, 62), zp=st.integers(-128, 255), seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
def test_requantize_matches_reference(shape, acc_mag, m_bits, s_max, zp, seed, with_bias):
    rng = np.random.default_rng(seed)
    axis = 1 if len(shape) == 4 else -1
    c = shape[axis]
    acc = rng.integers(-(2**acc_mag), 2**acc_mag, size=shape)
    m = rng.integers(0, 2**m_bits + 1, size=c)
    s = rng.integers(0, s_max + 1, size=c)
    bias = rng.integers(-(2**acc_mag), 2**acc_mag, size=c) if with_bias else None
    lo, hi = sorted(rng.integers(-300, 300, size=2).tolist())
    want = python_requantize(np.moveaxis(acc, axis, -1), m, s, zp, lo, hi, bias)
    got = sim.requantize(acc, m, s, zp, lo, hi, bias, channel_axis=axis)
    np.testing.assert_array_equal(np.moveaxis(got, axis, -1), want)
    got_t = sim.requantize(torch.as_tensor(acc), m, s, zp, lo, hi, bias, channel_axis=axis)
    np.testing.assert_array_equal(got_t.numpy(), got)


def test_requantize_rounds_half_up():
    # 5/2 -> 3, -5/2 -> -2, 3/2 -> 2, -3/2 -> -1 (round half toward +inf), then clamp
    acc = np.array([5, -5, 3, -3, 1000])
    np.testing.assert_array_equal(sim.requantize(acc, np.ones(5, int), np.ones(5, int), 0, -128, 127),
                                  [3, -2, 2, -1, 127])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), ma=st.integers(0, 2**20), mb=st.integers(0, 2**20), shift=st.integers(0, 30),
       za=st.integers(0, 255), zb=st.integers(0, 255), zp=st.integers(-128, 127))
def test_residual_add_is_exact_then_rounds_once(seed, ma, mb, shift, za, zb, zp):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 256, size=(2, 3, 4, 4))
    got = sim.add(a, b, ma, mb, shift, a_zero_point=za, b_zero_point=zb, zero_point=zp, lo=-128, hi=127)
    half = (1 << shift) >> 1
    want = [min(127, max(-128, (((int(p) - za) * ma + (int(q) - zb) * mb + half) >> shift) + zp))
            for p, q in zip(a.ravel(), b.ravel(), strict=True)]
    np.testing.assert_array_equal(got.ravel(), want)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3), hw=st.integers(3, 8), zp=st.integers(0, 255))
def test_pooling(seed, k, hw, zp):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(2, 3, hw, hw))
    n = hw // k
    blocks = x[:, :, :n * k, :n * k].reshape(2, 3, n, k, n, k)
    np.testing.assert_array_equal(sim.max_pool2d(x, k), blocks.max(axis=(3, 5)))
    np.testing.assert_array_equal(sim.sum_pool2d(x, k, zero_point=zp), (blocks - zp).sum(axis=(3, 5)))
    np.testing.assert_array_equal(sim.sum_pool2d(x, None, zero_point=zp), (x - zp).sum(axis=(2, 3)))
    np.testing.assert_array_equal(sim.clamp(x, zp, 200), np.clip(x, zp, 200))


def test_max_pool_padding_never_wins():
    x = -np.ones((1, 1, 2, 2), dtype=np.int64) * 5
    np.testing.assert_array_equal(sim.max_pool2d(x, 3, 1, padding=1), -5 * np.ones((1, 1, 2, 2)))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def layer():
    fmt = LogFormat(4)
    table = make_table(fmt, 3, np.random.default_rng(0))
    return fmt, table, random_words(fmt, (3, 5), np.random.default_rng(1))


def test_forced_overflow_is_flagged_and_matches(layer):
    fmt, table, words = layer
    x = np.full((2, 5), 255)
    words = words.copy()
    words[:] = 7  # largest positive level everywhere
    exact = x @ decode_int(words, table, fmt).T
    for mode in ("saturate", "wrap"):
        res = sim.log_matmul(x, words, table, fmt, acc_bits=8, overflow=mode)
        assert res.overflow.all()
        ref = sim.log_matmul_reference(x, words, table, fmt, 8, mode)
        np.testing.assert_array_equal(res.acc, ref.acc)
    assert (sim.log_matmul(x, words, table, fmt, 8, "saturate").acc == 127).all()
    assert not sim.log_matmul(x, words, table, fmt, 40).overflow.any()
    assert exact.max() > 127


def test_bad_input_is_a_clear_error(layer):
    fmt, table, words = layer
    x = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(FormatError, match="does not fit"):
        sim.log_matmul(x, words + 16, table, fmt, 24)
    with pytest.raises(FormatError, match="shape mismatch"):
        sim.log_matmul(np.zeros((2, 4), dtype=np.int64), words, table, fmt, 24)
    with pytest.raises(FormatError, match="integers"):
        sim.log_matmul(x.astype(np.float32), words, table, fmt, 24)
    with pytest.raises(FormatError, match="outside the 8-bit"):
        sim.log_matmul(x + 256, words, table, fmt, 24, act_bits=8)
    with pytest.raises(FormatError, match="overflow mode"):
        sim.log_matmul(x, words, table, fmt, 24, "clip")
    with pytest.raises(FormatError, match="accumulator width"):
        sim.log_matmul(x, words, table, fmt, 64)
    with pytest.raises(FormatError, match="outside"):
        sim.uniform_matmul(x, np.full((3, 5), 8), UniformFormat(4), 24)
    with pytest.raises(FormatError, match="groups"):
        IntWeights.from_log(words, table, fmt, groups=2)


@settings(max_examples=80, deadline=None)
@given(cin_per=st.integers(1, 12), cout_per=st.integers(1, 4), groups=st.integers(1, 3), ksize=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 2), dilation=st.integers(1, 2), hw=st.integers(3, 9),
       n=st.integers(1, 17), a_bits=st.integers(1, 8), m_bits=st.integers(0, 16), at_bound=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@example(cin_per=16, cout_per=4, groups=1, ksize=3, stride=1, padding=1, dilation=1, hw=6, n=2, a_bits=8, m_bits=16,
         at_bound=True, seed=27)  # zp 0: sums within 2**16 of 2**24
def test_direct_conv_of_centred_codes_is_exact(cin_per, cout_per, groups, ksize, stride, padding, dilation, hw, n,
                                               a_bits, m_bits, at_bound, seed):
    """One F.conv2d of ``q - zp`` with ``bias + zp * sum M`` folded in equals the zero-point-padded exact sums plus
    the bias wherever the float32 bound holds; ``at_bound`` scales the multipliers so the bound is nearly reached."""
    rng = np.random.default_rng(seed)
    span = dilation * (ksize - 1) + 1
    assume(hw + 2 * padding >= span)
    cin, cout, k_per = groups * cin_per, groups * cout_per, cin_per * ksize * ksize
    zp = int(rng.integers(0, 2**a_bits))
    xc_max = max(zp, 2**a_bits - 1 - zp, 1)
    m_max = max(1, (2**24 - 1 - 2**10) // ((xc_max + zp) * k_per)) if at_bound else 2**m_bits  # zp * sum M joins the bias
    mult = rng.integers(-m_max, m_max + 1, size=(cout, k_per))
    mult[0] = m_max  # row 0 meets its bound where the centred codes are all at max|q - zp| of one sign
    bias = rng.integers(-(2**10), 2**10, size=cout)
    q = rng.integers(0, 2**a_bits, size=(n, cin, hw, hw))
    q[0] = 0 if zp > 2**a_bits - 1 - zp else 2**a_bits - 1
    w = IntWeights(torch.as_tensor(mult.reshape(groups, cout_per, k_per)))
    folded = bias + zp * w.row_sums().numpy()
    assume((xc_max * w.row_absmax() + np.abs(folded) < 2**24).all())
    xc = torch.as_tensor(q - zp, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    got = sim.ops.conv_centred(xc, w, (ksize, ksize), torch.as_tensor(folded, dtype=torch.float32),
                               stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation))
    qp = np.pad(q, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=zp).astype(object)
    Ho = (qp.shape[2] - span) // stride + 1
    m4 = mult.reshape(cout, cin_per, ksize, ksize).astype(object)
    want = np.zeros((n, cout, Ho, Ho), dtype=object) + bias.astype(object)[None, :, None, None]
    for g in range(groups):
        sl, cs = slice(g * cout_per, (g + 1) * cout_per), slice(g * cin_per, (g + 1) * cin_per)
        for i in range(ksize):
            for j in range(ksize):
                patch = qp[:, cs, i * dilation:i * dilation + stride * (Ho - 1) + 1:stride,
                           j * dilation:j * dilation + stride * (Ho - 1) + 1:stride]
                want[:, sl] += np.einsum("nchw,oc->nohw", patch, m4[sl, :, i, j])
    np.testing.assert_array_equal(got.to(torch.int64).numpy(), want.astype(np.int64))
    if (seed, at_bound, a_bits, cin_per, ksize, padding) == (27, True, 8, 16, 3, 1):
        assert int(want.max()) > 2**24 - 2**16  # the example is at the bound


@SETTINGS
@given(n=st.integers(1, 9), c=st.integers(1, 8), k=st.integers(1, 300), a_bits=st.integers(1, 8),
       m_bits=st.integers(0, 16), at_bound=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_direct_linear_of_centred_codes_is_exact(n, c, k, a_bits, m_bits, at_bound, seed):
    """One F.linear of ``q - zp`` with ``bias + zp * sum M`` as its bias equals the exact sums plus the bias where
    the float32 bound holds (``at_bound``: row 0 reaches it for the all-extreme input row)."""
    rng = np.random.default_rng(seed)
    zp = int(rng.integers(0, 2**a_bits))
    xc_max = max(zp, 2**a_bits - 1 - zp, 1)
    m_max = max(1, (2**24 - 1 - 2**10) // ((xc_max + zp) * k)) if at_bound else 2**m_bits
    mult = rng.integers(-m_max, m_max + 1, size=(c, k))
    mult[0] = m_max
    bias = rng.integers(-(2**10), 2**10, size=c)
    q = rng.integers(0, 2**a_bits, size=(n, k))
    q[0] = 0 if zp > 2**a_bits - 1 - zp else 2**a_bits - 1
    w = IntWeights(torch.as_tensor(mult))
    folded = bias + zp * w.row_sums().numpy()
    assume((xc_max * w.row_absmax() + np.abs(folded) < 2**24).all())
    got = sim.ops.linear_centred(torch.as_tensor(q - zp, dtype=torch.float32), w,
                                 torch.as_tensor(folded, dtype=torch.float32))
    want = q.astype(object) @ mult.T.astype(object) + bias.astype(object)
    np.testing.assert_array_equal(got.to(torch.int64).numpy(), want.astype(np.int64))


def test_direct_conv_check_refuses_a_rounding_backend(monkeypatch):
    """A conv2d that is off by one anywhere (as Winograd would be) makes the one-time check fail."""
    real = torch.nn.functional.conv2d
    monkeypatch.setattr(sim.ops.F, "conv2d", lambda *a, **kw: real(*a, **kw) * (1 + 2**-20))
    sim.ops.direct_conv_verified.cache_clear()
    try:
        assert not sim.ops.direct_conv_verified()
    finally:
        monkeypatch.undo()
        sim.ops.direct_conv_verified.cache_clear()
    assert sim.ops.direct_conv_verified()


@SETTINGS
@given(x=st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=20), scale=st.floats(1e-6, 10.0),
       a_bits=st.integers(1, 8), signed=st.booleans(), data=st.data())
def test_centred_codes_are_codes_less_the_zero_point(x, scale, a_bits, signed, data):
    from logmac.sim.layers import centred_codes, quantize_input

    qmin, qmax = (-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if signed else (0, 2**a_bits - 1)
    act = {"scale": scale, "zero_point": data.draw(st.integers(qmin, qmax)), "qmin": qmin, "qmax": qmax}
    xt = torch.tensor(x, dtype=torch.float32)
    got = centred_codes(xt, act, torch.empty_like(xt))
    np.testing.assert_array_equal(got.numpy(), (quantize_input(xt, act) - act["zero_point"]).numpy())
