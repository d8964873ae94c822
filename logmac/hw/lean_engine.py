"""The lean log engine: the decode table leaves the lanes for the weight-load side.

Weights are known before inference and each one is reused for every input row of its layer, so the lean
design decodes a weight once, when it is loaded, and keeps the decoded field (``logmac.hw.lean_lanes``) in
the weight buffer instead of the code.  One ``WeightDecoder`` (the channel's table, the precision register
and one read port) then serves all lanes, where the general ``MacEngine`` gives every lane a table read
port.  Lane products are one's complement; the ``neg`` bits enter the adder tree as carry-ins (a binary
tree of ``n`` leaves has ``n - 1`` adders, the accumulator adder takes the last one), which a LUT4 carry
chain adds for free.

``LeanMacEngine(cfg)`` is that design: input beat ``x[lanes]``, ``f[lanes]`` (decoded fields), ``last``,
and the decoder's port ``wl_word`` -> ``wl_field``.  ``LeanMacEngine(cfg, beat="codes")`` puts a decode in
front of every lane instead, standing in for the decoded-weight buffer, so the engine takes the general
engine's beats (``x``, code words, ``last``) and runs under the same benches and vectors; that is what
``logmac.hw.export.engine_verilog`` builds for a ``HwConfig(lean=True)``.  Config port, register map,
table image, outputs and timing are those of ``MacEngine``; behaviour is stated by ``logmac.sim.mac``.
"""

from __future__ import annotations

from typing import Literal

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from logmac.hw.config import HwConfig
from logmac.hw.engine import config_signature, input_layout, output_layout
from logmac.hw.lanes import act_shape, entry_layout
from logmac.hw.lean_lanes import LeanLane, field_layout
from logmac.hw.regmap import NEST_FIELDS, REG_NEST
from logmac.hw.stages import config_registers, output_stages

Beat = Literal["fields", "codes"]


def lean_input_layout(cfg: HwConfig) -> data.StructLayout:
    """Input beat of the lean engine, packed LSB first: x[0..lanes), then f[0..lanes), then last."""
    return data.StructLayout({
        "x": data.ArrayLayout(act_shape(cfg), cfg.lanes),
        "f": data.ArrayLayout(field_layout(cfg), cfg.lanes),
        "last": 1,
    })


