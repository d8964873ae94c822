"""The ``logmac`` command: a thin dispatcher over the package's Python API.

Each room owns its subcommands in ``logmac/<room>/commands.py``; this module only assembles them, so
every CLI feature stays an API call a user can make from Python too.
"""

from __future__ import annotations

import importlib

import click

from logmac import __version__

# (module, attribute) of each subcommand, imported when the group is built.
SUBCOMMANDS = {
    "inspect": ("logmac.artifact_commands", "inspect"),
    "quantize": ("logmac.quantize_commands", "quantize"),
    "emulate": ("logmac.emulate_commands", "emulate"),
    "hw": ("logmac.hw_compare", "hw"),  # the hw group with compare, which needs models and quant
    "cosim": ("logmac.cosim_soak", "cosim"),  # the cosim command with real layers in its soak
    "verify": ("logmac.verify", "verify"),
    "demo": ("logmac.verify", "demo"),
    "models": ("logmac.models.commands", "models"),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (keeps ``--help`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logmac")
def main() -> None:
    """Logarithmic post-training quantization, a bit-exact shift-MAC emulator and its RTL, checked together."""

