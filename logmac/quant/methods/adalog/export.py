"""AdaLog ViTs to and from the artifact: weight layers, activation quantizers and the float parts RepQ changed.

An AdaLog model is a timm ViT rewritten by :func:`logmac.quant.methods.adalog.vit.rewrite_vit`.  Its artifact holds
every weight layer as a :class:`QuantizedLayer` (codes, decode table or uniform scales, bias), every activation
quantizer as an :class:`ActivationLayer` (AdaLog format, base numerator q, scale, shift cap and offset, or uniform
scales and zero points per tensor or per head), and the float tensors outside the quantized layers under
``shared/float/`` (class token, position embedding, the LayerNorms RepQ folded, fc2's reparameterised bias).
:func:`load_adalog_model` rebuilds the fake-quant model from a float model of the same architecture, so the
emulator and the RTL can run an AdaLog model from its file like every other method's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from logmac.format import AdaLogFormat, FormatError, LogFormat
from logmac.format.artifact import ActivationLayer, Artifact, QuantizedLayer
from logmac.quant.export import export_layer
from logmac.quant.loggrid import LogGrid
from logmac.quant.methods.adalog.quantizers import AdaLogQuant, UniformQuant
from logmac.quant.methods.adalog.vit import AdaLogConfig, rewrite_vit, set_quant
from logmac.quant.modules import QuantLayer

METHOD = "adalog"
FLOAT_PREFIX = "float/"


def _is_quantized_state(model: nn.Module, key: str) -> bool:
    """True for state that the artifact's layers and activations already carry (a QuantLayer's inner module,
    an activation quantizer)."""
    module_path = key.rpartition(".")[0]
    if isinstance(model.get_submodule(module_path), (UniformQuant, AdaLogQuant)):
        return True
    return bool(module_path) and isinstance(model.get_submodule(module_path.rpartition(".")[0]), QuantLayer)


def adalog_artifact(model: nn.Module, cfg: AdaLogConfig, meta: dict[str, Any]) -> Artifact:
    """The artifact of a ViT quantized by :func:`logmac.quant.methods.adalog.vit.quantize_vit` (validated on save)."""
    layers = {m.name: export_layer(m, None, "identity", None) for m in model.modules() if isinstance(m, QuantLayer)}
    if any(m.words is None for m in model.modules() if isinstance(m, QuantLayer)):
        raise FormatError("the AdaLog model has layers without codes; quantize it before export")
    activations = {}
    for name, m in model.named_modules():
        if isinstance(m, AdaLogQuant):
            activations[name] = ActivationLayer(name, "adalog", m.bits, np.asarray(m.scale, dtype=np.float64),
                                                fmt=m.fmt, offset=m.offset)
        elif isinstance(m, UniformQuant):
            activations[name] = ActivationLayer(name, "uniform", m.bits, m.scale.double().cpu().numpy(),
                                                zero_point=m.zero_point.cpu().numpy().astype(np.int32))
    floats = {FLOAT_PREFIX + k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()
              if not _is_quantized_state(model, k)}
    return Artifact(layers=layers, settings={"method": METHOD, **asdict(cfg)}, meta=dict(meta), tensors=floats,
                    activations=activations)


def adalog_config(artifact: Artifact) -> AdaLogConfig:
    """The AdaLogConfig an artifact was made with; FormatError if it is not an AdaLog artifact."""
    settings = dict(artifact.settings)
    if settings.pop("method", None) != METHOD:
        raise FormatError(f"not an AdaLog artifact (method {artifact.settings.get('method')!r})")
    try:
        return AdaLogConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"AdaLog settings in the artifact are not valid: {exc}") from exc


def _restore_layer(layer: QuantLayer, q: QuantizedLayer) -> None:
    fmt = layer.cfg.weight_format()
    if q.fmt != fmt or tuple(q.codes.shape) != tuple(layer.inner.weight.shape):
        raise FormatError(f"layer {q.name}: the artifact has {q.fmt.to_dict()} codes of shape {q.weight_shape}, "
                          f"the model needs {fmt.to_dict()} of shape {tuple(layer.inner.weight.shape)}")
    if isinstance(fmt, LogFormat):
        grid = LogGrid(fmt, q.extras["n_base2"], q.extras["top_k"], q.extras["alpha"])
        table = grid.table()
        if not (np.array_equal(table.u, q.table.u) and np.array_equal(table.h, q.table.h)
                and np.array_equal(table.scale, q.table.scale)):
            raise FormatError(f"layer {q.name}: the grid parameters do not give the stored decode table")
        layer.load_codes(q.codes, grid=grid)
    else:
        dev = layer.inner.weight.device
        layer.load_codes(q.codes, uniform=(torch.as_tensor(q.scale, device=dev),
                                           torch.as_tensor(q.zero_point.astype(np.float64), device=dev)))
    if layer.inner.bias is not None:
        layer.inner.bias.copy_(torch.as_tensor(q.extras["bias"], dtype=layer.inner.bias.dtype))


def _restore_activation(quant: AdaLogQuant | UniformQuant, act: ActivationLayer) -> None:
    if isinstance(quant, AdaLogQuant):
        if act.kind != "adalog" or act.bits != quant.bits or act.offset != quant.offset:
            raise FormatError(f"activation {act.name}: the artifact has {act.kind} A{act.bits} (offset {act.offset}), "
                              f"the model needs adalog A{quant.bits} (offset {quant.offset})")
        quant.q, quant.scale, quant.zero = act.fmt.q, float(act.scale), act.fmt.zero.value
        if quant.fmt != AdaLogFormat(act.fmt.bits, act.fmt.q, zero=act.fmt.zero, max_shift=act.fmt.max_shift):
            raise FormatError(f"activation {act.name}: AdaLog shift cap {act.fmt.max_shift} is not the quantizer's")
        return
    if act.kind != "uniform" or act.bits != quant.bits or act.scale.shape != tuple(quant.scale.shape):
        raise FormatError(f"activation {act.name}: the artifact has {act.kind} A{act.bits} with scales of shape "
                          f"{act.scale.shape}, the model needs uniform A{quant.bits} of shape {tuple(quant.scale.shape)}")
    quant.scale.copy_(torch.as_tensor(act.scale, dtype=quant.scale.dtype))
    quant.zero_point.copy_(torch.as_tensor(act.zero_point, dtype=quant.zero_point.dtype))


@torch.no_grad()
def load_adalog_model(artifact: Artifact, model: nn.Module) -> nn.Module:
    """Rewrite the float ViT ``model`` (same architecture) in place into the artifact's fake-quant AdaLog model."""
    cfg = adalog_config(artifact)
    rewrite_vit(model.eval(), cfg).eval()
    floats = {k.removeprefix(FLOAT_PREFIX): torch.from_numpy(np.asarray(v)) for k, v in artifact.tensors.items()
              if k.startswith(FLOAT_PREFIX)}
    state = model.state_dict()
    for key, value in floats.items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            raise FormatError(f"float tensor {key} of shape {tuple(value.shape)} does not fit the model")
        if not torch.isfinite(value).all():
            raise FormatError(f"float tensor {key} has NaN or Inf")
        state[key].copy_(value.to(state[key].dtype))
    layers = {m.name: m for m in model.modules() if isinstance(m, QuantLayer)}
    quants = {n: m for n, m in model.named_modules() if isinstance(m, (AdaLogQuant, UniformQuant))}
    if set(layers) != set(artifact.layers) or set(quants) != set(artifact.activations):
        missing = sorted((set(layers) ^ set(artifact.layers)) | (set(quants) ^ set(artifact.activations)))
        raise FormatError(f"the artifact and the model disagree on the quantized modules: {missing[:5]}")
    for name, layer in layers.items():
        _restore_layer(layer, artifact.layers[name])
    for name, quant in quants.items():
        _restore_activation(quant, artifact.activations[name])
    set_quant(model, True)
    return model
