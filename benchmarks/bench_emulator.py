"""Images/s of the emulator vs the fake-quant float32 model on the same batch, and the int64 reference path.

    .venv/bin/python benchmarks/bench_emulator.py [--artifact model.lmq] [--batch 256] [--w-bits 4] [--threads N]
    .venv/bin/python benchmarks/bench_emulator.py --quick      # CI smoke: 8 images, one repeat

With ``--artifact`` the exported model (and its house float network) is used; without it, the house ResNet-18
(trained weights when present, else random init) is exported round-to-nearest by the stand-in exporter of the
emulator tests, which follows docs/artifact-schema.md.  Speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from logmac.backends.float_model import build_float_model
from logmac.format import LogFormat
from logmac.format import artifact as art
from logmac.sim import Emulator
from logmac.sim.layers import fake_quant_model


def house_resnet() -> torch.nn.Module:
    from logmac.models.house import load_house
    from logmac.quant.fold import fold_batchnorm

    model = load_house("resnet18_fmnist").eval()  # the trained house weights (an error if they are missing)
    fold_batchnorm(model)
    return model


def standin_artifact(model: torch.nn.Module, w_bits: int, calib: torch.Tensor) -> art.Artifact:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_sim_support import export_model  # the stand-in exporter (tests only)

    names = [n for n, _ in model.named_modules()]
    requant = {n: (n[:-1] + "2", "relu") for n in names if n.endswith(".conv1") and n[:-1] + "2" in names}
    return export_model(model, calib, LogFormat(w_bits), requant=requant)


def rates(fns: list, x: torch.Tensor, repeats: int) -> list[list[float]]:
    """Images/s of each function per repeat, interleaved so that load from other processes hits all alike."""
    per_repeat = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn(x)  # warm-up (caches, allocator)
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn(x)
                per_repeat[i].append(len(x) / (time.perf_counter() - start))
    return per_repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", type=Path)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--w-bits", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--reference-batch", type=int, default=2, help="images for the (slow) int64 reference path")
    ap.add_argument("--quick", action="store_true", help="8 images, one repeat, one reference image (CI smoke)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats, args.reference_batch = 8, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28)
    if args.artifact:
        artifact = art.load(args.artifact)
        model = build_float_model(artifact)
    else:
        model = house_resnet()
        artifact = standin_artifact(model, args.w_bits, x[:64])
    emu = Emulator(artifact, copy.deepcopy(model))
    fq = fake_quant_model(artifact, copy.deepcopy(model)).eval()
    ref = Emulator(artifact, copy.deepcopy(model), engine="reference")
    r_fq, r_emu = rates([fq, emu], x, args.repeats)
    ratios = [e / f for e, f in zip(r_emu, r_fq, strict=True)]
    (r_ref,) = rates([ref], x[:args.reference_batch], 1)
    fq_med = statistics.median(r_fq)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {len(artifact.layers)} quantized layers, "
          f"{args.repeats} interleaved repeats (medians; ratio = median of per-repeat ratios)")
    print(f"fake-quant float32  {fq_med:8.1f} img/s")
    print(f"emulator (fast)     {statistics.median(r_emu):8.1f} img/s   {statistics.median(ratios):.2f}x fake-quant "
          f"(per repeat {min(ratios):.2f}-{max(ratios):.2f}x)")
    print(f"best repeat: fake-quant {max(r_fq):.1f} img/s, emulator {max(r_emu):.1f} img/s, "
          f"{max(r_emu) / max(r_fq):.2f}x (the least disturbed by other processes)")
    print(f"emulator (int64 reference) {r_ref[0]:8.2f} img/s   {r_ref[0] / fq_med:.4f}x fake-quant")


if __name__ == "__main__":
    main()
