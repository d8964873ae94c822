"""The lean log lane and the decoded-weight field it reads.

The general ``LogLane`` reads the decode table itself (one table read port per lane, the largest area item)
and negates its product in two's complement.  The lean lane gets its weight already decoded, once, at the
weight-load side (``logmac.hw.lean_engine.WeightDecoder``), as a field ``(v, h, neg)``:

- the multiplier is ``m * 2**v`` with ``m = 3`` when ``h`` (a half step ``2**u + 2**(u-1) = 3 * 2**(u-1)``,
  so ``v = u - 1``) and ``m = 1`` otherwise (``v = u``);
- zero is ``h = 1, v = 2**shift_bits - 1``, a pair no table entry can give (a half step needs ``u >= 1``,
  so its ``v <= max_shift - 1 < 2**shift_bits - 1``): the field is as wide as ``shift_bits + 2``;
- ``neg`` is already cleared for zero, so the lane's product is ``(q XOR neg)`` in one's complement and the
  engine adds the ``neg`` bits once, as carry-ins of its adder tree.

The lane is then a 3x adder, one select that also applies zero, a barrel shifter and an XOR.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from logmac.hw.config import HwConfig
from logmac.hw.lanes import act_shape, product_bits


def field_layout(cfg: HwConfig) -> data.StructLayout:
    """A decoded weight as the lean lanes read it (LSB first: v, h, neg)."""
    return data.StructLayout({"v": unsigned(cfg.shift_bits), "h": 1, "neg": 1})


def field_bits(cfg: HwConfig) -> int:
    """Width of one decoded weight, the bits a decoded-weight buffer holds per weight."""
    return cfg.shift_bits + 2


def fields_from_image(cfg: HwConfig, image: np.ndarray, words: np.ndarray) -> np.ndarray:
    """What the weight decoder emits for code ``words`` under a table image (``regmap.table_image``), packed.

    The behavioural model of ``WeightDecoder`` (precision register at reset), used to check it and the lanes.
    """
    sb = cfg.shift_bits
    words = np.asarray(words, dtype=np.int64)
    entry = np.asarray(image, dtype=np.int64)[words & (cfg.table_depth - 1)]
    u, h = entry & ((1 << sb) - 1), (entry >> sb) & 1
    neg, zero = (entry >> (sb + 1)) & 1, ((entry >> (sb + 2)) | (words >> cfg.weight_bits)) & 1
    v = np.where(zero == 1, (1 << sb) - 1, u - h)
    return v | (np.where(zero == 1, 1, h) << sb) | (np.where(zero == 1, 0, neg) << (sb + 1))


def field_multipliers(cfg: HwConfig, fields: np.ndarray) -> np.ndarray:
    """Signed integer multiplier a packed field stands for (0 for the zero field)."""
    sb = cfg.shift_bits
    f = np.asarray(fields, dtype=np.int64)
    v, h, neg = f & ((1 << sb) - 1), (f >> sb) & 1, (f >> (sb + 1)) & 1
    mag = np.where((h == 1) & (v == (1 << sb) - 1), 0, (1 + 2 * h) << v)
    return np.where(neg == 1, -mag, mag)


class LeanLane(wiring.Component):
    """``x * m * 2**v`` in one's complement: ``product + neg`` is the exact signed product."""

    def __init__(self, cfg: HwConfig) -> None:
        if cfg.kind != "log":
            raise ValueError("LeanLane needs a 'log' engine config")
        self.hw = cfg
        super().__init__({
            "x": In(act_shape(cfg)),
            "field": In(field_layout(cfg)),
            "product": Out(signed(product_bits(cfg))),
            "neg": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        f = self.field
        pb = product_bits(cfg)
        x = self.x.as_signed() if cfg.act_signed else self.x
        zero = f.h & (f.v == (1 << cfg.shift_bits) - 1)
        t = Mux(zero, 0, Mux(f.h, x + (x << 1), x))  # m * x, or 0
        q = (t << f.v)[:pb]  # the zero field's large v shifts a 0
        m.d.comb += [self.product.eq((q ^ f.neg.replicate(pb)).as_signed()), self.neg.eq(f.neg)]
        return m
