"""Exact integer GEMM on float BLAS: the fast path of the emulator.

Decoded weights are small signed integers and activations are integers, so every product and every
partial sum of an integer matrix product is an integer.  A float GEMM computes it *exactly* as long as
every value it ever holds is below the format's exact-integer limit (2**24 for float32, 2**53 for
float64), whatever order BLAS sums in: each partial sum of row ``c`` is bounded by
``max|x| * sum_k |M[c, k]|``.  :func:`exact_matmul` checks that bound per call and

1. splits K into chunks whose float32 bound holds and adds the chunk results in float64 (float32 speed);
2. uses float64 when too many chunks would be needed;
3. falls back to int64 arithmetic when even float64 would not be exact.

It never rounds; ``tests/test_sim_ops.py`` holds it equal to the int64 reference bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from logmac.format import DecodeTable, FormatError, LogFormat, UniformFormat, decode_int

EXACT_LIMIT = {torch.float32: 1 << 24, torch.float64: 1 << 53}
# More float32 chunks than this and one float64 GEMM is faster (measured on AVX2/AVX-512 MKL).
MAX_FLOAT32_CHUNKS = 4


@dataclass
class IntWeights:
    """A layer's signed integer multipliers, shaped (groups, C_per_group, K_per_group), ready for GEMM.

    Build it once per layer (:meth:`from_log`, :meth:`from_uniform`); it caches the float copies BLAS
    needs and the per-column bound used to prove each call exact.
    """

    mult: torch.Tensor  # stored in the narrowest signed dtype holding +-max|M| (int16 for 4-bit log codes, |M| <= 2**7)
    col_absmax: np.ndarray = field(init=False)
    max_row_absmax: float = field(init=False)
    _float: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mult.dtype.is_floating_point or self.mult.dtype.is_complex or self.mult.dtype == torch.bool:
            raise FormatError(f"integer weights must have an integer dtype, got {self.mult.dtype}")
        self.mult = _narrowest(self.mult)
        if self.mult.ndim == 2:
            self.mult = self.mult.unsqueeze(0)
        if self.mult.ndim != 3:
            raise FormatError(f"integer weights must be (C, K) or (G, C/G, K/G), got shape {tuple(self.mult.shape)}")
        # max over every output channel of |M[c, k]|: sum over a K-range bounds any row's partial sum.
        self.col_absmax = self.mult.abs().amax(dim=(0, 1)).to(torch.int64).cpu().numpy()
        # the largest sum_k |M[c, k]|: a tighter bound than sum_k col_absmax[k] when big weights sit in different columns
        self.max_row_absmax = float(self.row_absmax().max(initial=0.0))

    @classmethod
    def from_log(cls, codes: np.ndarray, table: DecodeTable, fmt: LogFormat, groups: int = 1,
                 device: torch.device | str | None = None) -> IntWeights:
        """Decode log code words (C, ...) into multipliers; the channel axis is split into ``groups``."""
        table.validate(fmt)
        mult = decode_int(np.asarray(codes), table, fmt)
        return cls(_grouped(mult, groups, device))

    @classmethod
    def from_uniform(cls, codes: np.ndarray, fmt: UniformFormat, zero_point: np.ndarray | None = None,
                     groups: int = 1, device: torch.device | str | None = None) -> IntWeights:
        """Uniform integers (C, ...) as multipliers ``q - zero_point[c]`` (zero point only when asymmetric)."""
        q = np.asarray(codes)
        if not np.issubdtype(q.dtype, np.integer):
            raise FormatError(f"uniform codes must be integers, got dtype {q.dtype}")
        if q.size and (q.min() < fmt.qmin or q.max() > fmt.qmax):
            raise FormatError(f"uniform codes span [{q.min()}, {q.max()}], outside [{fmt.qmin}, {fmt.qmax}] of {fmt.to_dict()}")
        q = q.astype(np.int64)
        if zero_point is not None:
            if fmt.symmetric:
                raise FormatError("a symmetric uniform format has no weight zero point")
            zp = np.asarray(zero_point, dtype=np.int64).reshape(-1)
            if zp.shape != (q.shape[0],):
                raise FormatError(f"weight zero point shape {zp.shape} != ({q.shape[0]},)")
            q = q - zp.reshape((-1,) + (1,) * (q.ndim - 1))
        return cls(_grouped(q, groups, device))

    @property
    def groups(self) -> int:
        return self.mult.shape[0]

    @property
    def out_channels(self) -> int:
        return self.mult.shape[0] * self.mult.shape[1]

    @property
    def k(self) -> int:
        """Inputs per output channel (K of one group)."""
        return self.mult.shape[2]

    def as_float(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The multipliers transposed to (G, K, C/G) in ``dtype`` (cached): the right-hand GEMM operand."""
        key = (dtype, str(device))
        if key not in self._float:
            self._float[key] = self.mult.transpose(1, 2).contiguous().to(device=device, dtype=dtype)
        return self._float[key]

    def tap_major(self, taps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A conv kernel's multipliers as (taps, C_in, C_out) in ``dtype`` (cached): one GEMM operand per
        kernel tap, for :func:`logmac.sim.ops.conv_exact`'s per-tap path (one group only)."""
        if self.groups != 1 or self.k % taps:
            raise FormatError(f"per-tap weights need one group and K divisible by {taps} taps, got {tuple(self.mult.shape)}")
        key = ("taps", taps, dtype, str(device))
        if key not in self._float:
            per_tap = self.mult[0].reshape(self.out_channels, self.k // taps, taps).permute(2, 1, 0)
            self._float[key] = per_tap.contiguous().to(device=device, dtype=dtype)
        return self._float[key]

    def matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The multipliers as (C, K) in ``dtype`` (cached; one group): ``F.linear``'s weight operand, no transpose."""
        if self.groups != 1:
            raise FormatError(f"a (C, K) weight matrix needs one group, got {self.groups}")
        key = ("matrix", dtype, str(device))
        if key not in self._float:
            self._float[key] = self.mult[0].to(device=device, dtype=dtype)
        return self._float[key]

    def conv_kernel(self, kernel: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The multipliers as a conv2d weight (C_out, C_in/groups, kh, kw) in ``dtype`` (cached)."""
        key = ("conv", kernel, dtype, str(device))
        if key not in self._float:
            weight = self.mult.reshape(self.out_channels, -1, *kernel)
            self._float[key] = weight.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        return self._float[key]

    def row_absmax(self) -> np.ndarray:
        """sum_k |M[c, k]| per output channel (C,), float64: times max|x| it bounds every partial sum of row c."""
        return self.mult.abs().sum(dim=2, dtype=torch.int64).reshape(-1).cpu().numpy().astype(np.float64)

    def tap_absmax(self, taps: int) -> np.ndarray:
        """Per kernel tap, sum over input channels of the column bound: what one tap adds to a partial sum."""
        return self.col_absmax.astype(np.float64).reshape(-1, taps).sum(axis=0)

    def drop_cache(self) -> None:
        """Forget the float copies (a model streamed layer by layer keeps only the narrow integers)."""
        self._float.clear()

    def row_sums(self) -> torch.Tensor:
        """sum_k M[c, k] per output channel (C,): what an activation zero point costs the accumulator."""
        return self.mult.sum(dim=2).reshape(-1)


def _narrowest(mult: torch.Tensor) -> torch.Tensor:
    """``mult`` in the narrowest of int8/16/32/64 holding every |value| (so abs() cannot overflow)."""
    absmax = int(mult.abs().max()) if mult.numel() else 0
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        if absmax <= torch.iinfo(dtype).max:
            return mult.to(dtype)
    raise FormatError(f"integer weights reach {absmax}, beyond int64")


def _grouped(mult: np.ndarray, groups: int, device: torch.device | str | None) -> torch.Tensor:
    C = mult.shape[0]
    if groups < 1 or C % groups:
        raise FormatError(f"{C} output channels cannot be split into {groups} groups")
    return torch.as_tensor(mult.reshape(groups, C // groups, -1), device=device)


def _strict_fp32(backend: object, op: str) -> bool:
    """A backend's float32 math mode for ``op`` (and its global one) is full precision (torch >= 2.7 names them)."""
    modes = (getattr(backend, "fp32_precision", "none"), getattr(getattr(backend, op, None), "fp32_precision", "none"))
    return all(mode in ("none", "ieee") for mode in modes)


def float32_exact_ok(device: torch.device) -> bool:
    """False when torch may run float32 GEMMs in reduced precision (TF32/bf16), which is not exact."""
    if torch.get_float32_matmul_precision() != "highest" or not _strict_fp32(torch.backends.mkldnn, "matmul"):
        return False
    return not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def direct_conv_exact_ok(device: torch.device) -> bool:
    """False where ``F.conv2d`` in float32 may round other than at the end: off the CPU (cuDNN picks Winograd or
    FFT and TF32 by itself) or with oneDNN's float32 math mode relaxed to bf16/TF32."""
    return device.type == "cpu" and float32_exact_ok(device) and _strict_fp32(torch.backends.mkldnn, "conv")


def k_chunks(col_absmax: np.ndarray, x_absmax: int, limit: int) -> list[tuple[int, int]] | None:
    """Split K into consecutive ranges whose partial sums provably stay below ``limit``; None if a single
    column already breaks it."""
    bound = col_absmax.astype(np.float64) * float(x_absmax)  # per-column worst |x * M|
    if bound.size == 0:
        return [(0, 0)]
    if bound.max() >= limit:
        return None
    chunks, start, running = [], 0, 0.0
    for k, b in enumerate(bound):
        if running + b >= limit:
            chunks.append((start, k))
            start, running = k, 0.0
        running += b
    chunks.append((start, len(bound)))
    return chunks


def gemm_plan(weights: IntWeights, x_absmax: int, device: torch.device) -> tuple[str, list[tuple[int, int]]]:
    """Which exact GEMM to run for inputs bounded by ``x_absmax``: ("float32", K chunks), ("float64", [])
    or ("int64", []).

    One float32 GEMM when ``x_absmax * max_c sum_k |M[c, k]|`` is below 2**24 (every partial sum of a row is a
    sub-sum of its products); else K chunks by the per-column bound, whose sum over a chunk bounds every row.
    """
    total = float(weights.col_absmax.sum()) * x_absmax
    if float32_exact_ok(device) and weights.max_row_absmax * x_absmax < EXACT_LIMIT[torch.float32]:
        return "float32", [(0, weights.k)]
    if float32_exact_ok(device) and total < EXACT_LIMIT[torch.float64]:
        chunks = k_chunks(weights.col_absmax, x_absmax, EXACT_LIMIT[torch.float32])
        if chunks is not None and len(chunks) <= MAX_FLOAT32_CHUNKS:
            return "float32", chunks
    if total < EXACT_LIMIT[torch.float64]:
        return "float64", []
    if total >= 2.0**63:
        raise FormatError(f"a sum of products can reach {total:.3g}, beyond int64; no exact path exists")
    return "int64", []


def tap_plan(weights: IntWeights, taps: int, x_absmax: int, device: torch.device) -> tuple[str, list[tuple[int, int]]]:
    """:func:`gemm_plan` for a convolution summed tap by tap: ("float32", chunks of consecutive taps whose
    bound is below 2**24), ("float64", []) or ("int64", []) when no float accumulation is exact."""
    tap_bound = weights.tap_absmax(taps)
    total = float(tap_bound.sum()) * x_absmax
    if float32_exact_ok(device) and weights.max_row_absmax * x_absmax < EXACT_LIMIT[torch.float32]:
        return "float32", [(0, taps)]
    if float32_exact_ok(device) and total < EXACT_LIMIT[torch.float64]:
        chunks = k_chunks(tap_bound, x_absmax, EXACT_LIMIT[torch.float32])
        if chunks is not None and len(chunks) <= MAX_FLOAT32_CHUNKS:
            return "float32", chunks
    return ("float64", []) if total < EXACT_LIMIT[torch.float64] else ("int64", [])


def exact_matmul(weights: IntWeights, rows: torch.Tensor, x_absmax: int | None = None) -> torch.Tensor:
    """Exact ``rows @ weights.T`` for integer-valued ``rows`` shaped (B, G, L, K) -> (B, G, L, C/G).

    ``rows`` may be any integer or float dtype holding integers; ``x_absmax`` (a bound on |rows|) is
    computed when not given.  The result holds the exact integer sums, as float32, float64 or int64
    (whichever path ran); ``.to(torch.int64)`` equals int64 arithmetic bit for bit.
    """
    if rows.ndim != 4 or rows.shape[1] != weights.groups or rows.shape[3] != weights.k:
        raise FormatError(
            f"shape mismatch: inputs {tuple(rows.shape)} for weights {tuple(weights.mult.shape)} "
            "(need (B, groups, L, K))"
        )
    device = rows.device
    if x_absmax is None:
        x_absmax = int(rows.abs().max()) if rows.numel() else 0
    path, chunks = gemm_plan(weights, x_absmax, device)
    if path == "float32":
        w32, x32 = weights.as_float(torch.float32, device), rows.to(torch.float32)
        if len(chunks) == 1:
            return torch.matmul(x32, w32)
        acc = torch.matmul(x32[..., :0], w32[:, :0]).to(torch.float64)
        for a, b in chunks:
            acc += torch.matmul(x32[..., a:b], w32[:, a:b])
        return acc
    if path == "float64":
        return torch.matmul(rows.to(torch.float64), weights.as_float(torch.float64, device))
    # int64 GEMM: exact for every width logmac.format allows (|M| < 2**32, 16-bit activations); CPU only.
    return torch.matmul(rows.cpu().to(torch.int64), weights.mult.transpose(1, 2).cpu().to(torch.int64)).to(device)
