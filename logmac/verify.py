"""``logmac verify`` and ``logmac demo``: accuracy and hardware equivalence in one run (issue #7)."""

from logmac.cli import not_built_yet

verify = not_built_yet("verify", "issue #7 (one flow)", "Quantize, emulate and check the RTL against the emulator.")
demo = not_built_yet("demo", "issue #7 (one flow)", "Run verify on the embedded default model and data.")
