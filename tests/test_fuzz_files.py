"""Fuzzing the other files a user hands logmac: emulator traces, cocotb vector files (general and AdaLog
engines) and engine configurations.  A mutant is read correctly or refused with FormatError /
HwConfigError naming the problem; no other exception escapes.

A vector file carries its own expected results, and ``golden`` recomputes them with ``logmac.sim``, so a
mutant that loads is either consistent (a legal file) or refused there: both calls are part of "reading".
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logmac.cosim import logact_vectors as lv
from logmac.cosim import vectors as vec
from logmac.format import AdaLogFormat, FormatError, GridKind, LogFormat, UniformFormat, ZeroMode
from logmac.hw.config import HwConfig, HwConfigError
from logmac.hw.logact_engine import LogActConfig

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _originals(tmp: Path) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    files = {
        "log": vec.save_vectors(vec.random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC, zero=ZeroMode.FLAG), rng,
                                                   rows=3, k=10, channels=2), tmp / "log.npz"),
        "int": vec.save_vectors(vec.random_vectors(UniformFormat(4), rng, rows=3, k=10, channels=2, requant=False),
                                tmp / "int.npz"),
        "grouped": vec.save_vectors(replace(vec.random_vectors(LogFormat(3, GridKind.LOG_DYNAMIC), rng, rows=3, k=10,
                                                               channels=2), group_exp=np.array([[-2, 1, 0], [0, 0, -1]]),
                                            group_size=4), tmp / "grouped.npz"),
        "logact": lv.save_logact_vectors(lv.random_logact_vectors(AdaLogFormat(4, 37), LogFormat(4), rng, rows=3, k=10),
                                         tmp / "logact.npz"),
    }
    return {kind: _arrays(path) for kind, path in files.items()}


ORIGINALS = _originals(Path(__import__("tempfile").mkdtemp(prefix="logmac-fuzz-")))


def _mutate(arr: np.ndarray, data) -> np.ndarray | None:
    kind = data.draw(st.sampled_from(["drop", "dtype", "reshape", "value", "scalar", "text", "empty"]))
    if kind == "drop":
        return None
    if kind == "text":
        return np.str_(data.draw(st.sampled_from(["", "x", "{}", "[1]", '{"kind": "log"}', "wrap", "saturate"])))
    if kind == "scalar":
        return np.int64(data.draw(st.integers(-(1 << 40), 1 << 40)))
    if kind == "empty":
        return np.zeros((0,) * max(arr.ndim, 1), arr.dtype)
    if arr.dtype.kind in "US":
        return arr
    if kind == "dtype":
        return arr.astype(data.draw(st.sampled_from([np.float64, np.float32, np.int8, np.uint8, np.int64, np.bool_])))
    if kind == "reshape":
        return arr.reshape(-1) if arr.ndim != 1 else arr.reshape(1, -1)
    out = arr.copy().reshape(-1)
    if out.size:
        value = data.draw(st.integers(-(1 << 20), 1 << 20) if out.dtype.kind in "iu" else st.sampled_from([-1.0, 0.0, 2.5]))
        out[data.draw(st.integers(0, out.size - 1))] = np.asarray(value).astype(out.dtype) if out.dtype.kind != "b" else True
    return out.reshape(arr.shape)


def _mutant(kind: str, data) -> bytes:
    arrays = dict(ORIGINALS[kind])
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(arrays)))
        new = _mutate(arrays[key], data)
        if new is None:
            del arrays[key]
        else:
            arrays[key] = new
    return _npz(arrays)


@FUZZ
@given(kind=st.sampled_from(["log", "int", "grouped"]), data=st.data())
def test_trace_and_vector_mutants(tmp_path, kind: str, data) -> None:
    path = tmp_path / "mutant.npz"
    path.write_bytes(_mutant(kind, data))
    try:
        vec.golden(vec.load_vectors(path))
    except FormatError as exc:
        assert str(exc), "an empty message names nothing"


@FUZZ
@given(data=st.data())
def test_logact_vector_mutants(tmp_path, data) -> None:
    path = tmp_path / "mutant.npz"
    path.write_bytes(_mutant("logact", data))
    try:
        lv.golden(lv.load_logact_vectors(path))
    except FormatError as exc:
        assert str(exc)


def test_unmutated_files_load() -> None:
    """The mutants start from readable files (else every refusal above would be for the wrong reason)."""
    tmp = Path(__import__("tempfile").mkdtemp(prefix="logmac-fuzz-"))
    for kind, arrays in ORIGINALS.items():
        (tmp / f"{kind}.npz").write_bytes(_npz(arrays))
    vec.golden(vec.load_vectors(tmp / "log.npz"))
    vec.golden(vec.load_vectors(tmp / "int.npz"))
    assert vec.load_vectors(tmp / "grouped.npz").has_groups
    vec.golden(vec.load_vectors(tmp / "grouped.npz"))
    lv.golden(lv.load_logact_vectors(tmp / "logact.npz"))


CONFIG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 70), st.floats(-2, 70), st.text(max_size=4),
                          st.sampled_from(["log", "int", "16", "wrap"]), st.lists(st.integers(0, 4), max_size=2))


@FUZZ
@given(cls=st.sampled_from([HwConfig, LogActConfig]), data=st.data())
def test_engine_config_mutants(cls, data) -> None:
    base = cls().to_dict()
    keys = sorted(base) + ["no_such_parameter"]
    edits = data.draw(st.dictionaries(st.sampled_from(keys), CONFIG_VALUES, min_size=1, max_size=3))
    try:
        cfg = cls.from_dict({**base, **edits})
    except HwConfigError as exc:
        assert str(exc)
        return
    again = cls.from_dict(cfg.to_dict())  # accepted: it reads back as itself, every field of its own type
    assert again == cfg
    for key, value in cfg.to_dict().items():
        assert type(value) is type(base[key]), (key, value)


def test_a_logact_config_whose_levels_overflow_the_port_is_a_config_error():
    """Found by the config fuzzer: act_max_shift near its limit made activation levels wider than 32 bits, which
    surfaced as a FormatError from the accumulator rule instead of the config's own error."""
    with pytest.raises(HwConfigError, match="more than the 32 a port carries"):
        LogActConfig.from_dict({**LogActConfig().to_dict(), "act_max_shift": 31})


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


NOT_ARCHIVES = {"empty": b"", "zip magic, then junk": b"PK\x03\x04 not a zip", "text": b"hello",
                "an .npy array": _npy(np.zeros(3))}


@pytest.mark.parametrize("kind", sorted(NOT_ARCHIVES))
def test_files_that_are_not_archives_are_refused_by_every_reader(kind: str, tmp_path: Path) -> None:
    """Whatever the bytes, each ``.npz`` reader ends in a FormatError that names the file."""
    from logmac.format.schedule import ScheduleLimits, load_schedule

    path = tmp_path / "bad.npz"
    path.write_bytes(NOT_ARCHIVES[kind])
    readers = [vec.load_vectors, lv.load_logact_vectors, lambda p: lv.vectors_from_attention_tiles(p),
               lambda p: load_schedule(p, ScheduleLimits("inplace", "none", 4, 7, 64))]
    for read in readers:
        with pytest.raises(FormatError, match="bad.npz"):
            read(path)
