"""Exponent schedules: compiler == logmac.sim for every grid, width and zero mode (hypothesis), the checked
serialisation, and the scheduled engine under Amaranth's simulator (compile-free) against the golden model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from logmac.cosim.sched_runner import check_golden, sched_commands
from logmac.cosim.stream import GAP_BITS, KIND_CFG, TbLayout
from logmac.cosim.vectors import golden, random_vectors
from logmac.format import FormatError, GridKind, LogFormat, ZeroMode
from logmac.format.artifact import QuantizedLayer
from logmac.format.groups import GROUP_EXP, column_shifts
from logmac.format.schedule import (
    HALF_MODES,
    VARIANTS,
    ScheduleLimits,
    compile_schedule,
    load_schedule,
    schedule_cost,
    tile_beats,
)
from logmac.hw import config as C
from logmac.hw.config import HwConfigError
from logmac.hw.sched_config import SchedConfig
from logmac.hw.sched_engine import SchedEngine
from logmac.sim.groups import group_mac_reference
from logmac.sim.mac import log_matmul_reference
from logmac.sim.scheduled import run_schedule
from logmac.stimulus import random_table


def halves(grid: GridKind) -> list[str]:
    return list(HALF_MODES) if grid is GridKind.LOG_2 else ["split", "select"]


def all_limits(fmt: LogFormat, grid: GridKind, lanes: int, max_k: int = 256) -> list[ScheduleLimits]:
    """Every build kind that runs ``fmt``: both variants x half-step options, and the codes store (a 6-bit
    code build with a zero flag, so narrower and flagged codes are re-packed)."""
    lims = [ScheduleLimits(v, h, lanes, fmt.max_shift, max_k) for v in VARIANTS for h in halves(grid)]
    return lims + [ScheduleLimits("inplace", h, lanes, fmt.max_shift, max_k, "codes", 6, True)
                   for h in halves(grid) if h != "select"]


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 6), grid=st.sampled_from(list(GridKind)), zero=st.sampled_from(list(ZeroMode)),
       k=st.integers(1, 70), lanes=st.sampled_from([1, 3, 8, 16]), seed=st.integers(0, 2**31),
       act_signed=st.booleans())
def test_schedule_equals_the_reference_sum(bits, grid, zero, k, lanes, seed, act_signed) -> None:
    fmt = LogFormat(bits, grid, zero=zero)
    rng = np.random.default_rng(seed)
    table = random_table(fmt, 3, rng)
    words = rng.integers(0, 1 << fmt.storage_bits, size=(3, k))
    x = rng.integers(-128 if act_signed else 0, 128 if act_signed else 256, size=(4, k))
    ref = log_matmul_reference(x, words, table, fmt, 48)
    for lim in all_limits(fmt, grid, lanes):
        sched = load_schedule(compile_schedule(words, table, fmt, lim).to_dict(), lim)
        got = run_schedule(sched, x, 48)
        assert np.array_equal(got.acc, ref.acc), lim
        assert np.array_equal(tile_beats(words, table, fmt, lim).sum(axis=1), sched.beats), lim
        assert sched.beats.min() >= sched.tiles


def test_codes_store_lanes_hold_codes_and_a_beat_takes_a_whole_exponent() -> None:
    """A codes schedule keeps the code words, and on real-grid tables (distinct levels) it needs the same beats
    as the terms store: three broadcast slots per sign cover every level with a term at one exponent."""
    rng = np.random.default_rng(8)
    fmt = LogFormat(4, GridKind.LOG_DYNAMIC)
    table = random_table(fmt, 4, rng)
    words = rng.integers(0, 16, size=(4, 50))
    terms = compile_schedule(words, table, fmt, ScheduleLimits("inplace", "split", 8, 7, 64))
    codes = compile_schedule(words, table, fmt, ScheduleLimits("inplace", "split", 8, 7, 64, "codes", 4))
    assert np.array_equal(codes.words[:, :50], words) and not codes.words[:, 50:].any()
    levels_distinct = all(len(set(zip(table.u[c, s, 1:], table.h[c, s, 1:], strict=True))) == 7
                          for c in range(4) for s in range(2))
    assert levels_distinct
    assert np.array_equal(codes.beats, terms.beats)
    cost = schedule_cost(words, table, fmt, codes.limits)
    assert cost["weight_bits_stored"] == 4 + 7 * 14 / 50 + 14 * 4 / 50  # code, mask per tile, table per channel


def test_overflow_and_cost_model() -> None:
    rng = np.random.default_rng(4)
    v = random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC), rng, rows=5, k=40, channels=3, acc_bits=12,
                       style="overflow", overflow="wrap")
    for variant in VARIANTS:
        lim = ScheduleLimits(variant, "split", 8, v.fmt.max_shift, 64)
        check_golden(SchedConfig(variant=variant, lanes=8, max_k=64), v, compile_schedule(v.codes, v.table, v.fmt, lim))
        cost = schedule_cost(v.codes, v.table, v.fmt, lim)
        assert cost["beats_per_output"] >= cost["dense_beats_per_output"] == 5
        assert cost["weight_bits_stored"] > 0 and cost["permuted_index_bits_per_weight"] > 0
    assert golden(v).overflow.any()


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(lanes=np.int64(32)), "lanes"),
    (lambda d: d.update(max_shift=np.int64(12)), "max_shift"),
    (lambda d: d.update(k=np.int64(5000)), "max_k"),
    (lambda d: d["delta"].__setitem__(0, 9), "checksum"),
    (lambda d: d.pop("en"), "missing"),
    (lambda d: d.update(store=np.str_("codes")), "codes schedule"),
])
def test_bad_schedules_are_rejected(change, match, tmp_path) -> None:
    fmt = LogFormat(4, GridKind.LOG_2)
    rng = np.random.default_rng(1)
    lim = ScheduleLimits("inplace", "none", 8, fmt.max_shift, 1024)
    sched = compile_schedule(rng.integers(0, 16, size=(2, 30)), random_table(fmt, 2, rng), fmt, lim)
    sched.save(tmp_path / "s.npz")
    assert load_schedule(tmp_path / "s.npz", lim).k == 30
    d = sched.to_dict()
    change(d)
    if match != "checksum" and "checksum" in d:
        from logmac.format.schedule import _checksum
        d["checksum"] = np.str_(_checksum(d))
    with pytest.raises(FormatError, match=match):
        load_schedule(d, lim)


def test_codes_the_build_cannot_run_are_rejected() -> None:
    rng = np.random.default_rng(2)
    fmt = LogFormat(4, GridKind.LOG_DYNAMIC)
    words = rng.integers(0, 16, size=(1, 20))
    with pytest.raises(FormatError, match="max_k"):
        compile_schedule(words, random_table(fmt, 1, rng), fmt, ScheduleLimits("inplace", "split", 4, 7, 10))
    with pytest.raises(FormatError, match="max_shift"):
        compile_schedule(words, random_table(fmt, 1, rng), fmt, ScheduleLimits("inplace", "split", 4, 3, 100))
    with pytest.raises(HwConfigError, match="lanes"):
        SchedConfig(lanes=0)
    with pytest.raises(HwConfigError, match="variant"):
        SchedConfig(variant="permuted")
    for variant, half in (("bucketed", "split"), ("inplace", "select")):
        with pytest.raises(HwConfigError, match="codes store"):
            SchedConfig(variant=variant, half=half, store="codes", code_bits=4)
    coded = ScheduleLimits("inplace", "split", 4, 7, 100, "codes", 3)
    with pytest.raises(FormatError, match="do not fit"):
        compile_schedule(words, random_table(fmt, 1, rng), fmt, coded)
    flagged = LogFormat(3, GridKind.LOG_DYNAMIC, zero=ZeroMode.FLAG)
    with pytest.raises(FormatError, match="zero flag"):
        compile_schedule(rng.integers(0, 16, size=(1, 20)), random_table(flagged, 1, rng), flagged, coded)


def test_a_codes_schedule_whose_lane_bits_disagree_with_its_words_is_rejected() -> None:
    from logmac.format.schedule import _checksum

    fmt = LogFormat(4, GridKind.LOG_DYNAMIC)
    rng = np.random.default_rng(3)
    lim = ScheduleLimits("inplace", "split", 8, fmt.max_shift, 64, "codes", 4)
    d = compile_schedule(rng.integers(1, 8, size=(2, 30)), random_table(fmt, 2, rng), fmt, lim).to_dict()
    d["words"] = d["words"] ^ 8  # flip every sign bit: the en bits stay, the neg bits no longer follow
    d["checksum"] = np.str_(_checksum(d))
    with pytest.raises(FormatError, match="lane bits"):
        load_schedule(d, lim)


def _field(row: np.ndarray, lo: int, width: int) -> int:
    return int(sum(int(b) << i for i, b in enumerate(row[lo:lo + width])))


def run_engine(cfg: SchedConfig, cmds: np.ndarray, ready_prob: float, seed: int) -> list[int]:
    """Play a bench command stream into the engine under Amaranth's simulator; return the output payloads."""
    lay = TbLayout.of(cfg)
    dut = SchedEngine(cfg)
    rng = np.random.default_rng(seed)
    width = len(dut.i.payload.as_value())
    out: list[int] = []

    async def bench(ctx):
        ptr, waited = 0, 0
        for _ in range(50_000):
            if ptr >= len(cmds) and ctx.get(dut.idle):
                return
            row = cmds[ptr] if ptr < len(cmds) else None
            ready = bool(rng.random() < ready_prob)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.cfg.we, 0)
            fire = False
            if row is not None and waited >= _field(row, lay.payload_bits, GAP_BITS):
                if _field(row, lay.payload_bits + GAP_BITS, 2) == KIND_CFG:
                    if ctx.get(dut.idle):
                        ctx.set(dut.cfg.addr, _field(row, C.CFG_DATA_BITS, cfg.cfg_addr_bits))
                        ctx.set(dut.cfg.data, _field(row, 0, C.CFG_DATA_BITS))
                        ctx.set(dut.cfg.we, 1)
                        fire = True
                else:
                    ctx.set(dut.i.payload.as_value(), _field(row, 0, width))
                    ctx.set(dut.i.valid, 1)
                    fire = bool(ctx.get(dut.i.ready))
            if ctx.get(dut.o.valid) and ready:
                out.append(int(ctx.get(dut.o.payload.as_value())))
            await ctx.tick()
            ptr, waited = (ptr + 1, 0) if fire else (ptr, waited + 1)
        raise TimeoutError("engine did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def decode(cfg: SchedConfig, words: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def signed(v: int, bits: int) -> int:
        v &= (1 << bits) - 1
        return v - (1 << bits) if v >> (bits - 1) else v
    y = np.array([signed(w, cfg.out_bits) for w in words])
    acc = np.array([signed(w >> cfg.out_bits, cfg.acc_bits) for w in words])
    ovf = np.array([(w >> (cfg.out_bits + cfg.acc_bits)) & 1 for w in words], dtype=bool)
    return y, acc, ovf


@pytest.mark.parametrize("variant,half,grid,store", [("inplace", "split", GridKind.LOG_DYNAMIC, "terms"),
                                                     ("inplace", "select", GridKind.LOG_SQRT2, "terms"),
                                                     ("bucketed", "split", GridKind.LOG_DYNAMIC, "terms"),
                                                     ("bucketed", "select", GridKind.LOG_DYNAMIC, "terms"),
                                                     ("bucketed", "none", GridKind.LOG_2, "terms"),
                                                     ("inplace", "split", GridKind.LOG_DYNAMIC, "codes"),
                                                     ("inplace", "none", GridKind.LOG_2, "codes")])
def test_engine_matches_golden_in_amaranth_sim(variant: str, half: str, grid: GridKind, store: str) -> None:
    rng = np.random.default_rng(len(variant) * 7 + len(half) + len(store))
    coded = store == "codes"
    cfg = SchedConfig(variant=variant, half=half, store=store, code_bits=4 if coded else 0, zero_flag=coded,
                      lanes=4, act_bits=9, max_shift=7, max_k=64, acc_bits=24, out_bits=8)
    for fmt, style, mode, acc_bits in [(LogFormat(4, grid), "random", "saturate", 24),
                                       (LogFormat(3, grid, zero=ZeroMode.FLAG), "overflow", "wrap", 12)]:
        v = random_vectors(fmt, rng, rows=2, k=11, channels=2, acc_bits=acc_bits, overflow=mode, style=style,
                           act_signed=bool(rng.integers(2)))
        sched = compile_schedule(v.codes, v.table, v.fmt, cfg.limits())
        y, acc, ovf = decode(cfg, run_engine(cfg, sched_commands(cfg, v, sched, rng, gap_prob=0.2), 0.6, 3))
        exp = golden(v)
        assert np.array_equal(acc, exp.acc.ravel()) and np.array_equal(ovf, exp.overflow.ravel()), fmt
        assert np.array_equal(y, exp.y.ravel()), fmt


def group_layer(v, size: int, rng: np.random.Generator) -> tuple[QuantizedLayer, np.ndarray]:
    """``v``'s weights as an artifact layer with random 2-bit group exponents, and the (C, K) term shifts."""
    exps = rng.integers(-2, 2, size=(v.channels, -(-v.k // size)))
    layer = QuantizedLayer("g", "linear", v.fmt, v.codes, v.table.scale, v.table, extras={GROUP_EXP: exps.astype(np.int8)},
                           attrs={"group_size": size, "group_bits": 2})
    layer.validate()
    return layer, column_shifts(exps, v.k, size)[0]


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 5), grid=st.sampled_from(list(GridKind)), k=st.integers(1, 70),
       size=st.sampled_from([4, 8, 16]), lanes=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**31))
def test_group_exponents_fold_into_term_exponents(bits, grid, k, size, lanes, seed) -> None:
    """Per-group exponent offsets reach the scheduled engine as term exponents: the stream equals the group
    reference (partial sums shifted per group), on every terms-store build, and a codes store refuses them."""
    rng = np.random.default_rng(seed)
    fmt = LogFormat(bits, grid)
    v = random_vectors(fmt, rng, rows=3, k=k, channels=2, acc_bits=40)
    layer, shift = group_layer(v, size, rng)
    ref = group_mac_reference(v.x, layer, slice(None), 40)
    for lim in all_limits(fmt, grid, lanes):
        lim = replace(lim, max_shift=fmt.max_shift + 3)  # room for 2-bit group shifts (up to 3)
        if lim.store == "codes":
            if shift.any():
                with pytest.raises(FormatError, match="terms-store"):
                    compile_schedule(v.codes, v.table, fmt, lim, term_shift=shift)
            continue
        got = run_schedule(compile_schedule(v.codes, v.table, fmt, lim, term_shift=shift), v.x, 40)
        assert np.array_equal(got.acc, ref.acc), lim


def test_group_shift_beyond_the_build_is_refused() -> None:
    fmt = LogFormat(3, GridKind.LOG_2)
    v = random_vectors(fmt, np.random.default_rng(0), rows=1, k=8, channels=1)
    lim = ScheduleLimits("inplace", "none", 4, int(v.table.u.max()) + 1, 64)
    with pytest.raises(FormatError, match="plus group shift reaches"):
        compile_schedule(v.codes, v.table, fmt, lim, term_shift=np.full((1, 8), 2))


def test_engine_runs_group_exponent_schedules_in_amaranth_sim() -> None:
    """The RTL needs no change for group exponents: the same engine on a group-shifted schedule gives the
    group reference, with saturation forced on a narrow accumulator."""
    rng = np.random.default_rng(5)
    cfg = SchedConfig(variant="inplace", half="split", lanes=4, act_bits=9, max_shift=7, max_k=64, acc_bits=24,
                      out_bits=8)
    fmt = LogFormat(3, GridKind.LOG_DYNAMIC)
    assert fmt.max_shift + 3 <= cfg.max_shift  # 2-bit group exponents shift by up to 3
    for acc_bits, style in [(24, "random"), (12, "overflow")]:
        v = random_vectors(fmt, rng, rows=2, k=19, channels=2, acc_bits=acc_bits, style=style)
        layer, shift = group_layer(v, 8, rng)
        sched = compile_schedule(v.codes, v.table, fmt, cfg.limits(), term_shift=shift)
        _, acc, ovf = decode(cfg, run_engine(cfg, sched_commands(cfg, v, sched, rng, gap_prob=0.2), 0.6, 3))
        ref = group_mac_reference(v.x, layer, slice(None), acc_bits)
        assert np.array_equal(acc, ref.acc.T.ravel()) and np.array_equal(ovf, ref.overflow.T.ravel())
        assert style != "overflow" or ovf.any()
