"""Tensors of a ``save_pretrained`` safetensors checkpoint, read one at a time and never all at once.

A model larger than memory is built on ``meta`` (no storage) and its tensors are read from the checkpoint
when they are needed: the layer-streamed calibration (:mod:`logmac.quant.stream`) reads one decoder block's
matrices at a time straight from here, so the model is never whole in memory, not even while loading.
safetensors files are memory-mapped, so reading one tensor touches only that tensor's bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint folder whose safetensors files are missing, corrupt or do not match the model."""


class LazyWeights:
    """Where every tensor of ``root`` (a model built on ``meta``) lies in the checkpoint folder.

    Keys are ``root``'s own parameter names, which ``save_pretrained`` uses as the checkpoint's keys.
    ``key_of`` maps each parameter (by identity) to its key as built, so the key is still found after a
    quantizer wraps the module that holds it.
    """

    def __init__(self, root: nn.Module, folder: str | Path, dtype: torch.dtype = torch.float32) -> None:
        from safetensors import safe_open

        self.root, self.folder, self.dtype = root, Path(folder), dtype
        self.key_of = {id(p): name for name, p in root.named_parameters(remove_duplicate=False)}
        if (self.folder / INDEX_FILE).is_file():
            try:
                weight_map = json.loads((self.folder / INDEX_FILE).read_text())["weight_map"]
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{self.folder / INDEX_FILE} is not a safetensors index ({err})") from err
            files = sorted(set(weight_map.values()))
        elif (self.folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            raise CheckpointError(f"{self.folder} has no {SINGLE_FILE} or {INDEX_FILE}")
        self.file_of: dict[str, Path] = {}
        for name in files:
            try:
                with safe_open(self.folder / name, framework="pt") as f:
                    self.file_of.update(dict.fromkeys(f.keys(), self.folder / name))
            except Exception as err:  # safetensors raises its own SafetensorError for a bad header
                raise CheckpointError(f"{self.folder / name} cannot be read as safetensors ({err})") from err

    @staticmethod
    def available(folder: str | Path) -> bool:
        """Whether ``folder`` holds a safetensors checkpoint this class can stream from."""
        return (Path(folder) / SINGLE_FILE).is_file() or (Path(folder) / INDEX_FILE).is_file()

    def __contains__(self, key: str) -> bool:
        return key in self.file_of

    def read(self, key: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Tensor ``key`` in ``self.dtype`` (floating tensors) on ``device``."""
        from safetensors import safe_open

        if key not in self.file_of:
            raise CheckpointError(f"{self.folder} holds no tensor {key!r}")
        with safe_open(self.file_of[key], framework="pt", device="cpu") as f:
            tensor = f.get_tensor(key)
        return (tensor.to(self.dtype) if tensor.is_floating_point() else tensor).to(device)
