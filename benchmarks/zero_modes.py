"""Zero code vs zero flag vs no zero (datapath.md asks which to make the default), measured on real weights.

    python benchmarks/zero_modes.py --model efficientnet_lite0 -o docs/zero_modes.md

For every Conv2d/Linear of the model (BN folded) the LogART grid (DBS+SFS+ABS, MSE score) is fitted per
channel in each zero mode; the table gives the relative weight error sum(dW^2)/sum(W^2), the fraction of
weights that encode to zero, and the stored bits per weight.  No data needed, so it runs in minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from logmac.codes import LogFormat
from logmac.quant.fold import fold_batchnorm
from logmac.quant.loggrid import quantize_rtn, search_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    from logmac.models import load_model

    model = load_model(args.model, device="cpu").model
    fold_batchnorm(model)
    weights = [m.weight.detach().reshape(m.weight.shape[0], -1).double() for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.ndim >= 2]
    lines = [f"{args.model}: {len(weights)} layers, {sum(w.numel() for w in weights)} weights; "
             "log_dynamic + DBS + SFS + ABS, round to nearest, exact sqrt(2) levels\n",
             "| bits | zero | stored bits/weight | rel. weight error | zeros (%) |", "|---|---|---|---|---|"]
    for bits in args.bits:
        for zero in ("code", "flag", "none"):
            fmt = LogFormat(bits, grid="log_dynamic", hardware_approx=False, zero=zero)
            err = total = zeros = count = 0.0
            for w in weights:
                grid = search_grid(w, fmt, dbs=True, sfs=True, asym=True, alphas=np.linspace(1, 0.5, 11))
                value, _, _, is_zero = quantize_rtn(w, grid.levels(), fmt)
                err += float(((value - w) ** 2).sum())
                total += float((w ** 2).sum())
                zeros += float(is_zero.sum())
                count += w.numel()
            lines.append(f"| {bits} | {zero} | {fmt.storage_bits} | {err / total:.4f} | {100 * zeros / count:.2f} |")
            print(lines[-1], flush=True)
    args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
