"""The compile-free tier: the Amaranth RTL under Amaranth's simulator, the table image, parameter checks and
a Verilator lint of the exported Verilog.  Every expected value comes from logmac.format / logmac.sim."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from amaranth.sim import Simulator
from hw_amaranth_sim import run_commands

from logmac import toolchain
from logmac.cosim.stream import build_commands
from logmac.cosim.vectors import golden, random_vectors
from logmac.format import (
    FormatError,
    GridKind,
    LogFormat,
    UniformFormat,
    ZeroMode,
    decode_int,
)
from logmac.hw.config import HwConfig, HwConfigError
from logmac.hw.export import export
from logmac.hw.lanes import LogLane
from logmac.hw.regmap import Requant, channel_writes, table_image
from logmac.stimulus import random_table


def all_formats(max_bits: int = 6) -> list[LogFormat]:
    return [LogFormat(b, g, hardware_approx=a, zero=z) for b in range(2, max_bits + 1) for g in GridKind
            for z in ZeroMode for a in (True, False)]


def decode_payload(hw: HwConfig, words: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def signed(v: int, bits: int) -> int:
        v &= (1 << bits) - 1
        return v - (1 << bits) if v >> (bits - 1) else v
    y = np.array([signed(w, hw.out_bits) for w in words]) if hw.requant else None
    off = hw.out_bits if hw.requant else 0
    acc = np.array([signed(w >> off, hw.acc_bits) for w in words])
    ovf = np.array([(w >> (off + hw.acc_bits)) & 1 for w in words], dtype=bool)
    return y, acc, ovf


def test_table_image_reproduces_decode_int_for_every_word_and_format() -> None:
    """The run-time image (one build for every zero mode and width) decodes each legal word like logmac.format."""
    hw = HwConfig(weight_bits=6, lanes=1)
    rng = np.random.default_rng(3)
    for fmt in all_formats():
        table = random_table(fmt, 2, rng)
        words = np.arange(1 << fmt.storage_bits)
        for c in range(2):
            image = table_image(hw, fmt, table, c)
            sb = hw.shift_bits
            e = image[words & (hw.table_depth - 1)]
            u, h, neg, zero = e & ((1 << sb) - 1), (e >> sb) & 1, (e >> (sb + 1)) & 1, (e >> (sb + 2)) & 1
            zero = zero | ((words >> hw.weight_bits) & 1)
            mag = (1 << u) + h * ((1 << u) >> 1)
            got = np.where(zero == 1, 0, np.where(neg == 1, -mag, mag))
            want = decode_int(np.broadcast_to(words, (2, words.size)), table, fmt)[c]
            assert np.array_equal(got, want), fmt


def test_log_lane_products_match_the_format() -> None:
    hw = HwConfig(weight_bits=4, act_bits=8, act_signed=True, lanes=1)
    fmt = LogFormat(4, GridKind.LOG_DYNAMIC, zero=ZeroMode.FLAG)
    table = random_table(fmt, 1, np.random.default_rng(5))
    image = table_image(hw, fmt, table, 0)
    lane = LogLane(hw)
    xs = [-128, -1, 0, 1, 77, 127]
    words = list(range(1 << fmt.storage_bits))
    want = decode_int(np.array([words]), table, fmt)[0]
    got = {}

    async def bench(ctx):
        for w in words:
            for x in xs:
                ctx.set(lane.x, x)
                ctx.set(lane.word, w)
                ctx.set(lane.entry.as_value(), int(image[ctx.get(lane.table_addr)]))
                got[w, x] = ctx.get(lane.product)

    sim = Simulator(lane)
    sim.add_testbench(bench)
    sim.run()
    for w in words:
        for x in xs:
            assert got[w, x] == x * want[w], (w, x)


@pytest.mark.parametrize("lanes,pipe", [(1, 1), (4, 1), (5, 0), (8, 2)])
def test_engine_matches_emulator_in_amaranth_sim(lanes: int, pipe: int) -> None:
    rng = np.random.default_rng(lanes * 10 + pipe)
    hw = HwConfig(weight_bits=6, act_bits=9, lanes=lanes, acc_bits=24, max_k=256, pipe_every=pipe, out_bits=8)
    for fmt, style, mode, acc_bits in [(LogFormat(3, GridKind.LOG_2), "random", "saturate", 24),
                                       (LogFormat(5, GridKind.LOG_SQRT2, zero=ZeroMode.FLAG), "every_code", "wrap", 20),
                                       (LogFormat(4, zero=ZeroMode.NONE), "overflow", "wrap", 12),
                                       (LogFormat(6, zero=ZeroMode.FLAG), "overflow", "saturate", 14)]:
        v = random_vectors(fmt, rng, rows=3, k=13, channels=2, acc_bits=acc_bits, overflow=mode, style=style,
                           act_signed=bool(rng.integers(2)))
        out = run_commands(hw, build_commands(hw, v, rng, gap_prob=0.2), ready_prob=0.6, seed=lanes)
        y, acc, ovf = decode_payload(hw, out)
        exp = golden(v)
        assert np.array_equal(acc, exp.acc.ravel()) and np.array_equal(ovf, exp.overflow.ravel()), fmt
        assert np.array_equal(y, exp.y.ravel()), fmt


def test_int_engine_matches_emulator_in_amaranth_sim() -> None:
    rng = np.random.default_rng(11)
    hw = HwConfig(kind="int", weight_bits=8, act_bits=8, act_signed=False, lanes=4, acc_bits=20, max_k=64,
                  out_bits=8)
    v = random_vectors(UniformFormat(8), rng, rows=4, k=10, channels=2, acc_bits=18, act_signed=False, style="extreme")
    y, acc, ovf = decode_payload(hw, run_commands(hw, build_commands(hw, v, rng), ready_prob=0.7))
    exp = golden(v)
    assert np.array_equal(acc, exp.acc.ravel()) and np.array_equal(ovf, exp.overflow.ravel())
    assert np.array_equal(y, exp.y.ravel())


@pytest.mark.parametrize("params,match", [
    ({"kind": "float"}, "kind"),
    ({"weight_bits": 7}, "31-octave"),
    ({"kind": "int", "weight_bits": 9}, "weight_bits"),
    ({"act_bits": 0}, "act_bits"),
    ({"lanes": 0}, "lanes"),
    ({"max_k": 1 << 20, "act_bits": 16}, "64"),
    ({"acc_bits": 64}, "acc_bits"),
    ({"pipe_every": -1}, "pipe_every"),
])
def test_impossible_configs_are_rejected(params: dict, match: str) -> None:
    with pytest.raises(HwConfigError, match=match):
        HwConfig(**params)


def test_run_time_settings_are_checked_against_the_build() -> None:
    hw = HwConfig(weight_bits=4, lanes=2, acc_bits=20)
    with pytest.raises(FormatError, match="do not fit"):
        table_image(hw, LogFormat(5), random_table(LogFormat(5), 1, np.random.default_rng(0)), 0)
    with pytest.raises(FormatError, match="exceeds the build"):
        channel_writes(hw, 24, "saturate")
    with pytest.raises(FormatError, match="shift"):
        channel_writes(hw, 16, "wrap", Requant(shift=63))
    with pytest.raises(FormatError, match="zero point"):
        channel_writes(hw, 16, "wrap", Requant(zero_point=1 << 20))


def test_export_writes_verilog_and_parameters_and_lints_clean(tmp_path) -> None:
    toolchain.require("verilator")
    hw = HwConfig(weight_bits=4, lanes=4)
    v_path, j_path = export(hw, tmp_path)
    params = json.loads(j_path.read_text())
    assert params["config"] == hw.to_dict() and params["derived"]["exact_bits"] == hw.exact_bits
    assert params["input_fields"]["last"]["offset"] == 4 * (8 + 5)
    toolchain.apply_env()
    res = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL",
                          "--top-module", "logmac_engine", str(v_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "%Error" not in res.stderr


def test_a_build_the_router_cannot_finish_has_no_fmax_instead_of_failing(monkeypatch, full):
    """nextpnr-ice40 asserts while routing the largest builds; the area row then keeps its cell counts and says
    there is no Fmax, so a demo or compare run does not die on one build (minutes of yosys: ``--full``)."""
    if not full:
        pytest.skip("three yosys runs with --full")
    from logmac.hw import area
    from logmac.hw.config import HwConfig

    real = area.run_tool

    def router_fails(cmd, cwd):
        if cmd[0] == "nextpnr-ice40":
            raise RuntimeError("nextpnr-ice40 failed:\nAssertion failure: next_score >= 0")
        return real(cmd, cwd)

    monkeypatch.setattr(area, "run_tool", router_fails)
    verilog, wrapper = area._design(HwConfig(lanes=1, weight_bits=3), "int")
    with pytest.warns(UserWarning, match="place and route failed"):
        row = area.synthesise_verilog(verilog, wrapper, fmax=True)
    assert row["fmax_mhz"] is None and row["luts"] > 0
