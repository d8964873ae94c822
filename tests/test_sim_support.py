"""Support for the emulator tests (no tests here): hypothesis strategies for formats, tables, codes, activations."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from logmac.format import (
    MAX_BITS,
    MIN_BITS,
    DecodeTable,
    FormatError,
    GridKind,
    LogFormat,
    ZeroMode,
    grid_half_exponents,
    table_from_exponents,
)


@st.composite
def log_formats(draw: st.DrawFn) -> LogFormat:
    bits = draw(st.integers(MIN_BITS, MAX_BITS))
    try:
        return LogFormat(bits, draw(st.sampled_from(GridKind)), draw(st.booleans()), draw(st.sampled_from(ZeroMode)))
    except FormatError:
        assume(False)
        raise


def make_table(fmt: LogFormat, channels: int, rng: np.random.Generator) -> DecodeTable:
    """A legal table with per-channel DBS mix, anchor and a sign-asymmetric (ABS) offset up to the shift limit."""
    n = fmt.nonzero_levels
    exps = np.empty((channels, 2, n), dtype=np.int64)
    for c in range(channels):
        n2 = int(rng.choice(fmt.base2_choices))
        top = int(rng.integers(-10, 6))
        exps[c, 0] = grid_half_exponents(n, top, n2)
        for offset in range(int(rng.integers(0, 2 * fmt.max_shift + 1)), -1, -1):
            both = np.stack([exps[c, 0], grid_half_exponents(n, top - offset, n2)])
            octave = both // 2
            if int(octave.max() - (octave - both % 2).min()) <= fmt.max_shift:
                exps[c, 1] = both[1]
                break
        if rng.integers(2):
            exps[c] = exps[c, ::-1]
    return table_from_exponents(fmt, exps, rng.uniform(0.05, 1.0, size=channels))


def random_words(fmt: LogFormat, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 1 << fmt.storage_bits, size=shape).astype(np.uint16)


def activations(rng: np.random.Generator, shape: tuple[int, ...], bits: int, signed: bool, extreme: bool) -> np.ndarray:
    """Random a-bit integers; ``extreme`` draws only the two ends of the range (the worst case for overflow)."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if extreme:
        return rng.choice(np.array([lo, hi]), size=shape).astype(np.int64)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# A tiny exporter following docs/artifact-schema.md, so the emulator is tested before quant lands
# ----------------------------------------------------------------------------------------------

def requant_params(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gemmlowp-style M in [2**30, 2**31) and shift S with M * 2**-S ~= m."""
    shift = 30 - np.floor(np.log2(m)).astype(np.int64)
    mult = np.round(m * np.ldexp(1.0, shift)).astype(np.int64)
    over = mult >= (1 << 31)
    return np.where(over, mult >> 1, mult), np.where(over, shift - 1, shift)


def export_model(model, calib, fmt, *, a_bits: int = 8, requant: dict | None = None):
    """Quantize every Conv2d/Linear of ``model`` round-to-nearest into an Artifact (schema of docs/artifact-schema.md).

    ``requant`` maps a layer to ``(next layer, activation)`` for outputs that go straight into ``next``.
    """
    import torch
    from torch import nn

    from logmac.format import LogFormat, decode_int, encode
    from logmac.format.artifact import Artifact, QuantizedLayer

    requant = requant or {}
    mods = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ranges: dict[str, tuple[float, float]] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: ranges.__setitem__(n, (float(a[0].min()), float(a[0].max()))))
             for n, m in mods.items()]
    with torch.no_grad():
        model(calib)
    for h in hooks:
        h.remove()
    qmax = (1 << a_bits) - 1
    act = {}
    for n, (lo, hi) in ranges.items():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = float(np.float32((hi - lo) / qmax))
        act[n] = {"bits": a_bits, "signed": False, "scale": scale, "zero_point": int(round(-lo / scale)), "qmin": 0, "qmax": qmax}
    layers = {}
    for n, m in mods.items():
        w = m.weight.detach().double().numpy()
        C = w.shape[0]
        flat = np.abs(w.reshape(C, -1)).max(axis=1)
        if isinstance(fmt, LogFormat):
            top = np.round(2 * np.log2(flat)).astype(np.int64)
            n2 = fmt.base2_choices[len(fmt.base2_choices) // 2]
            k = np.stack([np.stack([grid_half_exponents(fmt.nonzero_levels, int(t), n2)] * 2) for t in top])
            table = table_from_exponents(fmt, k, np.ones(C))
            codes, scale, zp = encode(w, table, fmt), table.scale, None
            w_int = decode_int(codes, table, fmt)
        else:
            table = None
            scale = np.maximum(flat, 1e-8) / fmt.qmax
            codes = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), fmt.qmin, fmt.qmax).astype(np.int16)
            zp, w_int = None, codes.astype(np.int64)
        a = act[n]
        out_scale = a["scale"] * scale
        bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(C)
        extras = {"bias": bias, "out_scale": out_scale,
                  "bias_int": np.round(bias / out_scale).astype(np.int64) - a["zero_point"] * w_int.reshape(C, -1).sum(1)}
        attrs = {"module": n, "act_in": a, "requant": None, "folded_bn": None}
        if isinstance(m, nn.Conv2d):
            attrs.update(kernel_size=list(m.kernel_size), stride=list(m.stride), padding=list(m.padding),
                         dilation=list(m.dilation), groups=m.groups, in_channels=m.in_channels, out_channels=m.out_channels)
        if n in requant:
            nxt, fn = requant[n]
            s_out, z_out = act[nxt]["scale"], act[nxt]["zero_point"]
            hi = qmax if fn != "relu6" else min(qmax, z_out + round(6 / s_out))
            attrs["requant"] = {"next": nxt, "activation": fn, "out_scale": s_out, "out_zero_point": z_out,
                                "clamp": [z_out if fn != "identity" else 0, hi]}
            extras["requant_multiplier"], extras["requant_shift"] = requant_params(out_scale / s_out)
        layers[n] = QuantizedLayer(n, "conv2d" if isinstance(m, nn.Conv2d) else "linear", fmt, codes, scale,
                                   table=table, zero_point=zp, extras=extras, attrs=attrs)
    return Artifact(layers, settings={"a_bits": a_bits}, meta={"model": "tiny", "task": "classification"})
