"""LatticeQ weight quantization: groups of n weights rounded to points of a learned lattice.

A layer's weights, divided by ``d = max|W|``, are cut into n-vectors (one kernel row of a 3x3 conv,
pairs for 1x1 convs and linears, scalars for the stem).  Each vector becomes integer coordinates ``c``
(``bits`` wide, range ``[-2^(b-1)+1, 2^(b-1)]``) in a basis ``B`` (n x n, one per output channel or one
per layer): ``w_hat = d * (c @ B)``, with ``c`` found by Babai's nearest-plane rounding.  ``B`` is chosen
data-free by a greedy random search with restarts and a falling temperature that minimises
``sum |w_hat - w|^3``.  With ``basis_bits`` the basis is snapped to odd integers times a step
(``2^bB`` levels on ``[-t, t]``, per channel or per layer), so ``c @ B_int`` is an integer weight and the
layer runs on an integer MAC (see :mod:`logmac.backends.lattice` and docs/latticeq.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_BITS, MAX_BITS = 2, 8
MAX_BASIS_BITS = 16
MAIN_SCHEDULE = (1e-4, 1.0, 1 / 2, 1 / 3, 1 / 5, 1 / 7, 1 / 9, 1 / 15, 1 / 30)  # times sigma = 1/(2^b - 1)
SCALAR_SCHEDULE = (1e-4, 1.0, 1 / 4, 1 / 9)
SCALAR_STEPS = 100
LOSS_POWER = 3
BIAS_CORR_EPS = 1e-6


class LatticeError(ValueError):
    """A lattice setting or weight tensor the quantizer cannot work with."""


@dataclass(frozen=True)
class LatticeSpec:
    """How one layer is lattice-quantized.

    ``dim`` is the vector length n (it must divide the weights per output channel); ``basis_bits=None``
    keeps a float basis (fake-quant only: no integer path).  ``steps`` per temperature and ``restarts``
    set the search budget; a scalar layer (``dim == 1``) uses the short scalar schedule instead.
    ``normalize="channel"`` divides each channel by its own max|w| instead of the layer's (not in the
    reference: it lets the fixed search temperatures fit channels far smaller than the layer maximum, as
    in depthwise convs; the factor joins the per-channel scale, so it is free on the datapath).
    """

    bits: int = 4
    basis_bits: int | None = 8
    dim: int = 3
    per_channel: bool = True
    steps: int = 80
    restarts: int = 5
    bias_corr: bool = True
    normalize: str = "layer"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.normalize not in ("layer", "channel"):
            raise LatticeError(f"normalize must be 'layer' (LatticeQ) or 'channel', got {self.normalize!r}")
        if self.normalize == "channel" and not self.per_channel:
            raise LatticeError("per-channel normalisation needs a per-channel basis")
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise LatticeError(f"lattice coordinate bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {self.bits!r}")
        if self.basis_bits is not None and not 2 <= self.basis_bits <= MAX_BASIS_BITS:
            raise LatticeError(f"basis_bits must be in 2..{MAX_BASIS_BITS} or None (float basis), got {self.basis_bits!r}")
        if not 1 <= self.dim <= 8:
            raise LatticeError(f"lattice dimension must be in 1..8, got {self.dim}")
        if self.steps < 0 or self.restarts < 1:
            raise LatticeError(f"need steps >= 0 and restarts >= 1, got steps={self.steps}, restarts={self.restarts}")

    @property
    def coord_range(self) -> tuple[int, int]:
        """2^b integer coordinates, one more on the positive side (as the reference code clamps)."""
        return -(1 << (self.bits - 1)) + 1, 1 << (self.bits - 1)

    def schedule(self) -> list[tuple[float, int]]:
        """(temperature, steps) pairs of the basis search."""
        sigma = 1.0 / ((1 << self.bits) - 1)
        if self.dim == 1:
            return [(sigma * f, max(self.steps, SCALAR_STEPS)) for f in SCALAR_SCHEDULE]
        return [(sigma * f, self.steps) for f in MAIN_SCHEDULE]


@dataclass
class LatticeCode:
    """A lattice-quantized weight: what is stored, and how it decodes.

    ``coords`` (C, G, n) int64 b-bit coordinates; ``basis`` (P, n, n) float64 rows = basis vectors in the
    normalised domain (P = C per channel, 1 per layer); ``lsb`` (P,) the basis step when quantized (then
    ``basis / lsb`` are odd integers), else None; ``mu`` (C,) the bias-correction offset (a multiple of
    ``lsb`` when quantized) and ``eta`` (C,) its gain; ``d`` (C,) the normalisation (the layer's max|w| or each channel's).
    """

    coords: torch.Tensor
    basis: torch.Tensor
    lsb: torch.Tensor | None
    mu: torch.Tensor
    eta: torch.Tensor
    d: torch.Tensor
    shape: tuple[int, ...]
    bits: int
    basis_bits: int | None

    @classmethod
    def from_integers(cls, coords: torch.Tensor, basis_int: torch.Tensor, offset_int: torch.Tensor,
                      scale: torch.Tensor, shape: tuple[int, ...], bits: int, basis_bits: int) -> LatticeCode:
        """The code as an artifact stores it: integers plus one float scale per channel.

        The search-time factors (normalisation ``d``, gain ``eta``, basis step) are already folded into
        ``scale``, so here ``lsb = 1`` and ``eta = 1``; ``integer_weights()`` and ``decode()`` give the same
        numbers as the code that was exported.
        """
        ones = torch.ones(basis_int.shape[0], dtype=torch.float64)
        return cls(coords.to(torch.int64), basis_int.double(), ones, offset_int.double(),
                   torch.ones_like(scale, dtype=torch.float64), scale.double(), tuple(shape), bits, basis_bits)

    @property
    def out_channels(self) -> int:
        return self.coords.shape[0]

    @property
    def dim(self) -> int:
        return self.coords.shape[2]

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        return t.expand(self.out_channels, *t.shape[1:]) if t.shape[0] == 1 else t

    def integer_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_int (C, K) int64, scale (C,) float64) with ``weight = scale[:, None] * W_int``.

        ``W_int = c @ B_int + m``: integer coordinates times the integer basis plus the bias-correction
        offset in basis steps; ``scale = eta * d * lsb`` leaves the MAC and joins the requantization.
        """
        if self.lsb is None:
            raise LatticeError("a float basis (basis_bits=None) has no integer form; quantize with basis_bits")
        b_int = self._per_channel(self.basis_int())
        w_int = torch.einsum("cgi,cij->cgj", self.coords, b_int).reshape(self.out_channels, -1)
        return w_int + self.offset_int()[:, None], self.eta * self.d * self._per_channel(self.lsb)

    def basis_int(self) -> torch.Tensor:
        """The integer basis (P, n, n): odd integers in ``[-(2^bB - 1), 2^bB - 1]``."""
        if self.lsb is None:
            raise LatticeError("a float basis (basis_bits=None) has no integer form; quantize with basis_bits")
        return torch.round(self.basis / self.lsb[:, None, None]).to(torch.int64)

    def offset_int(self) -> torch.Tensor:
        """The bias-correction offset in basis steps (C,) int64, added to every weight of its channel."""
        if self.lsb is None:
            raise LatticeError("a float basis (basis_bits=None) has no integer form; quantize with basis_bits")
        return torch.round(self.mu / self._per_channel(self.lsb)).to(torch.int64)

    def decode(self) -> torch.Tensor:
        """The fake-quant weight (float64, original shape); equal to the integer form when it exists."""
        if self.lsb is not None:
            w_int, scale = self.integer_weights()
            return (scale[:, None] * w_int.double()).reshape(self.shape)
        w_n = torch.einsum("cgi,cij->cgj", self.coords.double(), self._per_channel(self.basis))
        w_n = w_n.reshape(self.out_channels, -1) + self.mu[:, None]
        return ((self.eta * self.d)[:, None] * w_n).reshape(self.shape)

    def storage_bits(self) -> int:
        """Bits a chip stores: coordinates, basis entries, and two 32-bit floats per channel (scale, offset)."""
        basis = self.basis.numel() * (self.basis_bits or 32)
        return self.coords.numel() * self.bits + basis + 64 * self.out_channels


