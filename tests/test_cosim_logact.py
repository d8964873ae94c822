"""The AdaLog-activation engine (``logmac.hw.logact_engine``) on Icarus and Verilator against logmac.sim.

Default tier: one log-weight and one uniform-weight build per simulator (16 lanes, 6-bit AdaLog codes with
shifts up to 15, 48-bit accumulator) run every AdaLog code width 2..6, q in {10, 37, 138}, both zero modes,
random and every-word stimulus, overflow at narrow accumulators, back-pressure and gaps, a vector file round
trip, and a corrupted activation table that must be caught.  ``--full`` adds more q values and rows, every log
weight format against every-word stimulus, heavy back-pressure with a reset mid-stream, a 1-lane build and a
combinational-tree build without requantization.  Real attention tiles from the AdaLog
ViT (``logmac.backends.adalog.capture_attention_tiles``) run when ``$LOGMAC_ATTENTION_TILES`` names a saved capture,
a vector file or a folder of them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import hw_amaranth_sim
import numpy as np
import pytest
from test_cosim import assert_clean

from logmac import toolchain
from logmac.cosim.logact_runner import logact_commands, run_logact_vectors
from logmac.cosim.logact_suite import (
    INT_BUILD,
    LOG_BUILD,
    Q_FULL,
    build_for,
    load_any,
    log_weight_matrix,
    uniform_weight_matrix,
)
from logmac.cosim.logact_vectors import (
    golden,
    load_logact_vectors,
    random_logact_vectors,
    save_logact_vectors,
    vectors_from_attention_tiles,
)
from logmac.format import AdaLogFormat, FormatError, GridKind, LogFormat, UniformFormat, ZeroMode, adalog_decode_int
from logmac.hw.config import HwConfigError
from logmac.hw.logact_engine import ENGINE_NAME, LogActConfig, LogActEngine, act_table_image, export

SIMS = list(toolchain.SIMULATORS)
cosim = pytest.mark.cosim


# ---- compile-free: the activation table image and the rejected inputs ------------------------------------

def decode_image(cfg: LogActConfig, image: np.ndarray, words: np.ndarray) -> np.ndarray:
    """What the lane makes of a word: the image entry's ``m << s``, gated by its zero bit and the top flag."""
    mb, sb = cfg.mantissa_bits, cfg.act_shift_bits
    entry = image[words & (cfg.act_table_depth - 1)]
    m, s, zero = entry & ((1 << mb) - 1), (entry >> mb) & ((1 << sb) - 1), (entry >> (mb + sb)) & 1
    zero = (zero == 1) | ((words >> cfg.act_code_bits) & 1 == 1)
    return np.where(zero, 0, m << s)


@pytest.mark.parametrize("max_shift", [15, 7, 0])
def test_act_table_image_decodes_every_word_of_every_format(max_shift: int) -> None:
    """Every q 10..138, code width 2..6 and zero mode on one 6-bit build: the image equals adalog_decode_int."""
    cfg = LogActConfig(act_code_bits=6, act_max_shift=15, weight_bits=4, lanes=1)
    for bits in range(2, 7):
        for q in range(10, 139):
            for zero in (ZeroMode.CODE, ZeroMode.FLAG):
                fmt = AdaLogFormat(bits, q, zero=zero, max_shift=max_shift)
                words = np.arange(1 << fmt.storage_bits)
                got = decode_image(cfg, act_table_image(cfg, fmt), words)
                assert np.array_equal(got, adalog_decode_int(words, fmt)), fmt


def test_rejected_builds_formats_and_vectors() -> None:
    with pytest.raises(HwConfigError, match="more than 64"):
        LogActConfig(weight_bits=6, act_max_shift=15, max_k=4096)
    with pytest.raises(HwConfigError, match="act_code_bits"):
        LogActConfig(act_code_bits=9)
    small = LogActConfig(act_code_bits=4, act_max_shift=7, lanes=1)
    with pytest.raises(FormatError, match="do not fit"):
        act_table_image(small, AdaLogFormat(5, 37))
    with pytest.raises(FormatError, match="act_max_shift"):
        act_table_image(small, AdaLogFormat(4, 37))  # 15 levels on base 2 shift by up to 14
    rng = np.random.default_rng(0)
    with pytest.raises(FormatError, match="symmetric"):
        random_logact_vectors(AdaLogFormat(3, 37), UniformFormat(4, symmetric=False), rng)
    v = random_logact_vectors(AdaLogFormat(3, 37), LogFormat(4), rng, k=2000)
    with pytest.raises(ValueError, match="max_k"):
        run_logact_vectors(v, "icarus", LOG_BUILD)
    with pytest.raises(ValueError, match="uniform weights on a log-weight build"):
        run_logact_vectors(random_logact_vectors(AdaLogFormat(3, 37), UniformFormat(4), rng), "icarus", LOG_BUILD)


