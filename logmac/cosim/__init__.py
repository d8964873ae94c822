"""logmac.cosim: the cocotb regression of the RTL against logmac.sim on Icarus and Verilator.

The public names load on first use: the simulator imports ``logmac.cosim.tb_cocotb`` through this package at
every start, and it needs none of the host side (numpy, the emulator, Amaranth).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"Report": "runner", "run_vectors": "runner", "Vectors": "vectors", "load_vectors": "vectors",
          "random_vectors": "vectors", "save_vectors": "vectors"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
