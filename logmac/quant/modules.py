"""The fake-quant layer: a Conv2d/Linear wrapper that rounds its weights and quantizes its input.

It keeps the FP weight (for the FP reference path) and the quantized weight's codes, so one model serves
both paths of sequential calibration.  ``quant_on`` picks the path; during reconstruction a
:class:`~logmac.quant.rounding.SoftRounding` supplies the weight instead.  After :meth:`fit` or
:meth:`finish_rounding` the quantized weight is always ``format.decode_float`` of the stored codes.

Memory: the codes are kept in the smallest unsigned dtype (uint8 up to 8-bit words), and the fake-quant
weight is not stored: ``qweight`` decodes the codes on use through a per-channel table of the
``2^storage_bits`` values a word can take (the same float64 numbers ``decode_float`` computes, cast to the
weight dtype).  A quantized model then adds about a quarter of its fp32 size, not another fp32 copy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from logmac import format as codes_format
from logmac.quant.config import QuantConfig
from logmac.quant.gptq import gptq_layer, log_rounder, uniform_rounder
from logmac.quant.groupexp import GroupScaled, factor_tensor, search_group_exponents
from logmac.quant.loggrid import LogGrid, quantize_rtn, search_grid, words_from
from logmac.quant.rounding import LogRounding, SoftRounding, UniformRounding
from logmac.quant.uniform import ActQuant, uniform_codes, uniform_range

HESSIAN_ROWS = 2048  # input rows (tokens / conv patches) per batch that enter the Hessian


def _gram(rows: torch.Tensor) -> torch.Tensor:
    """``rows^T rows`` per group: (G, N, K) -> (G, K, K)."""
    return torch.bmm(rows.transpose(1, 2), rows)


class GramCache:
    """The last input's Gram matrix within one observing pass.  An LLM block feeds one tensor to several linears
    (q/k/v, gate/up); they get the very same matrix, computed once.  The cache holds the tensor itself, so its
    memory cannot be reused by a later batch that would match a stale entry."""

    def __init__(self) -> None:
        self.source: torch.Tensor | None = None
        self.version = -1
        self.value: torch.Tensor | None = None

    def gram(self, x: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.source is not x or self.version != x._version:
            self.source, self.version, self.value = x, x._version, compute()
        return self.value

    def clear(self) -> None:
        self.source = self.value = None


class QuantLayer(nn.Module):
    """A quantizable Conv2d or Linear (``inner`` keeps its FP weight, BN already folded)."""

    def __init__(self, name: str, inner: nn.Conv2d | nn.Linear, cfg: QuantConfig, seed: int = 0) -> None:
        super().__init__()
        self.name, self.inner, self.cfg = name, inner, cfg
        self.op = "conv2d" if isinstance(inner, nn.Conv2d) else "linear"
        self.groups = inner.groups if self.op == "conv2d" else 1
        self.pre_pad = static_padding(inner)
        self.act = ActQuant(cfg.a_bits, cfg.act_init, seed) if cfg.quantize_acts else None
        self.quant_on = False
        self.rounding: SoftRounding | None = None
        self._qweight: torch.Tensor | None = None  # an explicitly assigned fake-quant weight (subclasses)
        self._lut: torch.Tensor | None = None  # (C, 2^storage_bits) decoded value of every word, per channel
        self.grid: LogGrid | None = None
        self.words: np.ndarray | None = None  # log code words, or unsigned uniform codes (see compact_words)
        self.uniform: tuple[torch.Tensor, torch.Tensor] | None = None  # (scale, zero_point) of the baseline
        self.group_exp: np.ndarray | None = None  # (C, groups) int8 power-of-two offsets (cfg.group_size > 0)
        self.hessian: torch.Tensor | None = None
        self.hessian_rows = 0
        self.round_start: torch.Tensor | None = None  # GPTQ's compensated weights: learned rounding starts there
        self.collect = False
        self.gram_cache: GramCache | None = None  # set for an observing pass: linears fed one tensor share its Gram
        self._gen = torch.Generator().manual_seed(seed)

    # -- forward --------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The FP weight, for code that reads ``layer.weight`` (dtype, device, tied embeddings)."""
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.inner.bias

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: FP, learned-rounding (soft or hard) or the decoded codes."""
        if not self.quant_on:
            return self.inner.weight
        if self.rounding is not None:
            return self.rounding().reshape(self.inner.weight.shape).to(self.inner.weight.dtype)
        q = self.qweight
        return self.inner.weight if q is None else q

    @property
    def qweight(self) -> torch.Tensor | None:
        """The fake-quant weight (shape and dtype of the FP weight), decoded from the codes; None before fit."""
        if self._qweight is not None:
            return self._qweight
        if self._lut is None or self.words is None:
            return None
        lut = self._lut
        C, n = lut.shape
        words = np.asarray(self.words).reshape(C, -1)
        flat = torch.from_numpy(words.astype(np.int32) + np.arange(0, C * n, n, dtype=np.int32)[:, None])
        q = lut.reshape(-1).index_select(0, flat.reshape(-1).to(lut.device))
        if self.group_exp is not None:
            q = q.reshape(C, -1) * self.group_factor(q)
        return q.reshape(self.inner.weight.shape)

    def group_factor(self, like: torch.Tensor) -> torch.Tensor | None:
        """(C, K) ``2**e`` of every weight's group, or None without group exponents."""
        if self.group_exp is None:
            return None
        return factor_tensor(self.group_exp, self.weight2d().shape[1], self.cfg.group_size, like)

    @qweight.setter
    def qweight(self, value: torch.Tensor | None) -> None:
        """Pin a fake-quant weight (or clear it); the decode table is dropped until the next fit."""
        self._qweight, self._lut = value, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None and (self.quant_on or self.act.observing):
            x = self.act(x)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        if self.collect:
            self._accumulate(x)
        w = self.effective_weight()
        if self.op == "linear":
            return F.linear(x, w, self.inner.bias)
        m = self.inner
        return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    def _accumulate(self, x: torch.Tensor) -> None:
        """Add this batch's inputs to H = (2/N) sum x x^T, one (K, K) block per conv group."""
        source, x = x, x.detach()
        if self.op == "linear":
            rows = x.reshape(-1, x.shape[-1])
            if rows.shape[0] <= HESSIAN_ROWS and self.gram_cache is not None:  # no row sampling: the Gram is shared
                self._add_gram(self.gram_cache.gram(source, lambda: _gram(rows.double()[None])), rows.shape[0])
                return
            rows = rows.double()[None]
        else:
            m = self.inner
            positions = max(1, x.shape[-1] * x.shape[-2] // (m.stride[0] * m.stride[1]))
            keep = max(1, -(-HESSIAN_ROWS // positions))  # enough images for HESSIAN_ROWS patches
            if x.shape[0] > keep:
                x = x[torch.randperm(x.shape[0], generator=self._gen)[:keep].to(x.device)]
            cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, Cin*kh*kw, L)
            cols = cols.transpose(1, 2).reshape(-1, cols.shape[1]).double()
            rows = cols.reshape(cols.shape[0], self.groups, -1).transpose(0, 1)  # (G, N*L, Kg)
        if rows.shape[1] > HESSIAN_ROWS:
            pick = torch.randperm(rows.shape[1], generator=self._gen)[:HESSIAN_ROWS].to(rows.device)
            rows = rows[:, pick]
        self._add_gram(_gram(rows), rows.shape[1])

    def _add_gram(self, h: torch.Tensor, rows: int) -> None:
        # accumulators are never changed in place, so layers sharing one Gram (GramCache) may hold it as is
        self.hessian = h if self.hessian is None else self.hessian + h
        self.hessian_rows += rows

    def take_hessian(self, damp: float = 0.0) -> torch.Tensor | None:
        """The averaged Hessian (optionally damped by ``damp * mean(diag)``), freeing the accumulator."""
        if self.hessian is None:
            return None
        h = self.hessian * (2.0 / max(1, self.hessian_rows))
        self.hessian, self.hessian_rows = None, 0
        if damp:
            diag = torch.diagonal(h, dim1=1, dim2=2)
            dead = diag == 0
            diag += damp * diag.mean(dim=1, keepdim=True) + dead.double() / 2048
        return h.float()

    # -- rounding -------------------------------------------------------------------------------
    def weight2d(self) -> torch.Tensor:
        w = self.inner.weight.detach()
        return w.reshape(w.shape[0], -1)

    @torch.no_grad()
    def fit(self, hess: torch.Tensor | None = None) -> None:
        """Choose the grid (log: DBS/SFS/ABS search; linear: min/max or MSE range) and round to nearest."""
        cfg, w2d = self.cfg, self.weight2d()
        if not torch.isfinite(w2d).all():
            raise ValueError(f"layer {self.name}: weights contain NaN or Inf")
        fmt = cfg.weight_format()
        if cfg.is_log:
            alphas = np.linspace(1.0, cfg.alpha_min, cfg.alpha_steps)
            self.grid = search_grid(w2d, fmt, dbs=cfg.dbs, sfs=cfg.sfs, asym=cfg.abs, alphas=alphas,
                                    per_tensor=cfg.granularity == "tensor", hess=hess, groups=self.groups)
        else:
            src = w2d.reshape(1, -1) if cfg.granularity == "tensor" else w2d
            scale, zp = uniform_range(src.double(), fmt.bits, mse=cfg.method == "linear_mse")
            scale, zp = scale.expand(w2d.shape[0]).clone(), zp.expand(w2d.shape[0]).clone()
            self.uniform = (scale, zp)
        self.group_exp = None
        if cfg.group_size:
            diag = None
            if hess is not None:
                diag = torch.diagonal(hess, dim1=1, dim2=2).repeat_interleave(w2d.shape[0] // self.groups, dim=0)
            self.group_exp = search_group_exponents(w2d, self._nearest(), cfg.group_size, cfg.group_bits, diag)
        self.words = self._encode(w2d)
        self._set_qweight()

    def _nearest(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Round (C, K) weights to the nearest value of each channel's fitted grid (no group offsets)."""
        fmt = self.cfg.weight_format()
        if self.cfg.is_log:
            levels = self.grid.levels()
            return lambda w: quantize_rtn(w, levels, fmt)[0]
        scale, zp = self.uniform
        return lambda w: (uniform_codes(w, scale.to(w), zp.to(w), fmt.bits).to(w) - zp.to(w)[:, None]) * scale.to(w)[:, None]

    def _encode(self, w2d: torch.Tensor) -> np.ndarray:
        """Codes of (C, K) weights on the fitted grid, each group's weights divided by its ``2**e`` first."""
        w, fmt = w2d.double(), self.cfg.weight_format()
        factor = self.group_factor(w)
        if factor is not None:
            w = w / factor
        if self.cfg.is_log:
            return compact_words(codes_format.encode(w, self.grid.table(), fmt))
        scale, zp = self.uniform
        return compact_words(uniform_codes(w, scale.to(w), zp.to(w), fmt.bits).cpu().numpy())

    @torch.no_grad()
    def round_gptq(self, hess: torch.Tensor) -> None:
        """Replace the nearest codes of :meth:`fit` by GPTQ's on the same grid (``hess`` (G, K, K)).

        The rounded values are grid levels, so re-encoding them with the export's own rule gives their codes;
        with learned rounding on, the compensated weights are kept as its starting point."""
        w2d, fmt = self.weight2d(), self.cfg.weight_format()
        if self.cfg.is_log:
            nearest = log_rounder(self.grid.levels().to(w2d.device), fmt)
        else:
            scale, zp = (t.to(w2d.device, torch.float64) for t in self.uniform)
            nearest = uniform_rounder(scale, zp, fmt.bits)
        q, start = gptq_layer(w2d, hess, nearest, self.groups, act_order=self.cfg.act_order, name=self.name,
                              col_factor=self.group_factor(w2d.double()))
        self.words = self._encode(q)
        self.round_start = start.to(w2d.dtype) if self.cfg.learn_rounding else None
        self._set_qweight()

    def start_rounding(self) -> list[nn.Parameter]:
        """Begin learned rounding (LLR or AdaRound) from the fitted grid; returns the trainable V."""
        w2d = (self.round_start if self.round_start is not None else self.weight2d()).double()
        self.round_start = None
        factor = self.group_factor(w2d)
        if factor is not None:
            w2d = w2d / factor
        if self.cfg.is_log:
            self.rounding = LogRounding(w2d, self.grid.levels().to(w2d.device), self.cfg.weight_format())
        else:
            scale, zp = self.uniform
            self.rounding = UniformRounding(w2d, scale.to(w2d), zp.to(w2d), self.cfg.w_bits)
        if factor is not None:
            self.rounding = GroupScaled(self.rounding, factor)
        return [self.rounding.v]

    @torch.no_grad()
    def finish_rounding(self) -> None:
        """Freeze the hard rounding decisions into codes and drop the soft state."""
        r = self.rounding.inner if isinstance(self.rounding, GroupScaled) else self.rounding
        if isinstance(r, LogRounding):
            self.words = compact_words(words_from(self.cfg.weight_format(), *r.indices()).reshape(self.words.shape))
        else:
            self.words = compact_words(r.codes().cpu().numpy())
        self.rounding = None
        self._set_qweight()

    @torch.no_grad()
    def load_codes(self, words: np.ndarray, grid: LogGrid | None = None,
                   uniform: tuple[torch.Tensor, torch.Tensor] | None = None, group_exp: np.ndarray | None = None) -> None:
        """Take codes fitted elsewhere (an artifact): log words with their grid, or uniform codes with
        (scale, zero point), plus any group exponents; the fake-quant weight then decodes them exactly as
        after :meth:`fit`."""
        if (grid is None) == (uniform is None) or (grid is None) == self.cfg.is_log:
            raise ValueError(f"layer {self.name}: {'log' if self.cfg.is_log else 'uniform'} codes need "
                             f"{'a grid' if self.cfg.is_log else '(scale, zero point)'} and nothing else")
        if tuple(words.shape) != tuple(self.inner.weight.shape):
            raise ValueError(f"layer {self.name}: codes of shape {tuple(words.shape)} for a weight of shape "
                             f"{tuple(self.inner.weight.shape)}")
        self.grid, self.uniform, self.group_exp = grid, uniform, group_exp
        self.words = compact_words(np.asarray(words).reshape(words.shape[0], -1))
        self._set_qweight()

    def _set_qweight(self) -> None:
        """Build the decode table of the stored codes: per channel, the value of each possible word, computed
        exactly as the artifact decodes it (``format.decode_float`` / ``(q - zp) * scale`` in float64)."""
        dtype, dev = self.inner.weight.dtype, self.inner.weight.device
        fmt = self.cfg.weight_format()
        C = self.words.shape[0]
        every = np.broadcast_to(np.arange(1 << fmt.storage_bits, dtype=np.uint16), (C, 1 << fmt.storage_bits))
        if self.cfg.is_log:
            lut = torch.from_numpy(codes_format.decode_float(np.ascontiguousarray(every), self.grid.table(), fmt))
        else:
            scale, zp = self.uniform
            lut = (torch.from_numpy(every.astype(np.float64)) - zp.double().cpu()[:, None]) * scale.double().cpu()[:, None]
        self.qweight = None
        self._lut = lut.to(dev, dtype)

    def extra_repr(self) -> str:
        return f"{self.name}: {self.op}, quant_on={self.quant_on}"


def compact_words(words: np.ndarray) -> np.ndarray:
    """Code words in uint8 when they fit (every width up to 8 bits), else unchanged: the codes of a whole
    model stay at a quarter of its fp32 size.  Export and the emulator widen them as they need."""
    words = np.asarray(words)
    if words.size == 0 or (words.min() >= 0 and words.max() < 256):
        return words.astype(np.uint8)
    return words


def static_padding(conv: nn.Module) -> tuple[int, int, int, int] | None:
    """The (left, right, top, bottom) zero padding a TF-'SAME' Conv2d subclass applies before its conv."""
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        return tuple(int(p) for p in pad.padding)
    return None


def supported(mod: nn.Module) -> bool:
    """Plain Conv2d/Linear, or a Conv2d subclass whose only extra is a static zero padding."""
    if type(mod) is nn.Linear:
        return True
    if not isinstance(mod, nn.Conv2d) or mod.padding_mode != "zeros":
        return False
    if type(mod) is nn.Conv2d:
        return True
    pad = getattr(mod, "static_padding", None)
    return pad is not None and (isinstance(pad, nn.ZeroPad2d) or type(pad).__name__ == "Identity")


def set_quant(model: nn.Module, on: bool) -> None:
    """Switch every QuantLayer of ``model`` to the quantized (True) or FP (False) path."""
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.quant_on = on


def quant_layers(module: nn.Module) -> list[QuantLayer]:
    return [m for m in module.modules() if isinstance(m, QuantLayer)]