def test_vector_file_round_trip_and_corruption(tmp_path) -> None:
    rng = np.random.default_rng(3)
    v = random_logact_vectors(AdaLogFormat(5, 23, zero="flag"), LogFormat(4, GridKind.LOG_DYNAMIC), rng, rows=5, k=33)
    v.meta = {"layer": "blocks.0.mlp.fc2"}
    back = load_logact_vectors(save_logact_vectors(v, tmp_path / "tile.npz"))
    assert back.meta == v.meta and back.file_expected and np.array_equal(back.act_words, v.act_words)
    assert np.array_equal(golden(back).acc, golden(v).acc)
    back.file_expected["acc"] = back.file_expected["acc"] + 1
    with pytest.raises(FormatError, match="disagrees with logmac.sim"):
        golden(back)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="not a readable AdaLog vector file"):
        load_logact_vectors(tmp_path / "junk.npz")


def test_attention_tiles_convert_and_agree_with_the_emulator(tmp_path) -> None:
    """A tile file shaped like ``capture_attention_tiles`` output (accumulators from logmac.sim.adalog) reads as
    uniform-weight vectors whose golden model agrees with the tile's own accumulators."""
    from logmac.sim.adalog import adalog_acc_bits, attention_values

    rng = np.random.default_rng(4)
    fmt = AdaLogFormat(4, 41)
    words = rng.integers(0, 1 << fmt.storage_bits, size=(2, 9, 9)).astype(np.uint16)
    v_mult = rng.integers(-15, 16, size=(2, 9, 5))
    acc_bits = adalog_acc_bits(9, fmt, 15)
    res = attention_values(adalog_decode_int(words, fmt)[None], v_mult[None], acc_bits)
    tiles = {"a_words": words, "v_mult": v_mult, "acc": res.acc[0], "overflow": res.overflow[0],
             "bits": np.int64(4), "q": np.int64(41), "zero": np.array("code"), "max_shift": np.int64(fmt.max_shift),
             "acc_bits": np.int64(acc_bits), "tile_image_head": np.array([[0, 1], [3, 2]])}
    np.savez(tmp_path / "tiles.npz", **tiles)
    vs = vectors_from_attention_tiles(tmp_path / "tiles.npz")
    assert [v.name for v in vs] == ["attn_image0_head1", "attn_image3_head2"]
    assert all(v.weight_format == UniformFormat(5) and v.weights.shape == (5, 9) for v in vs)
    for v in vs:
        golden(v)  # raises if the tile's accumulators disagree with logmac.sim


def test_export_lints_clean_and_amaranth_sim_matches(tmp_path, monkeypatch) -> None:
    """Compile-free tier: the exported Verilog lints clean, and Amaranth's simulator of a 3-lane build
    (log and int weights, back-pressure) matches logmac.sim."""
    toolchain.require("verilator")
    toolchain.apply_env()
    rng = np.random.default_rng(5)
    monkeypatch.setattr(hw_amaranth_sim, "MacEngine", LogActEngine)  # the helper drives whichever engine it builds
    for kind, wfmt in (("log", LogFormat(3, GridKind.LOG_DYNAMIC, zero="none")), ("int", UniformFormat(4))):
        hw = LogActConfig(kind=kind, act_code_bits=4, act_max_shift=15, weight_bits=4, lanes=3, max_k=64, acc_bits=40)
        v_path, j_path = export(hw, tmp_path / kind)
        res = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL",
                              "--top-module", ENGINE_NAME, str(v_path)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "%Error" not in res.stderr, res.stderr[-2000:]
        assert json.loads(j_path.read_text())["derived"]["exact_bits"] == hw.exact_bits
        v = random_logact_vectors(AdaLogFormat(4, 23, zero="flag"), wfmt, rng, rows=3, k=8, channels=2, acc_bits=20)
        out = hw_amaranth_sim.run_commands(hw, logact_commands(hw, v), ready_prob=0.7)
        acc = np.array([(o >> hw.out_bits) & ((1 << hw.acc_bits) - 1) for o in out], dtype=np.int64)  # y, acc, ovf
        acc = np.where(acc >> (hw.acc_bits - 1), acc - (1 << hw.acc_bits), acc)
        assert np.array_equal(acc, golden(v).acc.ravel()), kind


# ---- cocotb on both simulators ----------------------------------------------------------------------------
# Each simulator invocation costs seconds of start-up (much more on a loaded machine), so the default tier
# packs its sets into one run per build: the log-weight matrix, the uniform-weight matrix, the failure test.

def replayed(v, tmp_path, name: str):
    """``v`` through a vector file (the format real tiles use): file == logmac.sim == RTL."""
    back = load_logact_vectors(save_logact_vectors(v, tmp_path / f"{name}.npz"))
    assert back.file_expected
    return back


@cosim
def test_log_weights(sim: str, full: bool, tmp_path) -> None:
    """AdaLog 2..6 bits x q x zero mode against log weights of 2..5 bits (every grid and zero mode in turn),
    random and every-word stimulus, overflow at 8/13/20 bits, a vector file, back-pressure and gaps."""
    rng = np.random.default_rng(100)
    vs = log_weight_matrix(rng, full)
    vs.append(replayed(random_logact_vectors(AdaLogFormat(5, 23, zero="flag"), LogFormat(4, GridKind.LOG_DYNAMIC), rng,
                                             rows=8, k=197, channels=3, acc_bits=40), tmp_path, "fc2"))
    assert_clean(run_logact_vectors(vs, sim, LOG_BUILD, bp=64, gap_prob=0.1, seed=1))


