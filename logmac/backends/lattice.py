"""Integer emulation of LatticeQ layers: the lattice weight as integers on the exact MAC.

A lattice weight is ``scale_c * (c @ B_int + m_c)``: b-bit coordinates ``c`` per n-vector, an integer
basis ``B_int`` (odd integers below ``2^bB``), and the bias-correction offset ``m_c`` in basis steps.  Two
ways to run it on integers, both exact (docs/latticeq.md counts what each costs):

(a) decode ``W_int = c @ B_int + m`` (n multiplies per weight) and run an ordinary integer GEMM with the
    wider weights (:func:`lattice_int_weights`, then ``logmac.sim.ops.conv2d`` / ``int_matmul``);
(b) transform each input group once, ``u = B_int x_g`` (n^2 multiplies per group and basis), and take
    integer dot products of ``u`` with the coordinates, plus ``m_c * sum(x)``
    (:func:`grouped_lattice_matmul`).

The model-level path (:func:`emulate_lattice`) runs (a): the input is quantized to the same a-bit codes as
the fake-quant model, the accumulator is computed exactly (no rounding inside the MAC), and the output
leaves as ``s_x * scale_c * (acc - z * rowsum) + bias`` in float, like the emulator's float hand-off.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from logmac.format import OverflowMode, accumulator_bits
from logmac.format.artifact import Artifact
from logmac.quant.methods.latticeq.model import LatticeLayer, lattice_layers
from logmac.quant.methods.latticeq.search import LatticeCode
from logmac.sim import ops
from logmac.sim.gemm import IntWeights
from logmac.sim.layers import EmulatorError, swap_module


def lattice_int_weights(code: LatticeCode, groups: int = 1, device: torch.device | str | None = None
                        ) -> tuple[IntWeights, torch.Tensor]:
    """Path (a): the decoded integer weights as :class:`IntWeights` (split into conv ``groups``) and the
    per-channel float scale that joins requantization."""
    w_int, scale = code.integer_weights()
    C = w_int.shape[0]
    if groups < 1 or C % groups:
        raise EmulatorError(f"{C} output channels cannot be split into {groups} groups")
    return IntWeights(w_int.reshape(groups, C // groups, -1).to(device)), scale


def grouped_lattice_matmul(x_int: torch.Tensor, code: LatticeCode) -> torch.Tensor:
    """Path (b), exact in int64: ``acc[N, c] = sum_g c[c, g] . (B_int[c] x[N, g]) + m_c * sum_k x[N, k]``.

    ``x_int`` is (N, K) integers.  With a per-layer basis the transform ``B_int x_g`` is shared by every
    output channel; per channel it is repeated for each (the einsum below does the per-channel case,
    which covers both).
    """
    if x_int.dtype.is_floating_point:
        raise EmulatorError(f"activations must be integers, got dtype {x_int.dtype}")
    C, G, n = code.coords.shape
    if x_int.ndim != 2 or x_int.shape[1] != G * n:
        raise EmulatorError(f"shape mismatch: activations {tuple(x_int.shape)} vs {C} channels of {G} x {n} weights")
    x = x_int.to(torch.int64).reshape(-1, G, n)
    b_int = code.basis_int().to(x.device)
    if b_int.shape[0] == 1:
        u = torch.einsum("ij,ngj->ngi", b_int[0], x)[:, None]  # one transform per group, shared: (N, 1, G, n)
    else:
        u = torch.einsum("cij,ngj->ncgi", b_int, x)  # per channel: (N, C, G, n)
    acc = (u * code.coords.to(x.device)[None]).sum(dim=(2, 3))
    return acc + code.offset_int().to(x.device)[None] * x.sum(dim=(1, 2))[:, None]


@dataclass
class IntStats:
    """What one integer layer did: accumulators computed, how many overflowed, and its register width."""

    outputs: int = 0
    overflows: int = 0
    acc_bits: int = 0


class LatticeIntLayer(nn.Module):
    """A :class:`LatticeLayer` on the integer datapath (path (a)); see the module docstring."""

    def __init__(self, layer: LatticeLayer, acc_bits: int | None = None, overflow: OverflowMode = "saturate") -> None:
        super().__init__()
        act = layer.act
        if act is None:
            raise EmulatorError(f"layer {layer.name} has float inputs; the integer path needs quantized activations")
        if not act.per_tensor:
            raise EmulatorError(f"layer {layer.name}: per-channel activation scales cannot leave an integer dot "
                                "product; quantize with act_mode 'mse' or 'max' for the integer path")
        self.name, self.op, self.inner, self.act, self.overflow = layer.name, layer.op, layer.inner, act, overflow
        self.pre_pad = layer.pre_pad
        device = layer.qweight.device
        groups = layer.inner.groups if self.op == "conv2d" else 1
        self.weights, scale = lattice_int_weights(layer.code, groups, device)
        self.zp = int(act.zero_point)
        self.row_sums = self.weights.row_sums().to(device)
        m_max = max(1, int(self.weights.col_absmax.max(initial=0)))
        need = accumulator_bits(self.weights.k, act.bits, False, m_max)
        self.stats = IntStats(acc_bits=need if acc_bits is None else acc_bits)
        self.out_scale = (scale.to(device) * float(act.scale)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.act.codes(x).to(torch.int64)
        if self.pre_pad is not None:
            q = F.pad(q, self.pre_pad, value=self.zp)
        m = self.inner
        if self.op == "linear":
            lead = q.shape[:-1]
            res = ops.int_matmul(q.reshape(-1, q.shape[-1]), self.weights, self.stats.acc_bits, self.overflow)
            acc, flags = res.acc.reshape(*lead, -1), res.overflow
            shape = [-1]
        else:
            res = ops.conv2d(q, self.weights, m.kernel_size, self.stats.acc_bits, self.overflow, stride=m.stride,
                             padding=m.padding, dilation=m.dilation, pad_value=self.zp)
            acc, flags = res.acc, res.overflow
            shape = [-1, 1, 1]
        self.stats.outputs += acc.numel()
        self.stats.overflows += int(torch.as_tensor(flags).sum())
        real = (acc - self.zp * self.row_sums.reshape(shape)).double() * self.out_scale.reshape(shape)
        if m.bias is not None:
            real = real + m.bias.double().reshape(shape)
        return real.to(x.dtype)


def emulate_lattice(model: nn.Module, acc_bits: int | None = None, overflow: OverflowMode = "saturate"
                    ) -> tuple[nn.Module, dict[str, IntStats]]:
    """A copy of a LatticeQ fake-quant model with every lattice layer on the integer path.

    Returns the copy and per-layer :class:`IntStats`; ``acc_bits=None`` gives each layer the register its
    worst case needs (so nothing overflows), a number forces one width on all and counts overflows.
    """
    emu = copy.deepcopy(model)
    layers = lattice_layers(emu)
    if not layers:
        raise EmulatorError("the model has no LatticeQ layer; quantize it with lattice_quantize_model first")
    stats = {}
    for layer in layers:
        new = LatticeIntLayer(layer, acc_bits, overflow)
        swap_module(emu, layer.name, new)
        stats[layer.name] = new.stats
    return emu, stats


def emulate_lattice_artifact(artifact: Artifact, model: nn.Module | None = None, acc_bits: int | None = None,
                             overflow: OverflowMode = "saturate") -> tuple[nn.Module, dict[str, IntStats]]:
    """:func:`emulate_lattice` on a loaded LatticeQ artifact (``model``: the BN-folded FP network, rebuilt
    from ``artifact.meta['model']`` when None).  Bit-identical to emulating the model that was exported."""
    from logmac.quant.methods.latticeq.export import load_lattice_model

    return emulate_lattice(load_lattice_model(artifact, model), acc_bits, overflow)
