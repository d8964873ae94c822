"""Export: fitted QuantLayers -> an Artifact with everything the integer emulator needs (docs/artifact-schema.md).

The only new arithmetic here is the fixed-point requantization multiplier and the integer bias; codes,
tables and scales come straight from the layers, which decoded them with ``logmac.format``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from logmac import format as codes_format
from logmac.format import fixed_point_multiplier
from logmac.format.artifact import Artifact, QuantizedLayer
from logmac.format.groups import GROUP_EXP, shifted_integers
from logmac.quant.modules import QuantLayer

log = logging.getLogger(__name__)

_RELU = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Identity: "identity"}
_RELU_FN = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualname)


def _step(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The clamp a node applies if it is a pass-through the integer path can absorb, else None."""
    if node.op == "call_module":
        for kind, name in _RELU.items():
            if type(modules[node.target]) is kind:
                return name
    if node.op == "call_function" and node.target in _RELU_FN:
        return _RELU_FN[node.target]
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def find_requant_edges(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{layer: (next_layer, activation)}`` where a layer feeds exactly one quantized layer through
    Identity / ReLU / ReLU6 only.  Models torch.fx cannot trace get no edges (every output is float)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types; falling back is the documented behaviour
        log.info("torch.fx could not trace the model (%s); no integer requantization edges", exc)
        return {}
    modules = dict(model.named_modules())
    edges = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), QuantLayer):
            continue
        act, cur = "identity", node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(modules.get(nxt.target), QuantLayer):
                edges[modules[node.target].name] = (modules[nxt.target].name, act)
                break
            step = _step(nxt, modules)
            if step is None:
                break
            if step == "relu6" or (step == "relu" and act == "identity"):
                act = step
            cur = nxt
    return edges


def integer_weights(layer: QuantLayer) -> np.ndarray:
    """(C, K) int64 weights the MAC multiplies by: decoded log multipliers, or code - zero_point, each group
    shifted left by its exponent less the channel's smallest (see :func:`group_scale`)."""
    fmt = layer.cfg.weight_format()
    if layer.cfg.is_log:
        w = codes_format.decode_int(layer.words, layer.grid.table(), fmt).reshape(layer.words.shape[0], -1)
    else:
        zp = layer.uniform[1].cpu().numpy().astype(np.int64)
        w = layer.words.reshape(layer.words.shape[0], -1).astype(np.int64) - zp[:, None]
    if layer.group_exp is not None:
        w = shifted_integers(w, layer.group_exp, layer.cfg.group_size)[0]
    return w


def group_scale(layer: QuantLayer) -> np.ndarray:
    """(C,) ``2**min_g e[c, g]``: the power of two the group shifts fold into the channel scale (ones without)."""
    if layer.group_exp is None:
        return np.ones(layer.words.shape[0])
    return np.ldexp(1.0, layer.group_exp.min(axis=1).astype(np.int64))


def geometry_attrs(layer: nn.Module) -> dict:
    """What the emulator needs to rebuild the layer's op: conv geometry (and any static pre-padding) or the
    linear's features.  ``layer`` is a QuantLayer or any wrapper with ``op``, ``inner`` and ``pre_pad``."""
    m = layer.inner
    if layer.op == "conv2d":
        return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
                    stride=list(m.stride), padding=list(m.padding), dilation=list(m.dilation), groups=m.groups,
                    pre_pad=list(layer.pre_pad) if layer.pre_pad is not None else None)
    return dict(in_features=m.in_features, out_features=m.out_features)


def export_layer(layer: QuantLayer, next_layer: QuantLayer | None, activation: str, folded_bn: str | None) -> QuantizedLayer:
    """One layer of the artifact; ``next_layer`` set when its output requantizes straight into that layer."""
    m, cfg = layer.inner, layer.cfg
    fmt = cfg.weight_format()
    shape = tuple(m.weight.shape)
    attrs: dict = {"module": layer.name, "folded_bn": folded_bn, "act_in": None, "requant": None,
                   **geometry_attrs(layer)}
    bias = m.bias.detach().double().cpu().numpy() if m.bias is not None else np.zeros(shape[0])
    extras: dict[str, np.ndarray] = {"bias": bias}
    if cfg.is_log:
        table = layer.grid.table()
        scale, zero_point = table.scale, None
        extras.update(alpha=layer.grid.alpha.astype(np.float64), n_base2=layer.grid.n_base2.astype(np.int64),
                      top_k=layer.grid.top_k.astype(np.int64))
        words = layer.words.reshape(shape).astype(np.uint16)
    else:
        table = None
        scale = layer.uniform[0].double().cpu().numpy()
        zero_point = layer.uniform[1].cpu().numpy().astype(np.int32)
        words = layer.words.reshape(shape).astype(np.int16)
    if layer.group_exp is not None:
        extras[GROUP_EXP] = layer.group_exp.astype(np.int8)
        attrs.update(group_size=cfg.group_size, group_bits=cfg.group_bits)
    if layer.act is not None:
        act = layer.act.export()
        attrs["act_in"] = act
        out_scale = act["scale"] * scale * group_scale(layer)
        w_int = integer_weights(layer)
        extras["out_scale"] = out_scale
        extras["bias_int"] = np.round(bias / out_scale).astype(np.int64) - act["zero_point"] * w_int.sum(1)
        if next_layer is not None and next_layer.act is not None:
            nxt = next_layer.act.export()
            mult = [fixed_point_multiplier(float(v)) for v in out_scale / nxt["scale"]]
            extras["requant_multiplier"] = np.array([p[0] for p in mult], dtype=np.int64)
            extras["requant_shift"] = np.array([p[1] for p in mult], dtype=np.int64)
            lo, hi, zp = nxt["qmin"], nxt["qmax"], nxt["zero_point"]
            if activation in ("relu", "relu6"):
                lo = max(lo, zp)
            if activation == "relu6":
                hi = min(hi, zp + round(6.0 / nxt["scale"]))
            attrs["requant"] = {"next": next_layer.name, "activation": activation, "out_scale": nxt["scale"],
                                "out_zero_point": zp, "clamp": [int(lo), int(hi)]}
    return QuantizedLayer(name=layer.name, op=layer.op, fmt=fmt, codes=words, scale=np.asarray(scale, np.float64),
                          table=table, zero_point=zero_point, extras=extras, attrs=attrs)


def build_artifact(model: nn.Module, settings: dict, meta: dict, folded: dict[str, str]) -> Artifact:
    """All fitted QuantLayers of ``model`` as an Artifact (validated on save)."""
    layers = {m.name: m for m in model.modules() if isinstance(m, QuantLayer) and m.words is not None}
    edges = find_requant_edges(model)
    bn_of = {conv: bn for bn, conv in folded.items()}
    out = {}
    for name, layer in layers.items():
        nxt, act = edges.get(name, (None, "identity"))
        out[name] = export_layer(layer, layers.get(nxt), act, bn_of.get(name))
    return Artifact(layers=out, settings=settings, meta=meta)
