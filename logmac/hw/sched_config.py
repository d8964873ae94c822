"""Build parameters and beat layouts of the exponent-scheduled engine (``logmac.hw.sched_engine``).

The stream contract is ``logmac.format.schedule``: a build is a :class:`~logmac.format.schedule.ScheduleLimits`
(variant, half-step option, lanes, shift field, longest K) plus the activation port, the accumulator register
and the requantization stage, which it shares with ``MacEngine`` (same config registers, ``regmap.channel_writes``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amaranth import Shape, signed, unsigned
from amaranth.lib import data

from logmac.format import accumulator_bits
from logmac.format.schedule import HalfMode, ScheduleLimits, Store, Variant
from logmac.hw import config as C
from logmac.hw.config import HwConfigError


@dataclass(frozen=True)
class SchedConfig:
    """Parameters of one scheduled-engine build (see ``HwConfig`` for the shared ones).

    ``store="codes"`` (in place only): the lanes hold code words of ``code_bits`` (plus a zero flag above them
    when ``zero_flag``) and compare them with the beat's broadcast level indices.
    """

    variant: Variant = "inplace"
    half: HalfMode = "split"
    store: Store = "terms"
    code_bits: int = 0
    zero_flag: bool = False
    lanes: int = 16
    act_bits: int = 8
    act_signed: bool = True
    max_shift: int = 7
    max_k: int = 4096
    acc_bits: int = 32
    pipe_every: int = 1
    requant: bool = True
    mult_bits: int = 32
    bias_bits: int = 32
    out_bits: int = 16

    def __post_init__(self) -> None:
        try:
            self.limits()
        except ValueError as exc:
            raise HwConfigError(str(exc)) from exc
        if not 1 <= self.act_bits <= 16:
            raise HwConfigError(f"act_bits must be 1..16, got {self.act_bits}")
        if not 2 <= self.acc_bits <= 63:
            raise HwConfigError(f"acc_bits must be 2..63, got {self.acc_bits}")
        if self.exact_bits > 64:
            raise HwConfigError(f"an exact sum of {self.max_k} products needs {self.exact_bits} bits, more than 64")
        if self.pipe_every < 0:
            raise HwConfigError(f"pipe_every must be >= 0, got {self.pipe_every}")
        for name, lo, hi in (("mult_bits", 1, 48), ("bias_bits", 2, 63), ("out_bits", 2, 32)):
            if not lo <= getattr(self, name) <= hi:
                raise HwConfigError(f"{name} must be {lo}..{hi}, got {getattr(self, name)}")

    def limits(self) -> ScheduleLimits:
        return ScheduleLimits(self.variant, self.half, self.lanes, self.max_shift, self.max_k, self.store,
                              self.code_bits, self.zero_flag)

    @property
    def shift_bits(self) -> int:
        return self.max_shift.bit_length()

    @property
    def max_multiplier(self) -> int:
        top = 1 << self.max_shift
        return top + (top >> 1) if self.half != "none" else top

    @property
    def exact_bits(self) -> int:
        """The exact sum's width: the accumulator rule of ``logmac.format`` at ``max_k``."""
        return accumulator_bits(self.max_k, self.act_bits, self.act_signed, self.max_multiplier)

    @property
    def tile_bits(self) -> int:
        """Width of an in-place tile's Horner register: the exact sum of one tile of ``lanes`` products."""
        return accumulator_bits(self.lanes, self.act_bits, self.act_signed, self.max_multiplier)

    @property
    def trees(self) -> int:
        """Per-exponent adder trees of a bucketed build."""
        return self.max_shift + 1

    @property
    def cfg_addr_bits(self) -> int:
        return C.REG_ADDR_BITS

    @property
    def word_bits(self) -> int:
        """Per-lane share of the beat's schedule bits, rounded up: what a bench sizes its command words by."""
        return -(-(input_layout(self).size - 1) // self.lanes) - self.act_bits

    def act_shape(self) -> Shape:
        return signed(self.act_bits) if self.act_signed else unsigned(self.act_bits)

    def act_range(self) -> tuple[int, int]:
        if self.act_signed:
            return -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1
        return 0, (1 << self.act_bits) - 1

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        return "sched-" + "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in self.to_dict().items())


def input_layout(cfg: SchedConfig) -> data.StructLayout:
    """One beat, LSB first: activations, per-lane schedule bits, per-beat fields, ``last`` on top."""
    L = cfg.lanes
    fields: dict = {"x": data.ArrayLayout(cfg.act_shape(), L)}
    if cfg.store == "codes":
        lim = cfg.limits()
        fields.update({"w": data.ArrayLayout(unsigned(lim.word_bits), L),
                       "bidx": data.ArrayLayout(unsigned(cfg.code_bits - 1), 2 * lim.slots),  # sign-major
                       "bval": 2 * lim.slots, "delta": cfg.shift_bits, "tile_last": 1, "last": 1})
        return data.StructLayout(fields)
    fields.update({"en": L, "neg": L})
    if cfg.variant == "bucketed":
        fields["exp"] = data.ArrayLayout(unsigned(cfg.shift_bits), L)
        if cfg.half != "none":
            fields["aux"] = L  # half (split: feed trees u and u-1) or triple (select: 3x)
    else:
        if cfg.half == "select":
            fields["aux"] = L  # triple
        fields.update({"delta": cfg.shift_bits, "tile_last": 1})
    fields["last"] = 1
    return data.StructLayout(fields)


def output_layout(cfg: SchedConfig) -> data.StructLayout:
    """Output beat, packed LSB first: y (if requantizing), acc, overflow (as ``MacEngine``)."""
    fields = {"y": signed(cfg.out_bits)} if cfg.requant else {}
    fields.update({"acc": signed(cfg.acc_bits), "overflow": 1})
    return data.StructLayout(fields)
