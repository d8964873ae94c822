"""The uniform (linear) weight baseline: two's complement integers with a per-channel float scale."""

from __future__ import annotations

from dataclasses import dataclass

from logmac.format.errors import check_bits


@dataclass(frozen=True)
class UniformFormat:
    """The uniform baseline: b-bit two's complement (symmetric) or unsigned with a zero-point."""

    bits: int
    symmetric: bool = True

    def __post_init__(self) -> None:
        check_bits(self.bits)

    @property
    def storage_bits(self) -> int:
        return self.bits

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    @property
    def max_multiplier(self) -> int:
        return max(abs(self.qmin), self.qmax) if self.symmetric else self.qmax

    def to_dict(self) -> dict:
        return {"kind": "uniform", "bits": int(self.bits), "symmetric": bool(self.symmetric)}

