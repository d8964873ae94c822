"""Stimulus and capture files of the test bench, built and read with numpy (no per-beat Python).

The bench (``logmac.cosim.tbgen``) plays a command memory loaded with ``$fread`` from a binary file (one
record of ``TbLayout.cmd_bytes`` bytes per command, most significant byte first: no hex text to format or
parse): each command is a data beat for the engine's input stream or a config write, preceded by ``gap`` idle
cycles.  It records every output beat with the cycle it left the engine and dumps them with ``$writememh``.
Command word, LSB first: ``payload[PW] | gap[8] | kind[2]`` (kind 0 data, 1 config); a data payload is the
engine's input beat, a config payload is ``data[64] | addr``.  Capture word: ``output beat | cycle[32]``.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    @property
    def cmd_bytes(self) -> int:
        """Bytes of one command record in the stimulus file (the bench's memory word is this many bytes wide)."""
        return -(-self.cmd_bits // 8)


def bits_of(values: np.ndarray, width: int) -> np.ndarray:
    """Two's-complement bits (LSB first) of int64 values, shape values.shape + (width,), ``width`` 0..64
    (unpacked from the values' little-endian bytes: no int64 array per bit)."""
    if not 0 <= width <= 64:
        raise ValueError(f"bit width must be 0..64, got {width}")
    v = np.ascontiguousarray(values, dtype="<i8")
    data = v.view(np.uint8).reshape(v.shape + (8,))[..., :-(-width // 8)]
    return np.unpackbits(data, axis=-1, bitorder="little")[..., :width]


def config_rows(lay: TbLayout, addr_bits: int, writes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Config-write commands (bit rows): data in the low 63 bits, the address above ``CFG_DATA_BITS``, kind 1."""
    rows = np.zeros((len(writes), lay.cmd_bits), dtype=np.uint8)
    rows[:, :63] = bits_of(np.array([int(d) & ((1 << 63) - 1) for _, d in writes], dtype=np.int64), 63)
    rows[:, C.CFG_DATA_BITS:C.CFG_DATA_BITS + addr_bits] = bits_of(np.array([a for a, _ in writes], dtype=np.int64),
                                                                   addr_bits)
    rows[:, lay.payload_bits + GAP_BITS:] = bits_of(np.full(len(writes), KIND_CFG), 2)
    return rows


def data_rows(lay: TbLayout, beats: np.ndarray) -> np.ndarray:
    """Data commands (kind 0): each row of ``beats`` (an input beat's bits, LSB first) widened to a command."""
    rows = np.zeros((beats.shape[0], lay.cmd_bits), dtype=np.uint8)
    rows[:, :beats.shape[1]] = beats
    return rows


def lane_beats(x: np.ndarray, act_bits: int, words: np.ndarray, word_bits: int, lanes: int, x_pad: int = 0
               ) -> np.ndarray:
    """Input beats of one channel, ``x[lanes] | w[lanes] | last`` per beat: every row of ``x`` (rows, K) against
    the channel's words (K), K padded to whole beats (activations with ``x_pad``, words with 0)."""
    rows, k = x.shape
    beats = -(-k // lanes)
    pad = beats * lanes - k
    xb = bits_of(np.pad(x, ((0, 0), (0, pad)), constant_values=x_pad).reshape(rows, beats, lanes), act_bits)
    wb = bits_of(np.pad(words, (0, pad)).reshape(beats, lanes), word_bits).reshape(1, beats, -1).repeat(rows, 0)
    last = (np.arange(beats) == beats - 1).astype(np.uint8)[None, :, None].repeat(rows, 0)
    return np.concatenate([xb.reshape(rows, beats, -1), wb, last], axis=2).reshape(rows * beats, -1)


def add_gaps(cmds: np.ndarray, lay: TbLayout, rng: np.random.Generator | None, gap_prob: float, max_gap: int = 4
             ) -> np.ndarray:
    """Idle cycles before a random share (``gap_prob``) of the commands, 1..``max_gap`` each (in place)."""
    if rng is not None and gap_prob > 0:
        gaps = np.where(rng.random(len(cmds)) < gap_prob, rng.integers(1, max_gap + 1, size=len(cmds)), 0)
        cmds[:, lay.payload_bits:lay.payload_bits + GAP_BITS] = bits_of(gaps, GAP_BITS)
    return cmds


def _channel_words(hw: HwConfig, v: Vectors) -> np.ndarray:
    return v.codes if v.is_log else int_words(hw, v.int_weights)


def build_commands(hw: HwConfig, v: Vectors, rng: np.random.Generator | None = None, gap_prob: float = 0.0,
                   max_gap: int = 4) -> np.ndarray:
    """The command stream (bit matrix, one row per command) that runs every channel of ``v``."""
    lay = TbLayout.of(hw)
    words = _channel_words(hw, v)
    blocks = []
    for c in range(v.channels):
        rq = None
        if v.multiplier is not None and hw.requant:
            rq = Requant(int(v.multiplier[c]), int(v.shift[c]), int(v.bias[c]), v.zero_point, v.lo, v.hi)
        image = table_image(hw, v.fmt, v.table, c) if v.is_log else None
        writes = channel_writes(hw, v.acc_bits, v.overflow, rq, image)
        beats = lane_beats(v.x, hw.act_bits, words[c], hw.word_bits, hw.lanes)
        blocks += [config_rows(lay, hw.cfg_addr_bits, writes), data_rows(lay, beats)]
    return add_gaps(np.concatenate(blocks), lay, rng, gap_prob, max_gap)


def write_stimulus(bit_rows: np.ndarray, path: str | Path) -> None:
    """Write a bit matrix (rows LSB first) as the bench's ``$fread`` records: each row zero-extended to whole
    bytes, most significant byte first."""
    n, width = bit_rows.shape
    padded = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = bit_rows
    Path(path).write_bytes(np.packbits(padded[:, ::-1], axis=1).tobytes())


@dataclass
class Capture:
    """Output beats as the bench recorded them, in arrival order."""

    y: np.ndarray | None
    acc: np.ndarray
    overflow: np.ndarray
    cycle: np.ndarray


_HEX_DIGITS = np.full(256, 255, dtype=np.uint8)
_HEX_DIGITS[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_HEX_DIGITS[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)


def _hex_bits(lines: list[bytes]) -> np.ndarray:
    """Bits (LSB first) of equal-width hex words, one row per line; an x/z or other non-hex digit is an error."""
    digits = max(len(ln) for ln in lines)
    chars = np.frombuffer(b"".join(ln.rjust(digits, b"0") for ln in lines), dtype=np.uint8).reshape(len(lines), -1)
    nibbles = _HEX_DIGITS[chars]
    if (nibbles == 255).any():
        row = int(np.argwhere(nibbles == 255)[0, 0])
        raise ValueError(f"capture word {row} is not hex: {lines[row].decode(errors='replace')!r}")
    return ((nibbles[:, ::-1, None] >> np.arange(4, dtype=np.uint8)) & 1).reshape(len(lines), -1)


def _field(bits: np.ndarray, offset: int, width: int, signed: bool) -> np.ndarray:
    """Bits ``offset .. offset + width - 1`` of each row as int64 (two's complement when ``signed``)."""
    part = bits[:, offset:offset + width].astype(np.uint64)
    value = (part << np.arange(width, dtype=np.uint64)).sum(axis=1, dtype=np.uint64).view(np.int64)
    if signed and width < 64:
        value = value - ((value >> (width - 1)) & 1) * (1 << width)
    return value


def read_capture(hw: HwConfig, path: str | Path | None) -> Capture:
    """Parse the bench's ``$writememh`` dump (``None`` or a missing file: no beats)."""
    lines: list[bytes] = []
    if path is not None and Path(path).exists():
        lines = [ln.strip() for ln in Path(path).read_bytes().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(b"//")]  # Icarus writes an address comment
    if not lines:
        empty = np.zeros(0, dtype=np.int64)
        return Capture(empty.copy() if hw.requant else None, empty, np.zeros(0, dtype=bool), empty.copy())
    bits = _hex_bits(lines)
    if bits.shape[1] < TbLayout.of(hw).cap_bits:
        bits = np.pad(bits, ((0, 0), (0, TbLayout.of(hw).cap_bits - bits.shape[1])))
    off = hw.out_bits if hw.requant else 0
    return Capture(_field(bits, 0, hw.out_bits, True) if hw.requant else None, _field(bits, off, hw.acc_bits, True),
                   _field(bits, off + hw.acc_bits, 1, False).astype(bool), _field(bits, off + hw.acc_bits + 1, 32, False))
