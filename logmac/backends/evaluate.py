"""Emulated model next to its fake-quant twin: accuracy, output difference and speed on the same inputs."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from logmac.backends.float_model import build_float_model
from logmac.format import OverflowMode
from logmac.format.artifact import Artifact
from logmac.sim.emulator import Emulator
from logmac.sim.layers import fake_quant_model


@dataclass
class Comparison:
    """What ``logmac emulate`` prints: both models' top-1, how their outputs differ, and their speed."""

    samples: int
    emulator_top1: float
    fake_quant_top1: float
    argmax_agreement: float
    outputs_differing: float  # fraction of output values (logits) that are not bit-identical
    max_abs_diff: float
    mean_abs_diff: float
    output_absmax: float
    emulator_images_per_s: float
    fake_quant_images_per_s: float
    overflows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(fn, inputs: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        out = torch.cat([fn(inputs[i:i + batch_size]).cpu() for i in range(0, len(inputs), batch_size)])
    return out, time.perf_counter() - start


def compare(artifact: Artifact, inputs: torch.Tensor, labels: torch.Tensor, *, model: nn.Module | None = None,
            batch_size: int = 256, acc_bits: int | None = None, overflow: OverflowMode = "saturate",
            device: torch.device | str | None = None) -> tuple[Comparison, Emulator]:
    """Run the emulator and the fake-quant model on the same batches (``model``: BN-folded float network)."""
    base = model if model is not None else build_float_model(artifact)
    emu = Emulator(artifact, copy.deepcopy(base), acc_bits=acc_bits, overflow=overflow, device=device)
    fq = fake_quant_model(artifact, copy.deepcopy(base)).to(emu.device).eval()
    fake, t_fq = _timed(lambda x: fq(x.to(emu.device)), inputs, batch_size)
    out, t_emu = _timed(emu, inputs, batch_size)
    diff = (out - fake).abs()
    n = len(inputs)
    return Comparison(
        samples=n,
        emulator_top1=float((out.argmax(1) == labels.cpu()).float().mean()),
        fake_quant_top1=float((fake.argmax(1) == labels.cpu()).float().mean()),
        argmax_agreement=float((out.argmax(1) == fake.argmax(1)).float().mean()),
        outputs_differing=float((diff > 0).float().mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        output_absmax=float(fake.abs().max()),
        emulator_images_per_s=n / t_emu,
        fake_quant_images_per_s=n / t_fq,
        overflows={k: s.overflows for k, s in emu.overflow_report().items() if s.overflows},
    ), emu
