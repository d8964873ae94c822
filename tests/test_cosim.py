"""The cocotb regression: the exported RTL on Icarus and Verilator against logmac.sim, bit for bit.

CI tier: one generic build per simulator and lane count (6-bit words, a 9-bit signed activation port that
carries int8 and uint8, 32-bit accumulator) runs every grid kind, zero mode, code width 2..6 and
approximation setting from run-time loaded tables; ``--full`` adds more builds and larger sets.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_hw import all_formats

from logmac import toolchain
from logmac.cosim import runner
from logmac.cosim.runner import Report, run_vectors
from logmac.cosim.vectors import golden, load_vectors, random_vectors, save_vectors
from logmac.format import GridKind, LogFormat, UniformFormat, ZeroMode
from logmac.hw.config import HwConfig

pytestmark = pytest.mark.cosim
SIMS = list(toolchain.SIMULATORS)


def generic(lanes: int) -> HwConfig:
    return HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=lanes, acc_bits=32, max_k=4096)


def assert_clean(rep: Report) -> None:
    print(rep.summary())
    assert rep.macs_checked > 0, "no transaction was checked"
    assert rep.mismatches == 0, rep.first_mismatch


@pytest.mark.parametrize("lanes", [16, 1])
def test_every_format_from_one_build(sim: str, lanes: int, full: bool) -> None:
    """2..6-bit codes, every grid, zero mode and approximation setting; random and every-code stimulus."""
    rng = np.random.default_rng(1000 + lanes)
    formats = all_formats()
    if lanes == 1 and not full:
        formats = formats[::5]
    vs = []
    for n, fmt in enumerate(formats):
        signed = bool(n % 2)
        vs.append(random_vectors(fmt, rng, rows=6 if full else 3, k=21, channels=2, act_signed=signed,
                                 acc_bits=int(rng.choice([20, 24, 32])), overflow=("saturate", "wrap")[n % 2]))
        if fmt.hardware_approx:  # the integer datapath ignores the flag: one every-code run per format suffices
            vs.append(random_vectors(fmt, rng, rows=2, k=1 << fmt.storage_bits, channels=1, style="every_code",
                                     act_signed=signed, acc_bits=32))
    assert_clean(run_vectors(vs, sim, generic(lanes), bp=64, gap_prob=0.1, seed=lanes))


def test_overflow_saturate_and_wrap(sim: str) -> None:
    """Narrow run-time accumulators against extreme, same-sign products: the fit and the sticky flag."""
    rng = np.random.default_rng(7)
    vs = [random_vectors(LogFormat(bits, grid, zero=ZeroMode.CODE), rng, rows=4, k=40, channels=2, style=style,
                         acc_bits=acc, overflow=mode, act_signed=bool(acc % 2))
          for bits, grid in ((3, GridKind.LOG_2), (5, GridKind.LOG_DYNAMIC), (6, GridKind.LOG_SQRT2))
          for style in ("overflow", "extreme") for acc in (8, 13, 20) for mode in ("saturate", "wrap")]
    assert sum(int(golden(v).overflow.sum()) for v in vs) > 50, "the stimulus must overflow"
    assert_clean(run_vectors(vs, sim, generic(16), seed=2))


def test_back_pressure_gaps_and_reset_mid_stream(sim: str) -> None:
    rng = np.random.default_rng(9)
    vs = [random_vectors(LogFormat(4, zero=z), rng, rows=6, k=70, channels=3, acc_bits=24) for z in ZeroMode]
    assert_clean(run_vectors(vs, sim, generic(16), bp=170, gap_prob=0.3, seed=3))
    assert_clean(run_vectors(vs, sim, generic(16), bp=100, gap_prob=0.1, reset_at=25, seed=4))


def test_trace_file_round_trip(sim: str, tmp_path) -> None:
    """A trace in the emulator's format (logmac.sim.trace) replayed into the RTL; its expected arrays are
    checked against logmac.sim as well (trace == emulator == RTL)."""
    rng = np.random.default_rng(12)
    v = random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC), rng, rows=16, k=147, channels=4, acc_bits=24,
                       act_signed=False)
    v.name = "conv_like"
    path = save_vectors(v, tmp_path / "layer.npz")
    back = load_vectors(path)
    assert back.trace_expected and np.array_equal(back.codes, v.codes)
    assert_clean(run_vectors(back, sim, generic(16)))


def test_a_wrong_expectation_is_reported_with_a_waveform(sim: str, monkeypatch) -> None:
    """Flip one expected accumulator bit: the run must report it, name the transaction and keep waves."""
    real = runner.golden

    def flipped(v):
        exp = real(v)
        exp.acc[0, 1] ^= 1 << 2
        return exp

    monkeypatch.setattr(runner, "golden", flipped)
    v = random_vectors(LogFormat(3), np.random.default_rng(1), rows=3, k=9, channels=1, acc_bits=24)
    rep = run_vectors(v, sim, generic(16))
    print(rep.summary())
    assert rep.mismatches == 1 and "transaction 1 (channel 0, row 1)" in rep.first_mismatch
    assert rep.waveform is not None


@pytest.mark.parametrize("hw", [
    HwConfig(weight_bits=4, act_bits=8, act_signed=False, lanes=16, acc_bits=24, max_k=1024, out_bits=8),
    HwConfig(weight_bits=3, act_bits=4, act_signed=True, lanes=3, acc_bits=16, max_k=128, pipe_every=0),
    HwConfig(weight_bits=6, act_bits=8, act_signed=True, lanes=8, acc_bits=40, max_k=1 << 14, pipe_every=2),
    HwConfig(kind="int", weight_bits=4, act_bits=8, act_signed=False, lanes=16, acc_bits=24, out_bits=8),
    HwConfig(kind="int", weight_bits=8, act_bits=8, act_signed=True, lanes=1, acc_bits=32),
], ids=lambda hw: f"{hw.kind}-w{hw.weight_bits}-a{hw.act_bits}{'s' if hw.act_signed else 'u'}-l{hw.lanes}-acc{hw.acc_bits}")
def test_more_builds(sim: str, hw: HwConfig, full: bool) -> None:
    if not full:
        pytest.skip("extra builds run with --full")
    rng = np.random.default_rng(hw.lanes)
    vs = []
    for style in ("random", "every_code", "extreme", "overflow"):
        for acc in (hw.acc_bits, max(8, hw.acc_bits // 2)):
            fmt = (LogFormat(hw.weight_bits, list(GridKind)[int(rng.integers(len(GridKind)))], zero=ZeroMode.FLAG)
                   if hw.kind == "log" else UniformFormat(hw.weight_bits))
            vs.append(random_vectors(fmt, rng, rows=5, k=37, channels=2, style=style, acc_bits=acc,
                                     act_bits=hw.act_bits, act_signed=hw.act_signed, out_bits=hw.out_bits,
                                     overflow=("saturate", "wrap")[acc % 2]))
    assert_clean(run_vectors(vs, sim, hw, bp=80, gap_prob=0.2, seed=5))
