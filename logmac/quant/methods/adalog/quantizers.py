"""AdaLog activation quantizers and FPCS, the calibration search that fits them (spec section 3).

Two fake-quant modules share one life cycle (disabled = pass-through until calibrated):

- :class:`AdaLogQuant`: non-negative activations (post-Softmax, shifted post-GELU) on the adaptive base
  ``2**(q/37)``.  In eval mode it is *exactly* the datapath's format: ``format.adalog_indices`` ->
  ``adalog_words`` -> ``adalog_decode_float`` (the (bits+1)-bit mantissa table).  In training mode it uses
  the exact ``2**(-idx*q/r)`` with a straight-through round, so reconstruction can train through it.
- :class:`UniformQuant`: asymmetric uniform integers with per-tensor or per-group (per-head) parameters.

FPCS ("fast progressive combining search") scores candidate parameters by the error they cause in the
consumer's output (a ``score`` callable) and refines the best ones over a few rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from logmac.format import (
    ADALOG_Q_RANGE,
    ADALOG_R,
    AdaLogFormat,
    activation_codes,
    adalog_decode_float,
    adalog_decode_int,
    adalog_indices,
    adalog_words,
)
from logmac.quant.config import QuantError
from logmac.quant.uniform import RoundSTE, fake_uniform

GELU_OFFSET = 0.16997124  # -min GELU(x): adding it makes post-GELU activations non-negative (spec 3.2)
# float32 GELU reaches -0.16997126, a few ulps below -GELU_OFFSET: shifted values down to -ROUNDING_SLACK are
# rounding, and become 0 (the spec's u = clamp(x/s, 1e-15, 1) maps them to its zero too); lower ones are errors
ROUNDING_SLACK = 1e-6

Score = Callable[[torch.Tensor], float]  # dequantized candidate -> error of the consumer's output


class AdaLogQuant(nn.Module):
    """AdaLog fake quantization of ``x + offset`` (``offset`` = 0 after Softmax, c after GELU).

    The output is the quantized *shifted* value; the consumer removes the shift (fc2's bias
    reparameterisation), so the datapath only ever sees non-negative codes.
    """

    def __init__(self, bits: int, q: int = ADALOG_R, scale: float = 1.0, offset: float = 0.0,
                 zero: str = "code") -> None:
        super().__init__()
        AdaLogFormat(bits, int(q), zero=zero)  # raises FormatError for bits, q or zero modes the format refuses
        self.bits, self.q, self.scale, self.offset, self.zero = bits, int(q), float(scale), float(offset), zero
        self.enabled = False

    @property
    def fmt(self) -> AdaLogFormat:
        return AdaLogFormat(self.bits, self.q, zero=self.zero)

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        """``x + offset`` with float-rounding negatives (down to ``-ROUNDING_SLACK``) set to 0."""
        s = x.detach() + self.offset
        return torch.where((s < 0) & (s >= -ROUNDING_SLACK), torch.zeros_like(s), s)

    def words(self, x: torch.Tensor) -> np.ndarray:
        """The stored AdaLog words of ``x + offset`` (what the datapath reads)."""
        return adalog_words(adalog_indices(self.shifted(x), self.scale, self.fmt), self.fmt)

    def levels(self, x: torch.Tensor) -> np.ndarray:
        """Unsigned integer levels (int64) of ``x + offset``; float value = level * scale * integer_unit."""
        return adalog_decode_int(self.words(x), self.fmt)

    @property
    def level_scale(self) -> float:
        """Float value of integer level 1."""
        return self.scale * self.fmt.integer_unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x + self.offset
        if self.training:
            return self._train_forward(x + self.offset)
        decoded = adalog_decode_float(self.words(x), self.scale, self.fmt)
        return torch.from_numpy(decoded).to(dtype=x.dtype, device=x.device)

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``2**(-idx*q/r)`` (no mantissa table) with a straight-through round, for gradient training."""
        unit = torch.clamp(x / self.scale, 1e-15, 1.0)
        index = RoundSTE.apply(-torch.log2(unit) * ADALOG_R / self.q)
        value = self.scale * torch.exp2(-index * self.q / ADALOG_R)
        return torch.where(index.detach() >= self.fmt.nonzero_levels, torch.zeros_like(value), value)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, q={self.q}, scale={self.scale:.4g}, offset={self.offset}, enabled={self.enabled}"


