"""One backend call for every method: an artifact run as its float model, its fake-quant model or the emulator.

``open_backend(artifact, kind)`` builds the model once, from the file alone (the float network named by
``artifact.meta['model']`` or the one passed in): LogART and linear artifacts, PTMQ artifacts at any stored
width, AdaLog ViTs and LatticeQ models.  ``predict`` runs it on inputs; ``compare`` runs the three kinds on the
artifact's own evaluation data and scores them side by side.  ``logmac emulate`` and the benchmarks are thin
layers over these calls; the RTL side (traced tiles through the cocotb benches) is ``logmac.verify``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from logmac.format import FormatError, OverflowMode
from logmac.format.artifact import Artifact

KINDS = ("float", "fake_quant", "emulator")


@dataclass
class Backend:
    """One artifact opened as one kind of model; call it on input batches."""

    kind: str
    method: str
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    overflows: Callable[[], dict[str, int]]  # per layer or matmul: outputs whose exact sum left the register
    device: torch.device

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.to(self.device))


@dataclass
class Prediction:
    """Outputs of one backend on a whole input tensor (CPU), what overflowed, and the wall time."""

    outputs: torch.Tensor
    overflows: dict[str, int]
    seconds: float


def artifact_method(artifact: Artifact) -> str:
    """``adalog``, ``latticeq``, ``ptmq`` or ``logart`` (every single-width LogART or linear artifact)."""
    if artifact.settings.get("ptmq"):
        return "ptmq"
    method = artifact.settings.get("method")
    return method if method in ("adalog", "latticeq") else "logart"


def _no_overflows() -> dict[str, int]:
    return {}


Built = tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None, Callable[[], dict[str, int]]]


def _logart(artifact: Artifact, kind: str, model: nn.Module | None, acc_bits: int | None, overflow: OverflowMode,
            device: torch.device | str | None) -> Built:
    from logmac.backends.float_model import build_float_model
    from logmac.sim.emulator import Emulator
    from logmac.sim.layers import fake_quant_model

    base = copy.deepcopy(model) if model is not None else build_float_model(artifact)
    if kind == "float":
        return base.eval(), None, _no_overflows
    if kind == "fake_quant":
        return fake_quant_model(artifact, base).eval(), None, _no_overflows
    emu = Emulator(artifact, base, acc_bits=acc_bits, overflow=overflow, device=device)
    return emu.model, emu, lambda: {k: s.overflows for k, s in emu.overflow_report().items() if s.overflows}


def _adalog(artifact: Artifact, kind: str, model: nn.Module | None) -> Built:
    from logmac.backends.adalog import emulate_vit
    from logmac.models import load_model
    from logmac.quant.methods.adalog.export import load_adalog_model

    base = copy.deepcopy(model) if model is not None else load_model(artifact.meta.get("model")).model
    if kind == "float":
        return base.eval(), None, _no_overflows
    fake_quant = load_adalog_model(artifact, base)
    if kind == "fake_quant":
        return fake_quant, None, _no_overflows
    emulated, stats = emulate_vit(fake_quant)
    return emulated, None, lambda: {"attn@V and fc2": stats.overflows} if stats.overflows else {}


def _lattice(artifact: Artifact, kind: str, model: nn.Module | None, acc_bits: int | None, overflow: OverflowMode
             ) -> Built:
    from logmac.backends.lattice import emulate_lattice
    from logmac.quant.float_view import FloatView
    from logmac.quant.methods.latticeq.export import load_lattice_model
    from logmac.quant.methods.latticeq.model import set_lattice_quant

    fake_quant = load_lattice_model(artifact, copy.deepcopy(model) if model is not None else None).eval()
    if kind == "float":
        return FloatView(fake_quant, set_lattice_quant), None, _no_overflows
    if kind == "fake_quant":
        return fake_quant, None, _no_overflows
    integer, stats = emulate_lattice(fake_quant, acc_bits, overflow)
    return integer.eval(), None, lambda: {k: s.overflows for k, s in stats.items() if s.overflows}


def open_backend(artifact: Artifact, kind: str = "emulator", *, width: int | None = None, model: nn.Module | None = None,
                 acc_bits: int | None = None, overflow: OverflowMode = "saturate",
                 device: torch.device | str | None = None) -> Backend:
    """Build ``artifact``'s model as ``kind`` (one of :data:`KINDS`).

    ``width`` picks a PTMQ artifact's weight width (default: the top one) and is refused for other artifacts.
    ``model`` is the float network (BatchNorm folded as the artifact records; it is copied, never changed);
    without it the network is rebuilt from the artifact's metadata.  ``acc_bits`` / ``overflow`` emulate a
    register width (default: wide enough never to overflow).
    """
    if kind not in KINDS:
        raise FormatError(f"backend kind must be one of {', '.join(KINDS)}, got {kind!r}")
    method = artifact_method(artifact)
    if width is not None and method != "ptmq":
        raise FormatError(f"--width picks a width of a multi-bit (PTMQ) artifact; this is a {method} artifact")
    if method == "ptmq":
        from logmac.quant.methods.ptmq.artifact import artifact_at, multibit_bits

        artifact = artifact_at(artifact, width if width is not None else max(multibit_bits(artifact)))
    if method == "adalog":
        net, forward, overflows = _adalog(artifact, kind, model)
    elif method == "latticeq":
        net, forward, overflows = _lattice(artifact, kind, model, acc_bits, overflow)
    else:
        net, forward, overflows = _logart(artifact, kind, model, acc_bits, overflow, device)
    target = torch.device(device) if device is not None else torch.device("cpu")
    net = net.to(target)
    return Backend(kind, method, net, forward or net, overflows, target)


def open_backends(artifact: Artifact, **options: Any) -> dict[str, Backend]:
    """Every kind of :data:`KINDS`, each built once (``options`` as for :func:`open_backend`)."""
    return {kind: open_backend(artifact, kind, **options) for kind in KINDS}


@torch.no_grad()
def run_backend(backend: Backend, inputs: torch.Tensor, batch_size: int = 256) -> Prediction:
    """``backend`` on a whole input tensor, batch by batch; outputs come back on the CPU."""
    start = time.perf_counter()
    outputs = torch.cat([backend(inputs[i:i + batch_size]).cpu() for i in range(0, len(inputs), batch_size)])
    return Prediction(outputs, backend.overflows(), time.perf_counter() - start)


def predict(artifact: Artifact, inputs: torch.Tensor, kind: str = "emulator", *, batch_size: int = 256,
            **options: Any) -> Prediction:
    """Outputs of ``artifact``'s ``kind`` model on ``inputs`` (see :func:`open_backend` for ``options``)."""
    return run_backend(open_backend(artifact, kind, **options), inputs, batch_size)


