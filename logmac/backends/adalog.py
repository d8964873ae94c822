"""An AdaLog-quantized ViT with its attn@V and fc2 on exact integers.

The integer matmuls are :mod:`logmac.sim.adalog`'s (attn@V) and the emulator's ``int_matmul`` (fc2 on the
post-GELU levels, uniform or LogART weights).  :func:`emulate_vit` swaps them into a quantized ViT; everything
else stays float32.  The declared boundaries: the accumulators are converted to float64 times the product of
the two scales (plus fc2's bias) and rounded once to float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from logmac.format import FormatError, UniformFormat, accumulator_bits, adalog_decode_int
from logmac.quant.methods.adalog.quantizers import AdaLogQuant, UniformQuant
from logmac.quant.methods.adalog.vit import AdaLogAttention, AdaLogMlp
from logmac.quant.modules import QuantLayer
from logmac.sim.adalog import adalog_acc_bits, attention_values
from logmac.sim.gemm import IntWeights
from logmac.sim.mac import MacResult
from logmac.sim.ops import int_matmul


def layer_weights(layer: QuantLayer) -> tuple[IntWeights, np.ndarray]:
    """A fitted QuantLayer's integer multipliers and per-output-channel float scale (weight = scale * mult)."""
    if layer.words is None:
        raise FormatError(f"layer {layer.name} has no codes yet; quantize it first")
    fmt = layer.cfg.weight_format()
    words = np.asarray(layer.words).reshape(layer.words.shape[0], -1)
    if isinstance(fmt, UniformFormat):
        scale, zp = layer.uniform
        zp = zp.cpu().numpy().astype(np.int64)
        return IntWeights.from_uniform(words, fmt, zp), scale.double().cpu().numpy()
    table = layer.grid.table()
    return IntWeights.from_log(words, table, fmt), np.asarray(table.scale, dtype=np.float64)


@dataclass
class EmulationStats:
    """What the integer matmuls saw: calls, accumulator widths used and overflowing outputs."""

    calls: int = 0
    overflows: int = 0
    acc_bits: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, acc_bits: int, result: MacResult) -> None:
        self.calls += 1
        self.overflows += int(np.count_nonzero(np.asarray(result.overflow)))
        self.acc_bits[name] = acc_bits


class EmulatedAttention(nn.Module):
    """An :class:`AdaLogAttention` whose attn@V runs on integers (everything else as the fake-quant module)."""

    def __init__(self, name: str, attn: AdaLogAttention, stats: EmulationStats) -> None:
        super().__init__()
        self.name, self.attn, self.stats = name, attn, stats

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        m = self.attn
        q, k, v = m.heads(x)
        a = m.probs(q, k)
        a_int, a_scale, a_zp, a_bits = activation_integers(m.attn_quant, a)
        v_mult = m.v_quant.codes(v) - m.v_quant.zero_point.to(torch.int64)
        acc_bits = accumulator_bits(a.shape[-1], a_bits, False, (1 << m.v_quant.bits) - 1)
        res = attention_values(a_int, v_mult, acc_bits)
        self.stats.add(self.name, acc_bits, res)
        acc = torch.from_numpy(res.acc).double()
        if a_zp:  # uniform A: subtract zp_a * sum_k v[k, d]
            acc = acc - a_zp * v_mult.sum(dim=2, keepdim=True).double()
        out = acc * (a_scale * m.v_quant.scale.double())
        return m.output(out.to(x.dtype))


class EmulatedMlp(nn.Module):
    """An :class:`AdaLogMlp` whose fc2 runs on integers: AdaLog (or uniform) codes times fc2's weight codes."""

    def __init__(self, name: str, mlp: AdaLogMlp, stats: EmulationStats) -> None:
        super().__init__()
        self.name, self.mlp, self.stats = name, mlp, stats
        self.weights, self.w_scale = layer_weights(mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mlp
        h = m.hidden(x)
        x_int, x_scale, x_zp, x_bits = activation_integers(m.hid_quant, h)
        rows = torch.as_tensor(x_int).reshape(-1, h.shape[-1])
        acc_bits = accumulator_bits(self.weights.k, x_bits, False, max(1, int(self.weights.mult.abs().max())))
        res = int_matmul(rows, self.weights, acc_bits, act_bits=x_bits)
        self.stats.add(self.name, acc_bits, res)
        acc = res.acc.double()
        if x_zp:
            acc = acc - x_zp * self.weights.row_sums().double()
        bias = m.fc2_shifted_bias if isinstance(m.hid_quant, AdaLogQuant) else m.fc2.bias
        out = acc * (x_scale * torch.from_numpy(self.w_scale)) + bias.double()
        return out.to(x.dtype).reshape(*h.shape[:-1], -1)


def activation_integers(quant: AdaLogQuant | UniformQuant, x: torch.Tensor) -> tuple[torch.Tensor, float, int, int]:
    """The integers a quantizer feeds the MAC, the float value of integer 1, the zero point and the port width.

    AdaLog: unsigned levels (zero point 0, width ``level_bits``).  Uniform: the unsigned codes and their
    zero point, which the caller subtracts through the multipliers' row sums.
    """
    if isinstance(quant, AdaLogQuant):
        levels = torch.from_numpy(quant.levels(x))
        return levels, quant.level_scale, 0, quant.fmt.level_bits
    if quant.scale.numel() != 1:
        raise FormatError("only per-tensor uniform activation quantizers feed an emulated matmul")
    return quant.codes(x), float(quant.scale), int(quant.zero_point), quant.bits


def emulate_vit(model: nn.Module) -> tuple[nn.Module, EmulationStats]:
    """A copy of a quantized ViT (:func:`logmac.quant.methods.adalog.vit.quantize_vit`) whose attn@V and fc2 run on
    exact integers; the model itself is not changed."""
    emulated = copy.deepcopy(model)
    stats = EmulationStats()
    blocks = getattr(emulated, "blocks", None)
    if blocks is None or not all(isinstance(b.attn, AdaLogAttention) for b in blocks):
        raise FormatError("emulate_vit needs a ViT rewritten by logmac.quant.methods.adalog.vit.quantize_vit")
    for i, block in enumerate(blocks):
        block.attn = EmulatedAttention(f"blocks.{i}.attn@v", block.attn, stats)
        block.mlp = EmulatedMlp(f"blocks.{i}.mlp.fc2", block.mlp, stats)
    return emulated.eval(), stats


@torch.no_grad()
def compare_vit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250,
                reference: torch.Tensor | None = None) -> dict:
    """Fake-quant vs emulated ViT on ``images``: both top-1s, prediction agreement, largest logit difference.

    With ``reference`` (the FP model's logits on ``images``) also each one's agreement with the FP
    predictions (percent) and KL(FP || quantized) of the logits' softmax (nats, mean over images).
    """
    from logmac.models.evaluate import fp_agreement, kl_divergence

    emulated, stats = emulate_vit(model)
    fake, emu = [], []
    for batch in images.split(batch_size):
        fake.append(model(batch))
        emu.append(emulated(batch))
    fake, emu = torch.cat(fake), torch.cat(emu)
    out = {"fake_top1": 100 * float((fake.argmax(1) == labels).float().mean()),
           "emulator_top1": 100 * float((emu.argmax(1) == labels).float().mean()),
           "same_prediction": 100 * float((fake.argmax(1) == emu.argmax(1)).float().mean()),
           "max_logit_diff": float((fake - emu).abs().max()), "images": len(labels),
           "overflows": stats.overflows, "acc_bits": dict(stats.acc_bits)}
    if reference is not None:
        out |= {"fake_agreement": fp_agreement(reference, fake), "fake_kl": kl_divergence(reference, fake),
                "emulator_agreement": fp_agreement(reference, emu), "emulator_kl": kl_divergence(reference, emu)}
    return out


