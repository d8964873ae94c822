"""Reading an exported layer (``docs/artifact-schema.md``) and swapping modules of the float network.

Both the emulator and its fake-quant twin start from a :class:`LayerSpec`: the layer's weights as integers,
its input quantizer, and its output path (float, or requantized straight into the next layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from logmac.format import LogFormat, UniformFormat, activation_codes, decode_float
from logmac.format.artifact import Artifact, QuantizedLayer
from logmac.format.groups import group_exponents, group_factors
from logmac.sim.gemm import IntWeights
from logmac.sim.groups import group_int_weights


class EmulatorError(ValueError):
    """An artifact or model the emulator cannot run as the chip would, with the reason."""


@dataclass
class LayerSpec:
    """One quantized Conv2d/Linear as the datapath runs it."""

    layer: QuantizedLayer
    act_in: dict[str, Any]
    requant: dict[str, Any] | None

    @classmethod
    def from_layer(cls, layer: QuantizedLayer) -> LayerSpec:
        attrs = layer.attrs
        if layer.op not in ("conv2d", "linear"):
            raise EmulatorError(f"layer {layer.name}: op {layer.op!r} is not one the datapath runs (conv2d, linear)")
        act_in = attrs.get("act_in")
        if not act_in:
            raise EmulatorError(f"layer {layer.name} has float inputs (quantized with --a-bits 32); the integer "
                                "datapath needs integer activations: re-quantize with --a-bits 8 (or 4)")
        need = ["bias_int", "out_scale"] + (["requant_multiplier", "requant_shift"] if attrs.get("requant") else [])
        missing = [k for k in need if k not in layer.extras]
        if missing:
            raise EmulatorError(f"layer {layer.name}: artifact extras miss {missing} (see docs/artifact-schema.md)")
        if layer.op == "conv2d":
            for key in ("kernel_size", "stride", "padding", "dilation", "groups"):
                if key not in attrs:
                    raise EmulatorError(f"layer {layer.name}: conv attrs miss {key!r}")
        return cls(layer, act_in, attrs.get("requant"))

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def is_conv(self) -> bool:
        return self.layer.op == "conv2d"

    @property
    def groups(self) -> int:
        return int(self.layer.attrs.get("groups", 1)) if self.is_conv else 1

    def conv_kwargs(self) -> dict[str, Any]:
        a = self.layer.attrs
        return {"stride": tuple(a["stride"]), "padding": tuple(a["padding"]), "dilation": tuple(a["dilation"])}

    def int_weights(self, device: torch.device | str | None = None) -> IntWeights:
        """Integer multipliers of this layer (decoded once; group exponents applied as shifts)."""
        lay = self.layer
        if group_exponents(lay.extras, lay.attrs) is not None:
            return group_int_weights(lay, self.groups, device)
        if isinstance(lay.fmt, LogFormat):
            return IntWeights.from_log(lay.codes, lay.table, lay.fmt, groups=self.groups, device=device)
        zp = lay.zero_point if not lay.fmt.symmetric else None
        return IntWeights.from_uniform(lay.codes, lay.fmt, zp, groups=self.groups, device=device)

    def float_weight(self) -> torch.Tensor:
        """The fake-quant weight (float32): channel scale times the level, as ``format.decode_float`` defines it."""
        lay = self.layer
        if isinstance(lay.fmt, LogFormat):
            w = decode_float(lay.codes, lay.table, lay.fmt)
        else:
            q = lay.codes.astype(np.float64)
            if isinstance(lay.fmt, UniformFormat) and not lay.fmt.symmetric and lay.zero_point is not None:
                q = q - lay.zero_point.reshape((-1,) + (1,) * (q.ndim - 1))
            w = q * lay.scale.reshape((-1,) + (1,) * (q.ndim - 1))
        group = group_exponents(lay.extras, lay.attrs)
        if group is not None:
            w = (w.reshape(w.shape[0], -1) * group_factors(group[0], w[0].size, group[1])).reshape(w.shape)
        return torch.as_tensor(w, dtype=torch.float32)

    def format_label(self) -> str:
        fmt = self.layer.fmt
        if isinstance(fmt, LogFormat):
            return f"{fmt.grid.value} W{fmt.bits}"
        return f"uniform W{fmt.bits}"


def quantize_input(x: torch.Tensor, act_in: dict[str, Any], out: torch.Tensor | None = None) -> torch.Tensor:
    """Activation codes ``clamp(round(x / s) + zp, qmin, qmax)`` in float32, exactly as the fake-quant model forms them.

    With ``out`` (float32, x's shape, any strides) the same operations run in place there, e.g. straight into
    the interior of a padded convolution buffer.
    """
    scale = torch.tensor(act_in["scale"], dtype=torch.float32, device=x.device)
    if out is not None:
        torch.div(x.to(torch.float32), scale, out=out)
        return out.round_().add_(float(act_in["zero_point"])).clamp_(float(act_in["qmin"]), float(act_in["qmax"]))
    return activation_codes(x.to(torch.float32), scale, float(act_in["zero_point"]), float(act_in["qmin"]),
                            float(act_in["qmax"]))


def centred_codes(x: torch.Tensor, act_in: dict[str, Any], out: torch.Tensor) -> torch.Tensor:
    """``quantize_input(x) - zp`` written into ``out`` (float32, any strides) in three passes instead of five.

    ``clamp(round(x / s) + zp, qmin, qmax) - zp == clamp(round(x / s), qmin - zp, qmax - zp)``: below 2**24 adding
    the integer ``zp`` is exact in float32, and from there on both sides clamp to the same end of the range.
    """
    zp = float(act_in["zero_point"])
    torch.div(x.to(torch.float32), torch.tensor(act_in["scale"], dtype=torch.float32, device=x.device), out=out)
    return out.round_().clamp_(float(act_in["qmin"]) - zp, float(act_in["qmax"]) - zp)


def swap_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Replace the submodule at ``path`` and return the old one (error naming the path if absent)."""
    parent_path, _, leaf = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, leaf)
    except AttributeError as exc:
        raise EmulatorError(f"the model has no module {path!r} for artifact layer {path!r}") from exc
    setattr(parent, leaf, new)
    return old


