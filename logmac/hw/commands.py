"""CLI for this room; the real command arrives with issue #6 (Amaranth RTL)."""

from logmac.cli import not_built_yet

hw = not_built_yet("hw", "issue #6 (Amaranth RTL)", "Export the log-MAC engine as Verilog; area and Fmax reports.")
