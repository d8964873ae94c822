"""Format-wide limits and the error every part of the integer contract raises."""

from __future__ import annotations

import math

import numpy as np

MIN_BITS = 2
MAX_BITS = 8
SQRT2 = math.sqrt(2.0)
# Widest shift the datapath supports: multipliers stay below 2**32, products of 16-bit activations
# below 2**48, so int64 accumulation is exact for any layer this tool meets.
MAX_SHIFT_LIMIT = 31


class FormatError(ValueError):
    """A code, table or format parameter that the format does not allow."""



def check_bits(bits: int, what: str = "bits") -> None:
    if not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise FormatError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
