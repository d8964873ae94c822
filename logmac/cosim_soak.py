"""``logmac cosim`` with real layers in the soak: the shipped house ResNet-18's conv and linear weights as log codes.

Loading a model and rounding its weights to a LogART grid needs ``logmac.models`` and ``logmac.quant``, which sit
above ``logmac.cosim``, so the layers are registered into ``logmac.cosim.soak`` from here and the CLI takes its
``cosim`` command from this module.
"""

from __future__ import annotations

import functools

from logmac.cosim import soak
from logmac.cosim.commands import cosim
from logmac.format import GridKind
from logmac.hw_compare import resnet_layers

# (bits, grid) of the house layers the soak draws from: the 4-bit grid the scheduled engines run, and two more
HOUSE_FORMATS = ((4, GridKind.LOG_DYNAMIC), (3, GridKind.LOG_2), (5, GridKind.LOG_SQRT2))


@functools.cache
def house_layers() -> list[soak.Layer]:
    """Every conv / linear layer of the house ResNet-18 in each of ``HOUSE_FORMATS`` (rounded once per process)."""
    return [soak.Layer(f"resnet18 {name} {bits}-bit {grid.value}", codes, table, fmt)
            for bits, grid in HOUSE_FORMATS for name, (codes, table, fmt) in resnet_layers(bits, grid).items()]


soak.register_layers(house_layers)

__all__ = ["cosim", "house_layers"]
