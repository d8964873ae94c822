"""Layers with per-group exponent offsets on the integer datapath (``logmac/format/groups.py``).

The int64 reference forms each group's partial sum with the layer's own reference MAC (shift-and-add for log
codes), shifts it left by ``e[c, g] - e_min[c]`` and adds the groups, then fits the register: what the
datapath does.  The fast path multiplies by the shifted multipliers instead (the same integers, by
distributivity), so ``IntWeights`` and the exact BLAS GEMM run such a layer unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from logmac.format import DecodeTable, LogFormat, OverflowMode, apply_accumulator, decode_int
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


def group_mac_reference(x_int: np.ndarray, layer: QuantizedLayer, rows: slice, acc_bits: int,
                        overflow: OverflowMode = "saturate") -> MacResult:
    """``acc[n, c] = sum_g (sum_{k in g} x[n, k] * W[c, k]) << (e[c, g] - e_min[c])`` for channels ``rows``."""
    exps, size = group_exponents(layer.extras, layer.attrs)
    codes = layer.codes.reshape(layer.weight_shape[0], -1)[rows]
    exps = exps[rows]
    emin = exps.min(axis=1)
    x = np.asarray(x_int, dtype=np.int64)
    acc = np.zeros((x.shape[0], codes.shape[0]), dtype=np.int64)
    for g in range(exps.shape[1]):
        cols = slice(g * size, min((g + 1) * size, codes.shape[1]))
        if isinstance(layer.fmt, LogFormat):
            t = layer.table
            part = log_matmul_reference(x[:, cols], codes[:, cols], DecodeTable(t.u[rows], t.h[rows], t.scale[rows]),
                                        layer.fmt, PARTIAL_BITS)
        else:
            zp = None if layer.fmt.symmetric else layer.zero_point[rows]
            part = uniform_matmul_reference(x[:, cols], codes[:, cols], layer.fmt, PARTIAL_BITS, zero_point=zp)
        acc += part.acc << (exps[:, g] - emin)[None, :]
    reg, flag = apply_accumulator(acc, acc_bits, overflow)
    return MacResult(reg, flag)
