"""AdaLog: log-coded post-Softmax and post-GELU activations with FPCS (spec section 3)."""

from __future__ import annotations

import torch
from torch import nn

from logmac.quant.methods.adalog.vit import AdaLogConfig, AdaLogResult, set_quant


def quantize(model: nn.Module, calib: torch.Tensor, cfg: AdaLogConfig) -> AdaLogResult:
    """A timm ViT (images) or a BERT sentence encoder (token batches), rewritten and calibrated in place."""
    from logmac.quant.methods.adalog.bert import quantize_bert
    from logmac.quant.methods.adalog.vit import quantize_vit

    return quantize_vit(model, calib, cfg) if hasattr(model, "blocks") else quantize_bert(model, calib, cfg)


__all__ = ["AdaLogConfig", "AdaLogResult", "quantize", "set_quant"]
