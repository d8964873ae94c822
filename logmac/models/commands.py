"""CLI for this room; the real command arrives with issue #3 (models and data)."""

from logmac.cli import not_built_yet

models = not_built_yet("models", "issue #3 (models and data)", "List, load and train the reference models.")
