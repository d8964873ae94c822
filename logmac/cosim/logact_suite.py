"""The built-in AdaLog-activation regression: what ``logmac cosim --logact`` runs and tests/test_cosim_logact.py
checks, on one log-weight and one uniform-weight build."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logmac.cosim.logact_runner import check_fits, logact_config_for, run_logact_vectors
from logmac.cosim.logact_vectors import (
    LogActVectors,
    golden,
    load_logact_vectors,
    random_logact_vectors,
    vectors_from_attention_tiles,
)
from logmac.cosim.runner import Report
from logmac.format import AdaLogFormat, FormatError, GridKind, LogFormat, UniformFormat, ZeroMode
from logmac.format.arrays import read_npz
from logmac.hw.logact_engine import LogActConfig, check_act_format

# 16 lanes, 6-bit AdaLog codes with shifts up to 15 (every q at every width 2..6), 48-bit accumulator.
LOG_BUILD = LogActConfig(kind="log", act_code_bits=6, act_max_shift=15, weight_bits=5, lanes=16, max_k=1024, acc_bits=48)
INT_BUILD = LogActConfig(kind="int", act_code_bits=6, act_max_shift=15, weight_bits=8, lanes=16, max_k=1024, acc_bits=48)
Q_DEFAULT = (10, 37, 138)  # the ends of AdaLog's search range and plain base 2
Q_FULL = (10, 13, 23, 37, 52, 74, 100, 137, 138)


def act_formats(full: bool = False) -> list[AdaLogFormat]:
    """AdaLog code widths 2..6 x q x both zero modes."""
    return [AdaLogFormat(bits, q, zero=zero) for bits in range(2, 7) for q in (Q_FULL if full else Q_DEFAULT)
            for zero in (ZeroMode.CODE, ZeroMode.FLAG)]


def log_weight_formats() -> list[LogFormat]:
    """Every log weight format the log build runs: 2..5 bits x grid x zero mode."""
    return [LogFormat(bits, grid, zero=zero) for bits in range(2, 6) for grid in GridKind for zero in ZeroMode]


def overflow_sets(rng: np.random.Generator, wfmt: LogFormat | UniformFormat) -> list[LogActVectors]:
    """Narrow run-time accumulators (8/13/20 bits, saturate and wrap) against the largest levels times the largest
    weights: the fit and the sticky flag."""
    vs = [random_logact_vectors(afmt, wfmt, rng, rows=4, k=40, style=style, acc_bits=acc, overflow=mode)
          for afmt in (AdaLogFormat(3, 10), AdaLogFormat(6, 138, zero="flag"))
          for style in ("overflow", "extreme") for acc in (8, 13, 20) for mode in ("saturate", "wrap")]
    if sum(int(golden(v).overflow.sum()) for v in vs) <= 50:
        raise AssertionError("the overflow stimulus must overflow")
    return vs


def log_weight_matrix(rng: np.random.Generator, full: bool = False) -> list[LogActVectors]:
    """Every AdaLog format against log weights of 2..5 bits (every grid and zero mode in turn): random and
    every-word stimulus, saturate/wrap at 24/32/48 bits, then the overflow sets."""
    wfmts = log_weight_formats()
    vs = []
    for n, afmt in enumerate(act_formats(full)):
        wfmt = wfmts[n % len(wfmts)]
        acc, mode = (24, 32, 48)[n % 3], ("saturate", "wrap")[n % 2]
        vs.append(random_logact_vectors(afmt, wfmt, rng, rows=4 if full else 2, k=21, acc_bits=acc, overflow=mode))
        vs.append(random_logact_vectors(afmt, wfmt, rng, rows=1, k=1 << afmt.storage_bits, channels=1,
                                        style="every_code", acc_bits=48))
    if full:
        vs += [random_logact_vectors(AdaLogFormat(4, 29), w, rng, rows=2, k=1 << w.storage_bits, channels=2,
                                     style="every_code") for w in wfmts]
    return vs + overflow_sets(rng, LogFormat(4, GridKind.LOG_SQRT2))


def uniform_weight_matrix(rng: np.random.Generator, full: bool = False) -> list[LogActVectors]:
    """Every AdaLog format against signed 2/4/8-bit integers (attention probabilities x V, post-GELU x fc2):
    random, extreme and every-word stimulus, then the overflow sets."""
    vs = []
    for n, afmt in enumerate(act_formats(full)):
        wfmt = UniformFormat((2, 4, 8)[n % 3])
        vs.append(random_logact_vectors(afmt, wfmt, rng, rows=4 if full else 2, k=21, acc_bits=(13, 32, 48)[n % 3],
                                        overflow=("saturate", "wrap")[n % 2], style=("random", "extreme")[n % 2]))
        vs.append(random_logact_vectors(afmt, wfmt, rng, rows=1, k=1 << afmt.storage_bits, channels=1,
                                        style="every_code"))
    return vs + overflow_sets(rng, UniformFormat(8))


def load_any(path: str | Path) -> list[LogActVectors]:
    """A vector file (``save_logact_vectors``) or a saved attention-tile capture (``capture_attention_tiles``)."""
    arrays = read_npz(path, "AdaLog vector file or attention-tile capture")
    return vectors_from_attention_tiles(arrays, Path(path).stem) if "a_words" in arrays else [load_logact_vectors(path)]


def build_for(vectors: list[LogActVectors]) -> LogActConfig:
    """The standard build of the vectors' weight kind if they all run on it, else one sized for them."""
    standard = LOG_BUILD if vectors[0].is_log else INT_BUILD
    try:
        for v in vectors:
            check_fits(standard, v)
            check_act_format(standard, v.act_format)
            if v.acc_bits > standard.acc_bits:
                raise ValueError("accumulator too wide")
    except (ValueError, FormatError):
        return logact_config_for(vectors)
    return standard


def run_suite(sim: str, paths: tuple[str, ...] = (), *, full: bool = False, bp: int = 64, gap_prob: float = 0.1,
              reset_at: int | None = None, seed: int = 0) -> list[Report]:
    """Run vector files (grouped by weight kind), or the built-in log- and uniform-weight matrices, on ``sim``."""
    rng = np.random.default_rng(seed)
    if paths:
        vs = [v for p in paths for v in load_any(p)]
        groups = [g for g in ([v for v in vs if v.is_log], [v for v in vs if not v.is_log]) if g]
        runs = [(g, build_for(g)) for g in groups]
    else:
        runs = [(log_weight_matrix(rng, full), LOG_BUILD), (uniform_weight_matrix(rng, full), INT_BUILD)]
    return [run_logact_vectors(g, sim, hw, bp=bp, gap_prob=gap_prob, reset_at=reset_at, seed=seed) for g, hw in runs]
