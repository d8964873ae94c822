"""Run a multi-bit (PTMQ) artifact on the emulator with the precision chosen at run time.

:class:`MultiBitEmulator` builds the float network once and, per width, one
:class:`~logmac.sim.emulator.IntLayer` per quantized layer from the same stored codes (log: the nested
decode of the top code; uniform: that width's codes), its own input quantizer and requantization bank.
:meth:`MultiBitEmulator.set_precision` swaps those layers in: nothing is rebuilt or re-read, as on the
chip, where the precision is one register (``logmac.hw.regmap.nest_writes``) plus the requant bank.
"""

from __future__ import annotations

import torch
from torch import nn

from logmac.format import OverflowMode
from logmac.format.artifact import Artifact
from logmac.quant.methods.ptmq.artifact import artifact_at, multibit_bits
from logmac.sim.emulator import Emulator, IntLayer
from logmac.sim.layers import EmulatorError, layer_specs, swap_module


class MultiBitEmulator(Emulator):
    """An :class:`Emulator` over every width of a multi-bit artifact; starts at the top width."""

    def __init__(self, artifact: Artifact, model: nn.Module, *, acc_bits: int | None = None,
                 overflow: OverflowMode = "saturate", device: torch.device | str | None = None,
                 engine: str = "fast") -> None:
        self.widths = multibit_bits(artifact)
        self.multibit = artifact
        self.views = {b: artifact_at(artifact, b) for b in self.widths}
        top = max(self.widths)
        super().__init__(self.views[top], model, acc_bits=acc_bits, overflow=overflow, device=device, engine=engine)
        self.banks: dict[int, dict[str, IntLayer]] = {top: self.layers}
        for b in self.widths:
            if b == top:
                continue
            bank = {}
            for name, spec in layer_specs(self.views[b]).items():
                if name not in self.layers or spec.layer.weight_shape != self.layers[name].spec.layer.weight_shape:
                    raise EmulatorError(f"layer {name}: its {b}-bit precision does not match the top width's layer")
                bank[name] = IntLayer(spec, acc_bits, overflow, self.device, engine)
            for layer in bank.values():
                if layer.spec.requant:
                    layer.next = (bank[layer.spec.requant["next"]],)
            self.banks[b] = bank
        self.precision = top

    def set_precision(self, bits: int) -> None:
        """Run the next inputs at weight width ``bits`` (one of ``self.widths``; anything else is an error)."""
        if bits not in self.banks:
            raise EmulatorError(f"this artifact holds widths {self.widths}; no {bits}-bit precision to switch to")
        for name, layer in self.banks[bits].items():
            swap_module(self.model, name, layer)
        self.layers = self.banks[bits]
        self.artifact = self.views[bits]
        self.precision = bits
