"""LogART (and the uniform baselines): the quantization core's own method, under the common method calls.

Grids (``logmac.quant.loggrid``), learned rounding (``logmac.quant.rounding``), GPTQ (``logmac.quant.gptq``)
and the sequential calibration (``logmac.quant.calibrate``) are the core every method builds on.
"""

from __future__ import annotations

from logmac.quant.modules import set_quant
from logmac.quant.pipeline import quantize_model as quantize

__all__ = ["quantize", "set_quant"]
