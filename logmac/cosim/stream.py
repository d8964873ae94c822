"""Stimulus and capture files of the test bench, built and read with numpy (no per-beat Python).

The bench (``logmac.cosim.tbgen``) plays a command memory loaded with ``$readmemh``: each command is a
data beat for the engine's input stream or a config write, preceded by ``gap`` idle cycles.  It records
every output beat with the cycle it left the engine and dumps them with ``$writememh``.
Command word, LSB first: ``payload[PW] | gap[8] | kind[2]`` (kind 0 data, 1 config); a data payload is the
engine's input beat, a config payload is ``data[64] | addr``.  Capture word: ``output beat | cycle[32]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from logmac.cosim.vectors import Vectors
from logmac.hw import config as C
from logmac.hw.config import HwConfig
from logmac.hw.regmap import Requant, channel_writes, int_words, table_image

GAP_BITS = 8
KIND_DATA, KIND_CFG = 0, 1


@dataclass(frozen=True)
class TbLayout:
    """Bit widths shared by the generated bench and the files written for it."""

    in_bits: int
    out_bits: int
    payload_bits: int
    cmd_bits: int
    cap_bits: int

    @classmethod
    def of(cls, hw: HwConfig) -> TbLayout:
        in_bits = hw.lanes * (hw.act_bits + hw.word_bits) + 1
        out_bits = (hw.out_bits if hw.requant else 0) + hw.acc_bits + 1
        payload = max(in_bits, C.CFG_DATA_BITS + hw.cfg_addr_bits)
        return cls(in_bits, out_bits, payload, payload + GAP_BITS + 2, out_bits + 32)


def bits_of(values: np.ndarray, width: int) -> np.ndarray:
    """Two's-complement bits (LSB first) of int64 values, shape values.shape + (width,)."""
    v = np.asarray(values, dtype=np.int64)
    return ((v[..., None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)


def _channel_words(hw: HwConfig, v: Vectors) -> np.ndarray:
    return v.codes if v.is_log else int_words(hw, v.int_weights)


def build_commands(hw: HwConfig, v: Vectors, rng: np.random.Generator | None = None, gap_prob: float = 0.0,
                   max_gap: int = 4) -> np.ndarray:
    """The command stream (bit matrix, one row per command) that runs every channel of ``v``."""
    lay = TbLayout.of(hw)
    beats = -(-v.k // hw.lanes)
    pad = beats * hw.lanes - v.k
    x = np.pad(v.x, ((0, 0), (0, pad))).reshape(v.rows, beats, hw.lanes)
    words = np.pad(_channel_words(hw, v), ((0, 0), (0, pad))).reshape(v.channels, beats, hw.lanes)
    x_bits = bits_of(x, hw.act_bits).reshape(v.rows, beats, -1)
    last = (np.arange(beats) == beats - 1).astype(np.uint8)[None, :, None].repeat(v.rows, 0)
    blocks = []
    for c in range(v.channels):
        rq = None
        if v.multiplier is not None and hw.requant:
            rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
        image = table_image(hw, v.fmt, v.table, c) if v.is_log else None
        writes = np.array(channel_writes(hw, v.acc_bits, v.overflow, rq, image), dtype=object)
        cfg = np.zeros((len(writes), lay.cmd_bits), dtype=np.uint8)
        data = np.array([int(d) & ((1 << 63) - 1) for d in writes[:, 1]], dtype=np.int64)
        cfg[:, :63] = bits_of(data, 63)
        cfg[:, C.CFG_DATA_BITS:C.CFG_DATA_BITS + hw.cfg_addr_bits] = bits_of(writes[:, 0].astype(np.int64), hw.cfg_addr_bits)
        cfg[:, lay.payload_bits + GAP_BITS:] = bits_of(np.full(len(writes), KIND_CFG), 2)
        w_bits = bits_of(words[c], hw.word_bits).reshape(1, beats, -1).repeat(v.rows, 0)
        beat = np.concatenate([x_bits, w_bits, last], axis=2).reshape(v.rows * beats, lay.in_bits)
        dat = np.zeros((beat.shape[0], lay.cmd_bits), dtype=np.uint8)
        dat[:, :lay.in_bits] = beat
        blocks += [cfg, dat]
    cmds = np.concatenate(blocks)
    if rng is not None and gap_prob > 0:
        gaps = np.where(rng.random(len(cmds)) < gap_prob, rng.integers(1, max_gap + 1, size=len(cmds)), 0)
        cmds[:, lay.payload_bits:lay.payload_bits + GAP_BITS] = bits_of(gaps, GAP_BITS)
    return cmds


def write_hex(bit_rows: np.ndarray, path: str | Path) -> None:
    """Write a bit matrix as ``$readmemh`` text, one word a line, most significant nibble first."""
    n, width = bit_rows.shape
    digits = -(-width // 4)
    padded = np.zeros((n, digits * 4), dtype=np.uint8)
    padded[:, :width] = bit_rows
    nibbles = padded.reshape(n, digits, 4) @ np.array([1, 2, 4, 8], dtype=np.uint8)
    ascii_ = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles[:, ::-1]]
    lines = np.concatenate([ascii_, np.full((n, 1), ord("\n"), dtype=np.uint8)], axis=1)
    Path(path).write_bytes(lines.tobytes())


@dataclass
class Capture:
    """Output beats as the bench recorded them, in arrival order."""

    y: np.ndarray | None
    acc: np.ndarray
    overflow: np.ndarray
    cycle: np.ndarray


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def read_capture(hw: HwConfig, path: str | Path | None) -> Capture:
    """Parse the bench's ``$writememh`` dump (``None`` or a missing file: no beats)."""
    lines = []
    if path is not None and Path(path).exists():
        lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("//")]  # Icarus writes an address comment
    words = [int(ln, 16) for ln in lines]
    ys, accs, ovfs, cycles = [], [], [], []
    for w in words:
        off = 0
        if hw.requant:
            ys.append(_signed(w, hw.out_bits))
            off = hw.out_bits
        accs.append(_signed(w >> off, hw.acc_bits))
        ovfs.append((w >> (off + hw.acc_bits)) & 1)
        cycles.append(w >> (off + hw.acc_bits + 1))
    return Capture(np.array(ys, dtype=np.int64) if hw.requant else None, np.array(accs, dtype=np.int64),
                   np.array(ovfs, dtype=bool), np.array(cycles, dtype=np.int64))
