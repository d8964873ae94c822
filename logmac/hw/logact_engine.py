"""The AdaLog-activation engine: log-coded activations times log (or uniform) weights, with no multiplier on
the log side.

An AdaLog activation word indexes a run-time activation table whose entry is ``(m, s, zero)``: the
(bits+1)-bit mantissa ``m`` and the left shift ``s = top_shift - t`` of ``AdaLogFormat.level_shifts()``, so
the word's integer level is ``m << s`` (``format.adalog_decode_int``).  Against a log weight ``(u, h, sign)``
the product is ``sign * (m << s) * (2**u + h * 2**(u-1))``, built as ``((2m + h*m) << (s + u)) >> 1``: the
two shifts add, one small adder forms ``(2 + h) * m``, one barrel shifter does the rest.  Against a uniform
signed integer ``w`` (AdaLog's attention-probability x V case) it is ``(m * w) << s``: a (bits+1) x w-bit
multiplier and a shifter.  Everything after the lanes (adder tree, exact accumulator, the
``format.apply_accumulator`` fit with its sticky flag, requantization, the stall rule and the register map
below the tables) is the existing ``MacEngine``'s, inherited unchanged.

Both tables are images indexed by raw word bits, loaded through the config port like the weight engine's
decode table, so one build runs every AdaLog q, code width up to ``act_code_bits``, zero mode and shift cap
up to ``act_max_shift``, and every log weight format up to ``weight_bits``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from logmac import __version__
from logmac.format import (
    ADALOG_MAX_SHIFT,
    MAX_BITS,
    MAX_SHIFT_LIMIT,
    MIN_BITS,
    AdaLogFormat,
    FormatError,
    accumulator_bits,
    adalog_decode_int,
)
from logmac.hw import config as C
from logmac.hw.config import HwConfig, HwConfigError, check_field_types
from logmac.hw.contract import ACT_ENTRY, DECODE_ENTRY, contract, table
from logmac.hw.engine import MacEngine, config_signature, output_layout
from logmac.hw.lanes import entry_layout

ENGINE_NAME = "logmac_logact_engine"


@dataclass(frozen=True)
class LogActConfig:
    """Parameters of one AdaLog-activation engine build.

    Parameters
    ----------
    kind : weight side, ``"log"`` (decode table, shift-add) or ``"int"`` (signed ``weight_bits``-bit integers).
    act_code_bits : widest AdaLog code (index bits) the build accepts; a ``flag``-mode word has one bit more.
    act_max_shift : deepest activation down-shift (``AdaLogFormat.top_shift``) the build accepts.
    weight_bits, max_shift, lanes, max_k, acc_bits, pipe_every, requant, mult_bits, bias_bits, out_bits : as in
        :class:`logmac.hw.config.HwConfig`, which validates them.

    The attribute names the shared pieces read (``exact_bits``, ``word_bits``, ``shift_bits``, ``table_depth``,
    ``cfg_addr_bits``, ``act_bits``, ``key()``...) match ``HwConfig``'s, so ``MacEngine``'s pipeline, the
    ``regmap`` helpers and the cocotb bench take this config as they take a ``HwConfig``.
    """

    kind: Literal["log", "int"] = "log"
    act_code_bits: int = 6
    act_max_shift: int = ADALOG_MAX_SHIFT
    weight_bits: int = 4
    max_shift: int = -1
    lanes: int = 16
    max_k: int = 1024
    acc_bits: int = 48
    pipe_every: int = 1
    requant: bool = True
    mult_bits: int = 32
    bias_bits: int = 32
    out_bits: int = 16

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.act_code_bits <= MAX_BITS:
            raise HwConfigError(f"act_code_bits must be {MIN_BITS}..{MAX_BITS}, got {self.act_code_bits}")
        if not 0 <= self.act_max_shift <= MAX_SHIFT_LIMIT:
            raise HwConfigError(f"act_max_shift must be 0..{MAX_SHIFT_LIMIT}, got {self.act_max_shift}")
        object.__setattr__(self, "max_shift", self.weight_side.max_shift)  # HwConfig validates the shared fields
        if self.level_bits > 32:
            raise HwConfigError(f"activation levels of {self.act_code_bits + 1} mantissa bits shifted by up to "
                                f"{self.act_max_shift} need {self.level_bits} bits, more than the 32 a port carries; "
                                "lower act_max_shift or act_code_bits")
        if self.exact_bits > 64:
            raise HwConfigError(
                f"an exact sum of {self.max_k} products of {self.level_bits}-bit activation levels and weights up to "
                f"{self.max_multiplier} needs {self.exact_bits} bits, more than 64; lower max_k, act_max_shift, "
                "act_code_bits or weight_bits")

    @property
    def weight_side(self) -> HwConfig:
        """The weight engine with the same weight side and pipeline (used to validate and derive)."""
        return HwConfig(kind=self.kind, weight_bits=self.weight_bits, act_bits=1, act_signed=False, lanes=self.lanes,
                        max_k=self.max_k, acc_bits=self.acc_bits, max_shift=self.max_shift, pipe_every=self.pipe_every,
                        requant=self.requant, mult_bits=self.mult_bits, bias_bits=self.bias_bits, out_bits=self.out_bits)

    # ---- activation side ------------------------------------------------------------------
    @property
    def act_bits(self) -> int:
        """Width of one lane's activation word on the input port: the code plus the zero-flag bit."""
        return self.act_code_bits + 1

    @property
    def mantissa_bits(self) -> int:
        return self.act_code_bits + 1

    @property
    def act_shift_bits(self) -> int:
        return max(1, self.act_max_shift.bit_length())

    @property
    def level_bits(self) -> int:
        """Width of the largest unsigned activation level ``m << s``."""
        return self.mantissa_bits + self.act_max_shift

    @property
    def act_table_depth(self) -> int:
        return 1 << self.act_code_bits

    # ---- weight side and widths (HwConfig's names) ----------------------------------------
    @property
    def word_bits(self) -> int:
        return self.weight_side.word_bits

    @property
    def shift_bits(self) -> int:
        return self.weight_side.shift_bits

    @property
    def table_depth(self) -> int:
        return self.weight_side.table_depth

    @property
    def max_multiplier(self) -> int:
        return self.weight_side.max_multiplier

    @property
    def product_bits(self) -> int:
        """Signed width of one lane's product."""
        return accumulator_bits(1, self.level_bits, False, self.max_multiplier)

    @property
    def exact_bits(self) -> int:
        return accumulator_bits(self.max_k, self.level_bits, False, self.max_multiplier)

    # ---- register map: registers, then the weight table, then the activation table --------
    @property
    def table_field_bits(self) -> int:
        return max(C.REG_ADDR_BITS, self.weight_bits if self.kind == "log" else 0, self.act_code_bits)

    @property
    def cfg_addr_bits(self) -> int:
        return self.table_field_bits + 2

    @property
    def weight_table_base(self) -> int:
        return 2 << self.table_field_bits

    @property
    def act_table_base(self) -> int:
        return 3 << self.table_field_bits

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def derived(self) -> dict:
        return {
            "act_word_bits": self.act_bits, "mantissa_bits": self.mantissa_bits, "act_shift_bits": self.act_shift_bits,
            "level_bits": self.level_bits, "act_table_depth": self.act_table_depth, "word_bits": self.word_bits,
            "shift_bits": self.shift_bits, "table_depth": self.table_depth, "product_bits": self.product_bits,
            "exact_bits": self.exact_bits, "cfg_addr_bits": self.cfg_addr_bits, "cfg_data_bits": C.CFG_DATA_BITS,
            "weight_table_base": self.weight_table_base, "act_table_base": self.act_table_base,
            "registers": self.weight_side.derived()["registers"],
        }

    def key(self) -> str:
        """A short stable name for build directories."""
        return "logact-" + "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in self.to_dict().items())

    @classmethod
    def from_dict(cls, d: dict) -> LogActConfig:
        check_field_types(cls, d, "AdaLog engine")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HwConfigError(f"unknown AdaLog engine parameters {unknown}; known: {sorted(known)}")
        return cls(**d)


