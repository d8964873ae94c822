"""The hardware contract as data: every config-port register, every table entry layout, the arithmetic and what
reset does, for the exported JSON (``logmac hw export``) and the register-map section of ``docs/hw.md``.

A host driver is written from this and nothing else, so the numbers are read from the RTL itself: register
widths, signedness and reset values from the signals ``stages.config_registers`` builds, entry fields from the
Amaranth layouts the engines store.  ``REGISTER_RULES`` states the same facts symbolically (for the docs);
``tests/test_contract.py`` holds the rules equal to the numbers for several builds, the docs section equal to
:func:`register_table_markdown`, and each statement of ``ARITHMETIC`` and ``RESET`` to the RTL's behaviour.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Fragment, Module, Signal
from amaranth.lib import data

from logmac.hw import config as C
from logmac.hw.regmap import NEST_FIELDS, REG_NEST
from logmac.hw.stages import config_registers

# name -> (address, width, signed, legal range, reset, meaning), symbolic in the build parameters.
REGISTER_RULES: dict[str, tuple[int, str, bool, str, str, str]] = {
    "acc_hi": (C.REG_ACC_HI, "acc_bits - 1", False, "1..2**(acc_bits-1) - 1; 2**(a-1) - 1 for a run-time width a",
               "2**(acc_bits-1) - 1",
               "top of the run-time accumulator range; bottom is -acc_hi - 1, the wrap mask is 2*acc_hi + 1"),
    "wrap": (C.REG_WRAP, "1", False, "0..1", "0", "0 saturate, 1 wrap"),
    "mult": (C.REG_MULT, "mult_bits", False, "0..2**mult_bits - 1", "1", "requantization multiplier M"),
    "shift": (C.REG_SHIFT, str(C.SHIFT_FIELD_BITS), False, "0..62", "0", "requantization shift S"),
    "bias": (C.REG_BIAS, "bias_bits", True, "-(2**(bias_bits-1))..2**(bias_bits-1) - 1", "0",
             "added to the fitted accumulator"),
    "zp": (C.REG_ZP, "out_bits", True, "-(2**(out_bits-1))..2**(out_bits-1) - 1", "0", "output zero point"),
    "lo": (C.REG_LO, "out_bits", True, "-(2**(out_bits-1))..2**(out_bits-1) - 1", "-(2**(out_bits-1))",
           "output clamp low (lo <= hi)"),
    "hi": (C.REG_HI, "out_bits", True, "-(2**(out_bits-1))..2**(out_bits-1) - 1", "2**(out_bits-1) - 1",
           "output clamp high"),
    "clear": (C.REG_CLEAR, "0", False, "0..2**64 - 1; data ignored", "None", "a write clears the sticky flag"),
    "nest": (REG_NEST, "3 * weight_bits", False,
             "0..(2**weight_bits - 1) * (1 + 2**16 + 2**32); floor | or_mask << 16 | index_mask << 32",
             "0", "precision of multi-bit (PTMQ) codes, log engines only (logmac.format.nested.nest_register)"),
}

ARITHMETIC = {
    "product": "log lane: ((2*x + h*x) << u) >> 1, negated when neg, 0 when zero (h = 1 needs u >= 1; an entry "
               "with u = 0, h = 1 is never written by regmap.table_image: MacEngine then gives floor(3*x/2) "
               "(arithmetic shift) negated after the floor, the lean engine decodes it as its zero field and gives 0, "
               "the AdaLog engine gives (3*m << s) >> 1)",
    "exact_sum": "sum of the products of one dot product in exact_bits (no overflow up to max_k)",
    "fit": "A = run-time width (acc_hi = 2**(A-1) - 1); overflow = sum outside [-(2**(A-1)), 2**(A-1) - 1]; "
           "saturate: clamp to those bounds; wrap: the low A bits, sign-extended; the overflow flag and the sticky "
           "flag are set in both modes",
    "requant": "y = clamp(((((acc + bias) * M) + (S > 0 ? 2**(S-1) : 0)) >> S) + zp, lo, hi), acc the fitted "
               "accumulator, every step at full width, >> arithmetic (floor): round half up",
    "clamp": "clamp(v, lo, hi) = v < lo ? lo : (v > hi ? hi : v); with lo > hi (refused by regmap.channel_writes) "
             "the RTL gives lo when v < lo and hi otherwise",
    "sticky": "overflow_sticky is set by every output whose overflow flag is 1; a REG_CLEAR write clears it; "
              "when both happen in one cycle the clear wins",
}

RESET = ("rst returns every register to its reset value (table above), REG_NEST to 0, the sticky flag to 0 and "
         "the pipeline to empty (idle); it does not clear the decode or activation table memories, which keep "
         "their contents (0 at power-up): reload them after a reset")


def _register_signals(cfg) -> dict[str, Signal]:
    """The config registers exactly as the RTL declares them (elaborated into a throwaway module)."""
    port = SimpleNamespace(we=Signal(), addr=Signal(cfg.cfg_addr_bits), data=Signal(C.CFG_DATA_BITS))
    m = Module()
    regs = config_registers(m, SimpleNamespace(cfg=port), cfg)
    Fragment.get(m, None)  # elaborated, so Amaranth does not warn about an unused module
    return regs


def _range(name: str, cfg, width: int, signed: bool) -> list[int]:
    if name == "acc_hi":
        return [1, (1 << (cfg.acc_bits - 1)) - 1]
    if name == "shift":
        return [0, 62]
    if name == "clear":
        return [0, (1 << C.CFG_DATA_BITS) - 1]
    return [-(1 << (width - 1)), (1 << (width - 1)) - 1] if signed else [0, (1 << width) - 1]


def registers(cfg, nest: bool) -> list[dict]:
    """Every register of the config port: name, address, width, signed, range, reset (and meaning)."""
    out = []
    for name, sig in _register_signals(cfg).items():
        width, signed = len(sig), sig.shape().signed
        out.append({"name": name, "address": REGISTER_RULES[name][0], "width": width, "signed": signed,
                    "range": _range(name, cfg, width, signed), "reset": sig.init, "meaning": REGISTER_RULES[name][5]})
    out.append({"name": "clear", "address": C.REG_CLEAR, "width": 0, "signed": False,
                "range": _range("clear", cfg, 0, False), "reset": None, "meaning": REGISTER_RULES["clear"][5]})
    if nest:
        wb = cfg.weight_bits
        out.append({"name": "nest", "address": REG_NEST, "width": 3 * wb, "signed": False,
                    "range": [0, sum(((1 << wb) - 1) << off for off in NEST_FIELDS)], "reset": 0,
                    "meaning": REGISTER_RULES["nest"][5],
                    "fields": {f: {"offset": off, "width": wb}
                               for f, off in zip(("floor", "or_mask", "index_mask"), NEST_FIELDS, strict=True)}})
    return out


def table(name: str, base: int, depth: int, layout: data.StructLayout, meaning: dict[str, str],
          symbols: dict[str, int]) -> dict:
    """A run-time table: where it sits on the config port, the named widths its fields' meanings use (``sb``...)
    and its entry fields (LSB first) from ``layout``."""
    return {"name": name, "base": base, "depth": depth, "entry_bits": layout.size, "symbols": symbols,
            "entry": {f: {"offset": fl.offset, "width": fl.width, "meaning": meaning[f]} for f, fl in layout},
            "reset": "not cleared by rst"}


def contract(cfg, tables: list[dict], nest: bool) -> dict:
    """The contract keys of an engine's exported JSON."""
    return {"registers": registers(cfg, nest), "tables": tables, "arithmetic": ARITHMETIC, "reset": RESET,
            "address_decode": "a write to a register address sets that register; addresses between the last "
                              "register and the first table base are ignored; table entry i sits at base + i; "
                              "write only while idle is high"}


DECODE_ENTRY = {"u": "shift, sb = shift_bits = max_shift.bit_length() bits",
                "h": "half step: multiplier 2**u + 2**(u-1) instead of 2**u",
                "neg": "negative weight", "zero": "zero weight (product gated to 0)"}
ACT_ENTRY = {"m": "mantissa, mb = act_code_bits + 1 bits", "s": "left shift top_shift - t, sa = act_shift_bits bits",
             "zero": "zero activation"}


def register_table_markdown() -> str:
    """The register-map table of ``docs/hw.md`` (kept equal to it by ``tests/test_contract.py``)."""
    rows = ["| address | register | width (bits) | signed | legal values | reset | meaning |",
            "|---|---|---|---|---|---|---|"]
    for name, (addr, width, signed, legal, reset, meaning) in REGISTER_RULES.items():
        shown = "none (a strobe)" if reset == "None" else f"`{reset}`"
        cell = legal.replace("|", "\\|")  # a bar inside a table cell, code span or not, needs escaping
        rows.append(f"| {addr} | `{name}` | `{width}` | {'yes' if signed else 'no'} | `{cell}` | {shown} | {meaning} |")
    return "\n".join(rows)
