"""Code words packed at their bit width into a little-endian byte stream (the artifact's storage)."""

from __future__ import annotations

import numpy as np

from logmac.format.errors import FormatError


def pack(words: np.ndarray, bits_per_word: int) -> np.ndarray:
    """Pack unsigned words into a little-endian bit stream, ``bits_per_word`` bits each (uint8 array)."""
    words = np.asarray(words).reshape(-1).astype(np.uint64)
    if not 1 <= bits_per_word <= 16:
        raise FormatError(f"bits_per_word must be 1..16, got {bits_per_word}")
    if words.size and int(words.max()) >> bits_per_word:
        raise FormatError(f"word {int(words.max())} does not fit in {bits_per_word} bits")
    shifts = np.arange(bits_per_word, dtype=np.uint64)
    bitmat = ((words[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1), bitorder="little")


def unpack(packed: np.ndarray, bits_per_word: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` words (uint16) from a packed uint8 stream."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    need = (count * bits_per_word + 7) // 8
    if packed.size != need:
        raise FormatError(f"packed stream has {packed.size} bytes, {count} x {bits_per_word}-bit words need {need}")
    bits = np.unpackbits(packed, count=count * bits_per_word, bitorder="little").reshape(count, bits_per_word)
    weights = (1 << np.arange(bits_per_word)).astype(np.uint32)
    return (bits.astype(np.uint32) @ weights).astype(np.uint16)
