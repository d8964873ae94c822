"""The dot-product engine: N lanes, a pipelined adder tree, the exact accumulator, the overflow fit and
the requantization stage, streaming in and out with valid/ready.

One input beat carries ``lanes`` activations, ``lanes`` weight words and ``last``; the beats up to
``last`` form one dot product (pad K to a multiple of ``lanes`` with zero weights).  One output beat
per dot product carries the fitted accumulator, its overflow flag and the requantized output ``y``.
All pipeline registers advance together when the output is free (``en = ~o.valid | o.ready``), so the
engine takes one beat a cycle under no back-pressure.  Run-time settings come through ``cfg``; write
them only while ``idle`` is high.  Behaviour is stated by ``logmac.sim.mac`` and ``logmac.format``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from logmac.hw import config as C
from logmac.hw.config import HwConfig
from logmac.hw.lanes import IntLane, LogLane, act_shape, entry_layout
from logmac.hw.regmap import NEST_FIELDS, REG_NEST
from logmac.hw.stages import config_registers, output_stages


def input_layout(cfg: HwConfig) -> data.StructLayout:
    """Input beat, packed LSB first: x[0..lanes), then w[0..lanes), then last."""
    return data.StructLayout({
        "x": data.ArrayLayout(act_shape(cfg), cfg.lanes),
        "w": data.ArrayLayout(unsigned(cfg.word_bits), cfg.lanes),
        "last": 1,
    })


def output_layout(cfg: HwConfig) -> data.StructLayout:
    """Output beat, packed LSB first: y (if requantizing), acc, overflow."""
    fields = {"y": signed(cfg.out_bits)} if cfg.requant else {}
    fields.update({"acc": signed(cfg.acc_bits), "overflow": 1})
    return data.StructLayout(fields)


def config_signature(cfg: HwConfig) -> wiring.Signature:
    return wiring.Signature({"we": Out(1), "addr": Out(cfg.cfg_addr_bits), "data": Out(C.CFG_DATA_BITS)})


class MacEngine(wiring.Component):
    """A whole output channel of a layer: dot products of ``lanes`` products a cycle, requantized."""

    def __init__(self, cfg: HwConfig) -> None:
        self.hw = cfg
        super().__init__({
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(output_layout(cfg))),
            "cfg": In(config_signature(cfg)),
            "idle": Out(1),
            "overflow_sticky": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        en = Signal()  # every pipeline register advances together
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        regs = config_registers(m, self, cfg)
        valids = []

        # Stage 1: lane products, registered.
        products = self._lanes(m)
        level = [Signal(p.shape(), name=f"prod{n}") for n, p in enumerate(products)]
        valid, last = Signal(name="prod_valid"), Signal(name="prod_last")
        with m.If(en):
            m.d.sync += [r.eq(p) for r, p in zip(level, products, strict=True)]
            m.d.sync += [valid.eq(self.i.valid), last.eq(self.i.payload.last)]
        valids.append(valid)

        # Adder tree, a register every ``pipe_every`` levels.
        depth = 0
        while len(level) > 1:
            pairs = [level[n] + level[n + 1] for n in range(0, len(level) - 1, 2)]
            level = pairs + ([level[-1]] if len(level) % 2 else [])
            depth += 1
            if cfg.pipe_every and depth % cfg.pipe_every == 0 and len(level) > 1:
                regd = [Signal(v.shape(), name=f"tree{depth}_{n}") for n, v in enumerate(level)]
                nv, nl = Signal(name=f"tree{depth}_valid"), Signal(name=f"tree{depth}_last")
                with m.If(en):
                    m.d.sync += [r.eq(v) for r, v in zip(regd, level, strict=True)] + [nv.eq(valid), nl.eq(last)]
                level, valid, last = regd, nv, nl
                valids.append(valid)

        # Exact accumulation: guard bits hold any sum of up to max_k products.
        acc = Signal(signed(cfg.exact_bits))
        first = Signal(init=1)  # the next beat starts a new dot product
        total = Signal(signed(cfg.exact_bits))
        exact, ex_valid = Signal(signed(cfg.exact_bits)), Signal()
        m.d.comb += total.eq(Mux(first, 0, acc) + level[0])
        with m.If(en):
            m.d.sync += ex_valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [acc.eq(total), first.eq(last), exact.eq(total)]
        valids.append(ex_valid)

        output_stages(m, self, en, exact, ex_valid, regs, valids, cfg)
        m.d.comb += self.idle.eq(first & ~Cat(*valids).any())
        return m

    def _lanes(self, m: Module) -> list:
        """Instantiate the lanes (and, for log, one shared decode table with a read port per lane)."""
        cfg = self.hw
        if cfg.kind == "log":
            table = memory.Memory(shape=entry_layout(cfg), depth=cfg.table_depth, init=[])
            m.submodules.table = table
            wp = table.write_port()
            top = cfg.cfg_addr_bits - 1
            m.d.comb += [wp.en.eq(self.cfg.we & self.cfg.addr[top]), wp.addr.eq(self.cfg.addr[:cfg.weight_bits]),
                         wp.data.eq(self.cfg.data[:len(wp.data.as_value())])]
            # Precision register (multi-bit codes, logmac.hw.regmap.nest_writes): code indices below
            # ``floor`` decode to zero and ``or_mask`` is OR'ed into the index before the table read.
            # Reset (all zero) leaves every word as it is.
            floor, or_mask, index_mask = (Signal(cfg.weight_bits, name=f"nest_{n}") for n in ("floor", "or", "mask"))
            with m.If(self.cfg.we & (self.cfg.addr == REG_NEST)):
                m.d.sync += [reg.eq(self.cfg.data[off:off + cfg.weight_bits])
                             for reg, off in zip((floor, or_mask, index_mask), NEST_FIELDS, strict=True)]
        products = []
        for n in range(cfg.lanes):
            lane = LogLane(cfg) if cfg.kind == "log" else IntLane(cfg)
            m.submodules[f"lane{n}"] = lane
            word = self.i.payload.w[n]
            m.d.comb += lane.x.eq(self.i.payload.x[n])
            if cfg.kind == "log":
                m.d.comb += lane.word.eq(word | or_mask)
                rp = table.read_port(domain="comb")
                m.d.comb += [rp.addr.eq(lane.table_addr), lane.entry.eq(rp.data),
                             lane.entry.zero.eq(rp.data.zero | ((word[:cfg.weight_bits] & index_mask) < floor))]
            else:
                m.d.comb += lane.word.eq(word)
            products.append(lane.product)
        return products
