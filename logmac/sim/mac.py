"""The golden model of the log MAC and of requantization: plain int64 arithmetic, obviously right.

Everything the RTL computes is defined here (via ``logmac.format`` for the format and the accumulator
contract); the cocotb scoreboard and the fast emulator paths are checked against these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logmac.format import (
    DecodeTable,
    FormatError,
    LogFormat,
    OverflowMode,
    UniformFormat,
    apply_accumulator,
    split_words,
)


@dataclass
class MacResult:
    """Accumulators as the hardware register holds them, and where the exact sum overflowed."""

    acc: np.ndarray
    overflow: np.ndarray


def log_matmul_reference(
    x_int: np.ndarray,
    words: np.ndarray,
    table: DecodeTable,
    fmt: LogFormat,
    acc_bits: int,
    overflow: OverflowMode = "saturate",
) -> MacResult:
    """acc[n, c] = sum_k x[n, k] * w[c, k], each product formed by shift, half-step add and sign.

    ``x_int`` is (N, K) integer activations, ``words`` (C, K) code words.  Products are built the way
    the datapath builds them, (x << u) + h * (x << (u - 1)), negated for the sign bit and gated for
    the zero code, then summed in int64 and fitted to ``acc_bits`` by the shared overflow contract.
    """
    x = np.asarray(x_int, dtype=np.int64)
    words = np.asarray(words)
    if x.ndim != 2 or words.ndim != 2 or x.shape[1] != words.shape[1]:
        raise FormatError(f"shape mismatch: activations {x.shape} vs codes {words.shape} (need (N, K) and (C, K))")
    if words.shape[0] != table.channels:
        raise FormatError(f"codes have {words.shape[0]} channels but the decode table has {table.channels}")
    sign, index, is_zero = split_words(words, fmt)
    ch = np.arange(words.shape[0])[:, None]
    u = table.u[ch, sign, index]  # (C, K)
    h = table.h[ch, sign, index]
    acc = np.zeros((x.shape[0], words.shape[0]), dtype=np.int64)
    for k in range(words.shape[1]):
        xk = x[:, k:k + 1]  # (N, 1)
        main = xk << u[None, :, k]
        half = np.where(h[None, :, k] == 1, xk << np.maximum(u[None, :, k] - 1, 0), 0)
        product = main + half
        product = np.where(sign[None, :, k] == 1, -product, product)
        acc += np.where(is_zero[None, :, k], 0, product)
    reg, flag = apply_accumulator(acc, acc_bits, overflow)
    return MacResult(reg, flag)


def uniform_matmul_reference(
    x_int: np.ndarray,
    codes: np.ndarray,
    fmt: UniformFormat,
    acc_bits: int,
    overflow: OverflowMode = "saturate",
    zero_point: np.ndarray | None = None,
) -> MacResult:
    """acc[n, c] = sum_k x[n, k] * (q[c, k] - zp[c]): the uniform baseline as plain int64 einsum."""
    x = np.asarray(x_int, dtype=np.int64)
    q = np.asarray(codes, dtype=np.int64)
    if x.ndim != 2 or q.ndim != 2 or x.shape[1] != q.shape[1]:
        raise FormatError(f"shape mismatch: activations {x.shape} vs codes {q.shape} (need (N, K) and (C, K))")
    if q.size and (q.min() < fmt.qmin or q.max() > fmt.qmax):
        raise FormatError(f"uniform codes outside [{fmt.qmin}, {fmt.qmax}]")
    if zero_point is not None:
        q = q - np.asarray(zero_point, dtype=np.int64).reshape(-1, 1)
    reg, flag = apply_accumulator(np.einsum("nk,ck->nc", x, q), acc_bits, overflow)
    return MacResult(reg, flag)
