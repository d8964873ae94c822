"""logmac.sim: the bit-exact integer emulator of the shift-based log MAC datapath.

Per-operation API (numpy or torch in, same kind out) and the int64 reference it is held equal to
(``requantize`` and ``check_activations`` are the format's own, re-exported here);
see docs/sim.md.
"""

from logmac.format import check_activations, requantize
from logmac.sim.emulator import Emulator
from logmac.sim.gemm import IntWeights, exact_matmul
from logmac.sim.mac import MacResult, log_matmul_reference, uniform_matmul_reference
from logmac.sim.ops import (
    add,
    clamp,
    conv2d,
    im2col,
    int_matmul,
    linear,
    log_matmul,
    max_pool2d,
    sum_pool2d,
    uniform_matmul,
)
from logmac.sim.trace import Requant, Trace, load_trace, save_trace

__all__ = [
    "Emulator",
    "IntWeights", "MacResult", "add", "check_activations", "clamp", "conv2d", "exact_matmul", "im2col", "int_matmul",
    "linear", "log_matmul", "log_matmul_reference", "max_pool2d", "requantize",
    "sum_pool2d", "uniform_matmul", "uniform_matmul_reference", "Requant", "Trace", "load_trace", "save_trace",
]
