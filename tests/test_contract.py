"""The hardware contract (``logmac.hw.contract``, the exported JSON, the register map of docs/hw.md) held to the
RTL: each stated point is checked on the engines under Amaranth's simulator (compile-free), the symbolic rules
against the numbers read from the RTL for several builds, and the docs section against the generated table."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from amaranth import ResetInserter, Signal
from amaranth.sim import Simulator
from click.testing import CliRunner

from logmac.cli import main
from logmac.hw import config as C
from logmac.hw.config import HwConfig
from logmac.hw.contract import REGISTER_RULES, register_table_markdown, registers
from logmac.hw.engine import MacEngine
from logmac.hw.export import parameters
from logmac.hw.lean_engine import LeanMacEngine
from logmac.hw.logact_engine import LogActConfig, LogActEngine
from logmac.hw.logact_engine import parameters as logact_parameters
from logmac.hw.regmap import REG_NEST
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import SchedEngine, sched_parameters

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hw.md"
HW = HwConfig(weight_bits=4, act_bits=8, act_signed=True, lanes=1, max_k=64, acc_bits=12, out_bits=16,
              mult_bits=16, bias_bits=16)
# the AdaLog engine with activation entries m = i, s = 0: word i is level i, so it drives like the others
LOGACT = LogActConfig(kind="log", act_code_bits=8, act_max_shift=0, weight_bits=4, lanes=1, max_k=64, acc_bits=12,
                      out_bits=16, mult_bits=16, bias_bits=16)
# the scheduled engine, one lane, one beat a tile: a beat adds x << delta (no table; word 3 below is delta 2)
SCHED = SchedConfig(variant="inplace", half="none", lanes=1, act_bits=8, max_shift=7, max_k=64, acc_bits=12,
                    out_bits=16, mult_bits=16, bias_bits=16)
SB = HW.shift_bits
assert LOGACT.shift_bits == SB
ENGINES = {"general": lambda: MacEngine(HW), "lean": lambda: LeanMacEngine(HW, beat="codes"),
           "logact": lambda: LogActEngine(LOGACT), "sched": lambda: SchedEngine(SCHED)}


def entry(u: int, h: int = 0, neg: int = 0, zero: int = 0) -> int:
    """A decode-table entry packed as the JSON's ``tables[0].entry`` fields say."""
    return u | h << SB | neg << (SB + 1) | zero << (SB + 2)


class Drive:
    """A 1-lane engine under Amaranth's simulator: config writes, dot products, reset, status."""

    def __init__(self, ctx, dut, rst: Signal) -> None:
        self.ctx, self.dut, self.rst = ctx, dut, rst
        self.logact, self.sched = isinstance(dut, LogActEngine), isinstance(dut, SchedEngine)
        self.table_base = LOGACT.weight_table_base if self.logact else 1 << SCHED.cfg_addr_bits if self.sched \
            else HW.table_base

    async def table(self, index: int, value: int) -> None:
        await self.write(self.table_base + index, value)

    async def write(self, addr: int, data: int) -> None:
        ctx, d = self.ctx, self.dut
        ctx.set(d.cfg.addr, addr)
        ctx.set(d.cfg.data, data & ((1 << C.CFG_DATA_BITS) - 1))
        ctx.set(d.cfg.we, 1)
        await ctx.tick()
        ctx.set(d.cfg.we, 0)

    async def send(self, xs: list[int], word: int) -> None:
        ctx, d = self.ctx, self.dut
        ctx.set(d.o.ready, 1)
        for n, x in enumerate(xs):
            if self.sched:
                for name, value in (("en", 1), ("neg", 0), ("delta", {0: 0, 3: 2}[word]), ("tile_last", 1)):
                    ctx.set(getattr(d.i.payload, name), value)
                ctx.set(d.i.payload.x[0], x)
            elif self.logact:  # activation level |x|; a negative x takes the negated +1 entry (word 1)
                assert x >= 0 or word == 0
                ctx.set(d.i.payload.a[0], abs(x))
                ctx.set(d.i.payload.w[0], word if x >= 0 else 1)
            else:
                ctx.set(d.i.payload.x[0], x)
                ctx.set(d.i.payload.w[0], word)
            ctx.set(d.i.payload.last, n == len(xs) - 1)
            ctx.set(d.i.valid, 1)
            await ctx.tick()
        ctx.set(d.i.valid, 0)

    async def dot(self, xs: list[int], word: int = 0) -> tuple[int, int, int]:
        """(y, acc, overflow) of one dot product of ``xs`` with one weight word."""
        await self.send(xs, word)
        ctx, d = self.ctx, self.dut
        while not ctx.get(d.o.valid):
            await ctx.tick()
        out = ctx.get(d.o.payload.y), ctx.get(d.o.payload.acc), ctx.get(d.o.payload.overflow)
        await ctx.tick()
        return out

    async def reset(self) -> None:
        self.ctx.set(self.rst, 1)
        await self.ctx.tick()
        self.ctx.set(self.rst, 0)

    def sticky(self) -> int:
        return self.ctx.get(self.dut.overflow_sticky)


