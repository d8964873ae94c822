"""Model-level emulation: an exported artifact run end to end as the chip would run it.

Every quantized Conv2d/Linear of the float network is swapped for an :class:`IntLayer`: its input is
quantized to a-bit codes (the declared boundary from float), the log MAC runs on integers (exact GEMM),
and the output either leaves as float (``out_scale * (acc + bias_int)``) into the ops the datapath does
not cover, or is requantized to integers straight into the next quantized layer.  Everything else
(residual adds, pooling, softmax, LayerNorm, GELU, ...) runs in float32; :meth:`Emulator.placement`
lists which ops ran where.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from logmac.format import DecodeTable, OverflowMode, accumulator_bits, requantize
from logmac.format.artifact import Artifact
from logmac.format.groups import GROUP_EXP, group_exponents
from logmac.sim import gemm, ops
from logmac.sim.gemm import exact_matmul, tap_plan
from logmac.sim.groups import group_mac_reference
from logmac.sim.layers import (
    EmulatorError,
    LayerSpec,
    centred_codes,
    check_module,
    layer_specs,
    quantize_input,
    swap_module,
)
from logmac.sim.mac import MacResult, log_matmul_reference, uniform_matmul_reference
from logmac.sim.trace import Requant, save_trace


@dataclass
class LayerStats:
    """Per-layer counters: accumulators computed and how many overflowed the register."""

    outputs: int = 0
    overflows: int = 0


class IntLayer(nn.Module):
    """One quantized layer on the integer datapath (see the module docstring)."""

    def __init__(self, spec: LayerSpec, acc_bits: int | None, overflow: OverflowMode, device: torch.device,
                 engine: str = "fast", stream: bool = False) -> None:
        super().__init__()
        if engine not in ("fast", "reference"):
            raise EmulatorError(f"engine must be 'fast' or 'reference', got {engine!r}")
        self.spec, self.overflow, self.engine, self.stream = spec, overflow, engine, stream
        self.weights = spec.int_weights(device)
        act = spec.act_in
        self.act_bits, self.zp = int(act["bits"]), int(act["zero_point"])
        self.x_absmax = max(abs(int(act["qmin"])), abs(int(act["qmax"])), abs(self.zp))  # codes and conv padding
        # widest exact sum this layer can produce: a register this wide provably never overflows
        m_max = max(1, int(self.weights.col_absmax.max(initial=0)))
        self.need_bits = accumulator_bits(self.weights.k, self.act_bits, False, m_max)
        self.acc_bits = self.need_bits if acc_bits is None else acc_bits
        ex = spec.layer.extras
        self.bias_int = np.asarray(ex["bias_int"], dtype=np.int64)
        shape = (-1, 1, 1) if spec.is_conv else (-1,)
        self.out_scale = torch.as_tensor(ex["out_scale"], dtype=torch.float64, device=device).reshape(shape)
        self.bias_t = torch.as_tensor(self.bias_int, device=device).reshape(shape)
        # |acc + bias_int| per channel: x_absmax * sum_k |M[c, k]| bounds the exact sum and any register value
        # narrower hardware leaves (float64 here is only a bound, compared with a factor-2 margin)
        row_abs = self.weights.row_absmax()
        sum_bound = self.x_absmax * row_abs + np.abs(self.bias_int)
        # a layer whose register cannot overflow runs as one float32 F.conv2d / F.linear of centred codes, bias folded in
        self.direct_bias = self._direct_bias(row_abs, device) if engine == "fast" else None
        # the float boundary runs in float32 when acc + bias_int is an exact float32 integer (below 2**24)
        self.float_out_fits = self.direct_bias is not None or bool((sum_bound < 2**23).all())
        self.bias_f32, self.out_scale_f32 = self.bias_t.reshape(-1).float(), self.out_scale.reshape(-1).float()
        if spec.requant:  # the direct conv's sums already hold bias_int
            self.rq_scale = torch.tensor(spec.requant["out_scale"], dtype=torch.float32, device=device)
            bias = 0 if self.direct_bias is not None else self.bias_int
            # zero point 0: the multiply-add gives codes less the output zero point, what the next layer compares
            self.rq_affine = ops.requant_affine(ex["requant_multiplier"], ex["requant_shift"], 0, bias, sum_bound,
                                                device=device)
        # ungrouped convs whose sums fit float32 tap chunks take their input codes in a padded channels-last buffer
        self.conv_plan = None
        if spec.is_conv and self.weights.groups == 1 and engine == "fast":
            plan = tap_plan(self.weights, int(np.prod(spec.layer.weight_shape[2:])), self.x_absmax, device)
            self.conv_plan = plan if plan[0] == "float32" else None
        self.stats = LayerStats()
        self.next: tuple[IntLayer, ...] = ()  # a tuple, so the next layer is not registered as a submodule
        # codes the previous layer requantized into this one, less that layer's output zero point
        self.expect: tuple[torch.Tensor, int] | None = None
        # set by Emulator: the predecessor's dequantized codes provably quantize back to them (handoff_exact)
        self.trusted_handoff = False
        self.tap: list[torch.Tensor] | None = None  # set by Emulator.capture

    def _direct_bias(self, row_abs: np.ndarray, device: torch.device) -> torch.Tensor | None:
        """``bias_int + zp * sum_k M[c, k]`` (float32) when :func:`ops.conv_centred` (:func:`ops.linear_centred`) is
        exact for this layer, else None.

        It needs the register to hold every sum (no overflow to count), a convolution (GEMM) that sums exact
        products, and ``max|q - zp| * sum_k |M[c, k]| + |folded bias| < 2**24`` per channel (see their docstrings).
        """
        if self.spec.is_conv:
            exact_sums = gemm.direct_conv_exact_ok(device) and ops.direct_conv_verified()
        else:
            exact_sums = self.weights.groups == 1 and gemm.float32_exact_ok(device)
        if self.acc_bits < self.need_bits or not exact_sums:
            return None
        act = self.spec.act_in
        folded = self.bias_int + self.zp * self.weights.row_sums().cpu().numpy().astype(np.int64)
        centred_absmax = max(abs(int(act["qmin"]) - self.zp), abs(int(act["qmax"]) - self.zp))
        if not (centred_absmax * row_abs + np.abs(folded) < 2**24).all():
            return None
        return torch.as_tensor(folded, dtype=torch.float32, device=device)

    def codes(self, x: torch.Tensor, out: torch.Tensor | None = None, *, centred: bool = False) -> torch.Tensor:
        """The a-bit input codes (written into ``out`` when given; less the zero point when ``centred``); after a
        requantized predecessor they must be exactly its integers."""
        if self.expect is not None:
            expect, zp_prev, scale = self.expect
            offset = zp_prev - (self.zp if centred else 0)  # q == expect + offset when the codes agree
            want = expect + offset if offset else expect
            if centred and self.trusted_handoff and torch.equal(x, expect * scale):  # x is what the predecessor sent
                self.expect = None
                return want
        q = centred_codes(x, self.spec.act_in, out) if centred else quantize_input(x, self.spec.act_in, out)
        if self.expect is not None:
            if want.shape != q.shape or not torch.equal(want, q):
                bad = int((want != q).sum()) if want.shape == q.shape else "all"
                raise EmulatorError(f"layer {self.spec.name}: {bad} input codes differ from the integers the previous "
                                    "layer requantized into it; the ops between them are not identity/ReLU/ReLU6")
            self.expect = None
        return q

    def _reference_mac(self, q: torch.Tensor) -> MacResult:
        """The same layer through the int64 reference MAC (slow; for contrast and cross-checks)."""
        lay, w = self.spec.layer, self.weights
        if self.spec.is_conv:
            cols, hw = ops.im2col(q, lay.weight_shape[2:], pad_value=self.zp, dtype=torch.float64, **self.spec.conv_kwargs())
            rows = cols.reshape(-1, w.groups, w.k).permute(1, 0, 2)
        else:
            rows, hw = q.reshape(1, -1, w.k), None
        per = w.mult.shape[1]
        accs, flags = [], []
        for g in range(w.groups):
            sl = slice(g * per, (g + 1) * per)
            x = rows[g].to(torch.int64).cpu().numpy()
            codes = lay.codes.reshape(lay.codes.shape[0], -1)[sl]
            if GROUP_EXP in lay.extras:
                r = group_mac_reference(x, lay, sl, self.acc_bits, self.overflow)
            elif lay.table is not None:
                table = DecodeTable(lay.table.u[sl], lay.table.h[sl], lay.table.scale[sl])
                r = log_matmul_reference(x, codes, table, lay.fmt, self.acc_bits, self.overflow)
            else:
                zp = None if lay.fmt.symmetric else lay.zero_point[sl]
                r = uniform_matmul_reference(x, codes, lay.fmt, self.acc_bits, self.overflow, zp)
            accs.append(r.acc)
            flags.append(r.overflow)
        acc, flag = (torch.as_tensor(np.concatenate(a, axis=1), device=q.device) for a in (accs, flags))
        if hw is None:
            return MacResult(acc.reshape(*q.shape[:-1], -1), flag.reshape(*q.shape[:-1], -1))
        shape = (q.shape[0], hw[0], hw[1], -1)
        return MacResult(acc.reshape(shape).permute(0, 3, 1, 2), flag.reshape(shape).permute(0, 3, 1, 2))

    def accumulate(self, q: torch.Tensor, padded: torch.Tensor | None = None) -> torch.Tensor:
        """Accumulator registers for input codes ``q``: exact sums (any dtype holding integers), fitted to
        ``acc_bits`` with the overflow counted whenever the register is narrower than ``need_bits``.
        ``padded``: the same codes already in a zero-point-padded channels-last buffer (see ``forward``)."""
        if self.engine == "reference":
            res = self._reference_mac(q.to(torch.int64))
            self.stats.overflows += int(res.overflow.sum())
            return res.acc
        if padded is not None:
            kw = self.spec.conv_kwargs()
            exact = ops.conv_padded(padded, self.weights, self.conv_plan, self.spec.layer.weight_shape[2:],
                                    kw["stride"], kw["dilation"])
        elif self.spec.is_conv:
            exact = ops.conv_exact(q, self.weights, self.spec.layer.weight_shape[2:], self.x_absmax, pad_value=self.zp,
                                   **self.spec.conv_kwargs())
        else:
            exact = exact_matmul(self.weights, q.reshape(1, 1, -1, self.weights.k), self.x_absmax)[0, 0]
            exact = exact.reshape(*q.shape[:-1], self.weights.out_channels)
        if self.acc_bits < self.need_bits:
            exact, flag = ops.fit_accumulator(exact.to(torch.int64).contiguous(), self.acc_bits, self.overflow)
            self.stats.overflows += int(flag.sum())
        return exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = None
        if self.direct_bias is not None:  # centred codes (channels-last) into one F.conv2d / F.linear: acc + bias_int
            layout = torch.channels_last if self.spec.is_conv else torch.contiguous_format
            xc = self.codes(x, torch.empty(x.shape, device=x.device, memory_format=layout), centred=True)
            if self.tap is not None:
                self.tap.append(xc + self.zp)
            if self.spec.is_conv:
                acc = ops.conv_centred(xc, self.weights, self.spec.layer.weight_shape[2:], self.direct_bias,
                                       **self.spec.conv_kwargs())
            else:
                acc = ops.linear_centred(xc, self.weights, self.direct_bias)
            return self._output(acc, with_bias=True)
        if self.conv_plan is not None:  # quantize straight into the padded buffer the convolution reads
            padded, interior = ops.padded_buffer(x.shape, self.spec.conv_kwargs()["padding"], self.zp, torch.float32,
                                                 x.device)
            q = self.codes(x, out=interior.permute(0, 3, 1, 2))
        else:
            q = self.codes(x)
        if self.tap is not None:
            self.tap.append(q)
        return self._output(self.accumulate(q, padded), with_bias=False)

    def _output(self, acc: torch.Tensor, with_bias: bool) -> torch.Tensor:
        """The float boundary or the requantization of exact sums ``acc`` (a fresh buffer, reused in place);
        ``with_bias``: they already include ``bias_int``."""
        if self.stream:  # keep only the narrow integer weights between calls
            self.weights.drop_cache()
        self.stats.outputs += acc.numel()
        rq = self.spec.requant
        # per-channel constants broadcast along the last axis: conv sums are channels-last in memory
        last = acc.movedim(1, -1) if acc.ndim == 4 else acc
        if rq is None:  # the float boundary: one LSB is worth out_scale; (acc + bias_int) * out_scale in float32
            if self.float_out_fits:
                last = last.to(torch.float32)
                last = (last if with_bias else last.add_(self.bias_f32)).mul_(self.out_scale_f32)
                return last.movedim(-1, 1) if acc.ndim == 4 else last
            return ((acc.to(torch.float64) + self.bias_t) * self.out_scale).to(torch.float32)
        lo, hi = (int(v) for v in rq["clamp"])
        zp_out = int(rq["out_zero_point"])
        if self.rq_affine is not None:  # format.requantize's arithmetic as one exact float64 multiply-add
            y = torch.addcmul(self.rq_affine[1], last, self.rq_affine[0]).floor_().clamp_(lo - zp_out, hi - zp_out)
            y = y.to(torch.float32).movedim(-1, 1) if acc.ndim == 4 else y.to(torch.float32)
        else:
            ex = self.spec.layer.extras
            bias = None if with_bias else self.bias_int
            y = requantize(acc.to(torch.int64), ex["requant_multiplier"], ex["requant_shift"], zp_out, lo, hi,
                           bias, channel_axis=1 if self.spec.is_conv else -1).to(torch.float32).sub_(zp_out)
        for nxt in self.next:
            nxt.expect = (y, zp_out, self.rq_scale)
        return y * self.rq_scale

    def handoff_exact(self, nxt: IntLayer) -> bool:
        """Whether ``nxt``'s input quantizer maps every code this layer can requantize to, dequantized as
        :meth:`_output` returns it (``(y - zp) * out_scale`` in float32), back to the same integer.

        Then an input bit-identical to that float tensor has exactly those codes, and ``nxt`` can check the
        input with one comparison instead of quantizing it again (all 2**a codes are tried once, here).
        """
        lo, hi = (int(v) for v in self.spec.requant["clamp"])
        zp_out = int(self.spec.requant["out_zero_point"])
        y = torch.arange(lo - zp_out, hi - zp_out + 1, dtype=torch.float32, device=self.rq_scale.device)
        back = centred_codes(y * self.rq_scale, nxt.spec.act_in, torch.empty_like(y))
        return torch.equal(back, y + (zp_out - nxt.zp))


class Emulator:
    """Run an exported artifact on the bit-exact integer emulator.

    ``model`` is the float network with BatchNorm already folded (``logmac.quant.fold.fold_batchnorm``);
    :func:`logmac.backends.float_model.build_float_model` rebuilds it from ``artifact.meta``.
    ``acc_bits=None`` sizes each layer's accumulator by ``format.accumulator_bits`` (never overflows);
    a number emulates that hardware register width, and overflows are counted per layer.
    ``engine="reference"`` runs every MAC through the int64 reference instead of the BLAS path.
    ``stream=True`` keeps only each layer's narrow integer weights (int8 or int16) between calls and
    makes the float GEMM operand when the layer runs, which is how a large LM fits in memory.
    """

    def __init__(self, artifact: Artifact, model: nn.Module, *, acc_bits: int | None = None,
                 overflow: OverflowMode = "saturate", device: torch.device | str | None = None,
                 engine: str = "fast", stream: bool = False) -> None:
        self.artifact = artifact
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = model.to(self.device).eval()
        self.layers: dict[str, IntLayer] = {}
        for name, spec in layer_specs(artifact).items():
            check_module(spec, self.model.get_submodule(name))
            self.layers[name] = IntLayer(spec, acc_bits, overflow, self.device, engine, stream)
            swap_module(self.model, name, self.layers[name])
        for layer in self.layers.values():
            if layer.spec.requant:
                layer.next = (self.layers[layer.spec.requant["next"]],)
                layer.next[0].trusted_handoff = layer.handoff_exact(layer.next[0])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            layer.expect = None
        return self.model(x.to(self.device))

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Outputs for a whole input tensor, batch by batch (CPU result)."""
        return torch.cat([self(inputs[i:i + batch_size]).cpu() for i in range(0, len(inputs), batch_size)])

    def overflow_report(self) -> dict[str, LayerStats]:
        return {name: layer.stats for name, layer in self.layers.items()}

    def placement(self, inputs: torch.Tensor | None = None) -> list[dict[str, str]]:
        """Every op of the network and where it runs: ``int`` (the log MAC datapath) or ``float32``.

        Float module leaves and functional ops come from ``torch.fx``; with ``inputs`` they are instead recorded
        per module while the emulator runs them (:func:`recorded_float_ops`), which also covers networks fx
        cannot trace (HF transformers).
        """
        rows = []
        for name, module in self.model.named_modules():
            if isinstance(module, IntLayer):
                spec = module.spec
                out = f"requant -> {spec.requant['next']}" if spec.requant else "float out"
                rows.append({"op": name, "kind": spec.layer.op, "where": "int",
                             "detail": f"{spec.format_label()} x A{module.act_bits}, acc {module.acc_bits} bits, {out}"})
            elif inputs is None and not list(module.children()) and not isinstance(module, nn.Identity) and name:
                rows.append({"op": name, "kind": type(module).__name__, "where": "float32", "detail": ""})
        rows.extend(_functional_ops(self.model) if inputs is None else recorded_float_ops(self, inputs))
        return rows

    @torch.no_grad()
    def capture(self, layer: str, inputs: torch.Tensor, path: str | Path, *, max_rows: int = 256, group: int = 0,
                seed: int | None = None) -> Path:
        """Run ``inputs`` and write a trace of ``layer`` (``max_rows`` MAC rows of one group) for the RTL suite.

        The rows are the first ones, or with ``seed`` a random sample (in order) of all of them.
        """
        if layer not in self.layers:
            raise EmulatorError(f"no quantized layer {layer!r}; layers are {sorted(self.layers)}")
        target = self.layers[layer]
        target.tap = []
        try:
            self(inputs)
        finally:  # the tap goes even when the run fails, which then raises its own error
            taps, target.tap = target.tap, None
        q = taps[0]
        spec, w = target.spec, target.weights
        if not 0 <= group < w.groups:
            raise EmulatorError(f"layer {layer} has {w.groups} group(s), not group {group}")
        if spec.is_conv:
            cols, _ = ops.im2col(q, spec.layer.weight_shape[2:], pad_value=target.zp, dtype=torch.float64,
                                 **spec.conv_kwargs())
            rows = cols.reshape(-1, w.groups, w.k)[:, group]
        else:
            rows = q.reshape(-1, w.k)
        if seed is not None and len(rows) > max_rows:
            pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_rows, replace=False))
            rows = rows[torch.as_tensor(pick, device=rows.device)]
        rows = rows[:max_rows].to(torch.int64).cpu().numpy()
        per = w.mult.shape[1]
        sl = slice(group * per, (group + 1) * per)
        lay = spec.layer
        codes = lay.codes.reshape(lay.codes.shape[0], -1)[sl]
        table = None
        if lay.table is not None:
            table = DecodeTable(lay.table.u[sl], lay.table.h[sl], lay.table.scale[sl])
        requant = None
        if spec.requant:
            ex = lay.extras
            lo, hi = spec.requant["clamp"]
            requant = Requant(ex["requant_multiplier"][sl], ex["requant_shift"][sl], ex["bias_int"][sl],
                              int(spec.requant["out_zero_point"]), int(lo), int(hi))
        zp = None if lay.zero_point is None or getattr(lay.fmt, "symmetric", True) else lay.zero_point[sl]
        groups = group_exponents(lay.extras, lay.attrs)
        exps, size = (None, None) if groups is None else (groups[0][sl], groups[1])
        return save_trace(path, rows, codes, lay.fmt, table=table, weight_zero_point=zp, act_bits=target.act_bits,
                          acc_bits=target.acc_bits, overflow=target.overflow, requant=requant, layer=layer,
                          group_exp=exps, group_size=size)


