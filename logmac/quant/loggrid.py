"""LogART's per-channel log grid: what the levels are (DBS, SFS, ABS) and round-to-nearest onto them.

A channel's grid is fixed by three numbers: the DBS mix ``n_base2`` (how many of its levels sit on the
base-2 part), the SFS scale ``alpha`` and, per sign, the top half-exponent ``top_k`` (ABS gives each sign
its own top; without ABS both signs share the top of max |w|).  The levels themselves always come from
``logmac.format`` (``grid_half_exponents`` -> ``table_from_exponents`` -> ``level_values``), so the search
scores exactly the values the exported codes decode to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from logmac.format import (
    DecodeTable,
    LogFormat,
    ZeroMode,
    grid_half_exponents,
    level_values,
    make_words,
    table_from_exponents,
    zero_threshold_ratio,
)

RERANK_TOP = 3  # candidates per channel re-scored with the full Hessian after the diagonal pre-filter


@dataclass
class LogGrid:
    """Grid parameters of one layer: ``n_base2`` (C,), ``top_k`` (C, 2) half-exponents, ``alpha`` (C,)."""

    fmt: LogFormat
    n_base2: np.ndarray
    top_k: np.ndarray
    alpha: np.ndarray

    def half_exponents(self) -> np.ndarray:
        """(C, 2, n) ascending level exponents in half-octave units."""
        return half_exponents(self.fmt, self.n_base2, self.top_k)

    def table(self) -> DecodeTable:
        return table_from_exponents(self.fmt, self.half_exponents(), self.alpha)

    def levels(self) -> torch.Tensor:
        """(C, 2, n) float64 non-zero level magnitudes, computed as ``format.decode_float`` computes them."""
        table = self.table()
        first = 1 if self.fmt.zero is ZeroMode.CODE else 0
        vals = level_values(table, self.fmt)[:, :, first:] * table.scale[:, None, None]
        return torch.from_numpy(vals)


def half_exponents(fmt: LogFormat, n_base2: np.ndarray, top_k: np.ndarray) -> np.ndarray:
    """Vectorised ``grid_half_exponents``: a grid moved by two half-steps is the same grid an octave up."""
    n = fmt.nonzero_levels
    top_k = np.asarray(top_k, dtype=np.int64)
    out = np.empty(top_k.shape + (n,), dtype=np.int64)
    for n2 in np.unique(n_base2):
        for parity in (0, 1):
            pattern = grid_half_exponents(n, parity, int(n2))
            sel = (np.asarray(n_base2)[:, None] == n2) & (top_k % 2 == parity)
            out[sel] = pattern + 2 * (top_k[sel] // 2)[:, None]
    return out


def anchor(wmax: np.ndarray, n_base2: int, n_levels: int) -> np.ndarray:
    """Top half-exponent for a channel maximum: round(log2 M) octaves on pure base 2, round(log_sqrt2 M) else."""
    log2m = np.log2(np.maximum(wmax, np.finfo(np.float64).tiny))
    if n_base2 == n_levels:
        return 2 * np.floor(log2m + 0.5).astype(np.int64)
    return np.floor(2 * log2m + 0.5).astype(np.int64)


def fit_shift_limit(fmt: LogFormat, n_base2: np.ndarray, top_k: np.ndarray) -> np.ndarray:
    """Raise the lower sign's top until both signs' levels fit the datapath's shift field (ABS limit)."""
    top_k = top_k.copy()
    for _ in range(64):
        k = half_exponents(fmt, n_base2, top_k)
        octave = k // 2
        span = octave.max(axis=(1, 2)) - (octave - k % 2).min(axis=(1, 2))
        bad = span > fmt.max_shift
        if not bad.any():
            return top_k
        low = np.argmin(top_k, axis=1)
        rows = np.nonzero(bad)[0]
        top_k[rows, low[rows]] += 1
    raise RuntimeError("could not fit the sign-asymmetric grid into the shift field")


