"""GPTQ / OPTQ rounding onto any fitted grid (algorithms.md §1.5): one Cholesky per layer, no training.

Columns are rounded one at a time to the nearest level of the layer's grid, and each column's rounding
error is pushed onto the columns not yet rounded through the upper Cholesky factor ``U`` of the damped
inverse Hessian, so the layer's output error ``tr(dW H dW^T)`` on the calibration inputs shrinks.  The grid
(log scale, DBS mix, ABS tables; or the uniform range) is fixed before the loop.  Nearest means the rule the
exported codes are decoded by: geometric midpoints and the zero rule of ``format.encode`` on log grids
(:func:`loggrid.quantize_rtn`), ``clamp(round(w / s) + z)`` on uniform ones.  The rounded values are exact
grid levels, so encoding them again gives the codes export, emulator and RTL read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from logmac.format import LogFormat
from logmac.quant.loggrid import quantize_rtn

log = logging.getLogger(__name__)

BLOCK = 128  # columns per lazy batch: the error of a batch reaches later columns in one matrix product
DAMP = 0.01  # lambda: damping is lambda * mean(diag H)
DAMP_RETRIES = 8  # each retry multiplies the damping by 10

Rounder = Callable[[torch.Tensor, slice], torch.Tensor]  # (column (C,), rows) -> grid value (C,)


def log_rounder(levels: torch.Tensor, fmt: LogFormat) -> Rounder:
    """Nearest level of each row's log grid (``levels`` (C, 2, n) from ``LogGrid.levels``, per-sign tables)."""
    def nearest(col: torch.Tensor, rows: slice) -> torch.Tensor:
        return quantize_rtn(col[:, None], levels[rows], fmt)[0][:, 0]
    return nearest


def uniform_rounder(scale: torch.Tensor, zp: torch.Tensor, bits: int) -> Rounder:
    """Nearest uniform level ``(clamp(round(w / s) + z, 0, 2^b - 1) - z) * s`` per row, as ``uniform_codes``."""
    def nearest(col: torch.Tensor, rows: slice) -> torch.Tensor:
        s, z = scale[rows], zp[rows]
        return (torch.clamp(torch.round(col / s) + z, 0, (1 << bits) - 1) - z) * s
    return nearest


def inverse_cholesky(hess: torch.Tensor, damp: float = DAMP, name: str = "layer") -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``.

    A Hessian that is not positive definite after damping (too few or collinear calibration rows, float
    round-off) is damped ten times more and logged, until it factors; as a last resort the diagonal alone is
    used, which makes GPTQ round to nearest with no error feedback.
    """
    mean = float(torch.diagonal(hess).abs().mean()) or 1.0
    eye = torch.eye(hess.shape[0], dtype=hess.dtype, device=hess.device)
    for attempt in range(DAMP_RETRIES):
        lam = damp * 10.0 ** attempt
        chol, info = torch.linalg.cholesky_ex(hess + lam * mean * eye)
        if not info:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if not info:
                if attempt:
                    log.warning("%s: Hessian not positive definite; factored with damping %.3g", name, lam)
                return upper
    log.warning("%s: Hessian not positive definite even with damping %.3g; no error feedback", name, lam)
    return torch.diag(torch.diagonal(hess).clamp(min=mean * 1e-6).rsqrt())


def gptq_round(w2d: torch.Tensor, hess: torch.Tensor, nearest: Rounder, *, damp: float = DAMP,
               act_order: bool = False, name: str = "layer", rows: slice = slice(None),
               col_factor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round ``w2d`` (C, K) column by column with GPTQ error feedback on ``hess`` (K, K).

    Returns ``(q, start)``: the rounded weights (grid values) and the error-compensated weights just before
    each column was rounded (``nearest(start) == q``; learned rounding starts there).  Inputs that never fire
    (zero diagonal) get diagonal 1 and zero weights, as in the reference.  ``act_order`` rounds the columns
    of largest ``diag H`` first.  ``rows`` selects the rows of ``nearest``'s per-row grids that ``w2d`` holds.
    ``col_factor`` (C, K) powers of two move each weight's grid (group exponents): a column is rounded as
    ``f * nearest(col / f)``, exact because ``f`` is a power of two.
    """
    w = w2d.double().clone()
    h = hess.double().to(w.device).clone()
    K = w.shape[1]
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(K, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    f = None if col_factor is None else col_factor.to(w)[:, perm]
    u = inverse_cholesky(h, damp, name)
    q, start = torch.zeros_like(w), torch.zeros_like(w)
    for i1 in range(0, K, BLOCK):
        i2 = min(i1 + BLOCK, K)
        block = w[:, i1:i2].clone()
        errs = torch.zeros_like(block)
        for j in range(i2 - i1):
            col = block[:, j]
            start[:, i1 + j] = col
            qcol = nearest(col, rows) if f is None else nearest(col / f[:, i1 + j], rows) * f[:, i1 + j]
            q[:, i1 + j] = qcol
            err = (col - qcol) / u[i1 + j, i1 + j]
            block[:, j + 1:] -= err[:, None] * u[i1 + j, i1 + j + 1:i2][None]
            errs[:, j] = err
        w[:, i2:] -= errs @ u[i1:i2, i2:]
    inv = torch.argsort(perm)
    return q[:, inv], start[:, inv]


def gptq_layer(w2d: torch.Tensor, hess: torch.Tensor, nearest: Rounder, groups: int = 1,
               **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gptq_round` on each conv group's rows with its own Hessian (``hess`` (G, K, K), as layers store it)."""
    C = w2d.shape[0]
    per = C // groups
    factor = kw.pop("col_factor", None)
    outs = [gptq_round(w2d[g * per:(g + 1) * per], hess[g], nearest, rows=slice(g * per, (g + 1) * per),
                       col_factor=None if factor is None else factor[g * per:(g + 1) * per], **kw)
            for g in range(groups)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