# ---- host side: table images ------------------------------------------------------------------

def act_entry_layout(cfg: LogActConfig) -> data.StructLayout:
    """An activation-table entry: mantissa ``m``, left shift ``s``, zero."""
    return data.StructLayout({"m": unsigned(cfg.mantissa_bits), "s": unsigned(cfg.act_shift_bits), "zero": 1})


def check_act_format(cfg: LogActConfig, fmt: AdaLogFormat) -> None:
    """Raise unless AdaLog words of ``fmt`` run on this build."""
    if not isinstance(fmt, AdaLogFormat):
        raise FormatError(f"the activation table needs an AdaLogFormat, got {fmt!r}")
    if fmt.bits > cfg.act_code_bits:
        raise FormatError(f"{fmt.bits}-bit AdaLog codes do not fit a build for {cfg.act_code_bits}-bit codes")
    if fmt.top_shift > cfg.act_max_shift:
        raise FormatError(f"AdaLog format {fmt.to_dict()} shifts levels by up to {fmt.top_shift}, more than the "
                          f"build's act_max_shift {cfg.act_max_shift}")


def act_table_image(cfg: LogActConfig, fmt: AdaLogFormat) -> np.ndarray:
    """Packed entries (``cfg.act_table_depth`` ints) indexed by the low ``act_code_bits`` bits of a word.

    Each address is decoded by ``format.adalog_decode_int``; its level is matched to the format's
    ``(mantissa, shift)`` pair, so zero codes, zero flags inside the low bits, indices past the shift cap and
    words wider than the format all become ``zero`` entries.  A flag at bit ``act_code_bits`` (widest codes,
    ``flag`` mode) is wired to the lane's zero gate.
    """
    check_act_format(cfg, fmt)
    addr = np.arange(cfg.act_table_depth)
    legal = addr < (1 << fmt.storage_bits)
    level = np.where(legal, adalog_decode_int(np.where(legal, addr, 0), fmt), 0)
    mantissa, down = fmt.level_shifts()
    levels = fmt.integer_levels()  # strictly decreasing with the index
    index = np.clip(np.searchsorted(-levels, -level), 0, len(levels) - 1)
    zero = level == 0
    m = np.where(zero, 0, mantissa[index])
    s = np.where(zero, 0, fmt.top_shift - down[index])
    if np.any(np.where(zero, 0, m << s) != level):
        raise FormatError(f"AdaLog format {fmt.to_dict()}: a level is not its (mantissa, shift) pair")
    mb, sb = cfg.mantissa_bits, cfg.act_shift_bits
    return (m | (s << mb) | (zero.astype(np.int64) << (mb + sb))).astype(np.int64)


