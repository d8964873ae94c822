"""cocotb regression of the exponent-scheduled engine on Icarus and Verilator against logmac.sim, bit for bit:
random vectors with back-pressure and gaps, forced overflow and real house ResNet-18 codes, for both terms-store
variants and the codes store, one simulator run per build; ``--full`` adds a reset mid-stream on every build and
the real codes on the terms builds."""

from __future__ import annotations

import numpy as np
import pytest

from logmac.cosim.runner import Report
from logmac.cosim.sched_runner import run_sched_vectors
from logmac.cosim.vectors import Vectors, golden, random_requant, random_vectors
from logmac.format import GridKind, LogFormat, ZeroMode
from logmac.hw.sched_config import SchedConfig
from logmac.hw_compare import resnet_layers

pytestmark = pytest.mark.cosim


def assert_clean(rep: Report) -> None:
    print(rep.summary())
    assert rep.macs_checked > 0, "no transaction was checked"
    assert rep.mismatches == 0, rep.first_mismatch


BUILDS = [SchedConfig(variant="inplace", half="split", lanes=8, act_bits=9, max_shift=7, max_k=1024, acc_bits=32,
                      out_bits=8),
          SchedConfig(variant="bucketed", half="select", lanes=8, act_bits=9, max_shift=7, max_k=1024, acc_bits=32,
                      out_bits=8)]


@pytest.mark.parametrize("cfg", BUILDS, ids=lambda c: f"{c.variant}-{c.half}")
def test_random_overflow_back_pressure_and_reset(sim: str, cfg: SchedConfig, full: bool) -> None:
    """Each run is a simulator start-up (most of a run's wall time): the bucketed build and the reset run come
    with ``--full`` (the default tier's soak draws resets on the scheduled codes store)."""
    if cfg.variant == "bucketed" and not full:
        pytest.skip("the bucketed build (one adder tree per exponent, the variant that loses on area) with --full")
    rng = np.random.default_rng(21)
    vs = [random_vectors(LogFormat(bits, grid, zero=zero), rng, rows=3, k=int(rng.integers(5, 40)), channels=2,
                         acc_bits=int(rng.choice([16, 24, 32])), overflow=("saturate", "wrap")[n % 2],
                         act_signed=bool(n % 2), style=("random", "extreme")[n % 2])
          for n, (bits, grid, zero) in enumerate([(b, g, z) for b in (2, 3, 4) for g in GridKind for z in ZeroMode][::2])]
    vs += [random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC), rng, rows=4, k=30, channels=2, style="overflow",
                          acc_bits=acc, overflow=mode) for acc in (10, 14) for mode in ("saturate", "wrap")]
    assert sum(int(golden(v).overflow.sum()) for v in vs) > 5, "the stimulus must overflow"
    assert_clean(run_sched_vectors(vs, sim, cfg, bp=90, gap_prob=0.15, seed=1))
    if full:
        assert_clean(run_sched_vectors(vs[:4], sim, cfg, bp=60, reset_at=30, seed=2))


def real_layer_vectors(rng: np.random.Generator) -> list[Vectors]:
    """Four channels each of two conv layers of the house ResNet-18 (W4 log_dynamic codes), random uint8 rows."""
    vs = []
    for name, (codes, table, fmt) in resnet_layers(4, GridKind.LOG_DYNAMIC, ("conv1", "layer2.0.conv2")).items():
        ch = np.sort(rng.choice(codes.shape[0], 4, replace=False))
        x = rng.integers(0, 256, size=(3, codes.shape[1]))
        sub = type(table)(table.u[ch], table.h[ch], table.scale[ch])
        vs.append(Vectors(x=x, codes=codes[ch], fmt=fmt, table=sub, act_bits=8, act_signed=False, acc_bits=24,
                          name=name, **random_requant(4, 24, 8, rng)))
    return vs


def test_real_resnet18_layers(sim: str, full: bool) -> None:
    """Real codes through both variants of the terms store (the codes store runs them in its default test)."""
    if not full:
        pytest.skip("two more simulator runs with --full")
    vs = real_layer_vectors(np.random.default_rng(5))
    for cfg in BUILDS:
        assert_clean(run_sched_vectors(vs, sim, cfg, bp=40, seed=3))


CODED = SchedConfig(variant="inplace", half="split", store="codes", code_bits=4, zero_flag=True, lanes=8, act_bits=9,
                    max_shift=7, max_k=1024, acc_bits=32, out_bits=8)


def test_codes_store(sim: str, full: bool) -> None:
    """The codes-store build: every 2..4-bit grid and zero mode (re-packed to its 4-bit words with the zero
    flag), forced overflow and real ResNet-18 codes under back-pressure and idle gaps in one simulator run;
    ``--full`` adds a reset mid-stream in a second."""
    rng = np.random.default_rng(34)
    vs = [random_vectors(LogFormat(bits, grid, zero=zero), rng, rows=3, k=int(rng.integers(5, 40)), channels=2,
                         acc_bits=int(rng.choice([16, 24, 32])), overflow=("saturate", "wrap")[n % 2],
                         act_signed=bool(n % 2), style=("random", "extreme")[n % 2])
          for n, (bits, grid, zero) in enumerate([(b, g, z) for b in (2, 3, 4) for g in GridKind for z in ZeroMode])]
    vs += [random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC), rng, rows=4, k=30, channels=2, style="overflow",
                          acc_bits=acc, overflow=mode) for acc in (10, 14) for mode in ("saturate", "wrap")]
    vs += real_layer_vectors(rng)
    assert sum(int(golden(v).overflow.sum()) for v in vs) > 5, "the stimulus must overflow"
    assert_clean(run_sched_vectors(vs, sim, CODED, bp=90, gap_prob=0.15, seed=4))
    if full:
        assert_clean(run_sched_vectors(vs[:4], sim, CODED, bp=60, reset_at=30, seed=5))


def test_a_wrong_expectation_is_reported(sim: str, monkeypatch) -> None:
    import logmac.cosim.sched_runner as sr

    real = sr.golden

    def flipped(v):
        exp = real(v)
        exp.acc[0, 1] ^= 1 << 2
        return exp

    monkeypatch.setattr(sr, "golden", flipped)
    monkeypatch.setattr(sr, "check_golden", lambda *a: None)
    v = random_vectors(LogFormat(3), np.random.default_rng(1), rows=3, k=9, channels=1, acc_bits=24)
    rep = run_sched_vectors(v, sim, BUILDS[0], waves_on_failure=False)
    assert rep.mismatches == 1 and "transaction 1" in rep.first_mismatch