class WeightDecoder(wiring.Component):
    """Code words to decoded fields through the channel's run-time table (written through ``cfg``).

    Same table image, table addresses and precision register (``REG_NEST``) as ``MacEngine``.
    """

    def __init__(self, cfg: HwConfig, ports: int = 1) -> None:
        if cfg.kind != "log":
            raise ValueError("WeightDecoder needs a 'log' engine config")
        self.hw, self.ports = cfg, ports
        super().__init__({
            "cfg": In(config_signature(cfg)),
            "words": In(data.ArrayLayout(cfg.word_bits, ports)),
            "fields": Out(data.ArrayLayout(field_layout(cfg), ports)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        wb = cfg.weight_bits
        m.submodules.table = table = memory.Memory(shape=entry_layout(cfg), depth=cfg.table_depth, init=[])
        wp = table.write_port()
        top = cfg.cfg_addr_bits - 1
        m.d.comb += [wp.en.eq(self.cfg.we & self.cfg.addr[top]), wp.addr.eq(self.cfg.addr[:wb]),
                     wp.data.eq(self.cfg.data[:len(wp.data.as_value())])]
        floor, or_mask, index_mask = (Signal(wb, name=f"nest_{n}") for n in ("floor", "or", "mask"))
        with m.If(self.cfg.we & (self.cfg.addr == REG_NEST)):
            m.d.sync += [reg.eq(self.cfg.data[off:off + wb])
                         for reg, off in zip((floor, or_mask, index_mask), NEST_FIELDS, strict=True)]
        for n in range(self.ports):
            word, out = self.words[n], self.fields[n]
            rp = table.read_port(domain="comb")
            e = rp.data
            zero = e.zero | word[wb] | ((word[:wb] & index_mask) < floor)
            m.d.comb += [rp.addr.eq((word | or_mask)[:wb]),
                         out.v.eq(Mux(zero, (1 << cfg.shift_bits) - 1, e.u - e.h)),
                         out.h.eq(zero | e.h), out.neg.eq(e.neg & ~zero)]
        return m


class LeanMacEngine(wiring.Component):
    """``MacEngine``'s interface and behaviour with lean lanes and one shared weight decoder."""

    def __init__(self, cfg: HwConfig, beat: Beat = "fields") -> None:
        if cfg.kind != "log":
            raise ValueError("the lean engine is a log engine: HwConfig(kind='log')")
        if beat not in ("fields", "codes"):
            raise ValueError(f"beat must be 'fields' or 'codes', got {beat!r}")
        self.hw, self.beat = cfg, beat
        members = {
            "i": In(stream.Signature(lean_input_layout(cfg) if beat == "fields" else input_layout(cfg))),
            "o": Out(stream.Signature(output_layout(cfg))),
            "cfg": In(config_signature(cfg)),
            "idle": Out(1),
            "overflow_sticky": Out(1),
        }
        if beat == "fields":
            members.update({"wl_word": In(cfg.word_bits), "wl_field": Out(field_layout(cfg))})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        regs = config_registers(m, self, cfg)
        valids = []

        # Stage 1: one's-complement products and their neg bits, registered.
        products, negs = self._lean_lanes(m)
        level = [Signal(p.shape(), name=f"prod{n}") for n, p in enumerate(products)]
        carries = [Signal(name=f"neg{n}") for n in range(cfg.lanes)]
        valid, last = Signal(name="prod_valid"), Signal(name="prod_last")
        with m.If(en):
            m.d.sync += [r.eq(p) for r, p in zip(level, products, strict=True)]
            m.d.sync += [r.eq(s) for r, s in zip(carries, negs, strict=True)]
            m.d.sync += [valid.eq(self.i.valid), last.eq(self.i.payload.last)]
        valids.append(valid)

        # Adder tree: each adder takes one pending neg bit as its carry-in.
        depth = 0
        while len(level) > 1:
            pairs = []
            for n in range(0, len(level) - 1, 2):
                pairs.append(level[n] + level[n + 1] + carries.pop())
            level = pairs + ([level[-1]] if len(level) % 2 else [])
            depth += 1
            if cfg.pipe_every and depth % cfg.pipe_every == 0 and len(level) > 1:
                regd = [Signal(v.shape(), name=f"tree{depth}_{n}") for n, v in enumerate(level)]
                regc = [Signal(name=f"tree{depth}_neg{n}") for n in range(len(carries))]
                nv, nl = Signal(name=f"tree{depth}_valid"), Signal(name=f"tree{depth}_last")
                with m.If(en):
                    m.d.sync += [r.eq(v) for r, v in zip(regd, level, strict=True)]
                    m.d.sync += [r.eq(c) for r, c in zip(regc, carries, strict=True)] + [nv.eq(valid), nl.eq(last)]
                level, carries, valid, last = regd, regc, nv, nl
                valids.append(valid)

        # Exact accumulation; the accumulator adder takes the last neg bit.
        acc = Signal(signed(cfg.exact_bits))
        first = Signal(init=1)
        total = Signal(signed(cfg.exact_bits))
        exact, ex_valid = Signal(signed(cfg.exact_bits)), Signal()
        m.d.comb += total.eq(Mux(first, 0, acc) + level[0] + carries.pop())
        with m.If(en):
            m.d.sync += ex_valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [acc.eq(total), first.eq(last), exact.eq(total)]
        valids.append(ex_valid)

        output_stages(m, self, en, exact, ex_valid, regs, valids, cfg)
        m.d.comb += self.idle.eq(first & ~Cat(*valids).any())
        return m

    def _lean_lanes(self, m: Module) -> tuple[list, list]:
        """The lanes and the decoder: one port on ``wl_*`` (fields beat) or one per lane (codes beat)."""
        cfg = self.hw
        dec = WeightDecoder(cfg, 1 if self.beat == "fields" else cfg.lanes)
        m.submodules.decoder = dec
        m.d.comb += [dec.cfg.we.eq(self.cfg.we), dec.cfg.addr.eq(self.cfg.addr), dec.cfg.data.eq(self.cfg.data)]
        if self.beat == "fields":
            m.d.comb += [dec.words[0].eq(self.wl_word), self.wl_field.eq(dec.fields[0])]
        products, negs = [], []
        for n in range(cfg.lanes):
            lane = LeanLane(cfg)
            m.submodules[f"lane{n}"] = lane
            m.d.comb += lane.x.eq(self.i.payload.x[n])
            if self.beat == "fields":
                m.d.comb += lane.field.eq(self.i.payload.f[n])
            else:
                m.d.comb += [dec.words[n].eq(self.i.payload.w[n]), lane.field.eq(dec.fields[n])]
            products.append(lane.product)
            negs.append(lane.neg)
        return products, negs
