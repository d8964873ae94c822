"""A causal LM's decoder layers, found from the module structure, not from class or model names.

The quantized chain is the longest ``nn.ModuleList`` of same-class blocks with weights under the base model
(``LlamaModel.layers``, ``OPTDecoder.layers``, ...), checked against ``config.num_hidden_layers`` when the
model has a config.  Inside a block every weight matrix must be a plain ``nn.Linear``: anything else (GPT-2's
``Conv1D``, a fused or packed projection) is refused by name instead of being left silently in float.
"""

from __future__ import annotations

import torch
from torch import nn

from logmac.quant.config import QuantError
from logmac.quant.modules import QuantLayer, supported


class ArchitectureError(QuantError):
    """A causal LM whose decoder structure the quantizer does not understand; the message names the module."""


def _has_weights(block: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in block.parameters())


def _root(model: nn.Module) -> nn.Module:
    """The base model (the decoder stack without the LM head) of the first HF model inside ``model``."""
    for mod in model.modules():
        base = getattr(mod, "base_model", None)
        if getattr(mod, "config", None) is not None and isinstance(base, nn.Module):
            return base
    return model


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of ``model`` in order; raises :class:`ArchitectureError` naming what is not understood."""
    root = _root(model)
    names = {id(m): n for n, m in model.named_modules()}
    stacks = [m for m in root.modules() if isinstance(m, nn.ModuleList) and len(m) and len({type(b) for b in m}) == 1
              and _has_weights(m[0])]
    if not stacks:
        raise ArchitectureError(f"{names.get(id(root)) or type(root).__name__} ({type(root).__name__}): no ModuleList "
                                "of decoder layers with weights found, so there is nothing to quantize as a chain")
    stack = max(stacks, key=len)  # the first of the longest
    where = names.get(id(stack), "?")
    depth = getattr(getattr(model, "config", None) or getattr(root, "config", None), "num_hidden_layers", None)
    if isinstance(depth, int) and depth != len(stack):
        raise ArchitectureError(f"{where}: {len(stack)} blocks, but the config has num_hidden_layers = {depth}; "
                                "the decoder layers were not understood")
    for block in stack:
        for mod in block.modules():
            weight = getattr(mod, "weight", None)
            if isinstance(mod, QuantLayer) or not isinstance(weight, torch.Tensor):
                continue
            if weight.ndim >= 2 and not supported(mod):
                raise ArchitectureError(f"{names.get(id(mod), '?')} ({type(mod).__name__}) in the decoder layers "
                                        f"{where} is not understood: only nn.Linear weights are quantized")
    return list(stack)
