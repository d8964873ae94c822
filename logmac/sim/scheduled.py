"""The golden model of the exponent-scheduled engine: a compiled schedule run on integer activations in int64.

It computes what the RTL computes, beat by beat (Horner per tile for ``inplace``, shifted per-exponent tree
sums for ``bucketed``), and fits the sum with the same accumulator contract, so its results must equal
``logmac.sim.mac.log_matmul_reference`` (and ``requantize``) bit for bit.
"""

from __future__ import annotations

import numpy as np

from logmac.format import FormatError, OverflowMode, apply_accumulator
from logmac.format.requant import requantize
from logmac.format.schedule import Schedule
from logmac.sim.mac import MacResult


def beat_sums(sched: Schedule, x: np.ndarray) -> np.ndarray:
    """(N, beats) value each beat adds: the lane tree sum (in place) or the shifted tree sums (bucketed)."""
    L = sched.limits.lanes
    xt = np.pad(x, ((0, 0), (0, sched.tiles * L - sched.k))).reshape(x.shape[0], sched.tiles, L)
    mult = sched.lane_multipliers()
    lanes_x = xt[:, sched.beat_tiles(), :]  # (N, beats, L)
    if sched.limits.variant == "inplace":
        return np.einsum("nbl,bl->nb", lanes_x, mult)
    weight = mult << sched.exp
    if sched.limits.half == "split":  # a half-step lane also feeds the tree one exponent down
        weight = weight + np.where(sched.aux == 1, mult << np.maximum(sched.exp - 1, 0), 0)
    return np.einsum("nbl,bl->nb", lanes_x, weight)


def run_schedule(sched: Schedule, x_int: np.ndarray, acc_bits: int, overflow: OverflowMode = "saturate") -> MacResult:
    """acc[n, c] of every channel's beats, fitted to ``acc_bits``; ``x_int`` is (N, K) integer activations."""
    x = np.asarray(x_int)
    if x.ndim != 2 or x.shape[1] != sched.k or not np.issubdtype(x.dtype, np.integer):
        raise FormatError(f"activations must be integer (N, {sched.k}), got {x.dtype} {x.shape}")
    sums = beat_sums(sched, x.astype(np.int64))
    acc = np.zeros((x.shape[0], sched.channels), dtype=np.int64)
    for c in range(sched.channels):
        lo, hi = sched.offsets[c], sched.offsets[c + 1]
        if sched.limits.variant == "bucketed":
            acc[:, c] = sums[:, lo:hi].sum(axis=1)
            continue
        part = np.zeros(x.shape[0], dtype=np.int64)
        for b in range(lo, hi):
            part = (part + sums[:, b]) << sched.delta[b]
            if sched.tile_last[b]:
                acc[:, c] += part
                part[:] = 0
    reg, flag = apply_accumulator(acc, acc_bits, overflow)
    return MacResult(reg, flag)


def run_schedule_requant(sched: Schedule, x_int: np.ndarray, acc_bits: int, overflow: OverflowMode,
                         multiplier: np.ndarray, shift: np.ndarray, zero_point: int, lo: int, hi: int,
                         bias: np.ndarray | None = None) -> tuple[MacResult, np.ndarray]:
    """The accumulators and the requantized outputs ``y`` (``logmac.sim.mac.requantize``)."""
    res = run_schedule(sched, x_int, acc_bits, overflow)
    return res, requantize(res.acc, multiplier, shift, zero_point, lo, hi, bias=bias)