class UniformQuant(nn.Module):
    """Unsigned ``bits``-bit asymmetric quantizer; ``shape`` broadcasts its scale/zero point (``()`` per tensor,
    ``(1, H, 1, 1)`` per head of a (B, H, T, D) tensor)."""

    def __init__(self, bits: int, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape))
        self.enabled = False

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The unsigned integer codes (int64) the datapath reads."""
        return activation_codes(x, self.scale, self.zero_point, 0, self.qmax).to(torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.training:
            q = activation_codes(x, self.scale, self.zero_point, 0, self.qmax, rounding=RoundSTE.apply)
            return (q - self.zero_point) * self.scale
        return fake_uniform(x, self.scale, self.zero_point, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, shape={tuple(self.scale.shape)}, enabled={self.enabled}"


# ----------------------------------------------------------------------------------------------
# FPCS
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FpcsBudget:
    """Candidate counts of FPCS.  Uniform: ``candidates`` first (scales x zero points), ``keep`` survivors,
    ``per_round`` new scales each, ``rounds`` rounds, spacing shrinking by ``shrink``.  AdaLog: q on every
    ``q_stride``-th value (then the neighbours of the best), ``keep_q`` q crossed with ``scales`` post-GELU
    scales, ``keep_pairs`` survivors, ``gelu_per_round`` new scales each, spacing shrinking by ``gelu_shrink``."""

    name: str
    candidates: int = 128
    keep: int = 16
    per_round: int = 8
    rounds: int = 5
    shrink: float = 7.5
    q_stride: int = 1
    keep_q: int = 8
    scales: int = 16
    keep_pairs: int = 32
    gelu_per_round: int = 4
    gelu_shrink: float = 3.5
    first_scales: int | None = None  # fixed count of first scales instead of candidates // zero points


SPEC_BUDGET = FpcsBudget("spec")  # spec section 3.3
# the budget the first results used on heavily loaded shared cores: 4 scales x 16 zero points, top 8, 3 rounds;
# q on every second value; 4 q x 8 scales, 8 pairs
REDUCED_BUDGET = FpcsBudget("reduced", first_scales=4, keep=8, per_round=8, rounds=3, q_stride=2, keep_q=4, scales=8,
                            keep_pairs=8)
FPCS_BUDGETS = {b.name: b for b in (SPEC_BUDGET, REDUCED_BUDGET)}


def fpcs_uniform(x: torch.Tensor, bits: int, score: Score, *, budget: FpcsBudget | None = None,
                 rounds: int | None = None) -> tuple[float, float]:
    """FPCS for one uniform quantizer of ``x``: the (scale, zero point) with the lowest ``score``.

    Candidates: ``num_zp = min(16, 2**bits)`` consecutive zero points centred on the min/max zero point
    (so a non-negative tensor gets zero point 0), each crossed with ``budget.candidates // num_zp`` scales
    spaced linearly between the P10-P90 and the min-max step.  Then ``rounds`` (default
    ``budget.rounds``) refinements: around each of the ``budget.keep`` best, ``budget.per_round`` scales at
    offsets ``(linspace(0, 1) - 0.5) * delta``, ``delta`` (the first grid's spacing) shrinking by
    ``budget.shrink`` per round, zero points kept.  The default budget is the spec's (128 candidates, top 16,
    5 rounds of 8).
    """
    budget = budget or SPEC_BUDGET
    rounds = budget.rounds if rounds is None else rounds
    keep, per_round, shrink = budget.keep, budget.per_round, budget.shrink
    levels = (1 << bits) - 1
    flat = x.detach().reshape(-1).float()
    if flat.numel() == 0 or not torch.isfinite(flat).all():
        raise QuantError("cannot calibrate a uniform quantizer on empty or non-finite activations")
    lo, hi = float(flat.min()), float(flat.max())
    if hi - lo < 1e-12:
        return max(abs(hi), 1e-8) / levels, float(np.clip(round(-lo / max(abs(hi), 1e-8) * levels), 0, levels))
    p10, p90 = (float(v) for v in torch.quantile(_sample(flat), torch.tensor([0.1, 0.9])))
    s_lo, s_hi = max(p90 - p10, 1e-3 * (hi - lo)) / levels, (hi - lo) / levels
    num_zp = min(16, 1 << bits)
    first_scales = budget.first_scales or max(1, budget.candidates // num_zp)
    scales = np.linspace(s_lo, s_hi, first_scales)

    def zero_points(s: float) -> list[float]:
        centre = int(np.clip(round(-lo / s), 0, levels))
        start = int(np.clip(centre - num_zp // 2, 0, levels + 1 - num_zp))
        return [float(z) for z in range(start, start + num_zp)]

    def evaluate(s: float, z: float) -> float:
        return score(fake_uniform(x, torch.tensor(s), torch.tensor(z), bits))

    scored = [(evaluate(s, z), s, z) for s in scales for z in zero_points(s)]
    delta = (s_hi - s_lo) / max(first_scales - 1, 1)
    for _ in range(rounds):
        best = sorted(scored)[:keep]
        scored = list(best)
        for _, s0, z0 in best:
            for s in s0 + (np.linspace(0, 1, per_round) - 0.5) * delta:
                if s > 0:
                    scored.append((evaluate(float(s), z0), float(s), z0))
        delta /= shrink
    _, s, z = min(scored)
    return s, z


def fpcs_adalog(x: torch.Tensor, quant: AdaLogQuant, score: Score, *, search_scale: bool,
                budget: FpcsBudget | None = None, rounds: int | None = None) -> None:
    """FPCS for an AdaLog quantizer of ``x``: sets ``quant.q`` (and ``quant.scale`` with ``search_scale``).

    Post-Softmax (``search_scale=False``, scale 1): the best q in 10..138 (every q with the spec budget).
    Post-GELU: q at the max scale, keep ``budget.keep_q``; cross them with ``budget.scales`` scales between
    the 90th and 100th percentile of the positive shifted values; keep ``budget.keep_pairs`` pairs;
    ``rounds`` (default ``budget.rounds``) rounds refining the scale only (``budget.gelu_per_round`` new
    scales per survivor, spacing shrinking by ``budget.gelu_shrink``).  Spec sizes: 8 q x 16 scales,
    32 pairs, 5 rounds of 4.
    """
    budget = budget or SPEC_BUDGET
    rounds = budget.rounds if rounds is None else rounds
    keep_q, scales, keep, per_round, shrink = (budget.keep_q, budget.scales, budget.keep_pairs,
                                                budget.gelu_per_round, budget.gelu_shrink)
    shifted = quant.shifted(x)
    if (shifted < 0).any():
        raise QuantError(f"AdaLog input has values below -offset (min {float(shifted.min()):.4g}); "
                         "it needs non-negative activations")
    quant.enabled = True
    was_training = quant.training
    quant.eval()

    def evaluate(q: int, s: float) -> float:
        quant.q, quant.scale = int(q), float(s)
        return score(quant(x))

    try:
        top = float(shifted.max()) if search_scale else quant.scale
        if top <= 0:
            raise QuantError("AdaLog input is all zero; nothing to calibrate")
        by_q = _search_q(lambda q: evaluate(q, top), keep_q, budget.q_stride)
        if not search_scale:
            quant.q = by_q[0][1]
            return
        positive = _sample(shifted.reshape(-1)[shifted.reshape(-1) > 0])
        p90 = float(torch.quantile(positive, 0.9))
        grid = np.linspace(p90, top, scales)
        scored = [(evaluate(q, s), q, s) for _, q in by_q[:keep_q] for s in grid]
        delta = (top - p90) / max(scales - 1, 1)
        for _ in range(rounds):
            best = sorted(scored)[:keep]
            scored = list(best)
            for _, q, s0 in best:
                for s in s0 + (np.linspace(0, 1, per_round) - 0.5) * delta:
                    if s > 0:
                        scored.append((evaluate(q, float(s)), q, float(s)))
            delta /= shrink
        _, quant.q, quant.scale = min(scored)
    finally:
        quant.train(was_training)


def _search_q(score: Callable[[int], float], keep: int, stride: int = 1) -> list[tuple[float, int]]:
    """(score, q) pairs, best first: every ``stride``-th q of 10..138, then the unscored neighbours of the
    ``keep`` best (nothing left to add with ``stride`` 1, the spec's exhaustive search)."""
    scored = {q: score(q) for q in ADALOG_Q_RANGE[::stride]}
    for q in [q for _, q in sorted((v, q) for q, v in scored.items())[:keep]]:
        for near in range(q - stride + 1, q + stride):
            if near in ADALOG_Q_RANGE and near not in scored:
                scored[near] = score(near)
    return sorted((v, q) for q, v in scored.items())


def _sample(flat: torch.Tensor, limit: int = 1 << 20) -> torch.Tensor:
    """A deterministic strided subsample (torch.quantile refuses very large inputs)."""
    return flat[:: max(1, flat.numel() // limit)].float()
