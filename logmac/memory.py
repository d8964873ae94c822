"""Process memory for the cost columns of quantization and emulation runs (peak and resident, CPU and CUDA)."""

from __future__ import annotations

import resource
from pathlib import Path

import torch
from torch import nn


def reset_peak_memory(device: str = "cpu") -> None:
    """Start a new peak-memory window (Linux: clear VmHWM; CUDA: reset the allocator's peak). Best effort."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def resident_memory_mib() -> float:
    """Current resident memory of this process (VmRSS) in MiB; 0 where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
    except (OSError, StopIteration):
        return 0.0


def fp32_size_mib(model: nn.Module) -> float:
    """What the model's parameters and buffers take in fp32 (the unit of the memory budget)."""
    return sum(t.numel() for t in (*model.parameters(), *model.buffers())) * 4 / 2**20


def peak_memory_mib(device: str = "cpu") -> float:
    """Peak resident memory since :func:`reset_peak_memory` (process lifetime if it could not reset), in MiB,
    plus the CUDA allocator's peak on a GPU."""
    try:
        status = Path("/proc/self/status").read_text()
        rss = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda") and torch.cuda.is_available():
        return rss + torch.cuda.max_memory_allocated() / 2**20
    return rss
