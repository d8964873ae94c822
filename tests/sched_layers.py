"""Real layer codes for the scheduled-engine tests and measurements: the shipped house ResNet-18's conv weights
rounded to the nearest level of a LogART grid (DBS and ABS per channel, no calibration data needed)."""

from __future__ import annotations

import numpy as np

from logmac.format import DecodeTable, GridKind, LogFormat
from logmac.models.house import load_house
from logmac.quant.loggrid import quantize_rtn, search_grid, words_from


def resnet_layers(bits: int, grid: GridKind, names: tuple[str, ...] | None = None
                  ) -> dict[str, tuple[np.ndarray, DecodeTable, LogFormat]]:
    """(codes (C, K), table, format) of each conv / linear layer of the house ResNet-18."""
    fmt = LogFormat(bits, grid)
    model = load_house("resnet18_fmnist")
    out = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if w is None or w.dim() not in (2, 4) or (names and name not in names):
            continue
        w2d = w.detach().reshape(w.shape[0], -1).double()
        grid_ = search_grid(w2d, fmt, dbs=True, sfs=False, asym=True, alphas=np.array([1.0]))
        _, sign, index, is_zero = quantize_rtn(w2d, grid_.levels(), fmt)
        out[name] = (words_from(fmt, sign, index, is_zero).reshape(w2d.shape), grid_.table(), fmt)
    return out
