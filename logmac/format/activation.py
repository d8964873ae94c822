"""Uniform activation codes: the integers the MAC sees, and the range an a-bit input port carries."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from logmac.format.errors import FormatError


def activation_range(act_bits: int, act_signed: bool) -> tuple[int, int]:
    """Smallest and largest code of an ``act_bits`` input port: two's complement, or unsigned from 0."""
    if not 1 <= act_bits <= 32:
        raise FormatError(f"activation bits must be 1..32, got {act_bits}")
    return (-(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1) if act_signed else (0, (1 << act_bits) - 1)


def activation_absmax(act_bits: int, act_signed: bool) -> int:
    """Largest |x| of an a-bit activation: 2**(a-1) signed, 2**a - 1 unsigned."""
    lo, hi = activation_range(act_bits, act_signed)
    return max(-lo, hi)


def check_activations(x: np.ndarray, act_bits: int, act_signed: bool) -> np.ndarray:
    """Activations as int64, rejecting any value an ``act_bits`` input port could not carry."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise FormatError(f"activations must be integers, got dtype {x.dtype}")
    lo, hi = activation_range(act_bits, act_signed)
    if x.size and (x.min() < lo or x.max() > hi):
        raise FormatError(
            f"activations span [{x.min()}, {x.max()}], outside the {act_bits}-bit "
            f"{'signed' if act_signed else 'unsigned'} range [{lo}, {hi}]"
        )
    return x.astype(np.int64)


def activation_codes(x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | float, qmin: float,
                     qmax: float, rounding: Callable[[torch.Tensor], torch.Tensor] = torch.round) -> torch.Tensor:
    """``clamp(round(x / s) + zp, qmin, qmax)`` in ``x``'s float dtype: the one definition of an activation code.

    ``rounding`` is ``torch.round`` (half to even) for inference; calibration passes a straight-through
    version so gradients flow.  Callers cast ``x`` to the dtype the datapath's reference uses first.
    """
    return torch.clamp(rounding(x / scale) + zero_point, qmin, qmax)
