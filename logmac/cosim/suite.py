"""The built-in regression set: what ``logmac cosim`` runs when given no trace file, and the benchmark load."""

from __future__ import annotations

import numpy as np

from logmac.cosim.vectors import Vectors, random_vectors
from logmac.format import GridKind, LogFormat, ZeroMode


def format_matrix(rng: np.random.Generator, rows: int = 3, k: int = 21) -> list[Vectors]:
    """Every code width 2..6, grid kind, zero mode and approximation setting; random then every-code stimulus,
    signed and unsigned activations, saturate and wrap at several accumulator widths."""
    vs = []
    n = 0
    for bits in range(2, 7):
        for grid in GridKind:
            for zero in ZeroMode:
                for approx in (True, False):
                    fmt = LogFormat(bits, grid, hardware_approx=approx, zero=zero)
                    vs.append(random_vectors(fmt, rng, rows=rows, k=k, channels=2, act_signed=bool(n % 2),
                                             acc_bits=int(rng.choice([20, 24, 32])),
                                             overflow=("saturate", "wrap")[n % 2]))
                    n += 1
            vs.append(random_vectors(LogFormat(bits, grid, zero=ZeroMode.FLAG), rng, rows=2, k=1 << (bits + 1),
                                     channels=1, style="every_code", acc_bits=32))
    for acc in (8, 13, 20):
        for mode in ("saturate", "wrap"):
            vs.append(random_vectors(LogFormat(5), rng, rows=4, k=40, channels=2, style="overflow", acc_bits=acc,
                                     overflow=mode))
    return vs


def throughput_load(rng: np.random.Generator, macs: int = 1 << 20, k: int = 1024, channels: int = 16) -> Vectors:
    """One large layer-like set (default 1M MACs) for measuring MACs checked per second."""
    rows = max(1, macs // (k * channels))
    return random_vectors(LogFormat(4), rng, rows=rows, k=k, channels=channels, acc_bits=24)
