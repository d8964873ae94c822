"""Build-time parameters of the MAC engine, validated once, with every derived width in one place.

Only what fixes port and register widths is a build parameter.  Everything a layer changes (the
per-channel decode table, the code width up to ``weight_bits``, the zero mode, the accumulator width up
to ``acc_bits``, saturate or wrap, the requantization constants) is loaded at run time through the
config port, so one build serves every grid kind, zero mode and many layers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from logmac.format import (
    MAX_SHIFT_LIMIT,
    FormatError,
    GridKind,
    LogFormat,
    ZeroMode,
    accumulator_bits,
    activation_range,
    multipliers,
)

EngineKind = Literal["log", "int"]

# Register map of the config port (word addresses); the decode table sits above TABLE_BASE.
REG_ACC_HI = 0  # 2**(a-1) - 1 for a run-time accumulator width a <= acc_bits
REG_WRAP = 1  # 0 saturate, 1 wrap
REG_MULT = 2  # requantization multiplier M (unsigned)
REG_SHIFT = 3  # requantization shift S
REG_BIAS = 4  # bias added to the fitted accumulator (signed)
REG_ZP = 5  # output zero point (signed)
REG_LO = 6  # output clamp low (signed)
REG_HI = 7  # output clamp high (signed)
REG_CLEAR = 8  # any write clears the sticky overflow flag
REG_ADDR_BITS = 4
CFG_DATA_BITS = 64
SHIFT_FIELD_BITS = 6  # requantization shift S in 0..63


class HwConfigError(ValueError):
    """A combination of engine parameters the hardware cannot build."""


def check_field_types(cls: type, d: dict, what: str) -> None:
    """Every value of its field's default type: a JSON ``"16"``, ``16.0`` or ``true`` is not a lane count."""
    if not isinstance(d, dict):
        raise HwConfigError(f"{what} parameters must be a JSON object, got {type(d).__name__}")
    for f in fields(cls):
        if f.name in d and type(d[f.name]) is not type(f.default):
            raise HwConfigError(f"{what} parameter {f.name} must be {type(f.default).__name__}, got {d[f.name]!r}")


def default_max_shift(weight_bits: int) -> int:
    """Largest decode-table shift any legal log format of up to ``weight_bits`` bits can hold."""
    best = 1
    for bits in range(2, weight_bits + 1):
        for grid in GridKind:
            for zero in ZeroMode:
                try:
                    best = max(best, LogFormat(bits, grid, zero=zero).max_shift)
                except FormatError:
                    continue
    return best