def gram_schmidt(basis: torch.Tensor) -> torch.Tensor:
    """Orthogonalise the rows of ``basis`` (..., n, n), in order, without normalising them."""
    rows: list[torch.Tensor] = []
    for i in range(basis.shape[-2]):
        v = basis[..., i, :]
        for u in rows:
            v = v - (v * u).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True) * u
        rows.append(v)
    return torch.stack(rows, dim=-2)


def babai(vectors: torch.Tensor, basis: torch.Tensor, coord_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Babai nearest-plane coordinates of ``vectors`` (..., G, n) in ``basis`` (..., n, n) (rows = vectors).

    Walks the Gram-Schmidt directions from the last to the first, rounding the projection of the
    residual and subtracting that multiple of the basis vector (unclamped, as the reference does);
    ``coord_range`` clamps afterwards.  The residual's projections are kept as coefficients: removing
    ``c_i b_i`` lowers the one on ``b~_j`` by ``c_i <b_i, b~_j> / |b~_j|^2``, so each step is a rank-1
    update instead of a new projection.  Returns float coordinates holding integers (NaN for a
    degenerate basis, which callers reject).
    """
    gs = gram_schmidt(basis)
    norm2 = (gs * gs).sum(-1)[..., None, :]
    proj = vectors @ gs.transpose(-1, -2) / norm2  # (..., G, n): <v, b~_j> / |b~_j|^2
    mix = basis @ gs.transpose(-1, -2) / norm2  # (..., n, n): <b_i, b~_j> / |b~_j|^2, lower triangular
    cols: list[torch.Tensor] = [proj[..., 0]] * basis.shape[-1]
    for i in reversed(range(basis.shape[-1])):
        c = torch.round(proj[..., i])
        cols[i] = c
        if i:
            proj = proj[..., :i] - c[..., None] * mix[..., i:i + 1, :i]
    coords = torch.stack(cols, dim=-1)
    return coords if coord_range is None else coords.clamp(*coord_range)


def quantize_basis(basis: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Snap each basis (..., n, n) to ``2^bits`` uniform levels on ``[-t, t]``, t = its max |entry|.

    Returns the snapped basis and its step ``t / (2^bits - 1)`` (...,): the levels are odd multiples of
    the step, so ``basis / step`` is an integer matrix.  Works on any leading shape (per channel and per
    layer alike).
    """
    levels = (1 << bits) - 1
    t = basis.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(basis.dtype).tiny)
    k = torch.round(levels * (basis / t + 1) / 2)
    step = t / levels
    return (2 * k - levels) * step, step[..., 0, 0]


