"""One lane of the engine: turns (activation, weight word) into an exact signed product.

``LogLane`` is the shift-based processing element of ``shared/notes/datapath.md``: the word's low
``weight_bits`` bits address the channel's decode table, whose entry gives the shift ``u``, the half
step ``h``, the sign and the zero flag; the product is ``(x << u) + h * (x << (u - 1))``, negated for
the sign, gated to zero.  It is built as ``((2x + h*x) << u) >> 1``: one adder and one barrel shifter,
exact because ``h = 1`` implies ``u >= 1`` (``DecodeTable.validate``).  ``IntLane`` is the baseline
with a real multiplier.  Both are combinational; the engine registers their outputs.
"""

from __future__ import annotations

from amaranth import Module, Mux, Shape, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from logmac.format import accumulator_bits
from logmac.hw.config import HwConfig


def entry_layout(cfg: HwConfig) -> data.StructLayout:
    """A decode-table entry as the RTL stores it (see ``logmac.hw.regmap.table_image``)."""
    return data.StructLayout({"u": unsigned(cfg.shift_bits), "h": 1, "neg": 1, "zero": 1})


def act_shape(cfg: HwConfig) -> Shape:
    return signed(cfg.act_bits) if cfg.act_signed else unsigned(cfg.act_bits)


def product_bits(cfg: HwConfig) -> int:
    """Signed width of one lane's product: the accumulator rule for a single term."""
    return accumulator_bits(1, cfg.act_bits, cfg.act_signed, cfg.max_multiplier)


class LogLane(wiring.Component):
    """Shift-add product of one activation and one log weight word, via the decode table."""

    def __init__(self, cfg: HwConfig) -> None:
        if cfg.kind != "log":
            raise ValueError("LogLane needs a 'log' engine config")
        self.hw = cfg
        super().__init__({
            "x": In(act_shape(cfg)),
            "word": In(cfg.word_bits),
            "table_addr": Out(cfg.weight_bits),
            "entry": In(entry_layout(cfg)),
            "product": Out(signed(product_bits(cfg))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        e = self.entry
        m.d.comb += self.table_addr.eq(self.word[:cfg.weight_bits])
        x = self.x.as_signed() if cfg.act_signed else self.x  # mixed arithmetic widens unsigned correctly
        triple = (x << 1) + Mux(e.h, x, 0)  # (2 + h) * x
        magnitude = (triple << e.u) >> 1
        is_zero = e.zero | self.word[cfg.weight_bits]  # table zero (code mode, narrow flag) or top flag bit
        m.d.comb += self.product.eq(Mux(is_zero, 0, Mux(e.neg, -magnitude, magnitude)))
        return m


class IntLane(wiring.Component):
    """Baseline: activation times a two's-complement weight with a real multiplier."""

    def __init__(self, cfg: HwConfig) -> None:
        if cfg.kind != "int":
            raise ValueError("IntLane needs an 'int' engine config")
        self.hw = cfg
        super().__init__({
            "x": In(act_shape(cfg)),
            "word": In(cfg.word_bits),
            "product": Out(signed(product_bits(cfg))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.product.eq(self.x * self.word.as_signed())
        return m