def check_module(spec: LayerSpec, module: nn.Module) -> None:
    """The float module must have the shape the artifact layer claims (guards against the wrong model)."""
    kinds = {"conv2d": nn.Conv2d, "linear": nn.Linear}
    want = kinds[spec.layer.op]
    if not isinstance(module, want) or tuple(module.weight.shape) != spec.layer.weight_shape:
        got = f"{type(module).__name__}{tuple(getattr(module, 'weight', torch.empty(0)).shape)}"
        raise EmulatorError(f"layer {spec.name}: artifact has {spec.layer.op}{spec.layer.weight_shape}, model has {got}")


def layer_specs(artifact: Artifact) -> dict[str, LayerSpec]:
    specs = {name: LayerSpec.from_layer(layer) for name, layer in artifact.layers.items()}
    for spec in specs.values():
        nxt = spec.requant and spec.requant.get("next")
        if spec.requant and nxt not in specs:
            raise EmulatorError(f"layer {spec.name} requantizes into {nxt!r}, which is not a quantized layer")
    return specs


class FakeQuantLayer(nn.Module):
    """The float twin of a quantized layer: fake-quantized input, decoded float weight, float32 conv/linear."""

    def __init__(self, spec: LayerSpec, module: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("weight", spec.float_weight())
        self.register_buffer("bias", torch.as_tensor(spec.layer.extras["bias"], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.spec.act_in
        x = (quantize_input(x, act) - float(act["zero_point"])) * torch.tensor(act["scale"], dtype=torch.float32)
        if self.spec.is_conv:
            return nn.functional.conv2d(x, self.weight, self.bias, groups=self.spec.groups, **self.spec.conv_kwargs())
        return nn.functional.linear(x, self.weight, self.bias)


def fake_quant_model(artifact: Artifact, model: nn.Module) -> nn.Module:
    """Swap every quantized layer of a (BN-folded) float model for its fake-quant twin, in place."""
    for name, spec in layer_specs(artifact).items():
        check_module(spec, model.get_submodule(name))
        swap_module(model, name, FakeQuantLayer(spec, model.get_submodule(name)))
    return model
