"""LatticeQ: weights as integer coordinates on a per-channel lattice (the non-log baseline, spec section 5)."""

from __future__ import annotations

from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model as quantize
from logmac.quant.methods.latticeq.model import LatticeConfig, LatticeResult
from logmac.quant.methods.latticeq.model import set_lattice_quant as set_quant

__all__ = ["LatticeConfig", "LatticeResult", "quantize", "set_quant"]
