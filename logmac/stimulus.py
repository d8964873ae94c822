"""Random legal stimulus for property tests and cocotb regressions (not part of the format contract)."""

from __future__ import annotations

import numpy as np

from logmac.format import DecodeTable, LogFormat, grid_half_exponents, shift_span, table_from_exponents


def random_table(fmt: LogFormat, channels: int, rng: np.random.Generator) -> DecodeTable:
    """A random legal decode table: per channel a random DBS mix, anchor and sign-asymmetric offset.

    Used for stimulus (emulator property tests, cocotb regressions) so every grid and zero mode is hit.
    """
    n = fmt.nonzero_levels
    choices = fmt.base2_choices
    exps = np.empty((channels, 2, n), dtype=np.int64)
    for c in range(channels):
        n_base2 = int(rng.choice(choices))
        top = int(rng.integers(-12, 4))
        exps[c, 0] = grid_half_exponents(n, top, n_base2)
        # ABS: the other sign's top sits lower, as far as the shift field allows.
        for offset in range(int(rng.integers(0, 4)), -1, -1):
            other = grid_half_exponents(n, top - offset, n_base2)
            if shift_span(np.stack([exps[c, 0], other])) <= fmt.max_shift:
                exps[c, 1] = other
                break
    exps = exps[:, rng.permutation(2), :]  # either sign may be the larger one
    alpha = rng.uniform(0.05, 1.0, size=channels)
    return table_from_exponents(fmt, exps, alpha)

