"""Batch-norm folding: the one function quant and sim both use, so both run the same float network.

A BatchNorm2d that directly follows a Conv2d (next sibling in registration order, as in torchvision-style
ResNets, MobileNets and EfficientNets) is folded into it in eval mode:
``W' = W * g / sqrt(var + eps)``, ``b' = (b - mean) * g / sqrt(var + eps) + beta``, and is replaced by
``nn.Identity``.  Pass an example input to check that the network's output did not change.
"""

from __future__ import annotations

import torch
from torch import nn


class FoldError(RuntimeError):
    """Folding changed the network's output: a BN was paired with a conv it does not follow in forward."""


def _pairs(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """(parent path, parent, conv child name, bn child name) for each conv immediately followed by its BN."""
    found = []
    for path, parent in model.named_modules():
        children = list(parent.named_children())
        for (cname, conv), (bname, bn) in zip(children, children[1:], strict=False):
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and bn.num_features == conv.out_channels and bn.track_running_stats):
                found.append((path, parent, cname, bname))
    return found


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place (float64 arithmetic, stored in the conv's dtype)."""
    w = conv.weight.double()
    inv = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(inv)
    new_bias = (bias - bn.running_mean.double()) * inv + bn.bias.double()
    conv.weight.copy_((w * inv.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias.to(conv.bias.dtype))


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None, atol: float = 1e-3) -> dict[str, str]:
    """Fold every conv-BN pair of ``model`` in place; returns ``{bn_path: conv_path}``.

    With ``example`` the model's output before and after is compared and :class:`FoldError` raised if
    they differ by more than ``atol`` relative to the output's scale.
    """
    pairs = _pairs(model)
    if not pairs:  # nothing to fold (LLMs, ViTs): skip the two check passes, which cost a full forward each
        return {}
    was_training = model.training
    model.eval()
    before = model(example) if example is not None else None
    folded = {}
    for path, parent, cname, bname in pairs:
        fold_conv_bn(getattr(parent, cname), getattr(parent, bname))
        setattr(parent, bname, nn.Identity())
        prefix = f"{path}." if path else ""
        folded[prefix + bname] = prefix + cname
    if before is not None:
        after = model(example)
        b, a = first_tensor(before), first_tensor(after)
        err = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)
        if err > atol:
            raise FoldError(f"batch-norm folding changed the output by {err:.2e} (relative); "
                            "a BatchNorm is not applied right after the conv registered before it")
    model.train(was_training)
    return folded


def first_tensor(out) -> torch.Tensor:
    """The main tensor of a module's output: itself, the first of a tuple, or a HF output's logits."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if hasattr(out, "logits"):
        return out.logits
    raise TypeError(f"no tensor in a module output of type {type(out).__name__}")
