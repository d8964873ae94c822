"""Fuzzing the artifact loader: every mutant loads to the same codes, tables and scales, or is refused
with ArtifactError naming the problem.  No other exception, and never a silently different model.

Mutants come in three kinds: raw bytes (flips, cuts, insertions; the checksum must catch them), and header
fields or tensors edited by a forger who then recomputes the checksum, so that the loader's own checks are
what stands between the file and the emulator.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from test_artifact import make_artifact
from test_quant_pipeline import run

from logmac.format import artifact as art
from logmac.quant import QuantConfig

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _real_artifact() -> art.Artifact:
    """A quantized network (requantization extras, activation attributes, folded BN): the real thing."""
    return run(QuantConfig(method="log_dynamic", w_bits=3, batch_size=16)).artifact


BASES = {"synthetic": art.to_bytes(make_artifact()), "quantized": art.to_bytes(_real_artifact())}
ORIGINALS = {key: art.from_bytes(data) for key, data in BASES.items()}


def _split(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(json.loads(data[8:8 + n])["__metadata__"][art.HEADER_KEY])
    return header, st_load(data)


def _forge(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """Re-save with a freshly computed checksum, as a deliberate forger would."""
    header = dict(header)
    header.pop("checksum", None)
    header["checksum"] = art._checksum(header, tensors)
    return st_save(tensors, metadata={art.HEADER_KEY: json.dumps(header, sort_keys=True)})


def _same_model(got: art.Artifact, want: art.Artifact) -> None:
    """Codes, formats, tables, scales, zero points and extras identical, dtypes included."""
    assert list(got.layers) == list(want.layers)
    for name, layer in want.layers.items():
        other = got.layers[name]
        assert other.op == layer.op and other.fmt == layer.fmt and other.fmt.to_dict() == layer.fmt.to_dict()
        for a, b in [(other.codes, layer.codes), (other.scale, layer.scale)] + (
                [(other.table.u, layer.table.u), (other.table.h, layer.table.h)] if layer.table is not None else []):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (other.table is None) == (layer.table is None)
        assert (other.zero_point is None) == (layer.zero_point is None)
        if layer.zero_point is not None:
            assert np.array_equal(other.zero_point, layer.zero_point)
        assert sorted(other.extras) == sorted(layer.extras)
        for key, value in layer.extras.items():
            assert other.extras[key].dtype == value.dtype and np.array_equal(other.extras[key], value)


def _refused(data: bytes) -> art.Artifact | None:
    """The loaded artifact, or None when it is refused with ArtifactError naming the file and the problem."""
    try:
        return art.from_bytes(data, "mutant.lmq")
    except art.ArtifactError as exc:
        message = str(exc)
        assert message.startswith("mutant.lmq: ") and len(message) > len("mutant.lmq: ") + 10, message
        return None


def _check(data: bytes, base: str) -> None:
    """Damage (no re-signing): refused, or the very same model."""
    loaded = _refused(data)
    if loaded is not None:
        _same_model(loaded, ORIGINALS[base])


def _check_forged(data: bytes, base: str) -> None:
    """A re-signed edit: refused, or a file ``to_bytes`` could have written, read exactly as written.

    A forger can always write another legal model (a different scale is still a scale); what must not
    happen is a file read differently from what it says: a field defaulted, a dtype converted, a tensor
    ignored.  Writing the loaded artifact again must give back the mutant's header and tensors.
    """
    loaded = _refused(data)
    if loaded is None:
        return
    header, tensors = _split(data)
    again_header, again_tensors = _split(art.to_bytes(loaded))
    assert again_header == header
    assert sorted(again_tensors) == sorted(tensors)
    for key, arr in tensors.items():
        assert again_tensors[key].dtype == arr.dtype and np.array_equal(again_tensors[key], arr), key


# ---- raw bytes: the checksum and the container parser --------------------------------------------------

@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_byte_mutants(base: str, data) -> None:
    raw = bytearray(BASES[base])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 64))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        if not raw:
            break
    _check(bytes(raw), base)


# ---- header fields, re-signed -------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a JSON tree (the root excluded)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append(prefix + (key,))
        found += _paths(value, prefix + (key,))
    return found


def _near(value: Any) -> st.SearchStrategy:
    """Values a careless edit would put in place of ``value``: off by one, wrong type, empty, huge."""
    options = [JSON_VALUES]
    if isinstance(value, bool):
        options.append(st.just(not value))
    elif isinstance(value, int):
        options.append(st.sampled_from([value + 1, value - 1, -value, 0, -1, 2 * value, float(value), str(value)]))
    elif isinstance(value, str):
        options.append(st.sampled_from([value + "x", value.upper(), "", value[:-1] or "?", "log", "uniform", "code",
                                        "flag", "none", "log_2", "log_sqrt2", "log_dynamic", "linear", "conv2d"]))
    elif isinstance(value, list):
        options.append(st.sampled_from([value[:-1], value + value[-1:], list(reversed(value)), [value]]
                                       if value else [[0], [None]]))
    return st.one_of(options)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_header_field_mutants(base: str, data) -> None:
    header, tensors = _split(BASES[base])
    header.pop("checksum")
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(header)
        path = data.draw(st.sampled_from(paths))
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_near(parent[path[-1]]))
    _check_forged(_forge(header, tensors), base)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_weight_shape_mutants(base: str, data) -> None:
    """The shape of a layer is the one header field a byte count checks only in part."""
    header, tensors = _split(BASES[base])
    entry = data.draw(st.sampled_from(header["layers"]))
    shape = entry["weight_shape"]
    entry["weight_shape"] = data.draw(st.one_of(
        st.permutations(shape).map(list),
        st.lists(st.integers(-3, 40), min_size=0, max_size=5),
        st.just([int(np.prod(shape))]),
        st.just(shape[1:] + shape[:1]),
        st.just([-d for d in shape]),
    ))
    _check_forged(_forge(header, tensors), base)


# ---- tensors, re-signed --------------------------------------------------------------------------------

def _mutate_tensor(arr: np.ndarray, data) -> np.ndarray | None:
    kind = data.draw(st.sampled_from(["dtype", "reshape", "value", "drop", "grow", "shrink"]))
    if kind == "drop":
        return None
    if kind == "dtype":
        return arr.astype(data.draw(st.sampled_from(
            [np.float32, np.float64, np.int64, np.int32, np.int16, np.uint16, np.uint8, np.int8])))
    if kind == "reshape":
        return arr.reshape(data.draw(st.sampled_from([(-1,), (1, -1), (-1, 1)])))
    if kind == "grow":
        return np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1]]) if arr.size else np.zeros(1, arr.dtype)
    if kind == "shrink":
        return arr.reshape(-1)[:-1]
    out = arr.copy().reshape(-1)
    if out.size:
        pos = data.draw(st.integers(0, out.size - 1))
        out[pos] = data.draw(st.sampled_from([0, 1, -1, 2, 3, 7, 15, 31, 63, 255, 0.5, np.inf, np.nan])) \
            if out.dtype.kind == "f" else data.draw(st.integers(0, 255))
    return out.reshape(arr.shape)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_tensor_mutants(base: str, data) -> None:
    header, tensors = _split(BASES[base])
    tensors = {k: v.copy() for k, v in tensors.items()}
    name = data.draw(st.sampled_from(sorted(tensors)))
    new = _mutate_tensor(tensors[name], data)
    if new is None:
        del tensors[name]
    else:
        tensors[name] = np.ascontiguousarray(new)
    if data.draw(st.booleans()):  # a stray tensor nobody asked for
        tensors["layers/" + data.draw(st.sampled_from([e["name"] for e in header["layers"]])) + "/x/stray"] = np.ones(2)
    _check_forged(_forge(header, tensors), base)


def test_an_unchanged_forgery_loads_the_same_model() -> None:
    """The re-signing itself changes nothing (else every mutant above would be refused for the wrong reason)."""
    for base, data in BASES.items():
        header, tensors = _split(data)
        _same_model(art.from_bytes(_forge(header, tensors)), ORIGINALS[base])


@pytest.mark.parametrize("edit, message", [
    (lambda h, t: h["layers"][0].update(weight_shape=[-8, 1, 3, 3]), "weight_shape"),
    (lambda h, t: h["layers"][0]["format"].update(hardware_approx="yes"), "format"),
    (lambda h, t: h.update(layers={"stem": 1}), "layers"),
    (lambda h, t: h.pop("settings"), "settings"),
    (lambda h, t: h["layers"][0]["format"].pop("hardware_approx"), "canonical"),
    (lambda h, t: h["layers"][0]["format"].update(zero=None), "ZeroMode"),
    (lambda h, t: h["layers"][0].update(extras="bias"), "extras"),
    (lambda h, t: h["layers"].append(h["layers"][0]), "appears twice"),
    (lambda h, t: t.update({"layers/stem/scale": t["layers/stem/scale"].astype(np.float32)}), "float32"),
    (lambda h, t: t.update({"layers/stem/x/stray": np.ones(2)}), "no layer claims"),
    (lambda h, t: t.update({"layers/uniform/u": np.zeros((4, 2, 8), np.uint8)}), "not log-coded"),
    (lambda h, t: t["layers/stem/x/bias"].__setitem__(0, np.nan), "NaN"),
])
def test_holes_the_fuzzer_found_stay_closed(edit, message) -> None:
    header, tensors = _split(BASES["synthetic"])
    edit(header, tensors)
    with pytest.raises(art.ArtifactError, match=message):
        art.from_bytes(_forge(header, copy.copy(tensors)), "forged.lmq")