# ---- RTL --------------------------------------------------------------------------------------

def input_layout(cfg: LogActConfig) -> data.StructLayout:
    """Input beat, packed LSB first: a[0..lanes) AdaLog words, then w[0..lanes) weight words, then last."""
    return data.StructLayout({
        "a": data.ArrayLayout(unsigned(cfg.act_bits), cfg.lanes),
        "w": data.ArrayLayout(unsigned(cfg.word_bits), cfg.lanes),
        "last": 1,
    })


class LogActLane(wiring.Component):
    """One product of an AdaLog activation word and a weight word (log via its table entry, or a signed int)."""

    def __init__(self, cfg: LogActConfig) -> None:
        self.hw = cfg
        ports = {
            "act": In(cfg.act_bits),
            "act_addr": Out(cfg.act_code_bits),
            "act_entry": In(act_entry_layout(cfg)),
            "word": In(cfg.word_bits),
            "product": Out(signed(cfg.product_bits)),
        }
        if cfg.kind == "log":
            ports.update(table_addr=Out(cfg.weight_bits), entry=In(entry_layout(cfg)))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.hw
        a = self.act_entry
        m.d.comb += self.act_addr.eq(self.act[:cfg.act_code_bits])
        act_zero = a.zero | self.act[cfg.act_code_bits]  # table zero, or the flag bit of the widest codes
        if cfg.kind == "log":
            e = self.entry
            m.d.comb += self.table_addr.eq(self.word[:cfg.weight_bits])
            triple = (a.m << 1) + Mux(e.h, a.m, 0)  # (2 + h) * m
            doubled = Signal(unsigned(cfg.product_bits), name="doubled")  # 2 * |product| fits: no bits lost
            m.d.comb += doubled.eq(triple << (a.s + e.u))
            magnitude = doubled >> 1
            is_zero = act_zero | e.zero | self.word[cfg.weight_bits]
            m.d.comb += self.product.eq(Mux(is_zero, 0, Mux(e.neg, -magnitude, magnitude)))
        else:
            scaled = Signal(signed(cfg.product_bits), name="scaled")
            m.d.comb += scaled.eq((a.m * self.word.as_signed()) << a.s)
            m.d.comb += self.product.eq(Mux(act_zero, 0, scaled))
        return m


