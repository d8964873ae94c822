"""Shape checks of an artifact's header and tensors, run before anything is built from them.

The checksum catches damage; these checks catch a file that is consistent but not one ``to_bytes`` could
have written (a hand edit re-signed, another tool's output): a missing or mistyped header field, a
format written in a non-canonical form that would load with defaults, a weight shape that disagrees with
the layer's geometry, a tensor of the wrong dtype or one that no layer claims.  Each raises FormatError
naming the field, so such a file is refused whole instead of loading as a silently different model.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from logmac.format import FormatError, LogFormat, format_from_dict

HEADER_KEYS = {"format_version", "settings", "meta", "layers"}
OPTIONAL_HEADER_KEYS = {"activations"}
ENTRY_KEYS = {"name", "op", "weight_shape", "format", "extras", "attrs"}
# What ``to_bytes`` writes for every layer: name suffix -> (dtype, dimensions).
LAYER_TENSORS = {"codes": ("uint8", 1), "scale": ("float64", 1), "u": ("uint8", 3), "h": ("uint8", 3),
                 "zero_point": ("int32", 1)}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_header(header: Any) -> None:
    """Raise FormatError unless the header has the fields and types ``to_bytes`` writes."""
    if not isinstance(header, dict):
        raise FormatError(f"the logmac header must be a JSON object, got {type(header).__name__}")
    missing, unknown = HEADER_KEYS - set(header), set(header) - HEADER_KEYS - OPTIONAL_HEADER_KEYS
    if missing or unknown:
        raise FormatError(f"header keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for key in ("settings", "meta"):
        if not isinstance(header[key], dict):
            raise FormatError(f"header '{key}' must be a JSON object, got {type(header[key]).__name__}")
    if not isinstance(header["layers"], list):
        raise FormatError(f"header 'layers' must be a list, got {type(header['layers']).__name__}")
    names = set()
    for n, entry in enumerate(header["layers"]):
        _check_entry(n, entry)
        if entry["name"] in names:
            raise FormatError(f"layer name {entry['name']!r} appears twice")
        names.add(entry["name"])


def _check_entry(n: int, entry: Any) -> None:
    if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise FormatError(f"layer entry {n} must have exactly the keys {sorted(ENTRY_KEYS)}, got {keys}")
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise FormatError(f"layer entry {n}: name must be a non-empty string, got {name!r}")
    where = f"layer {name}"
    if not isinstance(entry["op"], str):
        raise FormatError(f"{where}: op must be a string, got {entry['op']!r}")
    shape = entry["weight_shape"]
    if not isinstance(shape, list) or not shape or not all(_is_int(d) and d >= 1 for d in shape):
        raise FormatError(f"{where}: weight_shape must be a non-empty list of positive integers, got {shape!r}")
    fmt = entry["format"]
    if not isinstance(fmt, dict) or _canonical(format_from_dict(fmt).to_dict()) != _canonical(fmt):
        raise FormatError(f"{where}: format {fmt!r} is not written in full canonical form "
                          "(every field, with its JSON type)")
    extras = entry["extras"]
    if not isinstance(extras, list) or not all(isinstance(k, str) and k for k in extras) or len(set(extras)) != len(extras):
        raise FormatError(f"{where}: extras must be a list of distinct names, got {extras!r}")
    if not isinstance(entry["attrs"], dict):
        raise FormatError(f"{where}: attrs must be a JSON object, got {entry['attrs']!r}")
    _check_geometry(where, shape, entry["attrs"])


def _check_geometry(where: str, shape: list[int], attrs: dict[str, Any]) -> None:
    """The weight shape the layer's own attributes imply, where the attributes state it."""
    expect = {}
    if "out_features" in attrs or "in_features" in attrs:
        expect = {0: attrs.get("out_features"), 1: attrs.get("in_features")}
        if len(shape) != 2:
            raise FormatError(f"{where}: a linear layer's weight_shape has 2 dimensions, got {shape}")
    elif "out_channels" in attrs or "kernel_size" in attrs:
        kernel, groups, cin = attrs.get("kernel_size"), attrs.get("groups", 1), attrs.get("in_channels")
        if len(shape) != 4:
            raise FormatError(f"{where}: a conv layer's weight_shape has 4 dimensions, got {shape}")
        expect = {0: attrs.get("out_channels"), 1: cin // groups if _is_int(cin) and _is_int(groups) and groups else None}
        if isinstance(kernel, list) and len(kernel) == 2:
            expect.update({2: kernel[0], 3: kernel[1]})
    for dim, value in expect.items():
        if value is not None and value != shape[dim]:
            raise FormatError(f"{where}: weight_shape {shape} disagrees with the layer's attributes {attrs}")


def check_tensors(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Raise FormatError unless every tensor belongs to a layer (or is shared) with the dtype written, and a
    layer's float extras (bias, scales) are finite."""
    claimed = set()
    for entry in header["layers"]:
        prefix = f"layers/{entry['name']}/"
        channels = entry["weight_shape"][0]
        is_log = isinstance(format_from_dict(entry["format"]), LogFormat)
        for key, (dtype, ndim) in LAYER_TENSORS.items():
            arr = tensors.get(prefix + key)
            if arr is None:
                continue
            if arr.dtype != np.dtype(dtype) or arr.ndim != ndim or (key != "codes" and arr.shape[0] != channels):
                raise FormatError(f"layer {entry['name']}: tensor {key} is {arr.dtype} {arr.shape}, "
                                  f"expected {dtype} with {ndim} dimension(s) and {channels} channels")
            if key in ("u", "h") and not is_log:
                raise FormatError(f"layer {entry['name']}: a decode table ({key}) on a layer that is not log-coded")
            claimed.add(prefix + key)
        for key in entry["extras"]:
            arr = tensors.get(prefix + "x/" + key)
            if arr is not None and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise FormatError(f"layer {entry['name']}: extra {key} holds NaN or Inf")
            claimed.add(prefix + "x/" + key)
    shared = {k for k in tensors if k.startswith(("shared/", "acts/"))}
    stray = sorted(set(tensors) - claimed - shared)
    if stray:
        raise FormatError(f"tensors no layer claims: {stray[:5]}")
