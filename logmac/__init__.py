"""logmac: logarithmic post-training quantization proven on hardware.

Rooms: ``codes`` (the weight-code format), ``artifact`` (the exported file), ``quant`` (makes codes),
``sim`` (bit-exact emulator), ``hw`` (Amaranth RTL), ``cosim`` (cocotb against ``sim``), ``models``
(networks and data), ``cli`` (the ``logmac`` command, a thin layer over those APIs).
"""

__version__ = "0.1.0"
