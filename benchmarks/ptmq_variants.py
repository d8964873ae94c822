"""PTMQ calibration variants: one multi-bit run with PtmqConfig overrides, top-1 per width.

    nice -n 10 python benchmarks/ptmq_variants.py base '{"fp_weight": 0, "width_scale": false}' --limit 2000
    nice -n 10 python benchmarks/ptmq_variants.py prefix '{"nest": "prefix"}' --limit 2000
    nice -n 10 python benchmarks/ptmq_variants.py mbv2 '{}' --model mobilenetv2_fmnist
    nice -n 10 python benchmarks/ptmq_variants.py lin_w3 --method linear_mse --single 3   # a single-width run

Same settings as ``benchmarks/ptmq_results.py`` (log_dynamic codes with 1+1/2 levels, W{3,4,6}A8, 256
calibration images, 100 iterations per unit, seed 0); ``--limit`` scores on the first N test images (a fixed
subset for comparing variants).  Writes ``runs/ptmq/variants/<tag>.json`` (top-1, time, per-unit losses),
the fake-quant model (``<tag>.pt``) and the artifact (``<tag>.lmq``); ``--eval-only`` re-scores a saved model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from logmac.format import artifact as artifact_io
from logmac.models import calibration_samples, evaluate_model, load_model
from logmac.quant.config import QuantConfig
from logmac.quant.methods.ptmq.calibrate import PtmqConfig, ptmq_quantize, set_precision

OUT = Path("runs/ptmq/variants")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tag")
    ap.add_argument("overrides", nargs="?", default="{}", help="PtmqConfig fields as JSON")
    ap.add_argument("--model", default="resnet18_fmnist")
    ap.add_argument("--method", default="log_dynamic")
    ap.add_argument("--bits", default="3,4,6")
    ap.add_argument("--a-bits", type=int, default=8)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10k)")
    ap.add_argument("--eval-only", action="store_true", help="re-score runs/ptmq/variants/<tag>.pt")
    ap.add_argument("--single", type=int, default=None,
                    help="a single-width run at this width instead (quantize_model, same settings)")
    ap.add_argument("--quick", action="store_true",
                    help="W3/W4, 8 calibration images, 1 iteration, 64 test images, into a scratch folder (CI smoke)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out_dir = OUT
    if args.quick:
        import tempfile

        out_dir = Path(tempfile.mkdtemp())
        args.bits, args.calib, args.iters, args.limit = "3,4", 8, 1, 64
    out_dir.mkdir(parents=True, exist_ok=True)
    bits = tuple(int(b) for b in args.bits.split(","))
    over = json.loads(args.overrides)
    path = out_dir / f"{args.tag}.json"
    if args.single is not None:
        from logmac.quant.pipeline import quantize_model

        calib = calibration_samples(args.model, args.calib, seed=0)
        cfg = QuantConfig(method=args.method, w_bits=args.single, a_bits=args.a_bits, calib_samples=args.calib,
                          iters=args.iters, learn_rounding=True, hardware_approx=True, seed=0)
        res = quantize_model(load_model(args.model, device="cpu").model, calib, cfg, model_name=args.model,
                             progress=False)
        top1 = round(float(evaluate_model(res.model, args.model, limit=args.limit)["top1"]), 2)
        out = {"tag": args.tag, "model": args.model, "method": args.method, "single": args.single,
               "seconds": round(res.seconds, 1), f"top1@{args.limit or 'all'}": top1}
        path.write_text(json.dumps(out, indent=1))
        print(json.dumps(out), flush=True)
        return
    if args.eval_only:
        out = json.loads(path.read_text())
        model = torch.load(out_dir / f"{args.tag}.pt", weights_only=False)
    else:
        calib = calibration_samples(args.model, args.calib, seed=0)
        cfg = QuantConfig(method=args.method, w_bits=max(bits), a_bits=args.a_bits, calib_samples=args.calib,
                          iters=args.iters, learn_rounding=True, hardware_approx=True, seed=0)
        ptmq = PtmqConfig(bits=bits, a_bits=(args.a_bits,) * len(bits), **over)
        res = ptmq_quantize(load_model(args.model, device="cpu").model, calib, cfg, ptmq, model_name=args.model)
        model = res.model
        torch.save(model, out_dir / f"{args.tag}.pt")
        artifact_io.save(res.artifact, out_dir / f"{args.tag}.lmq")
        out = {"tag": args.tag, "model": args.model, "method": args.method, "ptmq": ptmq.to_dict(),
               "seconds": round(res.seconds, 1), "losses": res.losses,
               "kept": {k: v.get("kept_learned") for k, v in res.losses.items()}}
        print("calibrated in", out["seconds"], "s", flush=True)
    key = f"top1@{args.limit or 'all'}"
    out[key] = {}
    for b in bits:
        set_precision(model, b)
        out[key][str(b)] = round(float(evaluate_model(model, args.model, limit=args.limit)["top1"]), 2)
        print(f"W{b}", key, out[key][str(b)], flush=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("tag", "seconds", "kept", key)}), flush=True)


if __name__ == "__main__":
    main()
