"""CLI for this room; the real command arrives with issue #4 (PTQ pipeline)."""

from logmac.cli import not_built_yet

quantize = not_built_yet("quantize", "issue #4 (PTQ pipeline)", "Quantize a model to exponent-coded weights.")
