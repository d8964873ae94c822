"""The four methods on top of the quantization core, each a package exposing the same two calls.

``quantize(model, calib, cfg) -> result`` quantizes a model in place (``result.model`` is the fake-quant model)
and ``set_quant(model, on)`` switches its quantizers between fake-quant and the float path:

- :mod:`.logart`   exponent-coded weights (DBS, SFS, ABS; LLR or GPTQ rounding), and the uniform baselines
- :mod:`.adalog`   log-coded post-Softmax / post-GELU activations of ViTs and BERT encoders
- :mod:`.ptmq`     one calibration for several weight widths, nested codes (``cfg`` is a ``(QuantConfig, PtmqConfig)``)
- :mod:`.latticeq` LatticeQ lattice codes, the non-log baseline

Each method's ``run`` module scores a registry model and writes a results row (what ``logmac quantize`` and the
benchmarks call).
"""
