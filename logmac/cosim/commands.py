"""CLI for this room; the real command arrives with issue #6 (cocotb regression)."""

from logmac.cli import not_built_yet

cosim = not_built_yet("cosim", "issue #6 (cocotb regression)", "Run the cocotb regression of the RTL against the emulator.")
