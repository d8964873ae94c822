"""LatticeQ models in the artifact file (docs/artifact-schema.md, "LatticeQ layers"): export and load.

A lattice layer is stored with op ``lattice_conv2d`` / ``lattice_linear``, so the log-MAC emulator (which
runs ``conv2d`` / ``linear`` only) refuses it instead of misreading it; :func:`logmac.backends.lattice.
emulate_lattice_artifact` runs it.  What is stored is exactly the integer form the datapath uses:

- ``codes``: the b-bit coordinates, one per weight position (coordinate i of vector g of channel c sits at
  flat weight index ``g*n + i``), as unsigned codes ``c + zero_point`` with ``zero_point = 2^(b-1) - 1``
  (coordinates span ``[-2^(b-1)+1, 2^(b-1)]``), packed at b bits;
- ``extras["basis_int"]`` (P, n, n): the integer basis (odd entries below 2^bB), P = C or 1;
- ``extras["offset_int"]`` (C,): the bias-correction offset in basis steps;
- ``scale`` (C,): the float value of integer weight 1, so ``w = scale_c * (c @ B_int + m_c)``.

Loading rebuilds :class:`~logmac.quant.methods.latticeq.search.LatticeCode` from these integers, so the fake-quant weights
and the integer emulation of a loaded model are bit-identical to those of the model that was exported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from logmac.format import UniformFormat
from logmac.format.artifact import Artifact, QuantizedLayer
from logmac.quant.export import geometry_attrs
from logmac.quant.methods.latticeq.model import ActQuantizer, LatticeConfig, LatticeLayer, LatticeResult, lattice_layers
from logmac.quant.methods.latticeq.search import LatticeCode, LatticeError
from logmac.quant.modules import static_padding

LATTICE_OPS = {"conv2d": "lattice_conv2d", "linear": "lattice_linear"}


def coord_zero_point(bits: int) -> int:
    """The unsigned code of coordinate 0: coordinates span ``[-2^(b-1)+1, 2^(b-1)]``, codes ``[0, 2^b - 1]``."""
    return (1 << (bits - 1)) - 1


def _act_in(layer: LatticeLayer) -> dict | None:
    act = layer.act
    if act is None:
        return None
    if not act.per_tensor:
        raise LatticeError(f"layer {layer.name}: per-channel activation quantiles (act_mode='quantile') are "
                           "fake-quant only and have no artifact form; quantize with act_mode 'mse' or 'max'")
    return {"bits": act.bits, "signed": False, "scale": float(act.scale), "zero_point": int(act.zero_point),
            "qmin": 0, "qmax": act.qmax}


def export_lattice_layer(layer: LatticeLayer, folded_bn: str | None = None) -> QuantizedLayer:
    """One :class:`LatticeLayer` as a :class:`QuantizedLayer` (see the module docstring for the fields)."""
    code, m = layer.code, layer.inner
    if code.basis_bits is None:
        raise LatticeError(f"layer {layer.name}: a float basis (basis_bits=None) has no integer form to export")
    _, scale = code.integer_weights()
    zp = coord_zero_point(code.bits)
    shape = tuple(m.weight.shape)
    attrs: dict = {"module": layer.name, "folded_bn": folded_bn, "act_in": _act_in(layer), "requant": None,
                   "lattice": {"bits": code.bits, "basis_bits": code.basis_bits, "dim": code.dim,
                               "per_channel": code.basis.shape[0] == code.out_channels},
                   **geometry_attrs(layer)}
    bias = m.bias.detach().double().cpu().numpy() if m.bias is not None else np.zeros(shape[0])
    extras = {"bias": bias, "basis_int": code.basis_int().cpu().numpy().astype(np.int64),
              "offset_int": code.offset_int().cpu().numpy().astype(np.int64)}
    words = (code.coords.reshape(shape) + zp).cpu().numpy().astype(np.int16)
    return QuantizedLayer(name=layer.name, op=LATTICE_OPS[layer.op], fmt=UniformFormat(code.bits, symmetric=False),
                          codes=words, scale=scale.cpu().numpy().astype(np.float64),
                          zero_point=np.full(shape[0], zp, dtype=np.int32), extras=extras, attrs=attrs)


def build_lattice_artifact(result: LatticeResult, cfg: LatticeConfig, model_name: str | None = None,
                           metrics: dict | None = None) -> Artifact:
    """Every lattice layer of a quantized model as an Artifact (validated when saved)."""
    layers = lattice_layers(result.model)
    if not layers:
        raise LatticeError("the model has no LatticeQ layer; quantize it with lattice_quantize_model first")
    bn_of = {conv: bn for bn, conv in result.folded_bn.items()}
    meta = {"model": model_name, "task": "classification", "float_modules": result.float_modules,
            "folded_bn": result.folded_bn, "calibration": {"samples": cfg.calib_samples, "seed": cfg.seed,
                                                           "seconds": round(result.seconds, 1)}}
    if metrics is not None:
        meta["metrics"] = metrics
    out = {m.name: export_lattice_layer(m, bn_of.get(m.name)) for m in layers}
    return Artifact(layers=out, settings={"method": "latticeq", **cfg.to_dict()}, meta=meta)


def is_lattice_layer(layer: QuantizedLayer) -> bool:
    return layer.op in LATTICE_OPS.values()


def code_from_layer(layer: QuantizedLayer) -> LatticeCode:
    """The :class:`LatticeCode` of a stored lattice layer (its integers and per-channel scale)."""
    if not is_lattice_layer(layer):
        raise LatticeError(f"layer {layer.name} is a {layer.op!r} layer, not a LatticeQ layer")
    info = layer.attrs["lattice"]
    shape = layer.weight_shape
    coords = torch.as_tensor(layer.codes.astype(np.int64) - coord_zero_point(info["bits"]))
    coords = coords.reshape(shape[0], -1, info["dim"])
    return LatticeCode.from_integers(coords, torch.as_tensor(layer.extras["basis_int"]),
                                     torch.as_tensor(layer.extras["offset_int"]), torch.as_tensor(layer.scale),
                                     shape, info["bits"], info["basis_bits"])


def _act_quantizer(layer: QuantizedLayer) -> ActQuantizer | None:
    act_in = layer.attrs.get("act_in")
    if not act_in:
        return None
    act = ActQuantizer(int(act_in["bits"]), "mse", 1 if layer.op == "lattice_conv2d" else -1)
    act.scale = torch.tensor(act_in["scale"], dtype=torch.float32)
    act.zero_point = torch.tensor(float(act_in["zero_point"]), dtype=torch.float32)
    return act


def _float_model(artifact: Artifact) -> nn.Module:
    """The FP network named by ``artifact.meta['model']``, BatchNorm folded as the artifact records."""
    from logmac.models import load_model
    from logmac.quant.fold import fold_batchnorm

    name = artifact.meta.get("model")
    if not name:
        raise LatticeError("the artifact names no model (meta.model); pass the BN-folded float model")
    model = load_model(name, device="cpu").model.eval()
    folded = fold_batchnorm(model)
    recorded = artifact.meta.get("folded_bn") or {}
    if recorded and folded != recorded:
        raise LatticeError(f"BatchNorm folding of {name} differs from the artifact's record: {folded} vs {recorded}")
    return model


def load_lattice_model(artifact: Artifact, model: nn.Module | None = None) -> nn.Module:
    """The LatticeQ fake-quant model of an artifact: ``model`` (the BN-folded FP network; rebuilt from
    ``meta.model`` when None) with each stored layer swapped for a :class:`LatticeLayer`, in place.

    The FP weights stay inside each layer (its FP path, used as the agreement reference); the bias
    comes from the artifact.
    """
    if model is None:
        model = _float_model(artifact)
    layers = [q for q in artifact.layers.values()]
    if not layers or not all(is_lattice_layer(q) for q in layers):
        ops = sorted({q.op for q in layers})
        raise LatticeError(f"not a LatticeQ artifact: layer ops {ops}, expected {sorted(LATTICE_OPS.values())}")
    for q in layers:
        try:
            inner = model.get_submodule(q.name)
        except AttributeError as exc:
            raise LatticeError(f"the model has no module {q.name!r} for artifact layer {q.name!r}") from exc
        want = nn.Conv2d if q.op == "lattice_conv2d" else nn.Linear
        if not isinstance(inner, want) or tuple(inner.weight.shape) != q.weight_shape:
            got = f"{type(inner).__name__}{tuple(getattr(inner, 'weight', torch.empty(0)).shape)}"
            raise LatticeError(f"layer {q.name}: artifact has {q.op}{q.weight_shape}, model has {got}")
        if q.op == "lattice_conv2d" and list(static_padding(inner) or []) != list(q.attrs.get("pre_pad") or []):
            raise LatticeError(f"layer {q.name}: the model's static padding differs from the artifact's pre_pad")
        bias = torch.as_tensor(q.extras["bias"], dtype=inner.weight.dtype)
        if inner.bias is not None or bool(bias.any()):
            inner.bias = nn.Parameter(bias, requires_grad=False)
        parent_path, _, child = q.name.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, LatticeLayer(q.name, inner, code_from_layer(q), _act_quantizer(q)))
    return model.eval()
