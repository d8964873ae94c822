"""Layer-streamed calibration: decoder blocks' FP weight matrices live on disk, one block in memory at a time.

The chain calibrates block after block, and a block's weights are only needed from its first forward pass
(observing its inputs) until the next block's first forward.  :class:`BlockStream` offloads every block's
weight matrices to a folder through accelerate (``offload_state_dict``: one memory-mapped file per tensor,
``OffloadedWeightsLoader`` to read them back) and leaves ``meta`` tensors in their place; a forward pre-hook on
each block loads its weights and sends the previously resident block's back to ``meta``.  So the fit between
the two passes sees the weights, and evaluation after quantization streams the same way.  Codes, decode tables
and the small tensors (norms, biases) stay in memory; the codes are identical to an unstreamed run.

Must be set up after the blocks' linears are wrapped (the FP weight checks read the values); the
``QuantLayer`` s keep their decoded tables, which do not need the FP weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.utils import OffloadedWeightsLoader, offload_state_dict, set_module_tensor_to_device
from torch import nn

Entry = tuple[nn.Module, str, str]  # (module, parameter name, key in the offload folder)


class BlockStream:
    """Keeps at most one block's weight matrices resident; ``peak_bytes`` is the most ever resident at once."""

    def __init__(self, blocks: Sequence[nn.Module], folder: str | Path) -> None:
        self.folder = Path(folder)
        self.entries: list[list[Entry]] = []
        self.device: list[torch.device] = []
        state: dict[str, torch.Tensor] = {}
        for i, block in enumerate(blocks):
            items = []
            for mname, mod in block.named_modules():
                for pname, p in mod.named_parameters(recurse=False):
                    if p.ndim >= 2:
                        key = f"block{i}.{mname}.{pname}"
                        state[key] = p.detach().cpu()
                        items.append((mod, pname, key))
            self.entries.append(items)
            self.device.append(next(block.parameters()).device)
        offload_state_dict(self.folder, state)
        del state
        self.loader = OffloadedWeightsLoader(save_folder=self.folder)
        self.resident: int | None = None
        self.resident_bytes = self.peak_bytes = 0
        self.block_bytes = [sum(self._numel(m, n) for m, n, _ in items) for items in self.entries]
        for i in range(len(blocks)):
            self._unload(i)
        self.hooks = [b.register_forward_pre_hook(self._hook(i)) for i, b in enumerate(blocks)]

    @staticmethod
    def _numel(mod: nn.Module, name: str) -> int:
        p = getattr(mod, name)
        return p.numel() * p.element_size()

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
            set_module_tensor_to_device(mod, name, self.device[i], value=self.loader[key])
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
                set_module_tensor_to_device(mod, name, self.device[i], value=self.loader[key])
        self.resident = None
