"""The lean log engine under Amaranth's simulator against logmac.format / logmac.sim: the shared weight decoder,
the lane, and the whole engine on every grid, code width 2..6 and zero mode from run-time loaded tables."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from hw_amaranth_sim import run_commands
from test_hw import all_formats, decode_payload

from logmac.cosim.stream import build_commands
from logmac.cosim.vectors import golden, random_vectors
from logmac.format import GridKind, LogFormat, ZeroMode, decode_int
from logmac.hw.config import HwConfig, HwConfigError
from logmac.hw.lanes import product_bits
from logmac.hw.lean_engine import LeanMacEngine, WeightDecoder
from logmac.hw.lean_lanes import LeanLane, field_multipliers, fields_from_image
from logmac.hw.regmap import Requant, channel_writes, table_image
from logmac.stimulus import random_table


def test_decoded_fields_reproduce_decode_int_for_every_word_and_format() -> None:
    """The decoder's model: every legal word of every 2..6-bit format maps to a field worth decode_int."""
    hw = HwConfig(weight_bits=6, lanes=1, lean=True)
    rng = np.random.default_rng(4)
    for fmt in all_formats():
        table = random_table(fmt, 2, rng)
        words = np.arange(1 << fmt.storage_bits)
        want = decode_int(np.broadcast_to(words, (2, words.size)), table, fmt)
        for c in range(2):
            got = field_multipliers(hw, fields_from_image(hw, table_image(hw, fmt, table, c), words))
            assert np.array_equal(got, want[c]), fmt


@pytest.mark.parametrize("weight_bits,act_signed", [(3, True), (4, False), (6, True)])
def test_weight_decoder_port_matches_its_model(weight_bits: int, act_signed: bool) -> None:
    """One shared read port, tables written through the config port as on the general engine."""
    hw = HwConfig(weight_bits=weight_bits, act_signed=act_signed, lanes=1, lean=True)
    dec = WeightDecoder(hw)
    rng = np.random.default_rng(weight_bits)
    cases = [(fmt, random_table(fmt, 1, rng)) for fmt in all_formats(weight_bits)[::3]]
    bad = []

    async def bench(ctx):
        for fmt, table in cases:
            image = table_image(hw, fmt, table, 0)
            for addr, value in channel_writes(hw, 16, "wrap", image=image)[-len(image):]:
                ctx.set(dec.cfg.we, 1)
                ctx.set(dec.cfg.addr, addr)
                ctx.set(dec.cfg.data, value)
                await ctx.tick()
            ctx.set(dec.cfg.we, 0)
            words = np.arange(1 << fmt.storage_bits)
            want = fields_from_image(hw, image, words)
            for w in words:
                ctx.set(dec.words[0], int(w))
                if ctx.get(dec.fields[0].as_value()) != want[w]:
                    bad.append((fmt, int(w)))

    sim = Simulator(dec)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]


@pytest.mark.parametrize("act_signed", [True, False])
def test_lean_lane_products_match_the_format(act_signed: bool) -> None:
    """product + neg == x * multiplier for every field value, extreme and small activations."""
    hw = HwConfig(weight_bits=4, act_bits=8, act_signed=act_signed, lanes=1, lean=True)
    lane = LeanLane(hw)
    xs = [-128, -1, 0, 1, 77, 127] if act_signed else [0, 1, 128, 255]
    fields = range(1 << (hw.shift_bits + 2))
    mult = field_multipliers(hw, np.array(list(fields)))
    got = {}

    async def bench(ctx):
        for f in fields:
            for x in xs:
                ctx.set(lane.x, x)
                ctx.set(lane.field.as_value(), f)
                got[f, x] = ctx.get(lane.product) + ctx.get(lane.neg)

    sim = Simulator(lane)
    sim.add_testbench(bench)
    sim.run()
    for f in fields:
        for x in xs:
            assert got[f, x] == x * mult[f], (f, x)
    assert product_bits(hw) == len(lane.product)


def _check(hw: HwConfig, vs: list, rng: np.random.Generator, ready_prob: float, seed: int) -> None:
    """One simulation of every vector set's commands in a row, compared with logmac.sim."""
    cmds = np.concatenate([build_commands(hw, v, rng, gap_prob=0.2) for v in vs])
    y, acc, ovf = decode_payload(hw, run_commands(hw, cmds, ready_prob=ready_prob, seed=seed, max_cycles=400_000))
    exps = [golden(v) for v in vs]
    assert np.array_equal(acc, np.concatenate([e.acc.ravel() for e in exps]))
    assert np.array_equal(ovf, np.concatenate([e.overflow.ravel() for e in exps]))
    assert np.array_equal(y, np.concatenate([e.y.ravel() for e in exps]))