def _functional_ops(model: nn.Module) -> list[dict[str, str]]:
    """Functional ops of ``forward`` (adds, flatten, softmax, matmul ...) via torch.fx; all run in float32."""

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, IntLayer) or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any untraceable forward just loses this detail
        return [{"op": "<functional ops>", "kind": "?", "where": "float32", "detail": f"not traceable: {type(exc).__name__}"}]
    rows = []
    for node in graph.nodes:
        if node.op in ("call_function", "call_method"):
            target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            rows.append({"op": node.name, "kind": target, "where": "float32", "detail": ""})
    return rows


# Ops that only move, view or inspect data; the placement lists the ops that compute.
_LAYOUT_OPS = frozenset({
    "__get__", "__set__", "__getitem__", "__setitem__", "__len__", "__bool__", "__index__", "__iter__", "__format__",
    "__contains__", "size", "dim", "numel", "view", "reshape", "transpose", "permute", "expand", "unsqueeze",
    "squeeze", "contiguous", "flatten", "unflatten", "chunk", "split", "to", "float", "type_as", "clone", "detach",
    "is_floating_point", "get_device", "element_size", "is_contiguous", "stride", "storage_offset", "data_ptr",
    "new_empty", "new_zeros", "new_ones", "new_full", "expand_as", "view_as", "dtype", "device", "shape",
    "_set_grad_enabled",
})


