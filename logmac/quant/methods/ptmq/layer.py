"""The multi-bit fake-quant layer of PTMQ: one FP weight, one shared rounding, one view per bit-width.

:class:`MultiBitLayer` is a :class:`~logmac.quant.modules.QuantLayer` whose precision is switched at run
time (:func:`set_precision`).  Per bit-width b it keeps its own config, codes, grid view, activation
quantizer (:class:`LsqActQuant`, a learnable step) and decoded weight; switching only re-points those
attributes, so every existing QuantLayer path (forward, export) works unchanged at any precision.

Weights, log codes: one grid fitted for all widths at once (DBS/SFS/ABS candidates scored on the sum of
the nested grids' errors) and one LLR rounding at the top width; every lower width is read out of the top
code (``logmac.format.nested``).  Weights, uniform codes: a (scale, zero point) per width and one V shared
by the AdaRound of every width, ``clamp(floor(W / s_b) + h(V) + z_b)`` (PTMQ's shared rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from logmac import format as codes_format
from logmac.format import DecodeTable, LogFormat, UniformFormat, ZeroMode
from logmac.format.nested import NestMode, nest_map, nest_table, nest_words, nested_format
from logmac.quant.config import QuantConfig
from logmac.quant.loggrid import LogGrid, SortedScorer, sign_maxima, tops_for, words_from
from logmac.quant.modules import QuantLayer
from logmac.quant.rounding import LogRounding, UniformRounding
from logmac.quant.uniform import ActQuant, RoundSTE, uniform_codes, uniform_range

SEARCH_BASE2 = 8  # DBS mixes tried for the nested grid (every few of the top width's choices)
SEARCH_ALPHA_EVERY = 3  # every third SFS scale of the single-width search (26 -> 9)


@dataclass
class PrecisionConfig(QuantConfig):
    """A QuantConfig for one precision of a multi-bit run: log formats keep the top width's shift field."""

    max_shift: int = -1

    def weight_format(self) -> LogFormat | UniformFormat:
        if self.is_log and self.max_shift != -1:
            return LogFormat(self.w_bits, grid=self.method, hardware_approx=self.hardware_approx, zero=self.zero,
                             max_shift=self.max_shift)
        return super().weight_format()


@dataclass
class NestedGrid:
    """What export needs of a lower log precision: its (nested) decode table and the top grid's parameters."""

    top: LogGrid
    nested: DecodeTable

    def table(self) -> DecodeTable:
        return self.nested

    @property
    def alpha(self) -> np.ndarray:
        return self.top.alpha

    @property
    def n_base2(self) -> np.ndarray:
        return self.top.n_base2

    @property
    def top_k(self) -> np.ndarray:
        return self.top.top_k


class LsqActQuant(ActQuant):
    """ActQuant whose step can be trained with LSQ (gradient scaled by 1/sqrt(N * Q_max)) during reconstruction."""

    def __init__(self, bits: int, init: str = "mse", seed: int = 0) -> None:
        super().__init__(bits, init, seed)
        self.step: nn.Parameter | None = None

    def start_learning(self) -> nn.Parameter:
        self.step = nn.Parameter(self.scale.detach().clone())
        return self.step

    @torch.no_grad()
    def stop_learning(self, keep: bool) -> None:
        if keep and self.step is not None:
            self.scale.copy_(self.step.abs().clamp(min=1e-8))
        self.step = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step is None or self.observing or not self.enabled:
            return super().forward(x)
        qmax = (1 << self.bits) - 1
        g = 1.0 / float(np.sqrt(max(1, x[0].numel()) * qmax))
        s = self.step.abs().clamp(min=1e-8)
        s = (s - s * g).detach() + s * g
        q = torch.clamp(RoundSTE.apply(x / s) + self.zero_point, 0, qmax)
        return (q - self.zero_point) * s


@dataclass
class _State:
    """Everything that differs between precisions of one layer."""

    cfg: PrecisionConfig
    words: np.ndarray | None = None
    grid: LogGrid | NestedGrid | None = None
    uniform: tuple[torch.Tensor, torch.Tensor] | None = None
    qweight: torch.Tensor | None = None


