"""The exported artifact: packed weight codes and everything needed to run them, in one checked file.

Container: safetensors (no pickle, memory-mappable) with a JSON header in its metadata under the key
``logmac``.  The header names the format version, the method settings, the model metadata and every
layer (op, weight shape, weight format, attributes), and carries a SHA-256 checksum over itself and all
tensor bytes.  :func:`load` validates everything (container, version, checksum, each layer's format,
table and codes) before it returns, so a bad file fails whole with a message that names the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from logmac.format import (
    ADALOG_R,
    AdaLogFormat,
    DecodeTable,
    FormatError,
    LogFormat,
    UniformFormat,
    WeightFormat,
    format_from_dict,
    pack,
    split_words,
    unpack,
)
from logmac.format.artifact_checks import check_header, check_tensors
from logmac.format.atomic import atomic_write_bytes
from logmac.format.groups import check_group_exponents, stored_group_bits

FORMAT_VERSION = 1
HEADER_KEY = "logmac"


class ArtifactError(ValueError):
    """An artifact file that cannot be trusted: corrupt, truncated, edited or from another version."""


@dataclass
class QuantizedLayer:
    """One layer's quantized weights and the parameters that run them.

    ``codes`` holds code words (log formats) or signed/unsigned integers (uniform), shaped like the
    weight with the output channel first.  ``scale`` is the per-channel float value of integer weight 1
    (for log formats it is the decode table's channel scale).  ``extras`` carries named arrays other
    rooms need (bias, requantization multipliers and shifts, activation parameters); ``attrs`` carries
    JSON-able settings (stride, padding, activation clamp, ...).
    """

    name: str
    op: str
    fmt: WeightFormat
    codes: np.ndarray
    scale: np.ndarray
    table: DecodeTable | None = None
    zero_point: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.codes.shape)

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.weight_shape))

    def validate(self) -> None:
        """Raise FormatError unless codes, table and scales agree with the format."""
        channels = self.weight_shape[0]
        if self.scale.shape != (channels,):
            raise FormatError(f"layer {self.name}: scale shape {self.scale.shape} != ({channels},)")
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise FormatError(f"layer {self.name}: channel scales must be finite and positive")
        if isinstance(self.fmt, LogFormat):
            if self.table is None:
                raise FormatError(f"layer {self.name}: a log-coded layer needs its decode table")
            self.table.validate(self.fmt)
            if self.table.channels != channels or not np.array_equal(self.table.scale, self.scale):
                raise FormatError(f"layer {self.name}: decode table does not match the layer's channels/scales")
            split_words(self.codes, self.fmt)
        else:
            lo, hi = self.fmt.qmin, self.fmt.qmax
            if self.codes.size and (self.codes.min() < lo or self.codes.max() > hi):
                raise FormatError(f"layer {self.name}: uniform codes outside [{lo}, {hi}]")
        if self.op in LATTICE_OPS:
            _validate_lattice(self)
        check_group_exponents(self.name, self.weight_shape, self.extras, self.attrs)

    def storage_words(self) -> np.ndarray:
        """The codes as unsigned words of ``fmt.storage_bits`` bits (two's complement for uniform)."""
        words = self.codes.astype(np.int64)
        if isinstance(self.fmt, UniformFormat):
            words = words & ((1 << self.fmt.bits) - 1)
        return words


LATTICE_OPS = ("lattice_conv2d", "lattice_linear")
ACTIVATION_KINDS = ("adalog", "uniform")


@dataclass
class ActivationLayer:
    """A quantized activation the datapath reads as codes: the input of a matmul whose other side is a weight
    layer or another activation (attn@V).

    ``adalog``: log-coded non-negative values of ``x + offset`` (``fmt`` an :class:`AdaLogFormat`, one float
    ``scale``).  ``uniform``: unsigned ``bits``-bit codes ``clamp(round(x / scale) + zero_point, 0, 2**bits - 1)``
    with ``scale`` and ``zero_point`` arrays of one shape (``()`` per tensor, ``(1, H, 1, 1)`` per head).
    """

    name: str
    kind: str
    bits: int
    scale: np.ndarray
    zero_point: np.ndarray | None = None
    fmt: AdaLogFormat | None = None
    offset: float = 0.0

    def validate(self) -> None:
        """Raise FormatError unless the parameters are ones the datapath can run."""
        where = f"activation {self.name}"
        if self.kind not in ACTIVATION_KINDS:
            raise FormatError(f"{where}: kind must be one of {ACTIVATION_KINDS}, got {self.kind!r}")
        if not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise FormatError(f"{where}: scales must be finite and positive")
        if self.kind == "adalog":
            if not isinstance(self.fmt, AdaLogFormat) or self.fmt.bits != self.bits:
                raise FormatError(f"{where}: an adalog activation needs a {self.bits}-bit AdaLog format")
            if self.scale.shape != () or self.zero_point is not None:
                raise FormatError(f"{where}: an adalog activation has one scale and no zero point")
            if not np.isfinite(self.offset) or self.offset < 0:
                raise FormatError(f"{where}: the offset must be finite and non-negative, got {self.offset}")
            return
        if self.fmt is not None or self.offset != 0.0:
            raise FormatError(f"{where}: a uniform activation has no AdaLog format and no offset")
        if not 1 <= self.bits <= 16:
            raise FormatError(f"{where}: uniform activation bits must be 1..16, got {self.bits}")
        zp = self.zero_point
        if zp is None or zp.shape != self.scale.shape:
            raise FormatError(f"{where}: zero point shape {None if zp is None else zp.shape} != scale shape {self.scale.shape}")
        if np.any(zp != np.round(zp)) or np.any(zp < 0) or np.any(zp > (1 << self.bits) - 1):
            raise FormatError(f"{where}: zero points must be integers in 0..{(1 << self.bits) - 1}")

    def header(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "bits": int(self.bits), "offset": float(self.offset),
                "format": None if self.fmt is None else self.fmt.to_dict()}


def _validate_lattice(layer: QuantizedLayer) -> None:
    """A LatticeQ layer (docs/artifact-schema.md): b-bit coordinates, integer basis, offsets, one zero point."""
    info, ex, name = layer.attrs.get("lattice"), layer.extras, layer.name
    if not isinstance(info, dict) or not {"bits", "basis_bits", "dim"} <= set(info):
        raise FormatError(f"layer {name}: a lattice layer needs attrs.lattice with bits, basis_bits and dim")
    if "basis_int" not in ex or "offset_int" not in ex:
        raise FormatError(f"layer {name}: a lattice layer needs extras basis_int and offset_int")
    channels, n, bits = layer.weight_shape[0], int(info["dim"]), int(info["bits"])
    basis, offset = ex["basis_int"], ex["offset_int"]
    if not isinstance(layer.fmt, UniformFormat) or layer.fmt.symmetric or layer.fmt.bits != bits:
        raise FormatError(f"layer {name}: lattice coordinates must be unsigned {bits}-bit uniform codes")
    if n < 1 or (layer.num_weights // channels) % n:
        raise FormatError(f"layer {name}: {layer.num_weights // channels} weights per channel do not split into {n}-vectors")
    if basis.ndim != 3 or basis.shape[0] not in (1, channels) or basis.shape[1:] != (n, n):
        raise FormatError(f"layer {name}: basis_int shape {basis.shape}, expected (1 or {channels}, {n}, {n})")
    limit = (1 << int(info["basis_bits"])) - 1
    if not np.issubdtype(basis.dtype, np.integer) or np.any(np.abs(basis) > limit) or np.any(basis % 2 == 0):
        raise FormatError(f"layer {name}: basis_int entries must be odd integers within +-{limit}")
    if offset.shape != (channels,) or not np.issubdtype(offset.dtype, np.integer):
        raise FormatError(f"layer {name}: offset_int must be ({channels},) integers")
    if layer.zero_point is None or np.any(layer.zero_point != (1 << (bits - 1)) - 1):
        raise FormatError(f"layer {name}: lattice coordinate zero point must be {(1 << (bits - 1)) - 1}")


@dataclass
class Artifact:
    """A quantized model: its layers plus free-form JSON metadata and shared tensors."""

    layers: dict[str, QuantizedLayer]
    settings: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    activations: dict[str, ActivationLayer] = field(default_factory=dict)

    def validate(self) -> None:
        for layer in self.layers.values():
            layer.validate()
        for act in self.activations.values():
            act.validate()


def _words_to_codes(words: np.ndarray, fmt: WeightFormat, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(fmt, UniformFormat) and fmt.symmetric:
        signed = words.astype(np.int64)
        signed = np.where(signed >= (1 << (fmt.bits - 1)), signed - (1 << fmt.bits), signed)
        return signed.astype(np.int16).reshape(shape)
    return words.astype(np.uint16 if isinstance(fmt, LogFormat) else np.int16).reshape(shape)


def _checksum(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def to_bytes(artifact: Artifact) -> bytes:
    """Serialise an artifact (validated first, so nothing illegal is ever written)."""
    artifact.validate()
    tensors: dict[str, np.ndarray] = {}
    layer_headers = []
    for name, layer in artifact.layers.items():
        prefix = f"layers/{name}/"
        tensors[prefix + "codes"] = pack(layer.storage_words(), layer.fmt.storage_bits)
        tensors[prefix + "scale"] = layer.scale.astype(np.float64)
        if layer.table is not None:
            tensors[prefix + "u"] = layer.table.u.astype(np.uint8)
            tensors[prefix + "h"] = layer.table.h.astype(np.uint8)
        if layer.zero_point is not None:
            tensors[prefix + "zero_point"] = np.asarray(layer.zero_point, dtype=np.int32)
        for key, value in layer.extras.items():
            tensors[prefix + "x/" + key] = np.ascontiguousarray(value)
        layer_headers.append({
            "name": name,
            "op": layer.op,
            "weight_shape": list(layer.weight_shape),
            "format": layer.fmt.to_dict(),
            "extras": sorted(layer.extras),
            "attrs": layer.attrs,
        })
    for key, value in artifact.tensors.items():
        tensors["shared/" + key] = np.ascontiguousarray(value)
    for name, act in artifact.activations.items():
        tensors[f"acts/{name}/scale"] = np.asarray(act.scale, dtype=np.float64)
        if act.zero_point is not None:
            tensors[f"acts/{name}/zero_point"] = np.asarray(act.zero_point, dtype=np.int32)
    header = {
        "format_version": FORMAT_VERSION,
        "settings": artifact.settings,
        "meta": artifact.meta,
        "layers": layer_headers,
    }
    if artifact.activations:
        header["activations"] = [act.header() for act in artifact.activations.values()]
    header["checksum"] = _checksum(header, tensors)
    return st_save(tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})


def save(artifact: Artifact, path: str | Path) -> Path:
    """Write ``artifact`` to ``path`` (atomically: a crash never leaves half a file under that name)."""
    return atomic_write_bytes(path, to_bytes(artifact))


def _read_header(data: bytes, source: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        tensors = st_load(data)
        meta_len = int.from_bytes(data[:8], "little")
        container_meta = json.loads(data[8:8 + meta_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{source}: not a readable safetensors container, truncated or corrupt ({exc})") from exc
    if HEADER_KEY not in container_meta:
        raise ArtifactError(f"{source}: a safetensors file but not a logmac artifact (no '{HEADER_KEY}' header)")
    try:
        header = json.loads(container_meta[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source}: the logmac header is not valid JSON ({exc})") from exc
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: artifact format version {version!r}, but this logmac reads version {FORMAT_VERSION}; "
            "re-export it with this version"
        )
    stored = header.pop("checksum", None)
    if stored != _checksum(header, tensors):
        raise ArtifactError(f"{source}: checksum mismatch, the file was edited or damaged after export")
    return header, tensors


def from_bytes(data: bytes, source: str = "<bytes>") -> Artifact:
    """Parse and fully validate an artifact; raises ArtifactError naming the first problem found."""
    header, tensors = _read_header(data, source)
    try:
        check_header(header)
        check_tensors(header, tensors)
    except FormatError as exc:
        raise ArtifactError(f"{source}: {exc}") from exc
    layers: dict[str, QuantizedLayer] = {}
    try:
        for entry in header["layers"]:
            name = entry["name"]
            prefix = f"layers/{name}/"
            fmt = format_from_dict(entry["format"])
            shape = tuple(entry["weight_shape"])
            words = unpack(tensors[prefix + "codes"], fmt.storage_bits, int(np.prod(shape)))
            scale = tensors[prefix + "scale"]
            table = None
            if prefix + "u" in tensors:
                table = DecodeTable(tensors[prefix + "u"], tensors[prefix + "h"], scale)
            zp = tensors.get(prefix + "zero_point")
            layer = QuantizedLayer(
                name=name, op=entry["op"], fmt=fmt, codes=_words_to_codes(words, fmt, shape), scale=scale,
                table=table, zero_point=zp,
                extras={k: tensors[prefix + "x/" + k] for k in entry["extras"]}, attrs=entry["attrs"],
            )
            layer.validate()
            layers[name] = layer
        activations = _read_activations(header.get("activations", []), tensors)
    except KeyError as exc:
        raise ArtifactError(f"{source}: missing entry {exc} in the artifact") from exc
    except FormatError as exc:
        raise ArtifactError(f"{source}: {exc}") from exc
    shared = {k.removeprefix("shared/"): v for k, v in tensors.items() if k.startswith("shared/")}
    return Artifact(layers=layers, settings=header["settings"], meta=header["meta"], tensors=shared,
                    activations=activations)


def _read_activations(entries: list[dict[str, Any]], tensors: dict[str, np.ndarray]) -> dict[str, ActivationLayer]:
    """The activation layers of the header, each validated (FormatError names the first bad one)."""
    activations = {}
    for entry in entries:
        name = entry["name"]
        fmt = None if entry["format"] is None else format_from_dict(entry["format"])
        if fmt is not None and not isinstance(fmt, AdaLogFormat):
            raise FormatError(f"activation {name}: format kind {entry['format'].get('kind')!r} is not an activation format")
        zp = tensors.get(f"acts/{name}/zero_point")
        act = ActivationLayer(name=name, kind=entry["kind"], bits=int(entry["bits"]), scale=tensors[f"acts/{name}/scale"],
                              zero_point=zp, fmt=fmt, offset=float(entry["offset"]))
        act.validate()
        activations[name] = act
    return activations


def load(path: str | Path) -> Artifact:
    """Read and validate an artifact file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the artifact ({exc.strerror or exc})") from exc
    return from_bytes(data, str(path))


def summary(artifact: Artifact) -> dict[str, Any]:
    """Sizes a user wants before deploying: per layer and in total, packed codes vs fp32."""
    rows = []
    for layer in artifact.layers.values():
        fmt = layer.fmt
        label = (f"{fmt.grid.value} W{fmt.bits} zero={fmt.zero.value} approx={'on' if fmt.hardware_approx else 'off'}"
                 if isinstance(fmt, LogFormat) else f"uniform W{fmt.bits} {'sym' if fmt.symmetric else 'asym'}")
        code_bytes = (layer.num_weights * fmt.storage_bits + 7) // 8
        meta_bytes = layer.scale.nbytes // 2  # channel scales as fp32 on device
        if layer.op in LATTICE_OPS:  # 2^bB odd basis entries fit bB bits each; one 32-bit offset per channel
            info = layer.attrs["lattice"]
            per = "channel" if info.get("per_channel") else "layer"
            label = f"lattice W{fmt.bits} n={info['dim']} B{info['basis_bits']} basis per {per}"
            meta_bytes += (layer.extras["basis_int"].size * int(info["basis_bits"]) + 7) // 8 + 4 * len(layer.scale)
        if layer.table is not None:
            meta_bytes += (layer.table.u.size * (fmt.shift_bits + 1) + 7) // 8
        group_bits = stored_group_bits(layer.extras, layer.attrs)
        if group_bits:
            label += f" group exponents {layer.attrs['group_bits']}b/{layer.attrs['group_size']}"
            meta_bytes += (group_bits + 7) // 8
        rows.append({
            "name": layer.name, "op": layer.op, "shape": list(layer.weight_shape), "format": label,
            "weights": layer.num_weights, "bits_per_weight": fmt.storage_bits,
            "code_bytes": code_bytes, "table_bytes": meta_bytes,
            "stored_bits_per_weight": 8 * (code_bytes + meta_bytes) / max(1, layer.num_weights),
        })
    weights = sum(r["weights"] for r in rows)
    stored = sum(r["code_bytes"] + r["table_bytes"] for r in rows)
    activations = [{"name": a.name, "kind": a.kind, "bits": a.bits,
                    "format": (f"AdaLog A{a.bits} base 2^({a.fmt.q}/{ADALOG_R}) zero={a.fmt.zero.value} "
                               f"max_shift={a.fmt.max_shift} offset={a.offset:g}") if a.fmt is not None
                    else f"uniform A{a.bits} {'per tensor' if a.scale.size == 1 else f'{a.scale.size} scales'}"}
                   for a in artifact.activations.values()]
    return {
        "format_version": FORMAT_VERSION,
        "settings": artifact.settings,
        "meta": artifact.meta,
        "layers": rows,
        "activations": activations,
        "weights": weights,
        "stored_bytes": stored,
        "stored_bits_per_weight": 8 * stored / weights if weights else float("nan"),
        "fp32_bytes": 4 * weights,
        "compression_vs_fp32": (4 * weights / stored) if stored else float("nan"),
    }
