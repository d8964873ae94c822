"""Post-training quantization to exponent-coded (LogART) or uniform weights, exported for the integer datapath.

The split follows torch.ao: ``uniform.ActQuant`` / ``loggrid.search_grid`` measure ranges and choose
grids, ``loggrid.quantize_rtn`` / ``rounding`` round, ``export`` writes the artifact; ``calibrate`` runs
them block by block and ``pipeline.quantize_model`` ties it together.
"""

from logmac.quant.config import METHODS, QuantConfig, QuantError
from logmac.quant.fold import fold_batchnorm
from logmac.quant.pipeline import QuantResult, quantize_model

__all__ = ["METHODS", "QuantConfig", "QuantError", "QuantResult", "fold_batchnorm", "quantize_model"]
