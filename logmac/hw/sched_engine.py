"""The exponent-scheduled engine: no decode table and no shifter per lane; one shared shift at the accumulator.

Beats follow ``logmac.format.schedule`` (layout: ``logmac.hw.sched_config.input_layout``).  A lane forms
``+-m x`` (``m`` is 1, or 3 on a ``select`` build's triple bit) as ``x`` or ``~x`` with the ``+1`` of each
negated lane counted in a popcount next to the tree, so a lane is a gate, not a negator.

- ``inplace``: one tree; ``p = (p + sum) << delta`` per beat (Horner over a tile's exponent groups), and on
  ``tile_last`` the tile's ``p`` is added to the exact accumulator.
- ``bucketed``: ``max_shift + 1`` trees; each lane's value enters the tree of its exponent (and, on a
  ``split`` build's half bit, the tree one below); the tree sums are added with fixed shifts.

A ``codes`` build (in place) holds code words instead of ``en`` / ``neg`` bits: a lane is enabled when its
word's index equals one of the level indices the beat broadcasts for its sign (``logmac.format.schedule.
coded_lanes``), and its sign is the word's sign bit.  Where it is smaller, the broadcast is decoded once per
beat into one bit per code, so a lane's match is a ``2**code_bits``-to-1 select, not a comparator per slot.

The fit (saturate / wrap, overflow flag, sticky flag), the config registers and the requantization stage
are ``logmac.hw.stages``, shared with ``MacEngine``, so every engine obeys ``logmac.format.apply_accumulator``
and ``logmac.format.requantize`` alike.  Behaviour is stated by ``logmac.sim.scheduled``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from logmac import __version__
from logmac.hw import config as C
from logmac.hw.contract import contract
from logmac.hw.engine import config_signature
from logmac.hw.sched_config import SchedConfig, input_layout, output_layout
from logmac.hw.stages import config_registers, output_stages

SCHED_ENGINE_NAME = "logmac_sched_engine"


class SchedEngine(wiring.Component):
    """Dot products from an exponent schedule, ``lanes`` activations a beat, fitted and requantized."""

    def __init__(self, cfg: SchedConfig) -> None:
        if not isinstance(cfg, SchedConfig):
            raise TypeError(f"SchedEngine needs a SchedConfig, got {type(cfg).__name__}")
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
        p = self.i.payload
        side = [self.i.valid, p.last] + ([p.delta, p.tile_last] if cfg.variant == "inplace" else [])
        valids: list[Signal] = []

        values, corr = self._lane_values(m)
        if cfg.variant == "inplace":
            groups, side = self._register(m, en, [values, corr], side, "lane", valids)
            (total,), (ones,) = self._reduce(m, en, groups, side, valids)
            tree_sum = total + ones
        else:
            sel = [self._tree_select(m, n) for n in range(cfg.lanes)]
            lanes, side = self._register(m, en, [values, corr, sel], side, "lane", valids)
            v, c, s = lanes
            groups = [[Mux(s[n][e], v[n], 0) for n in range(cfg.lanes)] for e in range(cfg.trees)]
            groups += [[c[n] & s[n][e] for n in range(cfg.lanes)] for e in range(cfg.trees)]
            sums = self._reduce(m, en, groups, side, valids)
            shifted = [sums[e][0] << e for e in range(cfg.trees)] + [sums[cfg.trees + e][0] << e
                                                                        for e in range(cfg.trees)]
            (tree_sum,), = self._reduce(m, en, [shifted], side, valids)
        exact, ex_valid, first = self._accumulate(m, en, tree_sum, side)
        valids.append(ex_valid)
        output_stages(m, self, en, exact, ex_valid, regs, valids, cfg)
        m.d.comb += self.idle.eq(first & ~Cat(*valids).any())
        return m

    def _lane_values(self, m: Module) -> tuple[list, list]:
        """Per lane ``x`` or ``3x``, bitwise inverted when negative and zero when disabled, and the ``+1`` bits."""
        cfg, p = self.hw, self.i.payload
        triple = cfg.half == "select"
        coded = cfg.store == "codes"
        hits = self._broadcast_hits(m) if coded else None
        values, corr = [], []
        for n in range(cfg.lanes):
            x = p.x[n].as_signed() if cfg.act_signed else Cat(p.x[n], 0).as_signed()
            mag = Mux(p.aux[n], x + (x << 1), x) if triple else x
            v = Signal(signed(len(mag)), name=f"lane{n}_v")
            lane_en, neg = self._coded_enable(m, n, hits) if coded else (p.en[n], p.neg[n] & p.en[n])
            m.d.comb += v.eq(Mux(neg, ~mag, Mux(lane_en, mag, 0)))
            values.append(v)
            corr.append(neg)
        return values, corr

    def _broadcast_hits(self, m: Module) -> Signal | None:
        """The beat's broadcast decoded once for all lanes: bit ``sign * 2**(code_bits-1) + index`` is set when
        that index is broadcast for that sign, so a lane's match is one ``2**code_bits``-to-1 select.  None
        when a lane's comparators are the smaller choice: fewer compared bits (two signs x slots x index bits)
        than select inputs, as on log_2 builds with one slot."""
        cfg, p = self.hw, self.i.payload
        slots, levels = cfg.limits().slots, 1 << (cfg.code_bits - 1)
        if 2 * slots * (cfg.code_bits - 1) < 2 * levels:
            return None
        hits = Signal(2 * levels, name="hits")
        m.d.comb += hits.eq(Cat(*(Cat(*(p.bval[s * slots + k] & (p.bidx[s * slots + k] == i)
                                        for k in range(slots))).any() for s in (0, 1) for i in range(levels))))
        return hits

    def _coded_enable(self, m: Module, n: int, hits: Signal | None) -> tuple[Signal, Signal]:
        """Lane ``n`` of a codes build: its code's bit of ``hits``, or its index compared with each slot
        broadcast for its sign; never a flagged zero; the sign is the code's."""
        cfg, p = self.hw, self.i.payload
        word, slots = p.w[n], cfg.limits().slots
        sign, index = word[cfg.code_bits - 1], word[:cfg.code_bits - 1]
        if hits is not None:
            enabled = hits.bit_select(word[:cfg.code_bits], 1)
        else:
            match = [Cat(*(p.bval[s * slots + k] & (p.bidx[s * slots + k] == index) for k in range(slots))).any()
                     for s in (0, 1)]
            enabled = Mux(sign, match[1], match[0])
        if cfg.zero_flag:
            enabled = enabled & ~word[cfg.code_bits]
        lane_en, neg = Signal(name=f"lane{n}_en"), Signal(name=f"lane{n}_neg")
        m.d.comb += [lane_en.eq(enabled), neg.eq(sign & enabled)]
        return lane_en, neg

    def _tree_select(self, m: Module, n: int) -> Signal:
        """One bit per tree: lane ``n`` feeds it (its exponent, or one above on a split half step)."""
        cfg, p = self.hw, self.i.payload
        sel = Signal(cfg.trees, name=f"lane{n}_sel")
        exp = p.exp[n]
        for e in range(cfg.trees):
            hit = exp == e
            if cfg.half == "split":
                hit = hit | (p.aux[n] & (exp == e + 1))
            m.d.comb += sel[e].eq(hit)
        return sel

    def _register(self, m: Module, en: Signal, groups: list[list], side: list, name: str, valids: list
                  ) -> tuple[list[list[Signal]], list[Signal]]:
        """A pipeline register over every value of ``groups`` and the side signals (valid first)."""
        out = []
        for g, values in enumerate(groups):
            regs = [Signal.like(v, name=f"{name}{g}_{n}") if isinstance(v, Signal) else
                    Signal(v.shape(), name=f"{name}{g}_{n}") for n, v in enumerate(values)]
            with m.If(en):
                m.d.sync += [r.eq(v) for r, v in zip(regs, values, strict=True)]
            out.append(regs)
        sregs = [Signal(s.shape(), name=f"{name}_side{n}") for n, s in enumerate(side)]
        with m.If(en):
            m.d.sync += [r.eq(s) for r, s in zip(sregs, side, strict=True)]
        side[:] = sregs
        valids.append(sregs[0])
        return out, side

    def _reduce(self, m: Module, en: Signal, groups: list[list], side: list, valids: list) -> list[list]:
        """Pairwise adder trees over each group in lockstep, a register every ``pipe_every`` levels."""
        depth = 0
        while any(len(g) > 1 for g in groups):
            groups = [[g[n] + g[n + 1] for n in range(0, len(g) - 1, 2)] + ([g[-1]] if len(g) % 2 else [])
                      for g in groups]
            depth += 1
            if self.hw.pipe_every and depth % self.hw.pipe_every == 0 and any(len(g) > 1 for g in groups):
                groups, side = self._register(m, en, groups, side, f"tree{depth}_", valids)
        return groups

    def _accumulate(self, m: Module, en: Signal, tree_sum, side: list) -> tuple[Signal, Signal, Signal]:
        """The exact accumulator: per-tile Horner then add (in place), or a plain add (bucketed)."""
        cfg = self.hw
        valid, last = side[0], side[1]
        acc, exact, ex_valid = Signal(signed(cfg.exact_bits)), Signal(signed(cfg.exact_bits)), Signal()
        first = Signal(init=1)  # the next beat starts a new dot product
        total = Signal(signed(cfg.exact_bits))
        if cfg.variant == "inplace":
            delta, tile_last = side[2], side[3]
            part, horner = Signal(signed(cfg.tile_bits)), Signal(signed(cfg.tile_bits))
            tile_first = Signal(init=1)
            m.d.comb += horner.eq((Mux(tile_first, 0, part) + tree_sum) << delta)
            m.d.comb += total.eq(Mux(first, 0, acc) + horner)
            with m.If(en):
                m.d.sync += ex_valid.eq(valid & last)
                with m.If(valid):
                    m.d.sync += [part.eq(horner), tile_first.eq(tile_last)]
                    with m.If(tile_last):
                        m.d.sync += [acc.eq(total), first.eq(last), exact.eq(total)]
            ready = Signal()
            m.d.comb += ready.eq(first & tile_first)
            return exact, ex_valid, ready
        m.d.comb += total.eq(Mux(first, 0, acc) + tree_sum)
        with m.If(en):
            m.d.sync += ex_valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [acc.eq(total), first.eq(last), exact.eq(total)]
        return exact, ex_valid, first


def sched_verilog(cfg: SchedConfig, name: str = SCHED_ENGINE_NAME) -> str:
    """Elaborate the scheduled engine and return its Verilog (ports as ``logmac.hw.export`` documents)."""
    return verilog.convert(SchedEngine(cfg), name=name, emit_src=False)


def sched_parameters(cfg: SchedConfig, name: str = SCHED_ENGINE_NAME) -> dict:
    """Build parameters, widths and payload bit fields (LSB first) a user of the Verilog needs."""
    def fields(layout) -> dict:
        return {n: {"offset": f.offset, "width": f.width} for n, f in layout}

    return {"module": name, "logmac_version": __version__, "config": cfg.to_dict(),
            "derived": {"shift_bits": cfg.shift_bits, "exact_bits": cfg.exact_bits, "tile_bits": cfg.tile_bits,
                        "cfg_addr_bits": cfg.cfg_addr_bits, "cfg_data_bits": C.CFG_DATA_BITS},
            "input_fields": fields(input_layout(cfg)), "output_fields": fields(output_layout(cfg)),
            **contract(cfg, [], nest=False)}
