"""PTMQ: one calibration for several weight widths, lower widths read out of the top code (nested formats)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from logmac.quant.calibrate import Batch
from logmac.quant.config import QuantConfig
from logmac.quant.methods.ptmq.calibrate import PtmqConfig, PtmqResult, ptmq_quantize
from logmac.quant.methods.ptmq.layer import set_precision
from logmac.quant.modules import set_quant


def quantize(model: nn.Module, calib: torch.Tensor | Sequence[Batch], cfg: tuple[QuantConfig, PtmqConfig]) -> PtmqResult:
    """Every width of ``cfg[1]`` in one calibration (``set_precision`` picks the width the model runs)."""
    base, ptmq = cfg
    return ptmq_quantize(model, calib, base, ptmq)


__all__ = ["PtmqConfig", "PtmqResult", "quantize", "set_precision", "set_quant"]
