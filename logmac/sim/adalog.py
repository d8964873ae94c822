"""Exact integer emulation of the AdaLog matmuls.

The AdaLog activation format (``format.AdaLogFormat``) decodes every stored word to an unsigned integer
level ``m << (top_shift - shift)``; the float value is ``level * scale * integer_unit``.  So an AdaLog
matmul is an ordinary integer MAC on those levels:

- attn@V: post-Softmax levels (B, H, T, T) times the uniform V multipliers ``v_code - zp_v`` (B, H, T, D);
- fc2: post-GELU levels (N, K) times fc2's weight multipliers, uniform (``q - zp``) or LogART log codes.
  With log weights the product is the weight's shift-and-add applied to the level: both shifts add and
  the activation mantissa is the small factor, exactly what :func:`logmac.sim.log_matmul` computes.

Both run on the emulator's exact GEMM (:func:`logmac.sim.gemm.exact_matmul`, proved exact per call) and the
accumulator contract of ``format.apply_accumulator``.  :func:`logmac.backends.adalog.emulate_vit` swaps these
integer matmuls into a quantized ViT.
"""

from __future__ import annotations

import numpy as np
import torch

from logmac.format import AdaLogFormat, FormatError, OverflowMode, accumulator_bits
from logmac.sim.gemm import IntWeights, exact_matmul
from logmac.sim.mac import MacResult
from logmac.sim.ops import fit_accumulator


def adalog_acc_bits(k: int, fmt: AdaLogFormat, max_multiplier: int) -> int:
    """Accumulator width that holds any sum of ``k`` AdaLog levels times multipliers up to ``max_multiplier``."""
    return accumulator_bits(k, fmt.level_bits, False, max_multiplier)


def attention_values(a_int: np.ndarray | torch.Tensor, v_mult: np.ndarray | torch.Tensor, acc_bits: int,
                     overflow: OverflowMode = "saturate") -> MacResult:
    """acc[b, h, i, d] = sum_k a[b, h, i, k] * v[b, h, k, d], exact, fitted to ``acc_bits``.

    ``a_int``: unsigned activation integers (AdaLog levels, or uniform codes) (B, H, T, T);
    ``v_mult``: signed V multipliers ``v_code - zp_v`` (B, H, T, D).  Every (b, h) pair is one group of
    one exact GEMM.  Returns numpy arrays.
    """
    a = torch.as_tensor(np.asarray(a_int) if not isinstance(a_int, torch.Tensor) else a_int)
    v = torch.as_tensor(np.asarray(v_mult) if not isinstance(v_mult, torch.Tensor) else v_mult)
    if a.dtype.is_floating_point or v.dtype.is_floating_point:
        raise FormatError("attention operands must be integers (AdaLog levels and V multipliers)")
    if a.ndim != 4 or v.ndim != 4 or a.shape[:2] != v.shape[:2] or a.shape[3] != v.shape[2]:
        raise FormatError(f"shape mismatch: A {tuple(a.shape)} vs V {tuple(v.shape)} (need (B, H, T, T) and (B, H, T, D))")
    if a.numel() and int(a.min()) < 0:
        raise FormatError("attention activations must be unsigned integers")
    B, H, T, K = a.shape
    groups = B * H
    weights = IntWeights(v.to(torch.int64).reshape(groups, K, -1).transpose(1, 2).contiguous())
    exact = exact_matmul(weights, a.to(torch.int64).reshape(1, groups, T, K))
    reg, flag = fit_accumulator(exact.to(torch.int64).reshape(B, H, T, -1), acc_bits, overflow)
    return MacResult(reg.numpy(), flag.numpy())