def bias_correction(w: torch.Tensor, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Banner et al.'s per-channel correction ``w_hat <- eta * (w_hat + mu)`` over the last axis.

    ``mu`` restores the channel mean and ``eta`` its spread; both are per output channel, so they cost
    one offset and one scale per channel, not per weight.
    """
    mu = (w - w_hat).mean(-1)
    spread = (w - w.mean(-1, keepdim=True)).norm(dim=-1)
    eta = spread / ((w_hat - w_hat.mean(-1, keepdim=True)).norm(dim=-1) + BIAS_CORR_EPS)
    # a constant (or all-zero) channel has no spread to restore: eta = 0 would erase it, keep the gain 1
    return torch.where(spread > 0, eta, torch.ones_like(eta)), mu


def _reconstruct(vectors: torch.Tensor, basis: torch.Tensor, spec: LatticeSpec, channels: int) -> torch.Tensor:
    """c @ B for every restart: (R, P, G, n) -> (R, C, K)."""
    coords = babai(vectors, basis, spec.coord_range)
    w_hat = coords @ basis
    return w_hat.reshape(w_hat.shape[0], channels, -1)


def _loss(w: torch.Tensor, w_hat: torch.Tensor, spec: LatticeSpec, units: int) -> torch.Tensor:
    """Sum |w_hat - w|^3 per search unit (R, P); bias correction enters only below 4 bits (as LatticeQ)."""
    if spec.bias_corr and spec.bits < 4:
        eta, mu = bias_correction(w, w_hat)
        w_hat = eta[..., None] * (w_hat + mu[..., None])
    err = (w_hat - w).abs().pow(LOSS_POWER).sum(-1)  # (R, C)
    loss = err.reshape(err.shape[0], units, -1).sum(-1)
    return torch.where(torch.isnan(loss), torch.full_like(loss, float("inf")), loss)


def search_basis(w_n: torch.Tensor, spec: LatticeSpec) -> torch.Tensor:
    """Data-free random search for the basis of normalised weights ``w_n`` (C, K); returns (P, n, n).

    All restarts run at once (a leading axis); each unit (channel or layer) keeps a proposal
    ``B + N(0, (T/2)^2)`` (snapped to the basis grid when quantized) only if it lowers that unit's loss.
    The best restart per unit wins.
    """
    C, n = w_n.shape[0], spec.dim
    units = C if spec.per_channel else 1
    vectors = w_n.reshape(units, -1, n)[None]
    gen = torch.Generator(device=w_n.device).manual_seed(spec.seed)
    eye = torch.eye(n, dtype=w_n.dtype, device=w_n.device)
    half = 1 << (spec.bits - 1)
    b0 = eye * 1e-4 / half if spec.per_channel else eye / max(half - 1, 1)
    basis = b0.expand(spec.restarts, units, n, n).clone()
    if spec.basis_bits is not None:
        basis = quantize_basis(basis, spec.basis_bits)[0]
    best = _loss(w_n, _reconstruct(vectors, basis, spec, C), spec, units)
    for temp, steps in spec.schedule():
        for _ in range(steps):
            noise = torch.randn(basis.shape, generator=gen, device=basis.device, dtype=basis.dtype)
            prop = basis + noise * (temp / 2)
            if spec.basis_bits is not None:
                prop = quantize_basis(prop, spec.basis_bits)[0]
            loss = _loss(w_n, _reconstruct(vectors, prop, spec, C), spec, units)
            better = loss < best
            basis = torch.where(better[..., None, None], prop, basis)
            best = torch.where(better, loss, best)
    winner = best.argmin(dim=0)  # (P,)
    return basis[winner, torch.arange(units, device=basis.device)]


def quantize_weight(weight: torch.Tensor, spec: LatticeSpec) -> LatticeCode:
    """Lattice-quantize a Conv2d/Linear weight (C_out, ...): search the basis, round, bias-correct."""
    if weight.ndim < 2:
        raise LatticeError(f"expected a weight with an output-channel axis, got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise LatticeError("weights contain NaN or Inf")
    C = weight.shape[0]
    w = weight.detach().reshape(C, -1).double()
    if w.shape[1] % spec.dim:
        raise LatticeError(f"{w.shape[1]} weights per output channel do not split into vectors of {spec.dim}")
    d = w.abs().amax(1) if spec.normalize == "channel" else w.abs().max().expand(C)
    d = torch.where(d > 0, d, torch.ones_like(d))  # an all-zero channel: any basis gives zero coordinates
    w_n = w / d[:, None]
    search = search_basis(w_n.float(), spec).double()
    lsb = None
    if spec.basis_bits is not None:
        search, lsb = quantize_basis(search, spec.basis_bits)
    units = C if spec.per_channel else 1
    coords = babai(w_n.reshape(units, -1, spec.dim), search, spec.coord_range)
    w_hat = (coords @ search).reshape(C, -1)
    coords = coords.reshape(C, -1, spec.dim).to(torch.int64)
    eta, mu = torch.ones(C, dtype=w.dtype, device=w.device), torch.zeros(C, dtype=w.dtype, device=w.device)
    if spec.bias_corr:
        eta, mu = bias_correction(w_n, w_hat)
        if lsb is not None:  # the offset joins the integer weight, so it lives on the basis step
            step = lsb.expand(C)
            mu = torch.round(mu / step) * step
    return LatticeCode(coords, search, lsb, mu, eta, d, tuple(weight.shape), spec.bits, spec.basis_bits)
