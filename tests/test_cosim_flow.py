"""The co-simulation flow around the bench: binary stimulus and capture files, tiles that fit the bench's
memories, and jobs shared out over several simulator processes (the same report as one process)."""

from __future__ import annotations

import numpy as np
import pytest

from logmac.cosim import runner
from logmac.cosim.runner import Job, fit_tiles, plan_jobs, run_vectors, shard
from logmac.cosim.stream import TbLayout, bits_of, build_commands, read_capture, write_stimulus
from logmac.cosim.vectors import golden, random_vectors
from logmac.format import LogFormat
from logmac.hw.config import HwConfig

GENERIC = HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=16, acc_bits=32, max_k=4096)


@pytest.mark.parametrize("width", [1, 7, 9, 32, 63, 64])
def test_bits_of_is_twos_complement_lsb_first(width: int) -> None:
    rng = np.random.default_rng(width)
    values = rng.integers(-(1 << 62), 1 << 62, size=(4, 5))
    values[0, :3] = (-1, 0, np.iinfo(np.int64).min)
    bits = bits_of(values, width)
    assert bits.shape == (4, 5, width) and bits.dtype == np.uint8
    for v, b in zip(values.ravel().tolist(), bits.reshape(-1, width), strict=True):
        assert row_value(b) == v % (1 << width)
    assert bits_of(values, 0).shape == (4, 5, 0)
    with pytest.raises(ValueError, match="0..64"):
        bits_of(values, 65)


def row_value(bits: np.ndarray) -> int:
    return sum(int(b) << i for i, b in enumerate(bits))


