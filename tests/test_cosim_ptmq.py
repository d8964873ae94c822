"""Multi-bit (PTMQ) codes on the RTL: the precision register switched mid-run, checked bit for bit against
``logmac.sim`` at every width, on Icarus and Verilator.

One stream per nesting: per channel the decode table is loaded once, then W3 -> W6 -> W4 -> W3 segments
each write the precision register and that width's requantization constants and stream their own rows.
Both nestings run as two jobs of one simulator process (one build, shared with ``benchmarks/ptmq_results.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from logmac.cosim.multibit import MultiBitVectors, build_multibit_commands, multibit_build, random_multibit, run_multibit
from logmac.format import FormatError, LogFormat
from logmac.format.nested import NEST_MODES
from logmac.hw.regmap import nest_writes

pytestmark = pytest.mark.cosim
SCHEDULE = [3, 6, 4, 3]


def test_precision_switch_mid_run_matches_sim_at_every_width(sim: str) -> None:
    rng = np.random.default_rng(7)
    runs = [random_multibit(LogFormat(6, zero=zero), SCHEDULE, nest, rng, rows=3, k=37, channels=2)
            for nest, zero in zip(NEST_MODES, ("code", "flag"), strict=True)]
    rep = run_multibit(runs, sim, multibit_build(), bp=48, gap_prob=0.1, seed=1)
    print(rep.summary())
    assert rep.transactions == sum(len(SCHEDULE) * 3 * 2 for _ in runs)
    assert rep.mismatches == 0, rep.first_mismatch


def test_the_stream_switches_by_register_not_by_reloading_the_table() -> None:
    """Compile-free: one table load per channel, one precision write per segment."""
    hw = multibit_build()
    mv = random_multibit(LogFormat(6), SCHEDULE, "coarsen", np.random.default_rng(1), rows=2, k=16, channels=2)
    cmds = build_multibit_commands(hw, mv)
    kind = cmds[:, -2:] @ np.array([1, 2])
    cfg_rows = int((kind == 1).sum())
    per_segment = 3 + 6  # acc/wrap/clear + six requant registers
    assert cfg_rows == mv.channels * (hw.table_depth + len(SCHEDULE) * (per_segment + 1))


def test_bad_precision_inputs_are_refused() -> None:
    hw = multibit_build()
    with pytest.raises(FormatError, match="does not fit"):
        nest_writes(hw, 64, 0, 31)
    mv = random_multibit(LogFormat(6), [3, 4], "coarsen", np.random.default_rng(2), rows=2, k=8, channels=1)
    mv.segments[1].bits = 3  # the codes of a 4-bit view labelled as 3-bit
    with pytest.raises(FormatError, match="nesting"):
        MultiBitVectors(mv.codes, mv.fmt, mv.table, mv.nest, mv.segments)
