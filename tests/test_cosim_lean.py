"""The lean log engine's RTL on Icarus and Verilator against logmac.sim, through the general engine's bench and
vectors (a ``HwConfig(lean=True)`` build takes the same beats and config writes)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cosim import assert_clean
from test_hw import all_formats

from logmac.cosim.runner import run_vectors
from logmac.cosim.vectors import golden, random_vectors
from logmac.format import GridKind, LogFormat, ZeroMode
from logmac.hw.config import HwConfig

pytestmark = pytest.mark.cosim


def lean(lanes: int = 16) -> HwConfig:
    return HwConfig(weight_bits=6, act_bits=9, act_signed=True, lanes=lanes, acc_bits=32, max_k=4096, lean=True)


def test_lean_every_format_with_back_pressure(sim: str) -> None:
    """2..6-bit codes, every grid, zero mode and approximation setting, random and every-code stimulus."""
    rng = np.random.default_rng(1600)
    vs = []
    for n, fmt in enumerate(all_formats()):
        vs.append(random_vectors(fmt, rng, rows=3, k=21, channels=2, act_signed=bool(n % 2),
                                 acc_bits=int(rng.choice([20, 24, 32])), overflow=("saturate", "wrap")[n % 2]))
        if fmt.hardware_approx:
            vs.append(random_vectors(fmt, rng, rows=2, k=1 << fmt.storage_bits, channels=1, style="every_code",
                                     act_signed=bool(n % 2), acc_bits=32))
    assert_clean(run_vectors(vs, sim, lean(), bp=96, gap_prob=0.1, seed=16))


def test_lean_forced_overflow_with_back_pressure(sim: str) -> None:
    rng = np.random.default_rng(1601)
    vs = [random_vectors(LogFormat(bits, grid, zero=ZeroMode.CODE), rng, rows=4, k=40, channels=2, style=style,
                         acc_bits=acc, overflow=mode, act_signed=bool(acc % 2))
          for bits, grid in ((3, GridKind.LOG_2), (5, GridKind.LOG_DYNAMIC), (6, GridKind.LOG_SQRT2))
          for style in ("overflow", "extreme") for acc in (8, 13, 20) for mode in ("saturate", "wrap")]
    assert sum(int(golden(v).overflow.sum()) for v in vs) > 50, "the stimulus must overflow"
    assert_clean(run_vectors(vs, sim, lean(), bp=128, gap_prob=0.2, seed=17))
    assert_clean(run_vectors(vs[:6], sim, lean(5), bp=64, reset_at=30, seed=18))
