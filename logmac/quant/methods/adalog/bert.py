"""AdaLog W/A quantization of a Hugging Face BERT encoder (MiniLM-L6, the second transformer).

The same quantizers and FPCS as the ViT (:mod:`logmac.quant.methods.adalog.vit`): per-channel weights; post-Softmax
probabilities AdaLog-coded at scale 1 with V, q and k uniform per head; the post-GELU input of each layer's
output dense AdaLog-coded after the +c shift with c folded into its bias; every other linear input uniform per
tensor.  The attention runs through a registered transformers attention function that reads the layer's
quantizers.  Differences from the ViT: BERT is post-norm (LayerNorm output feeds the residual too), so
there is no RepQ fold and post-LayerNorm inputs are plain per-tensor; q, k and v each get their own input
quantizer; the embeddings stay float.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from logmac.quant.config import QuantError
from logmac.quant.methods.adalog.quantizers import GELU_OFFSET, AdaLogQuant, UniformQuant, fpcs_adalog, fpcs_uniform
from logmac.quant.methods.adalog.vit import (
    AdaLogConfig,
    AdaLogResult,
    QuantInput,
    Recording,
    activation_quantizer,
    calibrate_head_quantizers,
    calibrate_uniform_quantizers,
    flatten_rows,
    linear_output_score,
    quantizer_summary,
    set_adalog_quant,
    set_quant,
)
from logmac.quant.modules import QuantLayer

ATTENTION_NAME = "logmac_adalog"


class AttentionQuantizers(Recording, nn.Module):
    """The per-head q/k/V quantizers and the post-Softmax quantizer of one BERT self-attention."""

    def __init__(self, heads: int, cfg: AdaLogConfig) -> None:
        super().__init__()
        self.q_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.k_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.v_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.attn_quant = activation_quantizer(cfg)


def adalog_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers attention function: softmax(q k^T * scaling + mask) @ V with the layer's quantizers."""
    quant: AttentionQuantizers = module.adalog
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    quant.keep("q", query)
    quant.keep("k", key)
    scores = (quant.q_quant(query) * scaling) @ quant.k_quant(key).transpose(-2, -1)
    if attention_mask is not None:
        scores = scores + attention_mask if attention_mask.dtype != torch.bool else \
            scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    quant.keep("a", probs)
    quant.keep("v", value)
    out = (quant.attn_quant(probs).double() @ quant.v_quant(value).double()).to(value.dtype)
    return out.transpose(1, 2).contiguous(), probs


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(ATTENTION_NAME, adalog_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


class ShiftedOutput(Recording, nn.Module):
    """BERT's output dense after GELU: AdaLog codes of GELU + c, bias b - c W_hat 1 (or the uniform baseline)."""

    def __init__(self, name: str, dense: nn.Linear, cfg: AdaLogConfig) -> None:
        super().__init__()
        self.layer = QuantLayer(name, dense, cfg.layer_config())
        self.hid_quant = activation_quantizer(cfg, GELU_OFFSET)
        self.register_buffer("shifted_bias", torch.zeros(dense.out_features))

    @torch.no_grad()
    def reparameterise_bias(self) -> None:
        w = self.layer.effective_weight()
        self.shifted_bias.copy_(self.layer.bias - GELU_OFFSET * w.sum(dim=1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.keep("h", h)
        if isinstance(self.hid_quant, AdaLogQuant) and self.hid_quant.enabled:
            w = self.layer.effective_weight()
            return F.linear(self.hid_quant(h).double(), w.double(), self.shifted_bias.double()).to(h.dtype)
        return self.layer(self.hid_quant(h) if isinstance(self.hid_quant, UniformQuant) else h)


def rewrite_bert(encoder: nn.Module, cfg: AdaLogConfig) -> nn.Module:
    """Quantized forms of every encoder layer's linears and attention, in place (all quantizers off)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise QuantError("model is not a Hugging Face BERT encoder (no .encoder.layer)")
    _register_attention()
    encoder.config._attn_implementation = ATTENTION_NAME
    for i, layer in enumerate(layers):
        att, name = layer.attention, f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            setattr(att.self, proj, QuantInput(f"{name}.attention.self.{proj}", getattr(att.self, proj), cfg.a_bits, cfg))
        att.self.adalog = AttentionQuantizers(att.self.num_attention_heads, cfg)
        att.output.dense = QuantInput(f"{name}.attention.output.dense", att.output.dense, cfg.a_bits, cfg)
        layer.intermediate.dense = QuantInput(f"{name}.intermediate.dense", layer.intermediate.dense, cfg.a_bits, cfg)
        if not isinstance(layer.intermediate.intermediate_act_fn, nn.Module) or "GELU" not in type(
                layer.intermediate.intermediate_act_fn).__name__:
            raise QuantError(f"{name}: the intermediate activation is not GELU")
        layer.output.dense = ShiftedOutput(f"{name}.output.dense", layer.output.dense, cfg)
    return encoder


@torch.no_grad()
def _calibrate_attention(quant: AttentionQuantizers, search: dict) -> None:
    rec = {k: torch.cat(v) for k, v in quant.record.items()}
    calibrate_head_quantizers(quant, rec["q"], rec["k"], rec["v"], rec["a"], search)


@torch.no_grad()
def quantize_bert(model: nn.Module, calib: torch.Tensor, cfg: AdaLogConfig, batch_size: int = 16) -> AdaLogResult:
    """Rewrite and calibrate a sentence encoder (``SentenceEncoder`` around a BERT) in place, on FP inputs."""
    start = time.perf_counter()
    encoder = getattr(model, "encoder", model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rewrite_bert(encoder, cfg).eval()
    calib = calib[: cfg.calib_samples]
    set_quant(model, False)
    recorders = [m for m in model.modules() if isinstance(m, Recording)]
    for m in recorders:
        m.record = {}
    for batch in calib.split(batch_size):
        model(batch)
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.fit()
            m.quant_on = True
    for m in model.modules():
        if isinstance(m, ShiftedOutput):
            m.reparameterise_bias()
            h = flatten_rows(torch.cat([t.reshape(-1, t.shape[-1]) for t in m.record["h"]]))
            if isinstance(m.hid_quant, AdaLogQuant):
                fpcs_adalog(h, m.hid_quant, linear_output_score(m.layer, h, GELU_OFFSET), search_scale=True, **cfg.search)
            else:
                set_adalog_quant(m.hid_quant, *fpcs_uniform(h, m.hid_quant.bits, linear_output_score(m.layer, h), **cfg.search))
        elif isinstance(m, QuantInput):
            x = torch.cat([t.reshape(-1, t.shape[-1]) for t in m.record["x"]])
            calibrate_uniform_quantizers(m.in_quant, x, m.layer, cfg.search)
        elif isinstance(m, AttentionQuantizers):
            _calibrate_attention(m, cfg.search)
    for m in recorders:
        m.record = None
    set_quant(model, True)
    return AdaLogResult(model, cfg, time.perf_counter() - start, quantizer_summary(model))
