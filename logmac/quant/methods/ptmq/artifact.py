"""The multi-bit artifact: one file, every bit-width (docs/artifact-schema.md, "Multi-bit artifacts").

The file is an ordinary artifact at the **top** width (every existing tool reads it as that model), plus,
per layer, what each lower width b needs, under extras prefixed ``p{b}/`` and ``attrs["ptmq"]``:

- log codes: no second copy of the codes (the b-bit words are ``format.nested.nest_words`` of the stored
  ones); the b-bit decode table ``p{b}/u``, ``p{b}/h`` (checked against the nesting on load);
- uniform codes: the b-bit codes ``p{b}/codes`` and ``p{b}/scale``, ``p{b}/zero_point`` (shared rounding,
  per-width steps: the integers are not nested);
- both: ``p{b}/bias_int``, ``p{b}/out_scale`` and, where the layer requantizes, ``p{b}/requant_multiplier``
  and ``p{b}/requant_shift``; the b-bit format, input quantizer and requant attrs in ``attrs["ptmq"]``.

:func:`artifact_at` turns it back into the single-width artifact of any width it holds.
"""

from __future__ import annotations

import copy

import numpy as np
from torch import nn

from logmac.format import DecodeTable, LogFormat, format_from_dict
from logmac.format.artifact import Artifact, ArtifactError, QuantizedLayer
from logmac.format.nested import nest_table, nest_words
from logmac.quant.config import QuantConfig
from logmac.quant.export import build_artifact
from logmac.quant.methods.ptmq.layer import set_precision

PER_WIDTH_EXTRAS = ("bias_int", "out_scale", "requant_multiplier", "requant_shift")


def build_multibit_artifact(model: nn.Module, cfg: QuantConfig, ptmq, meta: dict, folded: dict[str, str]) -> Artifact:
    """Export every width of a PTMQ-calibrated model and merge them into one top-width artifact."""
    per_width = {}
    for b, a in zip(ptmq.bits, ptmq.a_bits, strict=True):
        set_precision(model, b)
        settings = {**cfg.to_dict(), "w_bits": b, "a_bits": a}
        per_width[b] = build_artifact(model, settings, meta, folded)
    set_precision(model, ptmq.top)
    top = per_width[ptmq.top]
    top.settings["ptmq"] = ptmq.to_dict()
    for name, layer in top.layers.items():
        precisions = {}
        for b in ptmq.bits:
            if b == ptmq.top:
                continue
            low = per_width[b].layers[name]
            precisions[str(b)] = {"format": low.fmt.to_dict(), "act_in": low.attrs["act_in"],
                                  "requant": low.attrs["requant"]}
            for key in PER_WIDTH_EXTRAS:
                if key in low.extras:
                    layer.extras[f"p{b}/{key}"] = low.extras[key]
            if low.table is not None:
                layer.extras[f"p{b}/u"] = low.table.u.astype(np.uint8)
                layer.extras[f"p{b}/h"] = low.table.h.astype(np.uint8)
                if not np.array_equal(low.scale, layer.scale):  # a per-width weight step (PtmqConfig.width_scale)
                    layer.extras[f"p{b}/scale"] = low.scale.astype(np.float64)
            else:
                layer.extras[f"p{b}/codes"] = low.codes.astype(np.int16)
                layer.extras[f"p{b}/scale"] = low.scale.astype(np.float64)
                layer.extras[f"p{b}/zero_point"] = np.asarray(low.zero_point, dtype=np.int32)
        layer.attrs["ptmq"] = {"bits": list(ptmq.bits), "top": ptmq.top, "nest": ptmq.nest, "precisions": precisions}
    return top


def multibit_bits(artifact: Artifact) -> list[int]:
    """The widths a multi-bit artifact holds (error for a single-width artifact)."""
    info = artifact.settings.get("ptmq")
    if not info:
        raise ArtifactError("not a multi-bit artifact (no settings.ptmq); quantize with --method ptmq --bits ...")
    return [int(b) for b in info["bits"]]


def artifact_at(artifact: Artifact, bits: int) -> Artifact:
    """The single-width artifact of width ``bits`` inside a multi-bit artifact (the same file at that width)."""
    widths = multibit_bits(artifact)
    if bits not in widths:
        raise ArtifactError(f"this artifact holds widths {widths}; {bits}-bit was not calibrated")
    info = artifact.settings["ptmq"]
    top = int(info["top"]) if "top" in info else max(widths)
    a_bits = dict(zip(widths, info["a_bits"], strict=True))
    layers = {}
    for name, layer in artifact.layers.items():
        base_extras = {k: v for k, v in layer.extras.items() if not k.startswith("p") or "/" not in k}
        attrs = {k: v for k, v in layer.attrs.items() if k != "ptmq"}
        if bits == top:
            layers[name] = QuantizedLayer(name=name, op=layer.op, fmt=layer.fmt, codes=layer.codes, scale=layer.scale,
                                          table=layer.table, zero_point=layer.zero_point, extras=base_extras,
                                          attrs=attrs)
            continue
        p = layer.attrs.get("ptmq", {}).get("precisions", {}).get(str(bits))
        if p is None:
            raise ArtifactError(f"layer {name} has no {bits}-bit precision entry; the file is not a complete "
                                "multi-bit artifact")
        fmt = format_from_dict(p["format"])
        extras = dict(base_extras)
        extras.update({key: layer.extras[f"p{bits}/{key}"] for key in PER_WIDTH_EXTRAS
                       if f"p{bits}/{key}" in layer.extras})
        attrs.update(act_in=p["act_in"], requant=p["requant"])
        if isinstance(layer.fmt, LogFormat):
            nest = info["nest"]
            scale = layer.extras.get(f"p{bits}/scale", layer.scale)
            table = DecodeTable(layer.extras[f"p{bits}/u"], layer.extras[f"p{bits}/h"], scale)
            want = nest_table(layer.table, layer.fmt, bits, nest)
            if not (np.array_equal(table.u, want.u) and np.array_equal(table.h, want.h)):
                raise ArtifactError(f"layer {name}: the stored {bits}-bit decode table is not the '{nest}' nesting of "
                                    "the top table (mismatched multi-bit artifact)")
            codes = nest_words(layer.codes, layer.fmt, bits, nest).reshape(layer.codes.shape).astype(np.uint16)
            out = QuantizedLayer(name=name, op=layer.op, fmt=fmt, codes=codes, scale=scale, table=table,
                                 zero_point=None, extras=extras, attrs=attrs)
        else:
            out = QuantizedLayer(name=name, op=layer.op, fmt=fmt, codes=layer.extras[f"p{bits}/codes"].reshape(
                layer.codes.shape), scale=layer.extras[f"p{bits}/scale"], table=None,
                zero_point=layer.extras[f"p{bits}/zero_point"], extras=extras, attrs=attrs)
        out.validate()
        layers[name] = out
    settings = {k: v for k, v in artifact.settings.items() if k != "ptmq"}
    settings.update(w_bits=bits, a_bits=int(a_bits[bits]))
    return Artifact(layers=layers, settings=settings, meta=copy.deepcopy(artifact.meta), tensors=dict(artifact.tensors))
