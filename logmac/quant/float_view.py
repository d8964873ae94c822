"""The float network inside a fake-quant model, without a second copy of it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from logmac.quant.modules import set_quant


class FloatView(nn.Module):
    """The FP network inside a fake-quant model: runs it with every quantizer on its FP path.

    ``toggle(model, on)`` switches the model's quantizers; the default covers QuantLayer models, and
    the AdaLog and LatticeQ rewrites pass their own.
    """

    def __init__(self, model: nn.Module, toggle: Callable[[nn.Module, bool], None] = set_quant) -> None:
        super().__init__()
        self.model = model
        self.toggle = toggle

    def forward(self, *args, **kwargs):
        self.toggle(self.model, False)
        try:
            return self.model(*args, **kwargs)
        finally:
            self.toggle(self.model, True)
