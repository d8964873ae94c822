"""Trace files round-trip, carry reference results the fast path reproduces, and reject bad files."""

from __future__ import annotations

import numpy as np
import pytest
from test_sim_support import activations, make_table, random_words

from logmac import sim
from logmac.format import FormatError, LogFormat, UniformFormat, ZeroMode


@pytest.mark.parametrize("zero", list(ZeroMode))
def test_log_trace_round_trip_and_fast_path_agrees(tmp_path, zero):
    rng = np.random.default_rng(3)
    fmt = LogFormat(4, zero=zero)
    table = make_table(fmt, 6, rng)
    words = random_words(fmt, (6, 20), rng)
    x = activations(rng, (9, 20), 8, False, extreme=False)
    rq = sim.Requant(rng.integers(2**30, 2**31, 6), rng.integers(20, 40, 6), rng.integers(-999, 999, 6), 3, 0, 255)
    path = sim.save_trace(tmp_path / "t.npz", x, words, fmt, table=table, act_bits=8, acc_bits=14, overflow="wrap",
                          requant=rq, layer="layer1.0.conv1")
    tr = sim.load_trace(path)
    assert tr.fmt == fmt and str(tr["layer"]) == "layer1.0.conv1" and str(tr["overflow_mode"]) == "wrap"
    fast = sim.log_matmul(tr["x"], tr["codes"], tr.table, tr.fmt, int(tr["acc_bits"]), "wrap")
    np.testing.assert_array_equal(fast.acc, tr["acc"])
    np.testing.assert_array_equal(fast.overflow, tr["overflow"])
    np.testing.assert_array_equal(tr["x"] @ tr["mult"].T, sim.log_matmul(x, words, table, fmt, 40).acc)
    y = sim.requantize(fast.acc, tr["requant_multiplier"], tr["requant_shift"], int(tr["out_zero_point"]),
                       int(tr["clamp_lo"]), int(tr["clamp_hi"]), tr["bias_int"])
    np.testing.assert_array_equal(y, tr["y"])


def test_uniform_trace(tmp_path):
    rng = np.random.default_rng(4)
    fmt = UniformFormat(4, symmetric=False)
    q, zp = rng.integers(0, 16, (3, 7)), rng.integers(0, 16, 3)
    x = activations(rng, (5, 7), 8, False, extreme=True)
    tr = sim.load_trace(sim.save_trace(tmp_path / "u.npz", x, q, fmt, weight_zero_point=zp, act_bits=8, acc_bits=20))
    assert tr.table is None and "y" not in tr.arrays
    np.testing.assert_array_equal(tr["acc"], x @ (q - zp[:, None]).T)


def test_bad_traces(tmp_path):
    fmt = LogFormat(3)
    table = make_table(fmt, 2, np.random.default_rng(0))
    x, words = np.zeros((1, 4), dtype=np.int64), np.zeros((2, 4), dtype=np.uint16)
    with pytest.raises(FormatError, match="decode table"):
        sim.save_trace(tmp_path / "a.npz", x, words, fmt, act_bits=8, acc_bits=16)
    with pytest.raises(FormatError, match="outside the 4-bit"):
        sim.save_trace(tmp_path / "a.npz", x + 16, words, fmt, table=table, act_bits=4, acc_bits=16)
    path = sim.save_trace(tmp_path / "a.npz", x, words, fmt, table=table, act_bits=8, acc_bits=16)
    data = dict(np.load(path))
    np.savez(tmp_path / "v.npz", **{**data, "version": np.int64(99)})
    with pytest.raises(FormatError, match="version 99"):
        sim.load_trace(tmp_path / "v.npz")
    del data["acc"]
    np.savez(tmp_path / "m.npz", **data)
    with pytest.raises(FormatError, match="misses keys"):
        sim.load_trace(tmp_path / "m.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(FormatError, match="not a readable trace"):
        sim.load_trace(tmp_path / "junk.npz")
