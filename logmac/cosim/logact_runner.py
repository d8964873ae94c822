"""Run AdaLog-activation vectors (``logact_vectors``) through ``LogActEngine`` on Icarus or Verilator.

Same bench, build cache, job runner and scoreboard as the weight engine (``logmac.cosim.runner``); only the
command stream differs: each channel's block writes the accumulator/requant registers and the channel's
weight decode table, the first block also loads the activation table, then the data beats carry ``lanes``
AdaLog words, ``lanes`` weight words and ``last``.
"""

from __future__ import annotations

import time

import numpy as np

from logmac.cosim.logact_vectors import LogActVectors, golden
from logmac.cosim.runner import Report, plan_jobs, score_jobs
from logmac.cosim.stream import TbLayout, add_gaps, config_rows, data_rows, lane_beats
from logmac.format import adalog_words
from logmac.hw.logact_engine import LogActConfig, act_table_image
from logmac.hw.regmap import Requant, channel_writes, int_words, table_image


def logact_config_for(vectors: list[LogActVectors], lanes: int = 16) -> LogActConfig:
    """A build that runs all ``vectors``: their widest codes and shifts, their longest K, their widest accumulator."""
    kinds = {"log" if v.is_log else "int" for v in vectors}
    if len(kinds) != 1:
        raise ValueError("one run takes either log-weight or uniform-weight vectors, not both")
    kind = kinds.pop()
    return LogActConfig(kind=kind, act_code_bits=max(max(v.act_format.bits for v in vectors), 2),
                        act_max_shift=max(v.act_format.top_shift for v in vectors),
                        weight_bits=max(v.weight_format.bits for v in vectors), lanes=lanes,
                        max_k=max(v.k for v in vectors), acc_bits=max(32, max(v.acc_bits for v in vectors)))


def check_fits(hw: LogActConfig, v: LogActVectors) -> None:
    """Raise ValueError if ``v`` cannot run on the build ``hw`` (names the limit)."""
    if v.k > hw.max_k:
        raise ValueError(f"{v.name}: K={v.k} exceeds the build's max_k={hw.max_k} (guard bits would not be exact)")
    if v.is_log != (hw.kind == "log"):
        raise ValueError(f"{v.name}: {'log' if v.is_log else 'uniform'} weights on a {hw.kind}-weight build")
    if v.weight_format.bits > hw.weight_bits:
        raise ValueError(f"{v.name}: {v.weight_format.bits}-bit weights on a build for {hw.weight_bits}-bit weights")


def logact_commands(hw: LogActConfig, v: LogActVectors, rng: np.random.Generator | None = None,
                    gap_prob: float = 0.0, max_gap: int = 4, act_image: np.ndarray | None = None) -> np.ndarray:
    """The command stream (bit matrix, one row per command) that runs every channel of ``v``.

    ``act_image`` overrides the activation table loaded (default: ``act_table_image`` of ``v``'s format);
    the failure test uses it to load a corrupted table.
    """
    lay = TbLayout.of(hw)
    # padding: zero activations, since log formats without a zero code have no zero weight word
    zero_word = int(adalog_words(np.array([v.act_format.nonzero_levels]), v.act_format)[0])
    words = v.weights if v.is_log else int_words(hw, v.weights)
    image = act_table_image(hw, v.act_format) if act_image is None else act_image
    blocks = []
    for c in range(v.channels):
        rq = None
        if v.multiplier is not None and hw.requant:
            rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
        writes = channel_writes(hw, v.acc_bits, v.overflow, rq)
        if v.is_log:
            entries = table_image(hw, v.weight_format, v.table, c)
            writes += [(hw.weight_table_base + a, int(e)) for a, e in enumerate(entries)]
        if c == 0:
            writes += [(hw.act_table_base + a, int(e)) for a, e in enumerate(image)]
        beats = lane_beats(v.act_words, hw.act_bits, words[c], hw.word_bits, hw.lanes, x_pad=zero_word)
        blocks += [config_rows(lay, hw.cfg_addr_bits, writes), data_rows(lay, beats)]
    return add_gaps(np.concatenate(blocks), lay, rng, gap_prob, max_gap)


def run_logact_vectors(vectors: LogActVectors | list[LogActVectors], sim: str = "verilator",
                       config: LogActConfig | None = None, *, bp: int = 0, gap_prob: float = 0.0,
                       reset_at: int | None = None, seed: int = 0, waves_on_failure: bool = True,
                       act_image: np.ndarray | None = None, workers: int | None = None) -> Report:
    """Run AdaLog vector sets through ``LogActEngine`` on ``sim``; score every transaction against ``logmac.sim``.

    Arguments and report as :func:`logmac.cosim.runner.run_vectors`; ``act_image`` replaces the activation
    table of every set (for the failure test).
    """
    t_start = time.perf_counter()
    vs = [vectors] if isinstance(vectors, LogActVectors) else list(vectors)
    hw = config or logact_config_for(vs)
    rng = np.random.default_rng(seed)
    for v in vs:
        check_fits(hw, v)
    exps = [golden(v) for v in vs]
    vs, exps, jobs = plan_jobs(vs, exps, lambda v, gaps: logact_commands(hw, v, gaps, gap_prob=gap_prob, act_image=act_image),
                               rng, bp=bp, reset_at=reset_at)
    return score_jobs(hw, sim, vs, exps, jobs, waves_on_failure=waves_on_failure, t_start=t_start,
                      workers=workers)
