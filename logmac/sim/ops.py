"""Per-operation API of the emulator: what the chip computes, one call per operation.

Every function takes integer activations as a numpy array or a torch tensor (any device) and returns
the same kind.  Matrix products and convolutions go through :func:`logmac.sim.gemm.exact_matmul`
(BLAS, exact); accumulators are fitted to the hardware register by ``format.apply_accumulator`` with an
overflow flag; requantization is the only rounding.  The int64 reference these are tested against is
:mod:`logmac.sim.mac`.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from logmac.format import (
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    UniformFormat,
    apply_accumulator,
    check_activations,
    check_requant,
)
from logmac.sim.gemm import IntWeights, exact_matmul, tap_plan
from logmac.sim.mac import MacResult

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer activations as an int64 tensor, rejecting float input (a float is not what the chip sees)."""
    t = torch.as_tensor(x, device=device)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise FormatError(f"activations must be integers, got dtype {t.dtype}")
    return t.to(torch.int64)


def _like(result: torch.Tensor, template: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return result if isinstance(template, torch.Tensor) else result.cpu().numpy()


def _check_range(x: torch.Tensor, act_bits: int | None, act_signed: bool) -> None:
    if act_bits is not None and x.numel():
        check_activations(np.array([int(x.min()), int(x.max())]), act_bits, act_signed)


def fit_accumulator(exact: torch.Tensor, acc_bits: int, overflow: OverflowMode) -> tuple[torch.Tensor, torch.Tensor]:
    """The register contract of ``format.apply_accumulator`` on a tensor (CPU: no copy)."""
    reg, flag = apply_accumulator(exact.cpu().numpy(), acc_bits, overflow)
    return torch.from_numpy(reg).to(exact.device), torch.from_numpy(flag).to(exact.device)


def int_matmul(x_int: Array, weights: IntWeights, acc_bits: int, overflow: OverflowMode = "saturate", *,
               act_bits: int | None = None, act_signed: bool = False) -> MacResult:
    """acc[..., c] = sum_k x[..., k] * M[c, k] for prepared integer weights (one group), fitted to ``acc_bits``."""
    x = _to_tensor(x_int, weights.mult.device)
    _check_range(x, act_bits, act_signed)
    if weights.groups != 1 or x.ndim < 1 or x.shape[-1] != weights.k:
        raise FormatError(f"shape mismatch: activations {tuple(x.shape)} vs weights (C, K) = "
                          f"({weights.out_channels}, {weights.k}) with {weights.groups} group(s)")
    exact = exact_matmul(weights, x.reshape(1, 1, -1, weights.k))[0, 0].reshape(*x.shape[:-1], weights.out_channels)
    reg, flag = fit_accumulator(exact.to(torch.int64), acc_bits, overflow)
    return MacResult(_like(reg, x_int), _like(flag, x_int))


def log_matmul(x_int: Array, codes: np.ndarray, table: DecodeTable, fmt: LogFormat, acc_bits: int,
               overflow: OverflowMode = "saturate", *, act_bits: int | None = None, act_signed: bool = False) -> MacResult:
    """The log MAC on a batch: ``x_int`` (N, K) integers, ``codes`` (C, K) words -> (N, C) accumulators.

    Same arguments and result as :func:`logmac.sim.mac.log_matmul_reference`, at BLAS speed.
    For repeated calls on one layer build :class:`IntWeights` once and use :func:`int_matmul`.
    """
    device = x_int.device if isinstance(x_int, torch.Tensor) else None
    codes = np.asarray(codes)
    if codes.ndim != 2 or np.ndim(x_int) != 2 or codes.shape[1] != np.shape(x_int)[1]:
        raise FormatError(f"shape mismatch: activations {tuple(np.shape(x_int))} vs codes {codes.shape} (need (N, K) and (C, K))")
    return int_matmul(x_int, IntWeights.from_log(codes, table, fmt, device=device), acc_bits, overflow,
                      act_bits=act_bits, act_signed=act_signed)


def uniform_matmul(x_int: Array, codes: np.ndarray, fmt: UniformFormat, acc_bits: int,
                   overflow: OverflowMode = "saturate", *, zero_point: np.ndarray | None = None,
                   act_bits: int | None = None, act_signed: bool = False) -> MacResult:
    """The uniform baseline on the same MAC: multipliers are ``codes - zero_point`` (a real multiplier)."""
    device = x_int.device if isinstance(x_int, torch.Tensor) else None
    codes = np.asarray(codes)
    if codes.ndim != 2 or np.ndim(x_int) != 2 or codes.shape[1] != np.shape(x_int)[1]:
        raise FormatError(f"shape mismatch: activations {tuple(np.shape(x_int))} vs codes {codes.shape} (need (N, K) and (C, K))")
    weights = IntWeights.from_uniform(codes, fmt, zero_point, device=device)
    return int_matmul(x_int, weights, acc_bits, overflow, act_bits=act_bits, act_signed=act_signed)


def linear(x_int: Array, weights: IntWeights, acc_bits: int, overflow: OverflowMode = "saturate", **kw) -> MacResult:
    """A fully connected layer, (..., K) -> (..., C) accumulators; bias joins at requantization."""
    return int_matmul(x_int, weights, acc_bits, overflow, **kw)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def im2col(x: torch.Tensor, kernel_size: int | tuple[int, int], *, stride: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1, pad_value: int = 0,
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patches of an (N, C, H, W) integer tensor as rows (N, H'*W', C*kh*kw) in ``dtype``, and (H', W').

    The row order (C, kh, kw) matches a flattened (C_out, C, kh, kw) weight.  Padding inserts ``pad_value``,
    the activation zero point, because that integer stands for a real 0.  Built from strided views and one
    copy (faster than ``F.unfold`` on a busy CPU).
    """
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    (dh, dw), (sh, sw) = _pair(dilation), _pair(stride)
    xf = x.to(dtype)
    if ph or pw:
        xf = F.pad(xf, (pw, pw, ph, ph), value=float(pad_value))
    N, C, H, W = xf.shape
    Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    sN, sC, sH, sW = xf.stride()
    view = xf.as_strided((N, Ho, Wo, C, kh, kw), (sN, sH * sh, sW * sw, sC, sH * dh, sW * dw))
    return view.reshape(N, Ho * Wo, C * kh * kw), (Ho, Wo)


def conv_exact(x: torch.Tensor, weights: IntWeights, kernel_size: int | tuple[int, int], x_absmax: int, *,
               stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
               dilation: int | tuple[int, int] = 1, pad_value: int = 0) -> torch.Tensor:
    """Exact convolution sums (N, C_out, H', W') of integer-valued ``x`` with ``|x|, |pad_value| <= x_absmax``.

    Ungrouped convolutions run on the zero-point-padded channels-last input (:func:`conv_padded`);
    grouped ones, and sums only int64 holds, run one GEMM over NCHW im2col rows per group.  The result holds
    exact integers in the dtype the bound check chose, in channels-last memory order.
    """
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    if x.ndim != 4 or x.shape[1] * kh * kw != weights.k * weights.groups:
        raise FormatError(f"shape mismatch: input {tuple(x.shape)} vs weights {tuple(weights.mult.shape)} "
                          f"with a {kh}x{kw} kernel (need (N, C_in, H, W), C_in = groups * K / (kh*kw))")
    Ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if weights.groups == 1 and Ho > 0 and Wo > 0:
        plan = tap_plan(weights, kh * kw, x_absmax, x.device)
        if plan[0] != "int64":
            return _conv_channels_last(x, weights, plan, (kh, kw), (sh, sw), (ph, pw), (dh, dw), pad_value)
    dtype = torch.float64 if x_absmax >= (1 << 24) else torch.float32
    rows, (Ho, Wo) = im2col(x, (kh, kw), stride=stride, padding=padding, dilation=dilation, pad_value=pad_value, dtype=dtype)
    N, G = x.shape[0], weights.groups
    rows = rows.reshape(1, 1, -1, weights.k) if G == 1 else rows.reshape(-1, G, weights.k).permute(1, 0, 2).unsqueeze(0)
    exact = exact_matmul(weights, rows, x_absmax)  # (1, G, N*L, C/G)
    if G > 1:
        exact = exact[0].permute(1, 0, 2)
    return exact.reshape(N, Ho, Wo, weights.out_channels).permute(0, 3, 1, 2)


def _padded_channels_last(x: torch.Tensor, padding: tuple[int, int], pad_value: int, dtype: torch.dtype) -> torch.Tensor:
    """``x`` (N, C, H, W) as a contiguous (N, H + 2 ph, W + 2 pw, C) tensor, padded with ``pad_value``
    (no copy when ``x`` is already channels-last in ``dtype`` and there is no padding)."""
    if not any(padding):
        return x.permute(0, 2, 3, 1).to(dtype).contiguous()
    xp, interior = padded_buffer(x.shape, padding, pad_value, dtype, x.device)
    interior.copy_(x.permute(0, 2, 3, 1))
    return xp


def padded_buffer(shape: tuple[int, ...], padding: tuple[int, int], pad_value: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A channels-last (N, H + 2 ph, W + 2 pw, C) buffer for an (N, C, H, W) input whose border holds
    ``pad_value``, and its (N, H, W, C) interior view, for the caller to write the input codes into."""
    (ph, pw), (N, C, H, W) = padding, shape
    xp = torch.empty((N, H + 2 * ph, W + 2 * pw, C), dtype=dtype, device=device)
    for border in (xp[:, :ph], xp[:, ph + H:], xp[:, ph:ph + H, :pw], xp[:, ph:ph + H, pw + W:]):
        border.fill_(pad_value)
    return xp, xp[:, ph:ph + H, pw:pw + W]


def _conv_channels_last(x: torch.Tensor, weights: IntWeights, plan: tuple[str, list[tuple[int, int]]],
                        kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                        dilation: tuple[int, int], pad_value: int) -> torch.Tensor:
    """Pad ``x`` into a channels-last buffer, then :func:`conv_padded`."""
    dtype = torch.float32 if plan[0] == "float32" else torch.float64
    return conv_padded(_padded_channels_last(x, padding, pad_value, dtype), weights, plan, kernel, stride, dilation)


def conv_padded(xp: torch.Tensor, weights: IntWeights, plan: tuple[str, list[tuple[int, int]]],
                kernel: tuple[int, int], stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
                ) -> torch.Tensor:
    """An ungrouped convolution of the padded channels-last input ``xp`` (N, Hp, Wp, C_in), summed in the
    tap-major order (kh, kw, C_in); the result is an (N, C_out, H', W') view of channels-last sums.

    ``plan`` (:func:`logmac.sim.gemm.tap_plan`) cuts the taps into chunks whose float32 bound holds; several
    chunks are added in float64, so every partial sum is exact.  Two ways to form the sums, picked by speed:

    - per tap (stride 1, at least 8 input channels, padding adding at most half the positions): the padded
      input is one row matrix (N*Hp*Wp, C_in) and output position ``p`` reads tap (i, j) from row
      ``p + i*dh*Wp + j*dw``, so each tap is one GEMM on a contiguous slice of the same buffer (no copy);
      sums are formed for every padded position and the valid (H', W') corner is returned;
    - otherwise channels-last im2col rows (N*H'*W', kh*kw*C_in) copied in contiguous runs of C_in, one GEMM.
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    path, chunks = plan
    dtype = torch.float32 if path == "float32" else torch.float64
    if path == "int64" or xp.dtype != dtype or not xp.is_contiguous():
        raise FormatError(f"conv_padded needs a contiguous {dtype} buffer and a float plan, got {xp.dtype}, {path}")
    N, Hp, Wp, C = xp.shape
    Ho, Wo = (Hp - dh * (kh - 1) - 1) // sh + 1, (Wp - dw * (kw - 1) - 1) // sw + 1
    taps, C_out = kh * kw, weights.out_channels
    w = weights.tap_major(taps, dtype, xp.device)  # (taps, C_in, C_out)
    chunks = chunks or [(0, taps)]
    acc_dtype = dtype if len(chunks) == 1 else torch.float64
    if (sh, sw) == (1, 1) and C >= 8 and Hp * Wp <= 1.5 * Ho * Wo:
        rows = xp.reshape(N * Hp * Wp, C)
        n_out = rows.shape[0] - (kh - 1) * dh * Wp - (kw - 1) * dw
        acc = torch.empty(rows.shape[0], C_out, dtype=acc_dtype, device=xp.device)  # rows past n_out: never read
        if len(chunks) > 1:
            acc[:n_out] = 0
        for first, last in chunks:
            part = acc[:n_out] if len(chunks) == 1 else torch.empty(n_out, C_out, dtype=dtype, device=xp.device)
            for t in range(first, last):
                offset = (t // kw) * dh * Wp + (t % kw) * dw
                if t == first:
                    torch.mm(rows[offset:offset + n_out], w[t], out=part)
                else:
                    part.addmm_(rows[offset:offset + n_out], w[t])
            if len(chunks) > 1:
                acc[:n_out] += part
        return acc.view(N, Hp, Wp, C_out)[:, :Ho, :Wo].permute(0, 3, 1, 2)
    sN, sH, sW, sC = xp.stride()
    rows = xp.as_strided((N, Ho, Wo, kh, kw, C), (sN, sH * sh, sW * sw, sH * dh, sW * dw, sC)).reshape(N * Ho * Wo, taps * C)
    w = w.reshape(taps * C, C_out)
    if len(chunks) == 1:
        acc = torch.mm(rows, w)
    else:
        acc = torch.zeros(rows.shape[0], C_out, dtype=acc_dtype, device=xp.device)
        for first, last in chunks:
            acc += torch.mm(rows[:, first * C:last * C], w[first * C:last * C])
    return acc.view(N, Ho, Wo, C_out).permute(0, 3, 1, 2)


def conv_centred(xc: torch.Tensor, weights: IntWeights, kernel: tuple[int, int], bias: torch.Tensor, *,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Exact ``acc + bias`` of a convolution as one float32 ``F.conv2d`` (oneDNN's direct convolution on the CPU).

    ``xc`` holds centred codes ``q - zp`` (float32; channels-last runs fastest), padded with 0.  Padding ``q``
    with ``zp`` adds ``zp * sum_k M[c, k]`` to every sum of the zero-padded ``xc``, so that term belongs in
    ``bias`` (float32 integers, per output channel) and the result equals :func:`conv_exact`'s sums plus
    the caller's integer bias, bit for bit, under two conditions the caller establishes:

    - the bound: ``max|xc| * sum_k |M[c, k]| + |bias[c]| < 2**24`` for every channel
      (:meth:`IntWeights.row_absmax`), so every partial sum, in any order and with the bias added first or
      last, is an integer float32 holds exactly;
    - the algorithm sums products: :func:`~logmac.sim.gemm.direct_conv_exact_ok` (CPU, strict float32) and
      :func:`direct_conv_verified`.  NNPACK, the one CPU backend that transforms (Winograd / FFT), is switched off.
    """
    w = weights.conv_kernel(kernel, torch.float32, xc.device)
    with torch.backends.nnpack.flags(enabled=False):
        return F.conv2d(xc, w, bias, stride=stride, padding=padding, dilation=dilation, groups=weights.groups)


def linear_centred(xc: torch.Tensor, weights: IntWeights, bias: torch.Tensor) -> torch.Tensor:
    """Exact ``acc + bias`` of a linear layer as one float32 ``F.linear`` (BLAS ``addmm``) of centred codes.

    As :func:`conv_centred`: ``xc = q - zp`` (float32), ``bias`` = the integer bias plus ``zp * sum_k M[c, k]``,
    exact when ``max|xc| * sum_k |M[c, k]| + |bias[c]| < 2**24`` and float32 GEMMs run at full precision
    (:func:`~logmac.sim.gemm.float32_exact_ok`): BLAS forms sums of the exact products (and the bias) in some
    order, and every such partial sum is an integer float32 holds.
    """
    return F.linear(xc, weights.matrix(torch.float32, xc.device), bias)


@functools.cache
def direct_conv_verified() -> bool:
    """Whether this torch build's CPU ``F.conv2d`` returns exact integer sums at the float32 bound.

    Which backend torch dispatches to is not an API promise, so :func:`conv_centred` is used only after it
    reproduced :func:`conv_exact` bit for bit on the shapes the emulator sends it (3x3 and 1x1 kernels,
    strides 1 and 2, 1 to 32 channels, grouped, single images and batches) with sums near 2**24.
    """
    rng = np.random.default_rng(0)
    for n, c_in, c_out, k, stride, groups in [(1, 1, 8, 3, 1, 1), (16, 16, 16, 3, 1, 1), (4, 32, 16, 3, 2, 1),
                                              (16, 16, 32, 1, 2, 1), (2, 8, 8, 3, 1, 8), (1, 16, 4, 1, 1, 1)]:
        k_per = c_in // groups * k * k
        m_max = max(1, (2**24 - 1) // (255 * k_per))
        mult = torch.as_tensor(rng.integers(-m_max, m_max + 1, size=(c_out, k_per)))
        mult[:, 0] = m_max  # the bound is approached
        w = IntWeights(mult.reshape(groups, c_out // groups, k_per))
        xc = torch.as_tensor(rng.choice([-255.0, 0.0, 255.0], size=(n, c_in, 9, 9)), dtype=torch.float32)
        bias = torch.zeros(c_out, dtype=torch.float32)
        pad = (k // 2, k // 2)
        got = conv_centred(xc.contiguous(memory_format=torch.channels_last), w, (k, k), bias, stride=(stride, stride),
                           padding=pad)
        want = conv_exact(xc.to(torch.int64), w, k, 255, stride=stride, padding=pad)
        if not torch.equal(got.to(torch.int64), want.to(torch.int64)):
            return False
    return True


def conv2d(x_int: Array, weights: IntWeights, kernel_size: int | tuple[int, int], acc_bits: int,
           overflow: OverflowMode = "saturate", *, stride: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1, pad_value: int = 0,
           act_bits: int | None = None, act_signed: bool = False) -> MacResult:
    """2-D convolution as im2col onto the exact matmul: (N, C_in, H, W) -> (N, C_out, H', W') accumulators.

    ``weights`` come from codes shaped (C_out, C_in/groups, kh, kw) and carry the group count (depthwise:
    groups = C_in).  Padding inserts ``pad_value`` (see :func:`im2col`).
    """
    x = _to_tensor(x_int, weights.mult.device)
    _check_range(x, act_bits, act_signed)
    x_absmax = max(int(x.abs().max()) if x.numel() else 0, abs(pad_value))
    exact = conv_exact(x, weights, kernel_size, x_absmax, stride=stride, padding=padding, dilation=dilation,
                       pad_value=pad_value)
    reg, flag = fit_accumulator(exact.to(torch.int64).contiguous(), acc_bits, overflow)
    return MacResult(_like(reg, x_int), _like(flag, x_int))


def requant_affine(multiplier: np.ndarray, shift: np.ndarray, zero_point: int, bias: np.ndarray, acc_bound: np.ndarray,
                   shape: tuple[int, ...] = (-1,), device: torch.device | str | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Requantization as one float64 multiply-add, ``clamp(floor(acc * a + b), lo, hi)``, or None when not exact.

    ``a = M * 2**-S`` and ``b = ((bias * M + 2**(S-1)) * 2**-S) + zp`` per channel (reshaped to ``shape``).
    With ``|acc| + |bias| <= acc_bound`` per channel, every intermediate is an integer below 2**53 times a
    power of two, so float64 holds it exactly and floor() is the arithmetic shift: the result equals the
    int64 requantization bit for bit, in one fused pass instead of six int64 ones.
    """
    m = np.asarray(multiplier, dtype=np.int64).reshape(-1)
    s = np.asarray(shift, dtype=np.int64).reshape(-1)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.int64).reshape(-1), m.shape)
    check_requant(m, s)
    numerator = np.asarray(acc_bound, dtype=np.float64) * m + np.ldexp(1.0, s) * (abs(zero_point) + 1)
    if not (numerator < 2**52).all():  # a factor-2 margin over 2**53 covers the float64 rounding of this bound
        return None
    step = np.ldexp(1.0, -s)
    a = m * step
    b = (bias * m + np.where(s > 0, np.ldexp(1.0, s - 1), 0.0)) * step + zero_point
    return (torch.as_tensor(a, dtype=torch.float64, device=device).reshape(shape),
            torch.as_tensor(b, dtype=torch.float64, device=device).reshape(shape))


def clamp(x_int: Array, lo: int, hi: int) -> Array:
    """ReLU (lo = zero point), ReLU6 (hi = the code of 6) and any bounded activation: a clamp on codes."""
    x = _to_tensor(x_int)
    return _like(torch.clamp(x, lo, hi), x_int)


def add(a_int: Array, b_int: Array, a_multiplier: int, b_multiplier: int, shift: int, *, a_zero_point: int = 0,
        b_zero_point: int = 0, zero_point: int = 0, lo: int, hi: int) -> Array:
    """Residual add of two quantized tensors on different grids, aligned by integer requantization.

    y = clamp((((a - za) * Ma + (b - zb) * Mb + 2**(S-1)) >> S) + zp, lo, hi): both inputs are scaled to
    the output grid with one shared shift, so the add itself is exact and the rounding happens once.
    """
    a, b = _to_tensor(a_int), _to_tensor(b_int)
    if a.shape != b.shape:
        raise FormatError(f"residual add needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a_multiplier, b_multiplier) < 0 or not 0 <= shift <= 62:
        raise FormatError("residual add needs multipliers >= 0 and a shift in 0..62")
    bound = (int((a - a_zero_point).abs().max()) * a_multiplier
             + int((b - b_zero_point).abs().max()) * b_multiplier) if a.numel() else 0
    if bound + (1 << shift) >= (1 << 62):
        raise FormatError(f"residual add multipliers {a_multiplier}, {b_multiplier} overflow int64 for these inputs")
    total = (a - a_zero_point) * a_multiplier + (b - b_zero_point) * b_multiplier
    y = ((total + ((1 << shift) >> 1)) >> shift) + zero_point
    return _like(torch.clamp(y, lo, hi), a_int)


def max_pool2d(x_int: Array, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0) -> Array:
    """Max pooling on codes: exact, because the map from codes to reals is increasing (padding never wins)."""
    x = _to_tensor(x_int)
    lowest = int(x.min()) - 1 if x.numel() else 0
    ph, pw = _pair(padding)
    xf = F.pad(x.to(torch.float64), (pw, pw, ph, ph), value=float(lowest)) if ph or pw else x.to(torch.float64)
    y = F.max_pool2d(xf, kernel_size, stride if stride is not None else kernel_size)
    return _like(y.to(torch.int64), x_int)


def sum_pool2d(x_int: Array, kernel_size: int | tuple[int, int] | None = None, stride: int | tuple[int, int] | None = None,
               zero_point: int = 0) -> Array:
    """Window sums of ``x - zero_point`` (int64): average pooling before its requantization.

    ``kernel_size=None`` pools the whole plane (global average pooling).  Divide-and-rescale is then one
    :func:`requantize` with M / 2**S = s_in / (s_out * window).
    """
    x = _to_tensor(x_int) - zero_point
    if x.ndim != 4:
        raise FormatError(f"pooling needs (N, C, H, W) input, got {tuple(x.shape)}")
    if kernel_size is None:
        return _like(x.sum(dim=(2, 3)), x_int)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    windows = x.unfold(2, kh, sh).unfold(3, kw, sw)
    return _like(windows.sum(dim=(-1, -2)), x_int)