@pytest.mark.parametrize("lanes,pipe", [(4, 1), (5, 0), (8, 2)])
def test_lean_engine_matches_emulator_on_every_format(lanes: int, pipe: int) -> None:
    """Random tables over every grid, widths 2..6, zero modes, signed and unsigned activations, saturate and wrap,
    with back-pressure and gaps, from one build."""
    rng = np.random.default_rng(100 + lanes)
    hw = HwConfig(weight_bits=6, act_bits=9, lanes=lanes, acc_bits=24, max_k=256, pipe_every=pipe, out_bits=8,
                  lean=True)
    vs = [random_vectors(fmt, rng, rows=2, k=11, channels=1, acc_bits=int(rng.choice([16, 20, 24])),
                         overflow=("saturate", "wrap")[n % 2], act_signed=bool(n % 3), style=("random", "every_code")[n % 2])
          for n, fmt in enumerate(f for f in all_formats() if f.hardware_approx)]
    _check(hw, vs, rng, ready_prob=0.6, seed=lanes)


def test_lean_engine_forced_overflow() -> None:
    rng = np.random.default_rng(21)
    hw = HwConfig(weight_bits=6, act_bits=9, lanes=4, acc_bits=24, max_k=256, out_bits=8, lean=True)
    vs = [random_vectors(LogFormat(bits, grid, zero=zero), rng, rows=4, k=17, channels=2, style="overflow", acc_bits=acc,
                         overflow=mode, act_signed=bool(acc % 2))
          for bits, grid, zero in ((3, GridKind.LOG_2, ZeroMode.CODE), (5, GridKind.LOG_DYNAMIC, ZeroMode.FLAG),
                                   (6, GridKind.LOG_SQRT2, ZeroMode.NONE))
          for acc in (9, 12) for mode in ("saturate", "wrap")]
    assert sum(int(golden(v).overflow.sum()) for v in vs) > 20, "the stimulus must overflow"
    _check(hw, vs, rng, ready_prob=0.5, seed=3)


def test_lean_engine_on_decoded_beats() -> None:
    """The deployed form: weights decoded once through the shared ``wl`` port, beats carry the fields."""
    hw = HwConfig(weight_bits=4, act_bits=8, act_signed=True, lanes=4, acc_bits=20, max_k=64, out_bits=8, lean=True)
    dut = LeanMacEngine(hw)
    rng = np.random.default_rng(8)
    fmt = LogFormat(4, GridKind.LOG_DYNAMIC, zero=ZeroMode.FLAG)
    v = random_vectors(fmt, rng, rows=3, k=10, channels=2, acc_bits=16, overflow="wrap")
    exp = golden(v)
    beats = -(-v.k // hw.lanes)
    pad = beats * hw.lanes - v.k
    x = np.pad(v.x, ((0, 0), (0, pad)))
    words = np.pad(v.codes, ((0, 0), (0, pad)))
    fb, ab = hw.shift_bits + 2, hw.act_bits
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for c in range(v.channels):
            rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
            writes = channel_writes(hw, v.acc_bits, v.overflow, rq, table_image(hw, fmt, v.table, c))
            for addr, value in writes:
                ctx.set(dut.cfg.we, 1)
                ctx.set(dut.cfg.addr, addr)
                ctx.set(dut.cfg.data, value)
                await ctx.tick()
            ctx.set(dut.cfg.we, 0)
            fields = []
            for w in words[c]:  # the load: one weight a cycle through the shared decoder
                ctx.set(dut.wl_word, int(w))
                fields.append(ctx.get(dut.wl_field.as_value()))
                await ctx.tick()
            for n in range(v.rows):
                for b in range(beats):
                    lane = range(b * hw.lanes, (b + 1) * hw.lanes)
                    payload = sum((int(x[n, k]) & ((1 << ab) - 1)) << (i * ab) for i, k in enumerate(lane))
                    payload |= sum(fields[k] << (hw.lanes * ab + i * fb) for i, k in enumerate(lane))
                    payload |= int(b == beats - 1) << (hw.lanes * (ab + fb))
                    ctx.set(dut.i.payload.as_value(), payload)
                    ctx.set(dut.i.valid, 1)
                    await ctx.tick()
                    if ctx.get(dut.o.valid):
                        got.append(ctx.get(dut.o.payload.as_value()))
            ctx.set(dut.i.valid, 0)
            while not ctx.get(dut.idle):
                await ctx.tick()
                if ctx.get(dut.o.valid):
                    got.append(ctx.get(dut.o.payload.as_value()))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    y, acc, ovf = decode_payload(hw, got)
    assert np.array_equal(acc, exp.acc.ravel()) and np.array_equal(ovf, exp.overflow.ravel())
    assert np.array_equal(y, exp.y.ravel())


def test_lean_needs_a_log_engine() -> None:
    with pytest.raises(HwConfigError, match="lean"):
        HwConfig(kind="int", weight_bits=4, lean=True)