DEAD_CHANNEL_RATIO = 2.0 ** -8  # grid top of an all-zero channel, relative to the layer's largest |w|


def sign_maxima(w2d: torch.Tensor, per_tensor: bool) -> tuple[np.ndarray, np.ndarray]:
    """Largest positive and largest negative magnitude per channel (or of the whole tensor).

    An all-zero (dead) channel gets ``DEAD_CHANNEL_RATIO`` times the layer maximum on both signs instead of
    0: anchoring its grid at the smallest float would give it a channel scale near 2^-1022, and the export's
    integer bias ``bias / scale`` would overflow.  Its weights still encode to zero (or, without a zero, to a
    level 256x below the layer's largest weight).
    """
    pos = w2d.clamp(min=0).amax(dim=1).double().cpu().numpy()
    neg = (-w2d).clamp(min=0).amax(dim=1).double().cpu().numpy()
    if per_tensor:
        pos, neg = np.full_like(pos, pos.max()), np.full_like(neg, neg.max())
    dead = np.maximum(pos, neg) == 0
    if dead.any():
        layer_max = float(np.maximum(pos, neg).max())
        pos[dead] = neg[dead] = layer_max * DEAD_CHANNEL_RATIO if layer_max > 0 else 1.0
    return pos, neg


def tops_for(fmt: LogFormat, n_base2: np.ndarray, pos: np.ndarray, neg: np.ndarray, asym: bool) -> np.ndarray:
    """(C, 2) top half-exponents: shared by both signs, or per sign with ABS."""
    n = fmt.nonzero_levels
    tops = np.empty((len(pos), 2), dtype=np.int64)
    for n2 in np.unique(n_base2):
        rows = n_base2 == n2
        both = np.maximum(pos[rows], neg[rows])
        shared = anchor(both, int(n2), n)
        if asym:
            # A sign with no weights takes the other sign's top (its levels are never used).
            p = np.where(pos[rows] > 0, anchor(pos[rows], int(n2), n), shared)
            q = np.where(neg[rows] > 0, anchor(neg[rows], int(n2), n), shared)
            tops[rows] = np.stack([p, q], axis=1)
        else:
            tops[rows] = shared[:, None]
    return fit_shift_limit(fmt, n_base2, tops)


def quantize_rtn(w2d: torch.Tensor, levels: torch.Tensor, fmt: LogFormat) -> tuple[torch.Tensor, ...]:
    """Nearest level in the log domain, with the logmac.format zero rule.

    Returns ``(value, sign, index, is_zero)``; ``index`` counts non-zero levels from 0.  Thresholds are
    geometric midpoints of adjacent levels; below ``zero_threshold_ratio * smallest level`` a weight is
    zero (``code``/``flag``) or the smallest level (``none``).
    """
    levels = levels.to(w2d.device, torch.float64)
    w = w2d.to(torch.float64)
    sign = (w < 0).long()
    mag = w.abs().contiguous()
    mid = torch.sqrt(levels[:, :, 1:] * levels[:, :, :-1])  # (C, 2, n-1) geometric midpoints
    index = torch.zeros_like(sign)
    value = torch.zeros_like(w)
    for s in (0, 1):  # one batched binary search per sign: no (C, K, n) temporaries
        idx = torch.searchsorted(mid[:, s].contiguous(), mag)  # mids strictly below |w|
        index = torch.where(sign == s, idx, index)
        value = torch.where(sign == s, torch.gather(levels[:, s], 1, idx), value)
    if fmt.zero is ZeroMode.NONE:
        is_zero = torch.zeros_like(sign, dtype=torch.bool)
    else:
        bottom = torch.gather(levels[:, :, 0], 1, sign)  # smallest level of each element's sign
        is_zero = mag < bottom * zero_threshold_ratio(fmt)
        value = torch.where(is_zero, torch.zeros_like(value), value)
        index = torch.where(is_zero, torch.zeros_like(index), index)
        sign = torch.where(is_zero, torch.zeros_like(sign), sign)
    return torch.where(sign == 1, -value, value), sign, index, is_zero


