"""logmac.cosim: the cocotb regression of the RTL against logmac.sim on Icarus and Verilator."""

from __future__ import annotations

from logmac.cosim.runner import Report, run_vectors
from logmac.cosim.vectors import Vectors, load_vectors, random_vectors, save_vectors

__all__ = ["Report", "Vectors", "load_vectors", "random_vectors", "run_vectors", "save_vectors"]