class MultiBitLayer(QuantLayer):
    """A QuantLayer with several weight/activation precisions and one shared rounding (see module docstring)."""

    def __init__(self, name: str, inner: nn.Conv2d | nn.Linear, cfg: QuantConfig, bits: list[int],
                 a_bits: list[int], nest: NestMode, seed: int = 0, width_scale: bool = False) -> None:
        self.bits_list, self.top = list(bits), max(bits)
        base = {**cfg.to_dict(), "w_bits": self.top, "a_bits": a_bits[bits.index(self.top)]}
        top_cfg = PrecisionConfig(**base)
        super().__init__(name, inner, top_cfg, seed)
        self.top_fmt = top_cfg.weight_format()  # built once: a LogFormat checks every grid mix when made
        shift = self.top_fmt.max_shift if top_cfg.is_log else -1
        self.nest = nest
        self.states = {b: _State(PrecisionConfig(**{**base, "w_bits": b, "a_bits": a, "max_shift": shift}))
                       for b, a in zip(bits, a_bits, strict=True)}
        self.acts = nn.ModuleDict({str(b): LsqActQuant(a, cfg.act_init, seed) for b, a in zip(bits, a_bits, strict=True)})
        self.shared: LogRounding | nn.ModuleDict | None = None  # the rounding all precisions learn together
        # Per lower log width, a per-channel weight step (PTMQ's S_w): the nested table's scale times this gain.
        self.width_scale = width_scale
        self.gains: dict[int, np.ndarray] = {}
        self._luts: dict[int, torch.Tensor] = {}
        self.precision = self.top
        self.set_precision(self.top)

    # -- precision ------------------------------------------------------------------------------
    def set_precision(self, bits: int) -> None:
        """Point cfg, act, codes, grid and decoded weight at precision ``bits``."""
        if bits not in self.states:
            raise ValueError(f"layer {self.name} has precisions {self.bits_list}, not {bits}")
        st = self.states[bits]
        self.precision = bits
        self.cfg, self.words, self.grid, self.uniform, self.qweight = st.cfg, st.words, st.grid, st.uniform, st.qweight
        self.act = self.acts[str(bits)]

    def _store(self, bits: int) -> None:
        st = self.states[bits]
        st.words, st.grid, st.uniform, st.qweight = self.words, self.grid, self.uniform, self.qweight

    # -- fit --------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_all(self) -> None:
        """Fit the weight grids of every precision and round to nearest (log: one grid, nested codes)."""
        w2d = self.weight2d()
        if not torch.isfinite(w2d).all():
            raise ValueError(f"layer {self.name}: weights contain NaN or Inf")
        top_cfg = self.states[self.top].cfg
        if top_cfg.is_log:
            fmt = self.top_fmt
            grid = self._search_nested_grid(w2d, fmt)
            self.gains = {}
            self._set_log_words(grid, codes_format.encode(w2d, grid.table(), fmt))
            if self.width_scale:
                self._fit_gains(w2d)
        else:
            for b in self.bits_list:
                src = w2d.reshape(1, -1) if top_cfg.granularity == "tensor" else w2d
                scale, zp = uniform_range(src.double(), b, mse=top_cfg.method == "linear_mse")
                scale, zp = scale.expand(w2d.shape[0]).clone(), zp.expand(w2d.shape[0]).clone()
                self.set_precision(b)
                self.uniform = (scale, zp)
                self.words = uniform_codes(w2d.double(), scale, zp, b).cpu().numpy()
                self._set_qweight()
                self._store(b)
        self.set_precision(self.top)

    def _set_log_words(self, grid: LogGrid, top_words: np.ndarray) -> None:
        fmt = self.top_fmt
        table = grid.table()
        for b in self.bits_list:
            self.set_precision(b)
            if b == self.top:
                self.grid, self.words = grid, top_words
            else:
                nested = nest_table(table, fmt, b, self.nest)
                if b in self.gains:
                    nested.scale = nested.scale * self.gains[b]
                self.grid = NestedGrid(grid, nested)
                self.words = nest_words(top_words, fmt, b, self.nest)
            self._set_qweight()
            self._store(b)
        self._luts = {}

    @torch.no_grad()
    def _fit_gains(self, w2d: torch.Tensor) -> None:
        """Per lower width and channel, the least-squares step of its round-to-nearest nested weight:
        ``gain = <w, q_b> / <q_b, q_b>`` (clamped to [0.5, 2]).  Fixed afterwards, like PTMQ's S_w; the
        hardware needs nothing new, the gain sits in that width's requant multiplier."""
        w = w2d.double().cpu()
        for b in self.bits_list:
            if b == self.top:
                continue
            self.set_precision(b)
            q = self.qweight.reshape(w.shape).double().cpu()
            num, den = (w * q).sum(1), (q * q).sum(1)
            gain = torch.where(den > 0, num / den.clamp(min=1e-300), torch.ones_like(num)).clamp(0.5, 2.0)
            self.gains[b] = gain.numpy()
        self.set_precision(self.top)
        self._set_log_words(self.states[self.top].grid, self.states[self.top].words)

    def _search_nested_grid(self, w2d: torch.Tensor, fmt: LogFormat) -> LogGrid:
        """DBS x SFS (x ABS tops) candidates scored by the summed squared error of every nested precision."""
        cfg = self.states[self.top].cfg
        C = w2d.shape[0]
        if cfg.dbs:  # at most SEARCH_BASE2 mixes, pure base 2 first (the top width has up to 32 of them)
            every = max(1, -(-len(fmt.base2_choices) // SEARCH_BASE2))
            choices = fmt.base2_choices[::-1][::every]
        else:
            choices = [max(fmt.base2_choices)] if fmt.grid.value != "log_sqrt2" else [0]
        alphas = np.linspace(1.0, cfg.alpha_min, cfg.alpha_steps)[::SEARCH_ALPHA_EVERY] if cfg.sfs else np.array([1.0])
        pos, neg = sign_maxima(w2d, cfg.granularity == "tensor")
        w = w2d.double()
        scorers = {b: SortedScorer(w, None, nested_format(fmt, b)) for b in self.bits_list}
        index = {b: nested_level_index(fmt, b, self.nest) for b in self.bits_list}
        cands, scores = [], []
        for n2 in choices:
            n2v = np.full(C, n2)
            grid = LogGrid(fmt, n2v, tops_for(fmt, n2v, pos, neg, cfg.abs), np.ones(C))
            base = grid.levels().to(w.device)
            for a in alphas:
                cands.append((n2, a, grid.top_k))
                scores.append(sum(scorers[b](base[:, :, index[b]] * a) for b in self.bits_list))
        score = torch.stack(scores)
        if cfg.granularity == "tensor":
            score = score.sum(1, keepdim=True).expand(-1, C)
        best = score.argmin(0).cpu().numpy()
        return LogGrid(fmt, np.array([cands[i][0] for i in best]),
                       np.stack([cands[i][2][c] for c, i in enumerate(best)]),
                       np.array([cands[i][1] for i in best], dtype=np.float64))

    # -- shared rounding --------------------------------------------------------------------------
    def start_shared_rounding(self) -> list[nn.Parameter]:
        """One V for all precisions: LLR at the top log width, or AdaRound tied across uniform widths."""
        w2d = self.weight2d().double()
        top = self.states[self.top]
        if top.cfg.is_log:
            self.shared = LogRounding(w2d, top.grid.levels().to(w2d.device), self.top_fmt)
            return [self.shared.v]
        low = min(self.bits_list)
        rounders = {}
        for b in self.bits_list:
            scale, zp = self.states[b].uniform
            rounders[str(b)] = UniformRounding(w2d, scale.to(w2d), zp.to(w2d), b)
        for b in self.bits_list:  # V starts from the lowest width's fractional parts, then is shared
            rounders[str(b)].v = rounders[str(low)].v
        self.shared = nn.ModuleDict(rounders)
        return [rounders[str(low)].v]

    def set_hard(self, hard: bool) -> None:
        """Evaluate the shared rounding with hard decisions (scoring) or soft ones (training)."""
        mods = [self.shared] if isinstance(self.shared, LogRounding) else list(self.shared.values())
        for r in mods:
            r.hard = hard

    def regularizer(self, beta: float) -> torch.Tensor:
        r = self.shared if isinstance(self.shared, LogRounding) else self.shared[str(min(self.bits_list))]
        return r.regularizer(beta)

    def effective_weight(self) -> torch.Tensor:
        if self.quant_on and self.shared is not None:
            shape = self.inner.weight.shape
            return self._shared_weight(self.precision).reshape(shape).to(self.inner.weight.dtype)
        return super().effective_weight()

    def _shared_weight(self, bits: int) -> torch.Tensor:
        if isinstance(self.shared, nn.ModuleDict):
            return self.shared[str(bits)]()
        r = self.shared
        soft = r()
        if bits == self.top:
            return soft
        hard = self._hard_nested(bits)
        if r.hard:
            return hard
        if self.nest == "coarsen":  # exact: the nested grid is the top grid cut below, same V
            nm = nest_map(self.top_fmt, bits, "coarsen")
            soft = torch.where(r.below >= nm.offset - 1, soft, torch.zeros_like(soft))
            if bits in self.gains:
                soft = soft * torch.from_numpy(self.gains[bits]).to(soft)[:, None]
            return soft
        return soft + (hard - soft).detach()  # prefix: the forward value is the nested code, gradient as top

    def _hard_nested(self, bits: int) -> torch.Tensor:
        """The b-bit weight the current hard decisions decode to (same as decoding the nested words)."""
        r = self.shared
        fmt = self.top_fmt
        if bits not in self._luts:
            lut = nested_lut(self.states[self.top].grid.table(), fmt, bits, self.nest)
            if bits in self.gains:
                lut = lut * self.gains[bits][:, None, None]
            self._luts[bits] = torch.from_numpy(lut)
        lut = self._luts[bits].to(r.lo.device)
        sign, index, is_zero = r.indices()
        slot = index + (1 if fmt.zero is ZeroMode.CODE else 0)
        ch = torch.arange(lut.shape[0], device=lut.device)[:, None].expand_as(slot)
        val = lut[ch, sign, slot]
        val = torch.where(is_zero, torch.zeros_like(val), val)
        return torch.where(sign == 1, -val, val)

    @torch.no_grad()
    def finish_shared_rounding(self, keep: bool) -> None:
        """Freeze the shared decisions into every precision's codes (``keep``), or keep round-to-nearest."""
        shared, self.shared = self.shared, None
        if not keep:
            return
        if isinstance(shared, LogRounding):
            top = self.states[self.top]
            words = words_from(self.top_fmt, *shared.indices()).reshape(top.words.shape)
            self._set_log_words(top.grid, words)
        else:
            for b in self.bits_list:
                self.set_precision(b)
                self.words = shared[str(b)].codes().cpu().numpy()
                self._set_qweight()
                self._store(b)
        self.set_precision(self.top)


def nested_level_index(top: LogFormat, bits: int, mode: NestMode) -> np.ndarray:
    """Positions, among the top grid's non-zero levels, of the b-bit grid's non-zero levels (ascending)."""
    nm = nest_map(top, bits, mode)
    first = 1 if top.zero is ZeroMode.CODE else 0
    slots = np.arange(first, 1 << (bits - 1))
    return (((slots + nm.offset) << nm.shift) | nm.or_mask) - first


def nested_lut(table: DecodeTable, top: LogFormat, bits: int, mode: NestMode) -> np.ndarray:
    """(C, 2, L_top) float: the b-bit magnitude each top-code slot decodes to (0 where it merges into zero)."""
    nm = nest_map(top, bits, mode)
    slots = np.arange(top.levels_per_sign)
    vals = codes_format.level_values(table, top)[:, :, slots | nm.or_mask] * table.scale[:, None, None]
    return np.where(slots < nm.floor, 0.0, vals)


def multibit_layers(model: nn.Module) -> list[MultiBitLayer]:
    return [m for m in model.modules() if isinstance(m, MultiBitLayer)]


def set_precision(model: nn.Module, bits: int) -> None:
    """Switch every MultiBitLayer of ``model`` to precision ``bits`` (an unknown width is an error)."""
    layers = multibit_layers(model)
    if not layers:
        raise ValueError("the model has no multi-bit layers")
    for layer in layers:
        layer.set_precision(bits)