@pytest.mark.parametrize("width", [1, 8, 13, 251])
def test_stimulus_records_are_whole_bytes_most_significant_first(tmp_path, width: int) -> None:
    rows = np.random.default_rng(width).integers(0, 2, size=(7, width)).astype(np.uint8)
    rows[0] = 1  # all ones: the top bit of the record is set
    write_stimulus(rows, tmp_path / "stim.bin")
    data = (tmp_path / "stim.bin").read_bytes()
    size = -(-width // 8)
    assert len(data) == len(rows) * size
    for n, row in enumerate(rows):
        assert int.from_bytes(data[n * size:(n + 1) * size], "big") == row_value(row)


@pytest.mark.parametrize("requant", [True, False])
def test_capture_fields_read_back(tmp_path, requant: bool) -> None:
    """A ``$writememh`` dump (with Icarus' address comment) of known beats parses to the same fields."""
    hw = HwConfig(weight_bits=6, act_bits=9, lanes=4, acc_bits=40, requant=requant)
    rng = np.random.default_rng(3)
    n = 50
    y = rng.integers(-(1 << (hw.out_bits - 1)), 1 << (hw.out_bits - 1), size=n)
    acc = rng.integers(-(1 << (hw.acc_bits - 1)), 1 << (hw.acc_bits - 1), size=n)
    acc[:2] = (-(1 << (hw.acc_bits - 1)), (1 << (hw.acc_bits - 1)) - 1)
    ovf = rng.integers(0, 2, size=n)
    cycle = rng.integers(0, 1 << 32, size=n)
    digits = -(-TbLayout.of(hw).cap_bits // 4)
    words = []
    for i in range(n):
        w, off = 0, 0
        if requant:
            w, off = int(y[i]) & ((1 << hw.out_bits) - 1), hw.out_bits
        w |= (int(acc[i]) & ((1 << hw.acc_bits) - 1)) << off
        w |= int(ovf[i]) << (off + hw.acc_bits)
        w |= int(cycle[i]) << (off + hw.acc_bits + 1)
        words.append(f"{w:0{digits}x}")
    (tmp_path / "capture.hex").write_text("// 0x00000000\n" + "\n".join(words) + "\n")
    cap = read_capture(hw, tmp_path / "capture.hex")
    np.testing.assert_array_equal(cap.acc, acc)
    np.testing.assert_array_equal(cap.overflow, ovf.astype(bool))
    np.testing.assert_array_equal(cap.cycle, cycle)
    if requant:
        np.testing.assert_array_equal(cap.y, y)
    else:
        assert cap.y is None
    assert read_capture(hw, tmp_path / "missing.hex").acc.size == 0
    (tmp_path / "bad.hex").write_text(words[0] + "\n" + "x" * digits + "\n")
    with pytest.raises(ValueError, match="capture word 1 is not hex"):
        read_capture(hw, tmp_path / "bad.hex")


BIG = 1 << 17


@pytest.mark.parametrize(("rows", "k", "channels", "cmd_depth", "cap_depth", "job_commands"),
                         [(9, 300, 3, 200, BIG, BIG), (9, 300, 3, BIG, 8, BIG), (1, 300, 5, 100, BIG, BIG),
                          (9, 300, 3, BIG, BIG, 300), (9, 1, 3, 240, BIG, BIG), (3, 300, 2, BIG, BIG, BIG)])
def test_tiles_fit_the_bench_and_cover_the_set(monkeypatch, rows: int, k: int, channels: int, cmd_depth: int,
                                                cap_depth: int, job_commands: int) -> None:
    """Row tiles (channel tiles when one row is too large), each within both memories and the job size,
    together every transaction once, each with the emulator's expected values for exactly that tile; sized
    from one row's stream for a large set (K = 300), cut after the whole stream is built for a small one whose
    set-up commands outnumber its MACs (K = 1)."""
    monkeypatch.setattr(runner, "CMD_DEPTH", cmd_depth)
    monkeypatch.setattr(runner, "CAP_DEPTH", cap_depth)
    monkeypatch.setattr(runner, "JOB_COMMANDS", job_commands)
    v = random_vectors(LogFormat(4), np.random.default_rng(rows), rows=rows, k=k, channels=channels)
    v.x[:, 0], v.codes[:, 0] = np.arange(rows), np.arange(channels)  # each row and channel known by its first entry
    tiles = fit_tiles(v, golden(v), lambda t, gaps: build_commands(GENERIC, t, gaps))
    whole = golden(v)
    covered = np.zeros((channels, rows), dtype=int)
    for tile, exp, cmds in tiles:
        assert len(cmds) <= min(cmd_depth, job_commands) and tile.rows * tile.channels <= cap_depth
        np.testing.assert_array_equal(cmds, build_commands(GENERIC, tile))
        np.testing.assert_array_equal(exp.acc, golden(tile).acc)
        np.testing.assert_array_equal(exp.y, golden(tile).y)
        r, c = tile.x[:, 0], tile.codes[:, 0]
        covered[np.ix_(c, r)] += 1
        np.testing.assert_array_equal(exp.acc, whole.acc[np.ix_(c, r)])
    assert (covered == 1).all()
    assert (len(tiles) == 1) == (cmd_depth == cap_depth == job_commands == BIG)


def test_a_set_no_tile_can_hold_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(runner, "CMD_DEPTH", 10)
    v = random_vectors(LogFormat(4), np.random.default_rng(0), rows=1, k=400, channels=1)
    with pytest.raises(ValueError, match="one row of one channel"):
        fit_tiles(v, golden(v), lambda t, gaps: build_commands(GENERIC, t, gaps))


def test_plan_jobs_keeps_order_and_expected_beats(monkeypatch) -> None:
    monkeypatch.setattr(runner, "CMD_DEPTH", 200)
    rng = np.random.default_rng(5)
    vs = [random_vectors(LogFormat(3), rng, rows=r, k=100, channels=2) for r in (1, 12, 2)]
    tiles, exps, jobs = plan_jobs(vs, [golden(v) for v in vs], lambda t, gaps: build_commands(GENERIC, t, gaps), rng)
    assert len(tiles) == len(exps) == len(jobs) > len(vs)
    assert [t.name for t in tiles][0] == vs[0].name and tiles[-1].name == vs[-1].name
    assert sum(t.rows * t.channels for t in tiles) == sum(v.rows * v.channels for v in vs)
    assert all(j.expected_beats == t.rows * t.channels for t, j in zip(tiles, jobs, strict=True))


def test_shards_cover_every_job_once_and_balance_commands() -> None:
    sizes = [50, 10, 40, 30, 20, 20, 5]
    jobs = [Job(np.zeros((n, 1), dtype=np.uint8)) for n in sizes]
    shards = shard(jobs, 2)
    assert sorted(n for s in shards for n in s) == list(range(len(jobs)))
    assert all(s == sorted(s) for s in shards)
    loads = [sum(sizes[n] for n in s) for s in shards]
    assert max(loads) - min(loads) <= min(sizes)
    assert shard(jobs[:1], 2) == [[0]]
    assert runner.default_workers(jobs) == 1  # too few commands to pay for a second process start


def test_two_processes_give_the_serial_report(sim: str) -> None:
    """The same vector sets in one simulator process and in two side by side: the same checks and cycles."""
    rng = np.random.default_rng(11)
    vs = [random_vectors(LogFormat(bits), rng, rows=3, k=40, channels=2, style=style)
          for bits in (3, 5) for style in ("random", "extreme")]
    serial = run_vectors(vs, sim, GENERIC, bp=32, gap_prob=0.1, seed=4, workers=1)
    parallel = run_vectors(vs, sim, GENERIC, bp=32, gap_prob=0.1, seed=4, workers=2)
    assert serial.passed and parallel.passed
    for key in ("transactions", "macs_checked", "mismatches", "cycles"):
        assert getattr(parallel, key) == getattr(serial, key), key
    assert parallel.checks == serial.checks


def test_a_set_larger_than_the_bench_runs_as_tiles(sim: str, monkeypatch, full: bool) -> None:
    """A small bench (its own build) and a set several times its size: every transaction is still checked."""
    if sim == "verilator" and not full:
        pytest.skip("a Verilator build of the small bench runs with --full")
    monkeypatch.setattr(runner, "CMD_DEPTH", 256)
    monkeypatch.setattr(runner, "CAP_DEPTH", 16)
    v = random_vectors(LogFormat(5), np.random.default_rng(2), rows=10, k=100, channels=3)
    rep = run_vectors(v, sim, GENERIC, bp=64, seed=1)
    assert rep.passed, rep.first_mismatch
    assert len(rep.checks) > 2 and rep.transactions == v.rows * v.channels


def test_the_build_key_follows_the_bench_memories_and_the_build_flags(monkeypatch) -> None:
    keys = {sim: runner.build_key(GENERIC, sim, False) for sim in ("icarus", "verilator")}
    monkeypatch.setattr(runner, "_VERILATOR_MAKEFLAGS", runner._VERILATOR_MAKEFLAGS + " OPT_FAST=-O3")
    assert runner.build_key(GENERIC, "verilator", False) != keys["verilator"]
    assert runner.build_key(GENERIC, "icarus", False) == keys["icarus"]
    monkeypatch.setattr(runner, "CMD_DEPTH", runner.CMD_DEPTH // 2)
    assert runner.build_key(GENERIC, "icarus", False) != keys["icarus"]