@cosim
def test_uniform_weights(sim: str, full: bool, tmp_path) -> None:
    """AdaLog words times signed 2/4/8-bit integers (attention probabilities x V, post-GELU x fc2): the same
    matrix, overflow and a vector file."""
    rng = np.random.default_rng(200)
    vs = uniform_weight_matrix(rng, full)
    vs.append(replayed(random_logact_vectors(AdaLogFormat(4, 52), UniformFormat(5), rng, rows=8, k=197, channels=4,
                                             acc_bits=40), tmp_path, "attn"))
    assert_clean(run_logact_vectors(vs, sim, INT_BUILD, bp=64, gap_prob=0.1, seed=2))


@cosim
def test_back_pressure_gaps_and_reset_mid_stream(sim: str, full: bool) -> None:
    if not full:
        pytest.skip("heavy back-pressure and a reset mid-stream run with --full (the default tier has light ones)")
    rng = np.random.default_rng(9)
    vs = [random_logact_vectors(AdaLogFormat(4, q, zero=z), LogFormat(5), rng, rows=5, k=70, channels=3, acc_bits=40)
          for q, z in ((17, "code"), (61, "flag"))]
    assert_clean(run_logact_vectors(vs, sim, LOG_BUILD, bp=170, gap_prob=0.3, seed=4))
    assert_clean(run_logact_vectors(vs, sim, LOG_BUILD, bp=100, gap_prob=0.1, reset_at=25, seed=5))


@cosim
def test_a_corrupted_activation_table_is_caught(sim: str) -> None:
    """Flip one mantissa bit of the largest level in the loaded activation table: the run must report it."""
    rng = np.random.default_rng(1)
    afmt = AdaLogFormat(3, 37)
    v = random_logact_vectors(afmt, LogFormat(3), rng, rows=3, k=16, channels=1, style="extreme", acc_bits=40)
    image = act_table_image(LOG_BUILD, afmt)
    largest = int(np.flatnonzero(adalog_decode_int(np.arange(8), afmt) == afmt.integer_levels()[0])[0])
    image[largest] ^= 1 << 1  # a mantissa bit
    rep = run_logact_vectors(v, sim, LOG_BUILD, act_image=image, waves_on_failure=False)
    print(rep.summary())
    assert rep.mismatches > 0 and "transaction" in rep.first_mismatch


@cosim
@pytest.mark.parametrize("hw", [
    LogActConfig(kind="log", act_code_bits=4, act_max_shift=15, weight_bits=4, lanes=1, max_k=256, acc_bits=40),
    LogActConfig(kind="int", act_code_bits=3, act_max_shift=14, weight_bits=4, lanes=3, max_k=128, acc_bits=32,
                 pipe_every=0, requant=False),
], ids=lambda hw: f"{hw.kind}-a{hw.act_code_bits}-w{hw.weight_bits}-l{hw.lanes}-pipe{hw.pipe_every}")
def test_more_builds(sim: str, hw: LogActConfig, full: bool) -> None:
    if not full:
        pytest.skip("extra builds run with --full")
    rng = np.random.default_rng(hw.lanes)
    wfmts = [LogFormat(b, g) for b in range(2, hw.weight_bits + 1) for g in GridKind] if hw.kind == "log" \
        else [UniformFormat(b) for b in range(2, hw.weight_bits + 1)]
    vs = [random_logact_vectors(AdaLogFormat(bits, q, zero=z), wfmts[n % len(wfmts)], rng, rows=3, k=37,
                                acc_bits=hw.acc_bits, requant=hw.requant)
          for n, (bits, q, z) in enumerate((b, q, z) for b in range(2, hw.act_code_bits + 1) for q in Q_FULL
                                           for z in ("code", "flag"))]
    assert_clean(run_logact_vectors(vs, sim, hw, bp=32, gap_prob=0.05, seed=6))


@cosim
def test_real_attention_tiles(sim: str) -> None:
    """attn@V tiles captured from the AdaLog ViT: ``$LOGMAC_ATTENTION_TILES`` names a saved capture, a vector file
    or a folder of vector files (``logmac.backends.adalog.save_attention_vectors``)."""
    path = os.environ.get("LOGMAC_ATTENTION_TILES")
    if not path:
        pytest.skip("set LOGMAC_ATTENTION_TILES to saved attention tiles (logmac.backends.adalog capture)")
    files = sorted(Path(path).glob("*.npz")) if Path(path).is_dir() else [Path(path)]
    vs = [v for f in files for v in load_any(f)]
    assert vs, f"no vector files in {path}"
    for group in ([v for v in vs if v.is_log], [v for v in vs if not v.is_log]):
        if group:
            assert_clean(run_logact_vectors(group, sim, build_for(group)))
