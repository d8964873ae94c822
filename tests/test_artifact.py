"""The exported artifact: round trip, and a clear, specific error for each kind of damage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from logmac.format import (
    GridKind,
    LogFormat,
    UniformFormat,
    ZeroMode,
    encode,
)
from logmac.format import artifact as art
from logmac.stimulus import random_table


def make_artifact(seed: int = 0) -> art.Artifact:
    rng = np.random.default_rng(seed)
    layers = {}
    for name, fmt, shape in [
        ("stem", LogFormat(3, GridKind.LOG_DYNAMIC, True, ZeroMode.CODE), (8, 1, 3, 3)),
        ("block.conv", LogFormat(4, GridKind.LOG_SQRT2, False, ZeroMode.FLAG), (16, 8, 3, 3)),
        ("head", LogFormat(5, GridKind.LOG_2, True, ZeroMode.NONE), (10, 16)),
    ]:
        table = random_table(fmt, shape[0], rng)
        codes = encode(rng.normal(size=shape) * table.scale.reshape(-1, *[1] * (len(shape) - 1)) * 4, table, fmt)
        layers[name] = art.QuantizedLayer(
            name, "conv2d" if len(shape) == 4 else "linear", fmt, codes, table.scale, table,
            extras={"bias": rng.normal(size=shape[0]).astype(np.float32)}, attrs={"stride": [1, 1]},
        )
    ufmt = UniformFormat(4, symmetric=False)
    layers["uniform"] = art.QuantizedLayer(
        "uniform", "linear", ufmt, rng.integers(0, 16, size=(4, 6)).astype(np.int16), np.full(4, 0.02),
        zero_point=np.array([7, 8, 8, 9]),
    )
    return art.Artifact(layers, settings={"method": "log_dynamic", "w_bits": 3}, meta={"model": "toy"},
                        tensors={"input_scale": np.array([0.5], np.float32)})


def test_round_trip_is_exact(tmp_path):
    original = make_artifact()
    path = art.save(original, tmp_path / "m.lmq")
    loaded = art.load(path)
    assert loaded.settings == original.settings and loaded.meta == original.meta
    assert np.array_equal(loaded.tensors["input_scale"], original.tensors["input_scale"])
    for name, layer in original.layers.items():
        got = loaded.layers[name]
        assert got.fmt == layer.fmt and got.op == layer.op and got.attrs == layer.attrs
        assert np.array_equal(got.codes, layer.codes)
        assert np.array_equal(got.scale, layer.scale)
        if layer.table is not None:
            assert np.array_equal(got.table.u, layer.table.u) and np.array_equal(got.table.h, layer.table.h)
        for key, value in layer.extras.items():
            assert np.array_equal(got.extras[key], value)
    assert np.array_equal(loaded.layers["uniform"].zero_point, [7, 8, 8, 9])


def test_codes_are_stored_at_their_bit_width(tmp_path):
    info = art.summary(make_artifact())
    by_name = {r["name"]: r for r in info["layers"]}
    assert by_name["stem"]["code_bytes"] == (8 * 9 * 3 + 7) // 8
    assert by_name["block.conv"]["bits_per_weight"] == 5  # 4-bit code + zero flag
    assert info["stored_bytes"] == sum(r["code_bytes"] + r["table_bytes"] for r in info["layers"])
    assert info["compression_vs_fp32"] == pytest.approx(info["fp32_bytes"] / info["stored_bytes"])


def test_missing_file(tmp_path):
    with pytest.raises(art.ArtifactError, match="no such artifact file"):
        art.load(tmp_path / "absent.lmq")


def test_truncated_file(tmp_path):
    data = art.to_bytes(make_artifact())
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(art.ArtifactError, match="truncated or corrupt"):
            art.from_bytes(data[:cut], "cut.lmq")


def test_flipped_bit_in_codes_is_caught_by_the_checksum():
    data = bytearray(art.to_bytes(make_artifact()))
    data[-5] ^= 0x10
    with pytest.raises(art.ArtifactError, match="checksum mismatch"):
        art.from_bytes(bytes(data), "flip.lmq")


def _rewrite_header(data: bytes, edit) -> bytes:
    """Re-save the same tensors with an edited logmac header (what a hand edit would do)."""
    n = int.from_bytes(data[:8], "little")
    container = json.loads(data[8:8 + n])
    header = json.loads(container["__metadata__"][art.HEADER_KEY])
    edit(header)
    from safetensors.numpy import load as st_load

    return st_save(st_load(data), metadata={art.HEADER_KEY: json.dumps(header)})


def test_hand_edited_header_is_rejected():
    data = art.to_bytes(make_artifact())

    def edit(header):
        header["layers"][0]["format"]["bits"] = 4

    with pytest.raises(art.ArtifactError, match="checksum mismatch"):
        art.from_bytes(_rewrite_header(data, edit), "edited.lmq")


def test_other_format_version_is_named():
    data = art.to_bytes(make_artifact())

    def edit(header):
        header["format_version"] = 99

    with pytest.raises(art.ArtifactError, match="format version 99, but this logmac reads version 1"):
        art.from_bytes(_rewrite_header(data, edit), "future.lmq")


def test_plain_safetensors_file_is_not_an_artifact():
    data = st_save({"w": np.zeros(3, np.float32)})
    with pytest.raises(art.ArtifactError, match="not a logmac artifact"):
        art.from_bytes(data, "plain.safetensors")


def test_invalid_layer_is_refused_at_save_and_nothing_loads_half():
    bad = make_artifact()
    bad.layers["stem"].codes = bad.layers["stem"].codes.copy()
    bad.layers["stem"].codes.flat[0] = 1 << 3  # a 4-bit word in a 3-bit format
    with pytest.raises(Exception, match="does not fit in 3 bits"):
        art.to_bytes(bad)


def test_consistent_forgery_with_bad_codes_is_still_rejected():
    """A file whose checksum was recomputed after an illegal edit fails validation, not half-loads."""
    original = make_artifact()
    tensors = {}
    data = art.to_bytes(original)
    from safetensors.numpy import load as st_load

    tensors = st_load(data)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(json.loads(data[8:8 + n])["__metadata__"][art.HEADER_KEY])
    header.pop("checksum")
    tensors["layers/head/u"] = tensors["layers/head/u"][:, :, ::-1].copy()  # levels no longer ascend
    header["checksum"] = art._checksum(header, tensors)
    forged = st_save(tensors, metadata={art.HEADER_KEY: json.dumps(header)})
    with pytest.raises(art.ArtifactError, match="head.*increase strictly|increase strictly"):
        art.from_bytes(forged, "forged.lmq")