def simulate(engine: str, body) -> None:
    """Run ``body(drive)`` on a fresh engine; ``rst`` is the sync domain's reset, as the exported ``rst`` port."""
    dut = ENGINES[engine]()
    rst = Signal()
    sim = Simulator(ResetInserter(rst)(dut))
    sim.add_clock(1e-8)

    async def bench(ctx) -> None:
        drive = Drive(ctx, dut, rst)
        if not drive.sched:
            await drive.table(0, entry(0))  # word 0: +1
        if drive.logact:
            await drive.table(1, entry(0, neg=1))
            for i in range(LOGACT.act_table_depth):
                await drive.write(LOGACT.act_table_base + i, i)  # m = i, s = 0, not zero
        await body(drive)

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("engine", list(ENGINES))
def test_saturation_bounds_and_flags_in_both_modes(engine: str) -> None:
    """A = 8: saturate to [-(2**7), 2**7 - 1], wrap to the low 8 bits; overflow and sticky set in both modes."""
    got = {}

    async def body(d: Drive) -> None:
        await d.write(C.REG_ACC_HI, (1 << 7) - 1)
        for wrap in (0, 1):
            await d.write(C.REG_WRAP, wrap)
            for xs in ([127], [-128], [127, 1], [-128, -1], [127, 127, 127]):
                await d.write(C.REG_CLEAR, 0)
                _, acc, ovf = await d.dot(xs)
                got[wrap, sum(xs)] = acc, ovf, d.sticky()

    simulate(engine, body)
    for total in (127, -128):
        assert got[0, total] == got[1, total] == (total, 0, 0)
    assert got[0, 128] == (127, 1, 1) and got[0, -129] == (-128, 1, 1) and got[0, 381] == (127, 1, 1)
    assert got[1, 128] == (-128, 1, 1) and got[1, -129] == (127, 1, 1) and got[1, 381] == (125, 1, 1)


def requant(acc: int, bias: int, m: int, s: int, zp: int, lo: int, hi: int) -> int:
    """docs/hw.md's statement, literally."""
    v = ((((acc + bias) * m) + (2 ** (s - 1) if s > 0 else 0)) >> s) + zp
    return lo if v < lo else (hi if v > hi else v)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_requantization_order_on_the_fitted_accumulator(engine: str) -> None:
    rnd = random.Random(5)
    cases = [(rnd.randint(-15, 15), rnd.randint(-300, 300), rnd.randint(0, (1 << 16) - 1), rnd.randint(0, 20),
              rnd.randint(-200, 200), rnd.randint(-30000, 0), rnd.randint(0, 30000)) for _ in range(24)]
    cases += [(n, 0, 3, 1, 0, -32768, 32767) for n in (-3, -1, 1, 3)]  # ties: round half up (-1.5 -> -1)
    got = []

    async def body(d: Drive) -> None:
        for beats, bias, m, s, zp, lo, hi in cases:
            for addr, value in ((C.REG_BIAS, bias), (C.REG_MULT, m), (C.REG_SHIFT, s), (C.REG_ZP, zp),
                                (C.REG_LO, lo), (C.REG_HI, hi)):
                await d.write(addr, value)
            xs = [127 if beats > 0 else -128] * abs(beats) or [0]
            got.append(await d.dot(xs))
        # bias is added to the fitted accumulator: 200 saturates to 127 at A = 8, wraps to -56
        for addr, value in ((C.REG_ACC_HI, 127), (C.REG_BIAS, 10), (C.REG_MULT, 1), (C.REG_SHIFT, 0),
                            (C.REG_ZP, 0)):
            await d.write(addr, value)
        for wrap in (0, 1):
            await d.write(C.REG_WRAP, wrap)
            got.append(await d.dot([100, 100]))

    simulate(engine, body)
    alternatives = [lambda a, b, m, s, z, lo, hi: requant(a * m + b, 0, 1, s, z, lo, hi),
                    lambda a, b, m, s, z, lo, hi: requant(a, b, m, s, 0, lo, hi) + z,
                    lambda a, b, m, s, z, lo, hi: min(max((((a + b) * m) >> s) + z, lo), hi)]
    differs = [False] * len(alternatives)
    for (y, acc, _), (beats, *rq) in zip(got, cases, strict=False):
        assert acc == sum([127 if beats > 0 else -128] * abs(beats))
        assert y == requant(acc, *rq), (acc, rq)
        differs = [d or alt(acc, *rq) != y for d, alt in zip(differs, alternatives, strict=True)]
    assert all(differs), "the cases must tell the stated order from the alternatives"
    assert got[-2][:2] == (137, 127) and got[-1][:2] == (-46, -56)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_clamp_with_lo_above_hi(engine: str) -> None:
    """lo > hi (refused by regmap.channel_writes): y is lo when the value is below lo, else hi."""
    got = {}

    async def body(d: Drive) -> None:
        await d.write(C.REG_LO, 5)
        await d.write(C.REG_HI, -5)
        for x in (-10, 0, 4, 5, 10):
            got[x] = (await d.dot([x]))[0]

    simulate(engine, body)
    assert got == {-10: 5, 0: 5, 4: 5, 5: -5, 10: -5}


