"""The stages every dot-product engine shares after its exact accumulator: run-time config registers, the
accumulator fit, the sticky overflow flag and the requantization stage.

One place for them, so that ``MacEngine``, the lean, AdaLog-activation and scheduled engines obey
``logmac.format.apply_accumulator`` and ``logmac.format.requantize`` through the same RTL.  ``cfg`` is any
build config with ``acc_bits``, ``exact_bits``, ``mult_bits``, ``bias_bits``, ``out_bits`` and ``requant``;
``engine`` any component with the ``o``, ``cfg`` and ``overflow_sticky`` members of ``MacEngine``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned

from logmac.hw import config as C


def config_registers(m: Module, engine, cfg) -> dict[str, Signal]:
    """Run-time settings written through ``engine.cfg`` (reset values: widest accumulator, saturate, y = acc)."""
    out_lo, out_hi = -(1 << (cfg.out_bits - 1)), (1 << (cfg.out_bits - 1)) - 1
    regs = {
        "acc_hi": Signal(unsigned(cfg.acc_bits - 1), init=(1 << (cfg.acc_bits - 1)) - 1),
        "wrap": Signal(),
        "mult": Signal(unsigned(cfg.mult_bits), init=1),
        "shift": Signal(unsigned(C.SHIFT_FIELD_BITS)),
        "bias": Signal(signed(cfg.bias_bits)),
        "zp": Signal(signed(cfg.out_bits)),
        "lo": Signal(signed(cfg.out_bits), init=out_lo),
        "hi": Signal(signed(cfg.out_bits), init=out_hi),
    }
    addrs = {"acc_hi": C.REG_ACC_HI, "wrap": C.REG_WRAP, "mult": C.REG_MULT, "shift": C.REG_SHIFT,
             "bias": C.REG_BIAS, "zp": C.REG_ZP, "lo": C.REG_LO, "hi": C.REG_HI}
    for name, reg in regs.items():
        with m.If(engine.cfg.we & (engine.cfg.addr == addrs[name])):
            m.d.sync += reg.eq(engine.cfg.data[:len(reg)])
    return regs


def accumulator_fit(m: Module, en: Signal, exact: Signal, valid: Signal, regs: dict, cfg
                    ) -> tuple[Signal, Signal, Signal]:
    """The overflow contract of ``logmac.format.apply_accumulator`` at the run-time width, one register."""
    w = max(cfg.exact_bits, cfg.acc_bits) + 1
    hi, lo, mask = Signal(signed(w)), Signal(signed(w)), Signal(signed(w))
    m.d.comb += [hi.eq(regs["acc_hi"]), lo.eq(-hi - 1), mask.eq(Cat(Const(1, 1), regs["acc_hi"]))]
    over, under = exact > hi, exact < lo
    sat = Mux(over, hi, Mux(under, lo, exact))
    msb = (exact & (hi + 1)).any()
    wrapped = Mux(msb, exact | ~mask, exact & mask)  # sign-extend the low a bits
    fit, ovf, f_valid = Signal(signed(cfg.acc_bits)), Signal(), Signal()
    with m.If(en):
        m.d.sync += [fit.eq(Mux(regs["wrap"], wrapped, sat)), ovf.eq(over | under), f_valid.eq(valid)]
    return fit, ovf, f_valid


def requantize(m: Module, en: Signal, acc: Signal, ovf: Signal, valid: Signal, regs: dict, valids: list, cfg
               ) -> tuple[Signal, Signal, Signal, Signal]:
    """y = clamp(((acc + bias) * M + 2**(S-1)) >> S + zp, lo, hi) in four registered steps."""

    def stage(value, name: str) -> Signal:
        reg = Signal(value.shape(), name=name)
        with m.If(en):
            m.d.sync += reg.eq(value)
        return reg

    def carry(acc, ovf, valid, n: int) -> tuple[Signal, Signal, Signal]:
        out = stage(acc, f"rq{n}_acc"), stage(ovf, f"rq{n}_ovf"), stage(valid, f"rq{n}_valid")
        valids.append(out[2])
        return out

    total = stage(acc + regs["bias"], "rq_total")
    acc, ovf, valid = carry(acc, ovf, valid, 1)
    product = stage(total * regs["mult"], "rq_product")
    acc, ovf, valid = carry(acc, ovf, valid, 2)
    rounding = (Const(1, 1) << regs["shift"]) >> 1
    shifted = stage((product + rounding) >> regs["shift"], "rq_shifted")
    acc, ovf, valid = carry(acc, ovf, valid, 3)
    moved = shifted + regs["zp"]
    y = stage(Mux(moved < regs["lo"], regs["lo"], Mux(moved > regs["hi"], regs["hi"], moved))[:cfg.out_bits]
              .as_signed(), "rq_y")
    acc, ovf, valid = carry(acc, ovf, valid, 4)
    return y, acc, ovf, valid


def output_stages(m: Module, engine, en: Signal, exact: Signal, ex_valid: Signal, regs: dict, valids: list,
                  cfg) -> None:
    """Fit, sticky flag (cleared by a write to ``REG_CLEAR``), requantization (if built) and the output beat."""
    fit, ovf, f_valid = accumulator_fit(m, en, exact, ex_valid, regs, cfg)
    valids.append(f_valid)
    with m.If(en & f_valid & ovf):
        m.d.sync += engine.overflow_sticky.eq(1)
    with m.If(engine.cfg.we & (engine.cfg.addr == C.REG_CLEAR)):
        m.d.sync += engine.overflow_sticky.eq(0)
    if cfg.requant:
        y, fit, ovf, f_valid = requantize(m, en, fit, ovf, f_valid, regs, valids, cfg)
        m.d.comb += engine.o.payload.y.eq(y)
    m.d.comb += [engine.o.payload.acc.eq(fit), engine.o.payload.overflow.eq(ovf), engine.o.valid.eq(f_valid)]
