"""In-order checker: the bench's captured beats against ``logmac.sim``, transaction by transaction.

A transaction is one dot product: output channel ``c`` of input row ``n`` (the stream is channel-major).
A failure message names the first mismatching transaction, the cycle it left the engine, its operands and
both values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logmac.cosim.stream import Capture
from logmac.cosim.vectors import Expected, Vectors


@dataclass
class Check:
    """The outcome of comparing one vector set."""

    name: str
    transactions: int
    macs_checked: int
    mismatches: int
    first_mismatch: str | None


def _operands(v: Vectors, c: int, n: int, limit: int = 12) -> str:
    x, w = v.x[n], v.codes[c]
    more = " ..." if v.k > limit else ""
    return f"x[{n}] = {x[:limit].tolist()}{more}, codes[{c}] = {w[:limit].tolist()}{more} (K={v.k})"


def compare(v: Vectors, exp: Expected, cap: Capture) -> Check:
    """Count mismatching transactions (a missing or extra beat counts as one each)."""
    want = exp.acc.size
    got = cap.acc.size
    n = min(want, got)
    bad = (cap.acc[:n] != exp.acc.ravel()[:n]) | (cap.overflow[:n] != exp.overflow.ravel()[:n])
    if exp.y is not None and cap.y is not None:
        bad |= cap.y[:n] != exp.y.ravel()[:n]
    mismatches = int(bad.sum()) + abs(want - got)
    first = None
    if bad.any():
        t = int(np.argmax(bad))
        c, row = divmod(t, v.rows)
        parts = [f"acc rtl={int(cap.acc[t])} sim={int(exp.acc.ravel()[t])}",
                 f"overflow rtl={int(cap.overflow[t])} sim={int(exp.overflow.ravel()[t])}"]
        if exp.y is not None and cap.y is not None:
            parts.append(f"y rtl={int(cap.y[t])} sim={int(exp.y.ravel()[t])}")
        first = (f"{v.name}: transaction {t} (channel {c}, row {row}) at cycle {int(cap.cycle[t])}: "
                 + ", ".join(parts) + f"; operands {_operands(v, c, row)}")
    elif want != got:
        first = f"{v.name}: the engine produced {got} output beats, the emulator expects {want}"
    return Check(v.name, n, n * v.k, mismatches, first)