def test_a_u0_half_step_entry() -> None:
    """Never written by regmap.table_image; if written: floor(3x/2) (negated after the floor) on the general
    engine, (3m << s) >> 1 on the AdaLog engine, the zero field (0) on the lean engine.  The legal u = 1 half
    step gives 3x on all three."""
    signed_xs = (-128, -7, -3, -1, 1, 3, 7, 127)
    got: dict = {}

    for engine in ("general", "lean", "logact"):
        xs = [x for x in signed_xs if x > 0] if engine == "logact" else signed_xs

        async def body(d: Drive, engine: str = engine, xs=xs) -> None:
            await d.table(2, entry(0, h=1))
            await d.table(3, entry(0, h=1, neg=1))
            await d.table(4, entry(1, h=1))
            for word in (2, 3, 4):
                for x in xs:
                    got[engine, word, x] = (await d.dot([x], word))[1]

        simulate(engine, body)
    for engine, word, x in got:
        want = {2: (3 * x) // 2, 3: -((3 * x) // 2), 4: 3 * x}[word]
        assert got[engine, word, x] == (0 if engine == "lean" and word != 4 else want), (engine, word, x)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_clear_wins_over_a_set_in_the_same_cycle(engine: str) -> None:
    """Find the edge that sets the sticky flag, then write REG_CLEAR on that edge (clear wins) and on the one
    before (the set comes after the clear: the flag ends up set)."""
    found = {}

    def run(clear_at: int | None) -> None:
        async def body(d: Drive) -> None:
            await d.write(C.REG_ACC_HI, 127)
            await d.send([127, 1], 0)
            for n in range(20):
                if clear_at is None and d.sticky():
                    found["edge"] = n
                    return
                if n == clear_at:
                    await d.write(C.REG_CLEAR, 0)
                else:
                    await d.ctx.tick()
            found[clear_at] = d.sticky()

        simulate(engine, body)

    run(None)
    edge = found["edge"]  # the flag reads 1 after `edge` edges past the last beat
    run(edge - 1)  # the write's edge is the setting edge
    run(edge - 2)
    assert found[edge - 1] == 0 and found[edge - 2] == 1


@pytest.mark.parametrize("engine", list(ENGINES))
def test_reset_restores_registers_and_sticky_but_keeps_the_table(engine: str) -> None:
    got = {}

    async def body(d: Drive) -> None:
        await d.table(3, entry(2))  # word 3: x4
        for addr, value in ((C.REG_ACC_HI, 127), (C.REG_WRAP, 1), (C.REG_MULT, 3), (C.REG_SHIFT, 1),
                            (C.REG_BIAS, 5), (C.REG_ZP, 2), (C.REG_LO, -10), (C.REG_HI, 10), (REG_NEST, 1 | 15 << 32)):
            await d.write(addr, value)
        got["before"] = await d.dot([7], 0), await d.dot([100, 100], 3), d.sticky()
        await d.reset()
        got["idle"], got["sticky"] = d.ctx.get(d.dut.idle), d.sticky()
        got["after"] = await d.dot([7], 0), await d.dot([100] * 6, 3)

    simulate(engine, body)
    (nest_zero, wrapped, sticky) = got["before"]
    assert wrapped[2] == 1 and sticky == 1  # the settings took effect
    assert nest_zero[1] == (7 if engine in ("logact", "sched") else 0)  # REG_NEST exists on log weight engines only
    assert got["idle"] == 1 and got["sticky"] == 0
    hi = (1 << (HW.acc_bits - 1)) - 1
    # REG_NEST back to 0 (word 0 decodes again), saturate at the full width, y = acc: every register at reset;
    # 2400 = 6 * 100 * 4: the table entry written before the reset is still there
    assert got["after"] == ((7, 7, 0), (hi, hi, 1))


@pytest.mark.parametrize("engine", list(ENGINES))
def test_writes_between_the_registers_and_the_table_are_ignored(engine: str) -> None:
    got = []

    async def body(d: Drive) -> None:
        for addr in range(REG_NEST + 1, d.table_base):
            await d.write(addr, -1)
        got.append(await d.dot([100] * 3))
        got.append(d.sticky())

    simulate(engine, body)
    assert got == [(300, 300, 0), 0]  # every register still at its reset value


BUILDS = [HwConfig(), HwConfig(weight_bits=3, acc_bits=20, mult_bits=8, bias_bits=24, out_bits=8, lanes=2),
          HwConfig(kind="int", weight_bits=8, out_bits=12), LogActConfig(lanes=2),
          SchedConfig(lanes=4, acc_bits=40, out_bits=10)]


def exported(cfg) -> dict:
    if isinstance(cfg, LogActConfig):
        return logact_parameters(cfg)
    return sched_parameters(cfg) if isinstance(cfg, SchedConfig) else parameters(cfg)


def evaluate(rule: str, cfg) -> int | None:
    names = {f: getattr(cfg, f) for f in ("acc_bits", "mult_bits", "bias_bits", "out_bits")}
    names["weight_bits"] = getattr(cfg, "weight_bits", 0)
    return eval(rule, {"__builtins__": {}}, {**names, "None": None})  # noqa: S307 - the rules are ours


@pytest.mark.parametrize("cfg", BUILDS, ids=lambda c: type(c).__name__ + "-" + getattr(c, "kind", "sched"))
def test_json_registers_equal_the_symbolic_rules(cfg) -> None:
    """Every register object of the exported JSON has the keys and the numbers the docs' rules give."""
    regs = exported(cfg)["registers"]
    log = getattr(cfg, "kind", "") == "log" and isinstance(cfg, HwConfig)
    assert [r["name"] for r in regs] == [n for n in REGISTER_RULES if n != "nest" or log]
    for r in regs:
        assert {"name", "address", "width", "signed", "range", "reset"} <= set(r)
        addr, width, signed, legal, reset, _ = REGISTER_RULES[r["name"]]
        lo, hi = legal.split(";")[0].split("..")
        assert (r["address"], r["width"], r["signed"]) == (addr, evaluate(width, cfg), signed), r
        assert r["range"] == [evaluate(lo, cfg), evaluate(hi, cfg)] and r["reset"] == evaluate(reset, cfg), r


@pytest.mark.parametrize("cfg", BUILDS[:2] + BUILDS[3:4], ids=["w6", "w3", "logact"])
def test_json_decode_entry_layout_defines_every_field(cfg) -> None:
    """u is sb = shift_bits wide at bit 0, then h, neg, zero: what regmap.table_image packs."""
    tables = exported(cfg)["tables"]
    decode = tables[0]["entry"]
    sb = cfg.shift_bits
    assert {f: (e["offset"], e["width"]) for f, e in decode.items()} == \
        {"u": (0, sb), "h": (sb, 1), "neg": (sb + 1, 1), "zero": (sb + 2, 1)}
    assert all(e["meaning"] for t in tables for e in t["entry"].values())
    assert tables[0]["symbols"] == {"sb": sb} and tables[0]["entry_bits"] == sb + 3
    if isinstance(cfg, LogActConfig):
        act = {f: (e["offset"], e["width"]) for f, e in tables[1]["entry"].items()}
        mb, ab = cfg.mantissa_bits, cfg.act_shift_bits
        assert act == {"m": (0, mb), "s": (mb, ab), "zero": (mb + ab, 1)}
        assert tables[1]["symbols"] == {"mb": mb, "sa": ab}


def test_registers_of_the_int_engine_and_the_cli_export(tmp_path) -> None:
    assert registers(HwConfig(kind="int", weight_bits=8), nest=False)[-1]["name"] == "clear"
    res = CliRunner().invoke(main, ["hw", "export", "--engine", "sched", "--set", "variant=bucketed",
                                    "--set", "half=select", "--set", "lanes=4", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "logmac_sched_engine.json").read_text())
    assert params["config"]["variant"] == "bucketed" and len(params["registers"]) == 9


def test_docs_register_map_is_the_generated_table() -> None:
    text = DOCS.read_text()
    found = re.search(r"<!-- contract:registers -->\n(.*?)\n<!-- /contract:registers -->", text, re.S)
    assert found, "docs/hw.md has no generated register-map section"
    assert found.group(1) == register_table_markdown(), \
        "regenerate it: python -c 'from logmac.hw.contract import register_table_markdown as t; print(t())'"