@dataclass(frozen=True)
class HwConfig:
    """Parameters of one engine build.

    Parameters
    ----------
    kind : ``"log"`` (shift-add lanes with a decode table) or ``"int"`` (the baseline: a real
        multiplier per lane, ``weight_bits``-bit two's-complement weights).
    weight_bits : widest weight code the build accepts; narrower codes run on the same build.
    act_bits, act_signed : activation port; a 9-bit signed port carries both int8 and uint8.
    lanes : products per cycle (one adder tree of ``lanes`` leaves).
    max_k : longest dot product the guard bits keep exact.
    acc_bits : accumulator register width (a narrower width is a run-time setting).
    pipe_every : adder-tree levels between pipeline registers (0: a combinational tree).
    requant : include the requantization stage (multiplier, shift, round half up, zp, clamp).
    lean : (log) build ``logmac.hw.lean_engine.LeanMacEngine``, the same behaviour with lean lanes.
    """

    kind: EngineKind = "log"
    weight_bits: int = 6
    act_bits: int = 8
    act_signed: bool = True
    lanes: int = 16
    max_k: int = 4096
    acc_bits: int = 32
    max_shift: int = -1
    pipe_every: int = 1
    requant: bool = True
    mult_bits: int = 32
    bias_bits: int = 32
    out_bits: int = 16
    lean: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("log", "int"):
            raise HwConfigError(f"kind must be 'log' or 'int', got {self.kind!r}")
        if self.lean and self.kind != "log":
            raise HwConfigError("lean=True is a log engine option (kind='log')")
        top = 6 if self.kind == "log" else 8
        if not 2 <= self.weight_bits <= top:
            raise HwConfigError(
                f"{self.kind} engine weight_bits must be 2..{top}, got {self.weight_bits}"
                + (" (7- and 8-bit log grids exceed the 31-octave shift limit of logmac.format)" if self.kind == "log" else "")
            )
        if self.max_shift == -1:
            object.__setattr__(self, "max_shift", default_max_shift(self.weight_bits) if self.kind == "log" else 0)
        if self.kind == "log" and not 1 <= self.max_shift <= MAX_SHIFT_LIMIT:
            raise HwConfigError(f"max_shift must be 1..{MAX_SHIFT_LIMIT}, got {self.max_shift}")
        if not 1 <= self.act_bits <= 16:
            raise HwConfigError(f"act_bits must be 1..16, got {self.act_bits}")
        if not 1 <= self.lanes <= 256:
            raise HwConfigError(f"lanes must be 1..256, got {self.lanes}")
        if self.max_k < 1:
            raise HwConfigError(f"max_k must be >= 1, got {self.max_k}")
        if self.exact_bits > 64:
            raise HwConfigError(
                f"an exact sum of {self.max_k} products needs {self.exact_bits} bits, more than the 64 the "
                "emulator's int64 holds; lower max_k, act_bits or weight_bits"
            )
        if not 2 <= self.acc_bits <= 63:
            raise HwConfigError(f"acc_bits must be 2..63, got {self.acc_bits}")
        if self.pipe_every < 0:
            raise HwConfigError(f"pipe_every must be >= 0, got {self.pipe_every}")
        for name, lo, hi in (("mult_bits", 1, 48), ("bias_bits", 2, 63), ("out_bits", 2, 32)):
            if not lo <= getattr(self, name) <= hi:
                raise HwConfigError(f"{name} must be {lo}..{hi}, got {getattr(self, name)}")

    # ---- derived widths -------------------------------------------------------------------
    @property
    def shift_bits(self) -> int:
        """Width of the u field of a decode-table entry."""
        return self.max_shift.bit_length()

    @property
    def word_bits(self) -> int:
        """Width of one lane's weight word: the code plus (log) the zero-flag bit."""
        return self.weight_bits + 1 if self.kind == "log" else self.weight_bits

    @property
    def table_depth(self) -> int:
        """Decode-table entries: one per value of the low ``weight_bits`` bits of a word."""
        return 1 << self.weight_bits if self.kind == "log" else 0

    @property
    def max_multiplier(self) -> int:
        """Largest |weight multiplier| a lane can apply (a half step at the top shift included)."""
        if self.kind == "int":
            return 1 << (self.weight_bits - 1)
        return int(multipliers(self.max_shift, 1))

    @property
    def exact_bits(self) -> int:
        """Width of the exact sum: the accumulator rule of logmac.format at ``max_k``."""
        return accumulator_bits(self.max_k, self.act_bits, self.act_signed, self.max_multiplier)

    @property
    def cfg_addr_bits(self) -> int:
        return max(REG_ADDR_BITS, self.weight_bits) + 1

    @property
    def table_base(self) -> int:
        return 1 << (self.cfg_addr_bits - 1)

    def act_range(self) -> tuple[int, int]:
        return activation_range(self.act_bits, self.act_signed)

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def derived(self) -> dict:
        """The widths a user of the exported Verilog needs, with the register map."""
        return {
            "word_bits": self.word_bits,
            "shift_bits": self.shift_bits,
            "table_depth": self.table_depth,
            "exact_bits": self.exact_bits,
            "cfg_addr_bits": self.cfg_addr_bits,
            "cfg_data_bits": CFG_DATA_BITS,
            "table_base": self.table_base,
            "registers": {"acc_hi": REG_ACC_HI, "wrap": REG_WRAP, "mult": REG_MULT, "shift": REG_SHIFT,
                          "bias": REG_BIAS, "zp": REG_ZP, "lo": REG_LO, "hi": REG_HI, "clear": REG_CLEAR},
        }

    def key(self) -> str:
        """A short stable name for build directories."""
        d = self.to_dict()
        return "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in d.items())

    @classmethod
    def from_dict(cls, d: dict) -> HwConfig:
        check_field_types(cls, d, "engine")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HwConfigError(f"unknown engine parameters {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> HwConfig:
        """Read a JSON config file (keys as in ``to_dict``; missing keys take defaults)."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise HwConfigError(f"cannot read engine config {path}: {exc}") from exc
