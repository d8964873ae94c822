"""CLI for this room; the real command arrives with issue #5 (bit-exact emulator)."""

from logmac.cli import not_built_yet

emulate = not_built_yet("emulate", "issue #5 (bit-exact emulator)", "Run an exported artifact on the bit-exact integer emulator.")