class LogActEngine(MacEngine):
    """``MacEngine`` with AdaLog activation lanes: same pipeline, accumulator, fit, requantization and ports."""

    def __init__(self, cfg: LogActConfig) -> None:
        self.hw = cfg
        wiring.Component.__init__(self, {
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(output_layout(cfg))),
            "cfg": In(config_signature(cfg)),
            "idle": Out(1),
            "overflow_sticky": Out(1),
        })

    def _lanes(self, m: Module) -> list:
        """The lanes, the activation table and (log weights) the decode table, one read port per lane each."""
        cfg = self.hw
        top = cfg.cfg_addr_bits - 1
        in_tables = self.cfg.we & self.cfg.addr[top]
        act_table = memory.Memory(shape=act_entry_layout(cfg), depth=cfg.act_table_depth, init=[])
        m.submodules.act_table = act_table
        awp = act_table.write_port()
        m.d.comb += [awp.en.eq(in_tables & self.cfg.addr[top - 1]), awp.addr.eq(self.cfg.addr[:cfg.act_code_bits]),
                     awp.data.eq(self.cfg.data[:len(awp.data.as_value())])]
        if cfg.kind == "log":
            table = memory.Memory(shape=entry_layout(cfg), depth=cfg.table_depth, init=[])
            m.submodules.table = table
            wp = table.write_port()
            m.d.comb += [wp.en.eq(in_tables & ~self.cfg.addr[top - 1]), wp.addr.eq(self.cfg.addr[:cfg.weight_bits]),
                         wp.data.eq(self.cfg.data[:len(wp.data.as_value())])]
        products = []
        for n in range(cfg.lanes):
            lane = LogActLane(cfg)
            m.submodules[f"lane{n}"] = lane
            m.d.comb += [lane.act.eq(self.i.payload.a[n]), lane.word.eq(self.i.payload.w[n])]
            arp = act_table.read_port(domain="comb")
            m.d.comb += [arp.addr.eq(lane.act_addr), lane.act_entry.eq(arp.data)]
            if cfg.kind == "log":
                rp = table.read_port(domain="comb")
                m.d.comb += [rp.addr.eq(lane.table_addr), lane.entry.eq(rp.data)]
            products.append(lane.product)
        return products


# ---- export -----------------------------------------------------------------------------------

def logact_verilog(cfg: LogActConfig, name: str = ENGINE_NAME) -> str:
    """Elaborate the engine for ``cfg`` and return its Verilog (top module ``name``)."""
    return verilog.convert(LogActEngine(cfg), name=name, emit_src=False)


def parameters(cfg: LogActConfig, name: str = ENGINE_NAME) -> dict:
    """Build parameters, derived widths, register map, payload fields (LSB first) and ports."""
    def layout_fields(layout) -> dict:
        return {n: {"offset": f.offset, "width": f.width} for n, f in layout}

    tables = [table("weight decode", cfg.weight_table_base, cfg.table_depth, entry_layout(cfg), DECODE_ENTRY,
                    {"sb": cfg.shift_bits})] if cfg.kind == "log" else []
    tables.append(table("activation", cfg.act_table_base, cfg.act_table_depth, act_entry_layout(cfg), ACT_ENTRY,
                        {"mb": cfg.mantissa_bits, "sa": cfg.act_shift_bits}))
    return {
        "module": name, "logmac_version": __version__, "engine": "logact", "config": cfg.to_dict(),
        "derived": cfg.derived(), "input_fields": layout_fields(input_layout(cfg)),
        "output_fields": layout_fields(output_layout(cfg)),
        "ports": ["clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload",
                  "cfg__we", "cfg__addr", "cfg__data", "idle", "overflow_sticky"],
        **contract(cfg, tables, nest=False),
    }


def export(cfg: LogActConfig, out_dir: str | Path, name: str = ENGINE_NAME) -> tuple[Path, Path]:
    """Write ``<name>.v`` and ``<name>.json`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    v_path.write_text(logact_verilog(cfg, name))
    j_path.write_text(json.dumps(parameters(cfg, name), indent=2) + "\n")
    return v_path, j_path
