"""Layer-streamed calibration: decoder blocks' FP weight matrices live on disk, one block in memory at a time.

The chain calibrates block after block, and a block's weights are only needed from its first forward pass
(observing its inputs) until the next block's first forward.  :class:`BlockStream` keeps the blocks' weight
matrices on disk and leaves ``meta`` tensors in their place; a forward pre-hook on each block loads its
weights and sends the previously resident block's back to ``meta``.  So the fit between the two passes sees
the weights, and evaluation after quantization streams the same way.  Codes, decode tables and the small
tensors (norms, biases) stay in memory; the codes are identical to an unstreamed run.

Two stores: a model loaded whole has its matrices offloaded to a folder through accelerate
(``offload_state_dict``: one memory-mapped file per tensor, ``OffloadedWeightsLoader`` to read them back); a
model built on ``meta`` (``logmac.models.load_model(..., lazy=True)``) is read straight from its safetensors
checkpoint (``source``, after :func:`materialize_outside_blocks`), so it is never whole in memory.

Must be set up after the blocks' linears are wrapped (the FP weight checks read the values; a lazy model's
matrices are checked as each block is first read); the ``QuantLayer`` s keep their decoded tables, which do
not need the FP weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from accelerate.utils import OffloadedWeightsLoader, offload_state_dict, set_module_tensor_to_device
from torch import nn

from logmac.quant.config import QuantError

Entry = tuple[nn.Module, str, str]  # (module, parameter name, key in the store)
NOT_STREAMABLE = "load the model without --offload-dir, or re-save it with save_pretrained"


class TensorSource(Protocol):
    """A checkpoint read one tensor at a time (``logmac.models.checkpoint.LazyWeights``); keys are ``root``'s
    parameter names, ``key_of`` gives each parameter's key by identity (it survives wrapping)."""

    root: nn.Module
    key_of: dict[int, str]

    def __contains__(self, key: str) -> bool: ...

    def read(self, key: str, device: str | torch.device = "cpu") -> torch.Tensor: ...


def _streamed(blocks: Sequence[nn.Module]) -> set[int]:
    """ids of the blocks' weight matrices: the tensors that are streamed (everything else stays resident)."""
    return {id(p) for b in blocks for p in b.parameters() if p.ndim >= 2}


def materialize_outside_blocks(source: TensorSource, blocks: Sequence[nn.Module], device: str | torch.device) -> None:
    """Read every parameter of a ``meta``-built ``source.root`` except the blocks' weight matrices onto
    ``device`` (embeddings, norms, biases, the head), then re-tie tied weights; names what the checkpoint lacks."""
    streamed = _streamed(blocks)
    for name, p in list(source.root.named_parameters(remove_duplicate=False)):
        if p.is_meta and id(p) not in streamed and name in source:
            set_module_tensor_to_device(source.root, name, device, value=source.read(name))
    tie = getattr(source.root, "tie_weights", None)
    if callable(tie):
        tie()
    missing = [n for n, p in source.root.named_parameters() if p.is_meta and id(p) not in streamed]
    missing += [n for n, b in source.root.named_buffers() if b.is_meta]
    if missing:
        raise QuantError(f"the checkpoint holds no tensor for {missing[0]} ({len(missing)} missing in all); "
                         f"{NOT_STREAMABLE}")


class BlockStream:
    """Keeps at most one block's weight matrices resident; ``peak_bytes`` is the most ever resident at once."""

    def __init__(self, blocks: Sequence[nn.Module], folder: str | Path | None = None, *,
                 source: TensorSource | None = None, device: str | torch.device = "cpu") -> None:
        """Offload the blocks' matrices to ``folder``, or (``source``, a ``meta``-built model) read them from the
        checkpoint onto ``device``; exactly one of the two."""
        if (folder is None) == (source is None):
            raise ValueError("BlockStream takes an offload folder or a checkpoint source, not both or neither")
        self.source = source
        self.entries: list[list[Entry]] = []
        self.device: list[torch.device] = []
        self.checked: set[int] = set()
        state: dict[str, torch.Tensor] = {}
        for i, block in enumerate(blocks):
            items = []
            for mname, mod in block.named_modules():
                for pname, p in mod.named_parameters(recurse=False):
                    if p.ndim < 2:
                        continue
                    if source is None:
                        key = f"block{i}.{mname}.{pname}"
                        state[key] = p.detach().cpu()
                    else:
                        key = source.key_of.get(id(p), f"{mname}.{pname}")
                        if key not in source:
                            raise QuantError(f"the checkpoint holds no tensor for {key}; {NOT_STREAMABLE}")
                    items.append((mod, pname, key))
            self.entries.append(items)
            self.device.append(torch.device(device) if source is not None else next(block.parameters()).device)
        if source is None:
            offload_state_dict(folder, state)
            del state
            self.loader = OffloadedWeightsLoader(save_folder=folder)
            self.checked = set(range(len(blocks)))  # wrap_model checked the values of a model loaded whole
        self.resident: int | None = None
        self.resident_bytes = self.peak_bytes = 0
        self.block_bytes = [sum(p.numel() * p.element_size() for m, n, _ in items for p in [getattr(m, n)])
                            for items in self.entries]
        for i in range(len(blocks)):
            self._unload(i)
        self.hooks = [b.register_forward_pre_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _read(self, key: str, device: torch.device) -> torch.Tensor:
        return self.source.read(key, device) if self.source is not None else self.loader[key]

    def _hook(self, i: int):
        def pre(_module, _args) -> None:
            self.load(i)
        return pre

    def load(self, i: int) -> None:
        """Make block ``i`` resident (the previous one goes back to disk first)."""
        if self.resident == i:
            return
        if self.resident is not None:
            self._unload(self.resident)
        for mod, name, key in self.entries[i]:
            value = self._read(key, self.device[i])
            if i not in self.checked and not torch.isfinite(value).all():
                raise QuantError(f"layer {key} has NaN or Inf weights; fix the checkpoint before quantizing")
            set_module_tensor_to_device(mod, name, self.device[i], value=value)
        self.checked.add(i)
        self.resident, self.resident_bytes = i, self.block_bytes[i]
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes)

    def _unload(self, i: int) -> None:
        for mod, name, _ in self.entries[i]:
            set_module_tensor_to_device(mod, name, "meta")
        if self.resident == i:
            self.resident, self.resident_bytes = None, 0

    def close(self) -> None:
        """Load every block back into memory and remove the hooks (the model is whole again)."""
        for h in self.hooks:
            h.remove()
        for i, items in enumerate(self.entries):
            for mod, name, key in items:
                set_module_tensor_to_device(mod, name, self.device[i], value=self._read(key, self.device[i]))
        self.resident = None