def words_from(fmt: LogFormat, sign: torch.Tensor, index: torch.Tensor, is_zero: torch.Tensor) -> np.ndarray:
    """Code words for (sign, non-zero level index, zero) triples, via ``format.make_words``."""
    first = 1 if fmt.zero is ZeroMode.CODE else 0
    idx = torch.where(is_zero, torch.zeros_like(index), index + first) if first else index
    sgn = torch.where(is_zero, torch.zeros_like(sign), sign)
    zero = is_zero.cpu().numpy() if fmt.zero is ZeroMode.FLAG else None
    return make_words(sgn.cpu().numpy(), idx.cpu().numpy(), zero, fmt)


def channel_error(err: torch.Tensor, hess: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Per-channel error: sum of squares, or the Hessian form e H e^T (H (G, K, K), one per conv group)."""
    if hess is None:
        return (err * err).sum(1)
    C = err.shape[0]
    e = err.reshape(groups, C // groups, -1).to(hess.dtype)
    return (torch.bmm(e, hess) * e).sum(-1).reshape(C).double()


def search_grid(
    w2d: torch.Tensor,
    fmt: LogFormat,
    *,
    dbs: bool,
    sfs: bool,
    asym: bool,
    alphas: np.ndarray,
    per_tensor: bool = False,
    hess: torch.Tensor | None = None,
    groups: int = 1,
) -> LogGrid:
    """Choose ``n_base2`` (DBS), ``alpha`` (SFS) and the per-sign tops (ABS) of every channel.

    Every (n_base2, alpha) pair is scored by the diagonal of ``hess`` (plain squared error without it);
    the best ``RERANK_TOP`` per channel are then re-scored with the full Hessian form ``dW H dW^T``, which is
    the layer's output error on the calibration inputs (LogART's layer-wise / Hessian SFS score).
    """
    C = w2d.shape[0]
    if dbs:
        choices = fmt.base2_choices
    else:  # no DBS: the method's own fixed grid; log_dynamic without DBS is LogART's starting grid, pure base 2
        choices = [max(fmt.base2_choices)] if fmt.grid.value != "log_sqrt2" else [0]
    alphas = np.asarray(alphas if sfs else [1.0], dtype=np.float64)
    pos, neg = sign_maxima(w2d, per_tensor)
    diag = None
    if hess is not None:
        d = torch.diagonal(hess, dim1=1, dim2=2)  # (G, K)
        diag = d.repeat_interleave(C // groups, dim=0).double()
    w = w2d.double()
    scorer = SortedScorer(w, diag, fmt)
    cands, scores = [], []
    for n2 in choices:
        n2v = np.full(C, n2)
        grid = LogGrid(fmt, n2v, tops_for(fmt, n2v, pos, neg, asym), np.ones(C))
        base = grid.levels().to(w.device)
        for a in alphas:
            cands.append((n2, a, grid.top_k))
            scores.append(scorer(base * a))
    score = torch.stack(scores)  # (candidates, C)
    if per_tensor:
        score = score.sum(1, keepdim=True).expand(-1, C)
    if hess is not None and len(cands) > 1:
        score = _rerank(w, fmt, cands, score, hess, groups, per_tensor)
    best = score.argmin(0).cpu().numpy()
    n_base2 = np.array([cands[b][0] for b in best])
    alpha = np.array([cands[b][1] for b in best], dtype=np.float64)
    top_k = np.stack([cands[b][2][c] for c, b in enumerate(best)])
    return LogGrid(fmt, n_base2, top_k, alpha)


class SortedScorer:
    """Per-channel weighted squared error of nearest-level rounding, in O(n log K) per candidate grid.

    Magnitudes are sorted once per channel with prefix sums of d, d|w| and d w^2 for each sign (d = Hessian
    diagonal or 1).  A grid's thresholds (zero threshold, geometric midpoints) cut the sorted magnitudes into
    segments that all round to one value v, whose error is ``S0 v^2 - 2 v S1 + S2``.  Same decision rule as
    :func:`quantize_rtn`, so the score equals its error up to float summation order.
    """

    def __init__(self, w: torch.Tensor, diag: torch.Tensor | None, fmt: LogFormat) -> None:
        self.fmt = fmt
        mag, order = w.abs().sort(dim=1)
        self.mag = mag
        # One flat sorted key per layer, row c in [c, c + 1): numpy's searchsorted on it is ~50x faster than
        # torch's batched one.  Rows are scaled by a power of two (exact) so every level stays below c + 1.
        top = mag[:, -1].clamp(min=1e-300).cpu().numpy()
        self.row_scale = np.exp2(np.ceil(np.log2(top)) + 1)[:, None]
        self.row = np.arange(mag.shape[0], dtype=np.float64)[:, None]
        self.keys = (self.row + mag.cpu().numpy() / self.row_scale).ravel()
        d = torch.ones_like(w) if diag is None else diag.to(w)
        neg = torch.gather(w < 0, 1, order)
        d = torch.gather(d, 1, order)
        zero = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
        self.prefix = []
        for s in (0, 1):
            ds = torch.where(neg == bool(s), d, torch.zeros_like(d))
            self.prefix.append([torch.cat([zero, torch.cumsum(t, 1)], 1) for t in (ds, ds * mag, ds * mag * mag)])

    def __call__(self, levels: torch.Tensor) -> torch.Tensor:
        levels = levels.to(self.mag)
        total = torch.zeros(self.mag.shape[0], dtype=self.mag.dtype, device=self.mag.device)
        K = self.mag.shape[1]
        for s in (0, 1):
            lv = levels[:, s]  # (C, n)
            mid = torch.sqrt(lv[:, 1:] * lv[:, :-1])
            ends = self._search(mid, "right")  # |w| <= mid rounds to the lower level
            if self.fmt.zero is ZeroMode.NONE:
                start = torch.zeros_like(ends[:, :1])
            else:
                start = self._search(lv[:, :1] * zero_threshold_ratio(self.fmt), "left")
            bounds = torch.cat([start, ends, torch.full_like(start, K)], 1)  # (C, n + 1)
            p0, p1, p2 = self.prefix[s]
            seg = [torch.gather(p, 1, bounds[:, 1:]) - torch.gather(p, 1, bounds[:, :-1]) for p in (p0, p1, p2)]
            total += (seg[0] * lv * lv - 2 * seg[1] * lv + seg[2]).sum(1)
            total += torch.gather(p2, 1, start)[:, 0]  # weights that round to zero
        return total

    def _search(self, values: torch.Tensor, side: str) -> torch.Tensor:
        """Per row, how many sorted magnitudes lie below ``values`` (``side`` as in numpy.searchsorted)."""
        K = self.mag.shape[1]
        q = self.row + values.cpu().numpy() / self.row_scale
        pos = np.searchsorted(self.keys, q.ravel(), side=side).reshape(q.shape) - (self.row * K).astype(np.int64)
        return torch.from_numpy(np.clip(pos, 0, K)).to(self.mag.device)


def _rerank(w, fmt, cands, score, hess, groups, per_tensor) -> torch.Tensor:
    """Re-score each channel's best few candidates with the full Hessian form; others get +inf."""
    C = w.shape[0]
    k = min(RERANK_TOP, len(cands))
    top = score.topk(k, dim=0, largest=False).indices  # (k, C)
    exact = torch.full_like(score, float("inf"))
    for j in range(k):
        pick = top[j].cpu().numpy()
        grid = LogGrid(fmt, np.array([cands[p][0] for p in pick]),
                       np.stack([cands[p][2][c] for c, p in enumerate(pick)]),
                       np.array([cands[p][1] for p in pick], dtype=np.float64))
        err = quantize_rtn(w, grid.levels().to(w.device), fmt)[0] - w
        e = channel_error(err, hess, groups)
        if per_tensor:
            e = e.sum().expand(C)
        exact[top[j], torch.arange(C)] = e
    return exact