def compare(artifact: Artifact, *, limit: int | None = None, inputs: torch.Tensor | None = None,
            labels: torch.Tensor | None = None, batch_size: int = 256, backends: dict[str, Backend] | None = None,
            **options: Any) -> dict[str, Any]:
    """Float, fake-quant and emulator on the same images, scored side by side.

    The images are the artifact's model's own evaluation data (the first ``limit``) unless ``inputs`` (and
    ``labels``) are given.  ``backends`` (from :func:`open_backends`) are used as they are, else built with
    ``options``.  Returns per kind its scores (top-1/top-5 with labels; agreement and KL with the float model's
    predictions), images/s and overflows, and how the emulator's outputs differ from fake-quant's.
    """
    from logmac.models.tasks import evaluation_images, image_scores

    backends = backends if backends is not None else open_backends(artifact, **options)
    if inputs is None:
        name = artifact.meta.get("model")
        if not name:
            raise FormatError("the artifact names no model (meta.model), so its evaluation data is unknown; give inputs")
        inputs, labels = evaluation_images(backends["float"].model, name, limit)
    runs = {kind: run_backend(b, inputs, batch_size) for kind, b in backends.items()}
    fp = runs["float"].outputs
    fake, emu = runs["fake_quant"].outputs, runs["emulator"].outputs
    diff = (emu - fake).abs()
    return {
        "model": artifact.meta.get("model"),
        "method": backends["emulator"].method,
        "samples": len(inputs),
        "scores": {kind: image_scores(r.outputs, labels, None if kind == "float" else fp) for kind, r in runs.items()},
        "images_per_s": {kind: len(inputs) / max(r.seconds, 1e-9) for kind, r in runs.items()},
        "overflows": runs["emulator"].overflows,
        "emulator_vs_fake_quant": {
            "same_prediction": 100 * float((emu.argmax(1) == fake.argmax(1)).float().mean()),
            "outputs_differing": float((diff > 0).float().mean()),
            "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.numel() else 0.0,
            "output_absmax": float(fake.abs().max()) if fake.numel() else 0.0,
        },
    }