@torch.no_grad()
def capture_attention_tiles(model: nn.Module, images: torch.Tensor, *, block: int = 0, tiles: int = 4,
                            seed: int = 0) -> dict[str, np.ndarray]:
    """Real attn@V tiles of a quantized ViT for the RTL: AdaLog words, V integers and expected accumulators.

    Each tile is one (image, head) of ``block``: the post-Softmax words (T, T), the V multipliers
    ``v_code - zp_v`` (T, D) and the exact accumulators (T, D).  Fields (numpy, see docs/adalog.md):
    ``a_words`` (N, T, T) uint16, ``a_levels`` (N, T, T) int64, ``v_mult`` (N, T, D) int64, ``acc``
    (N, T, D) int64, ``level_table`` (nonzero_levels,) int64, ``mantissa``/``shift`` (the decode table
    the RTL loads), the format (``bits``, ``q``, ``zero``, ``max_shift``) and ``acc_bits``;
    :func:`save_attention_vectors` writes them in the RTL engine's vector format.
    """
    attn = model.blocks[block].attn
    if not isinstance(attn, AdaLogAttention) or not isinstance(attn.attn_quant, AdaLogQuant):
        raise FormatError("capture needs a ViT quantized with AdaLog post-Softmax activations")
    got: dict[str, torch.Tensor] = {}

    def grab(_m, args, _out):
        got["x"] = args[0]

    handle = attn.register_forward_hook(grab)
    try:
        model(images)
    finally:
        handle.remove()
    q, k, v = attn.heads(got["x"])
    a = attn.probs(q, k)
    fmt = attn.attn_quant.fmt
    words = attn.attn_quant.words(a)
    v_mult = (attn.v_quant.codes(v) - attn.v_quant.zero_point.to(torch.int64)).numpy()
    rng = np.random.default_rng(seed)
    images, heads = rng.integers(0, a.shape[0], tiles), rng.integers(0, a.shape[1], tiles)
    pairs = [(int(b), int(h)) for b, h in zip(images, heads, strict=True)]
    a_words = np.stack([words[b, h] for b, h in pairs]).astype(np.uint16)
    v_tiles = np.stack([v_mult[b, h] for b, h in pairs]).astype(np.int64)
    levels = adalog_decode_int(a_words, fmt)
    acc_bits = adalog_acc_bits(a.shape[-1], fmt, (1 << attn.v_quant.bits) - 1)
    res = attention_values(levels[None], v_tiles[None], acc_bits)
    mantissa, shift = fmt.level_shifts()
    return {"a_words": a_words, "a_levels": levels, "v_mult": v_tiles, "acc": res.acc[0],
            "overflow": res.overflow[0], "level_table": fmt.integer_levels(), "mantissa": mantissa, "shift": shift,
            "bits": np.int64(fmt.bits), "q": np.int64(fmt.q), "zero": np.array(fmt.zero.value),
            "max_shift": np.int64(fmt.max_shift), "acc_bits": np.int64(acc_bits),
            "tile_image_head": np.array(pairs, dtype=np.int64)}


def save_attention_vectors(tiles: dict[str, np.ndarray], folder: str | Path, name: str = "attn") -> list[Path]:
    """Write captured tiles in the AdaLog RTL engine's vector format (``logmac.cosim.logact_vectors``), one
    ``.npz`` per tile; each file's expected accumulators are re-checked against ``logmac.sim`` on writing."""
    from logmac.cosim.logact_vectors import save_logact_vectors, vectors_from_attention_tiles

    folder = Path(folder)
    return [save_logact_vectors(v, folder / f"{v.name}.npz") for v in vectors_from_attention_tiles(tiles, name)]
