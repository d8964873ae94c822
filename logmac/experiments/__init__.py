"""Experiments: a registry model quantized, scored and written as a results row, for every method.

``registry`` runs LogART and the uniform baselines (``quantize_registry_model``, the results CSV, the ablation
table); ``adalog``, ``ptmq`` and ``latticeq`` do the same for their methods.  ``logmac quantize`` and the
benchmark scripts are thin layers over these calls; nothing here needs click.
"""
