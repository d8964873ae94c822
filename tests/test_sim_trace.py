"""Trace files round-trip, carry reference results the fast path reproduces, and reject bad files."""

from __future__ import annotations

import numpy as np
import pytest
from test_sim_support import activations, make_table, random_words

from logmac import sim
from logmac.format import FormatError, LogFormat, UniformFormat, ZeroMode, apply_accumulator


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


def grouped_trace(tmp_path, k: int = 20, group_size: int = 8):
    """A log trace with group exponents (the last group short) and the arguments it was written from."""
    rng = np.random.default_rng(5)
    fmt = LogFormat(3)
    table = make_table(fmt, 4, rng)
    words = random_words(fmt, (4, k), rng)
    x = activations(rng, (6, k), 8, False, extreme=False)
    exps = rng.integers(-2, 2, (4, -(-k // group_size)))
    exps[0] = [-2, 1, 0]  # the widest 2-bit span, so some weights shift by 3
    path = sim.save_trace(tmp_path / "g.npz", x, words, fmt, table=table, act_bits=8, acc_bits=18, overflow="wrap",
                          group_exp=exps, group_size=group_size, layer="grouped")
    return path, (x, words, fmt, table, exps, group_size)


def test_group_trace_expects_the_group_reference(tmp_path):
    from logmac.sim.groups import group_matmul_reference

    path, (x, words, fmt, table, exps, size) = grouped_trace(tmp_path)
    tr = sim.load_trace(path)
    assert int(tr["version"]) == 2 and int(tr["group_size"]) == size
    np.testing.assert_array_equal(tr["group_exp"], exps)
    ref = group_matmul_reference(x, words, fmt, 18, exps, size, table=table, overflow="wrap")
    np.testing.assert_array_equal(tr["acc"], ref.acc)
    np.testing.assert_array_equal(tr["overflow"], ref.overflow)
    # the shifts are in the expected registers: by hand, each group's exact partial sum shifted, then wrapped
    mult = tr["mult"]
    shifted = sum((x[:, g * size:(g + 1) * size] @ mult[:, g * size:(g + 1) * size].T) << (exps[:, g] - exps.min(axis=1))
                  for g in range(exps.shape[1]))
    np.testing.assert_array_equal(tr["acc"], apply_accumulator(shifted, 18, "wrap")[0])
    assert not np.array_equal(tr["acc"], sim.log_matmul(x, words, table, fmt, 18, "wrap").acc)


def test_version_1_traces_still_load(tmp_path):
    fmt = LogFormat(3)
    table = make_table(fmt, 2, np.random.default_rng(0))
    path = sim.save_trace(tmp_path / "a.npz", np.ones((2, 4), dtype=np.int64), np.zeros((2, 4), dtype=np.uint16), fmt,
                          table=table, act_bits=8, acc_bits=16)
    np.savez(tmp_path / "v1.npz", **{**dict(np.load(path)), "version": np.int64(1)})
    assert "group_exp" not in sim.load_trace(tmp_path / "v1.npz").arrays
    grouped, _ = grouped_trace(tmp_path)
    np.savez(tmp_path / "v1g.npz", **{**dict(np.load(grouped)), "version": np.int64(1)})
    with pytest.raises(FormatError, match="version 1 trace carries no group exponents"):
        sim.load_trace(tmp_path / "v1g.npz")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(group_exp=d["group_exp"][:, :-1]), r"group_exp is int64 \(4, 2\), expected integers \(4, 3\)"),
    (lambda d: d.update(group_exp=d["group_exp"] + 9), r"outside the 4-bit range \[-8, 7\]"),
    (lambda d: d.update(group_size=np.int64(0)), "group_size must be a positive integer"),
    (lambda d: d.update(group_size=np.int64(4)), "expected integers"),
    (lambda d: d.pop("group_size"), "need both group_exp and group_size"),
    (lambda d: d.update(group_exp=d["group_exp"].astype(np.float64)), "group_exp is float64"),
])
def test_bad_group_fields_are_refused(tmp_path, edit, message):
    path, _ = grouped_trace(tmp_path)
    data = dict(np.load(path))
    edit(data)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(FormatError, match=message):
        sim.load_trace(tmp_path / "bad.npz")


def test_bad_group_arguments_are_refused_on_save(tmp_path):
    _, (x, words, fmt, table, exps, size) = grouped_trace(tmp_path)
    with pytest.raises(FormatError, match="both group_exp and group_size"):
        sim.save_trace(tmp_path / "b.npz", x, words, fmt, table=table, act_bits=8, acc_bits=18, group_exp=exps)
    with pytest.raises(FormatError, match="expected integers"):
        sim.save_trace(tmp_path / "b.npz", x, words, fmt, table=table, act_bits=8, acc_bits=18, group_exp=exps.T,
                       group_size=size)
