"""Quantization settings: one validated dataclass that the API, the CLI and the artifact share."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from logmac.format import MAX_BITS, MIN_BITS, LogFormat, UniformFormat, ZeroMode
from logmac.format.groups import MAX_GROUP_BITS

LOG_METHODS = ("log_2", "log_sqrt2", "log_dynamic")
LINEAR_METHODS = ("linear_minmax", "linear_mse")
METHODS = LOG_METHODS + LINEAR_METHODS
ROUNDINGS = ("nearest", "gptq")  # how codes are first chosen on the fitted grid (learned rounding starts there)


class QuantError(ValueError):
    """A setting, model or calibration set the quantizer cannot work with."""


@dataclass
class QuantConfig:
    """Everything that decides the codes; stored verbatim in the artifact's ``settings``.

    ``dbs``/``sfs``/``abs`` are LogART's components (ignored by the linear methods); ``learn_rounding``
    is LLR for log methods and AdaRound for linear ones; ``rounding`` = "gptq" rounds with GPTQ error
    feedback (``act_order``: columns of largest Hessian diagonal first) and is learned rounding's start.
    ``iters`` is the reconstruction budget per block (CNN/ViT) or per layer (LLM).  ``group_size`` > 0 adds a
    ``group_bits``-bit signed power-of-two exponent per group of that many inputs along K
    (``logmac/format/groups.py``); 0 keeps one grid per output channel.
    """

    method: str = "log_dynamic"
    w_bits: int = 4
    a_bits: int = 8
    granularity: str = "channel"
    dbs: bool = True
    sfs: bool = True
    abs: bool = True
    learn_rounding: bool = False
    rounding: str = "nearest"
    act_order: bool = False
    hardware_approx: bool = False
    zero: str = "code"
    act_init: str = "mse"
    calib_samples: int = 256
    batch_size: int = 32
    iters: int = 200
    lr: float = 0.05
    round_weight: float = 0.01
    warmup: float = 0.2
    alpha_min: float = 0.5
    hessian_rank: int = 64
    alpha_steps: int = 26
    group_size: int = 0
    group_bits: int = 2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("w_bits",):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
                raise QuantError(f"{name} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
        if self.a_bits != 32 and not MIN_BITS <= self.a_bits <= 16:
            raise QuantError(f"a_bits must be in {MIN_BITS}..16, or 32 for float activations, got {self.a_bits}")
        if self.rounding not in ROUNDINGS:
            raise QuantError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {self.rounding!r}")
        if self.granularity not in ("channel", "tensor"):
            raise QuantError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")
        if self.act_init not in ("mse", "percentile"):
            raise QuantError(f"act_init must be 'mse' or 'percentile', got {self.act_init!r}")
        ZeroMode(self.zero)
        if self.calib_samples < 1 or self.batch_size < 1 or self.iters < 0:
            raise QuantError("calib_samples and batch_size must be >= 1 and iters >= 0")
        if not 0 < self.alpha_min <= 1 or self.alpha_steps < 1:
            raise QuantError("alpha_min must be in (0, 1] and alpha_steps >= 1")
        if not isinstance(self.group_size, int) or self.group_size < 0:
            raise QuantError(f"group_size must be 0 (per channel) or a positive number of inputs, got {self.group_size!r}")
        if not 1 <= self.group_bits <= MAX_GROUP_BITS:
            raise QuantError(f"group_bits must be in 1..{MAX_GROUP_BITS}, got {self.group_bits}")
        if self.group_size and self.granularity == "tensor":
            raise QuantError("group exponents refine a per-channel grid; use granularity 'channel'")
        self.weight_format()  # raises early for grids the datapath cannot shift

    @property
    def is_log(self) -> bool:
        return self.method in LOG_METHODS

    @property
    def quantize_acts(self) -> bool:
        return self.a_bits != 32

    def weight_format(self) -> LogFormat | UniformFormat:
        """The logmac.format format every layer of this run is exported in."""
        if self.is_log:
            try:
                return LogFormat(self.w_bits, grid=self.method, hardware_approx=self.hardware_approx, zero=self.zero)
            except ValueError as exc:
                raise QuantError(str(exc)) from exc
        return UniformFormat(self.w_bits, symmetric=False)

    def label(self) -> str:
        """Short human name of the method, e.g. ``log_dynamic+DBS+SFS+ABS+LLR W3A8``."""
        if self.is_log:
            parts = [self.method] + [n for n, on in (("DBS", self.dbs), ("SFS", self.sfs), ("ABS", self.abs)) if on]
            parts += (["GPTQ"] if self.rounding == "gptq" else []) + (["LLR"] if self.learn_rounding else [])
        else:
            parts = [self.method] + (["GPTQ"] if self.rounding == "gptq" else []) + (["AdaRound"] if self.learn_rounding else [])
        parts += [f"g{self.group_size}x{self.group_bits}b"] if self.group_size else []
        return "+".join(parts) + f" W{self.w_bits}A{self.a_bits if self.quantize_acts else 'fp'}"

    def to_dict(self) -> dict:
        return asdict(self)
