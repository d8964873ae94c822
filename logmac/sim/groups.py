"""Layers with per-group exponent offsets on the integer datapath (``logmac/format/groups.py``).

The int64 reference forms each group's partial sum with the layer's own reference MAC (shift-and-add for log
codes), shifts it left by ``e[c, g] - e_min[c]`` and adds the groups, then fits the register: what the
datapath does.  The fast path multiplies by the shifted multipliers instead (the same integers, by
distributivity), so ``IntWeights`` and the exact BLAS GEMM run such a layer unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from logmac.format import DecodeTable, LogFormat, OverflowMode, UniformFormat, apply_accumulator, decode_int
from logmac.format.artifact import QuantizedLayer
from logmac.format.groups import group_exponents, shifted_integers
from logmac.sim.gemm import IntWeights
from logmac.sim.mac import MacResult, log_matmul_reference, uniform_matmul_reference

PARTIAL_BITS = 63  # a partial sum register that cannot overflow for any layer this emulator accepts


def group_int_weights(layer: QuantizedLayer, groups: int = 1, device: torch.device | str | None = None) -> IntWeights:
    """The layer's multipliers with every group's shift applied, split into ``groups`` conv groups."""
    exps, size = group_exponents(layer.extras, layer.attrs)
    C = layer.weight_shape[0]
    if isinstance(layer.fmt, LogFormat):
        layer.table.validate(layer.fmt)
        w = decode_int(layer.codes, layer.table, layer.fmt).reshape(C, -1)
    else:
        w = layer.codes.reshape(C, -1).astype(np.int64)
        if not layer.fmt.symmetric:
            w = w - np.asarray(layer.zero_point, dtype=np.int64)[:, None]
    shifted = shifted_integers(w, exps, size)[0]
    return IntWeights(torch.as_tensor(shifted.reshape(groups, C // groups, -1), device=device))


def group_matmul_reference(x_int: np.ndarray, codes: np.ndarray, fmt: LogFormat | UniformFormat, acc_bits: int,
                           exps: np.ndarray, group_size: int, *, table: DecodeTable | None = None,
                           weight_zero_point: np.ndarray | None = None,
                           overflow: OverflowMode = "saturate") -> MacResult:
    """``acc[n, c] = sum_g (sum_{k in g} x[n, k] * W[c, k]) << (e[c, g] - e_min[c])`` for ``x`` (N, K) against
    ``codes`` (C, K) with group exponents ``exps`` (C, groups): each group's partial sum by the reference MAC
    of its format (shift-and-add for log codes), shifted, summed, then fitted to the register."""
    exps = np.asarray(exps, dtype=np.int64)
    codes = np.asarray(codes)
    emin = exps.min(axis=1) if exps.size else np.zeros(exps.shape[0], dtype=np.int64)
    x = np.asarray(x_int, dtype=np.int64)
    acc = np.zeros((x.shape[0], codes.shape[0]), dtype=np.int64)
    for g in range(exps.shape[1]):
        cols = slice(g * group_size, min((g + 1) * group_size, codes.shape[1]))
        if isinstance(fmt, LogFormat):
            part = log_matmul_reference(x[:, cols], codes[:, cols], table, fmt, PARTIAL_BITS)
        else:
            part = uniform_matmul_reference(x[:, cols], codes[:, cols], fmt, PARTIAL_BITS, zero_point=weight_zero_point)
        acc += part.acc << (exps[:, g] - emin)[None, :]
    reg, flag = apply_accumulator(acc, acc_bits, overflow)
    return MacResult(reg, flag)


def group_mac_reference(x_int: np.ndarray, layer: QuantizedLayer, rows: slice, acc_bits: int,
                        overflow: OverflowMode = "saturate") -> MacResult:
    """:func:`group_matmul_reference` of an artifact layer's channels ``rows``."""
    exps, size = group_exponents(layer.extras, layer.attrs)
    codes = layer.codes.reshape(layer.weight_shape[0], -1)[rows]
    table = zp = None
    if isinstance(layer.fmt, LogFormat):
        t = layer.table
        table = DecodeTable(t.u[rows], t.h[rows], t.scale[rows])
    elif not layer.fmt.symmetric:
        zp = layer.zero_point[rows]
    return group_matmul_reference(x_int, codes, layer.fmt, acc_bits, exps[rows], size, table=table,
                                  weight_zero_point=zp, overflow=overflow)