class _OpRecorder(TorchFunctionMode):
    """Counts the torch functions each module runs itself, outside the integer layers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.int_depth = 0
        self.calls: dict[tuple[str, str], Counter] = {}
        self.hooks = []
        for name, module in model.named_modules():
            self.hooks.append(module.register_forward_pre_hook(self._enter(name, module)))
            self.hooks.append(module.register_forward_hook(self._leave(module)))

    def _enter(self, name: str, module: nn.Module):
        def hook(*_):
            self.int_depth += isinstance(module, IntLayer)
            self.stack.append((re.sub(r"\.\d+(?=\.|$)", ".*", name) or "<model>", type(module).__name__))
        return hook

    def _leave(self, module: nn.Module):
        def hook(*_):
            self.int_depth -= isinstance(module, IntLayer)
            self.stack.pop()
        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if not self.int_depth and name not in _LAYOUT_OPS:
            owner = self.stack[-1] if self.stack else ("<model>", "")
            self.calls.setdefault(owner, Counter())[name] += 1
        return func(*args, **(kwargs or {}))


def recorded_float_ops(emu: Emulator, inputs: torch.Tensor) -> list[dict[str, str]]:
    """Run ``inputs`` once and list, per module (decoder layers folded into ``layers.*``), the float32 ops it
    ran outside the integer layers: norms, activations, RoPE, attention scores and softmax, residual adds."""
    recorder = _OpRecorder(emu.model)
    try:
        with recorder:
            emu(inputs)
    finally:
        for hook in recorder.hooks:
            hook.remove()
    return [{"op": path, "kind": kind, "where": "float32",
             "detail": ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))}
            for (path, kind), counts in recorder.calls.items()]
