"""Per-group exponent offsets: a power of two per group of K inputs, applied as one shift of the partial sum.

A layer with group exponents stores, next to its codes, a small signed exponent ``e[c, g]`` for every output
channel ``c`` and every group ``g`` of ``group_size`` consecutive inputs along K (the flattened weight row, as
the MAC sees it).  The group's levels are the channel's levels times ``2**e[c, g]``; for the datapath that is
one left shift of the group's exact integer partial sum, never a multiplier.  To keep everything integer the
shift is ``e[c, g] - min_g e[c, g]`` and the common ``2**min_g e[c, g]`` is folded into the channel scale:

    acc[n, c] = sum_g (sum_{k in g} x[n, k] * W_int[c, k]) << (e[c, g] - e_min[c])
    weight    = scale[c] * 2**e_min[c] * (W_int[c, k] << (e[c, g(k)] - e_min[c]))  =  scale[c] * 2**e[c, g] * W_int

Padding rule: when ``group_size`` does not divide K the last group of each row is short (K mod group_size
inputs), which is what zero-padding K to a multiple of ``group_size`` would give.  Storage: ``group_bits``
per group, two's complement, so exponents lie in ``[-2**(group_bits-1), 2**(group_bits-1) - 1]``.

Artifact fields: extras ``group_exp`` (int8, (C, ceil(K / group_size))) and attrs ``group_size``,
``group_bits``; a layer has all three or none.  Works for log and uniform weight codes alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from logmac.format.errors import FormatError

GROUP_EXP = "group_exp"  # extras key
MAX_GROUP_BITS = 4


def group_count(k: int, group_size: int) -> int:
    """Groups per row: the last one is short when ``group_size`` does not divide ``k``."""
    return -(-k // group_size)


def exponent_range(group_bits: int) -> tuple[int, int]:
    """Smallest and largest exponent a ``group_bits``-bit two's-complement field holds."""
    return -(1 << (group_bits - 1)), (1 << (group_bits - 1)) - 1


def per_column(exps: np.ndarray, k: int, group_size: int) -> np.ndarray:
    """(C, K) exponent of every weight from the (C, groups) group exponents."""
    return np.repeat(np.asarray(exps, dtype=np.int64), group_size, axis=1)[:, :k]


def group_exponents(extras: dict[str, np.ndarray], attrs: dict[str, Any]) -> tuple[np.ndarray, int] | None:
    """``(exponents (C, groups) int64, group_size)`` of a layer, or None when it has no group exponents."""
    if GROUP_EXP not in extras:
        return None
    return np.asarray(extras[GROUP_EXP], dtype=np.int64), int(attrs["group_size"])


def check_group_exponents(name: str, shape: tuple[int, ...], extras: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Raise FormatError unless the layer's group exponents (if any) are complete, in range and shaped for K."""
    present = [GROUP_EXP in extras, "group_size" in attrs, "group_bits" in attrs]
    if not any(present):
        return
    if not all(present):
        raise FormatError(f"layer {name}: group exponents need extras {GROUP_EXP!r} and attrs 'group_size' and "
                          f"'group_bits' together, got {present}")
    bits = attrs["group_bits"]
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_GROUP_BITS:
        raise FormatError(f"layer {name}: group_bits must be an integer in 1..{MAX_GROUP_BITS}, got {bits!r}")
    check_exponent_table(extras[GROUP_EXP], attrs["group_size"], shape[0], int(np.prod(shape[1:])), bits,
                         f"layer {name}")


def check_exponent_table(exps: np.ndarray, group_size: Any, channels: int, k: int, bits: int, where: str) -> None:
    """Raise FormatError (prefixed ``where``) unless ``group_size`` is a positive integer and ``exps`` is
    (channels, ceil(k / group_size)) integers inside the ``bits``-bit two's-complement range."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise FormatError(f"{where}: group_size must be a positive integer, got {group_size!r}")
    exps = np.asarray(exps)
    want = (channels, group_count(k, int(group_size)))
    if not np.issubdtype(exps.dtype, np.integer) or exps.shape != want:
        raise FormatError(f"{where}: {GROUP_EXP} is {exps.dtype} {exps.shape}, expected integers {want} "
                          f"(K = {k} in groups of {group_size}, the last one short if needed)")
    lo, hi = exponent_range(bits)
    if exps.size and (exps.min() < lo or exps.max() > hi):
        raise FormatError(f"{where}: group exponents span [{exps.min()}, {exps.max()}], outside the "
                          f"{bits}-bit range [{lo}, {hi}]")


def column_shifts(exps: np.ndarray, k: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(e - e_min per column (C, K), e_min (C,))``: the left shift each weight's group applies, and the
    exponent folded into the channel scale."""
    exps = np.asarray(exps, dtype=np.int64)
    emin = exps.min(axis=1) if exps.size else np.zeros(exps.shape[0], dtype=np.int64)
    return per_column(exps - emin[:, None], k, group_size), emin


def shifted_integers(w_int: np.ndarray, exps: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W_int << (e - e_min), e_min)``: (C, K) int64 multipliers with every group's shift applied, and the
    (C,) exponent folded into the channel scale.  Shifting the multipliers is the same integer as shifting the
    group partial sums (distributivity), so the exact GEMM needs no second pass."""
    w = np.asarray(w_int, dtype=np.int64).reshape(w_int.shape[0], -1)
    shift, emin = column_shifts(exps, w.shape[1], group_size)
    return w << shift, emin


def group_factors(exps: np.ndarray, k: int, group_size: int) -> np.ndarray:
    """(C, K) float64 ``2**e`` of every weight (exact powers of two)."""
    return np.ldexp(1.0, per_column(exps, k, group_size))


def stored_group_bits(extras: dict[str, np.ndarray], attrs: dict[str, Any]) -> int:
    """Bits the group exponents take in storage (0 without them)."""
    return int(np.asarray(extras[GROUP_EXP]).size) * int(attrs["group_bits"]) if GROUP_EXP in extras else 0
