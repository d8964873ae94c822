"""The CLI as documented: help, inspect, and the stubs that say which issue builds them."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_artifact import make_artifact

from logmac.cli import SUBCOMMANDS, main
from logmac.format import artifact as art


def test_help_lists_every_subcommand():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_inspect_prints_layers_and_compression(tmp_path):
    path = art.save(make_artifact(), tmp_path / "m.lmq")
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "block.conv" in result.output and "log_sqrt2 W4 zero=flag approx=off" in result.output
    assert "x smaller" in result.output
    as_json = json.loads(CliRunner().invoke(main, ["inspect", "--json", str(path)]).output)
    assert as_json["weights"] == sum(r["weights"] for r in as_json["layers"])


def test_inspect_reports_a_corrupt_file_clearly(tmp_path):
    path = tmp_path / "bad.lmq"
    path.write_bytes(b"\x00" * 20)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code != 0
    assert "truncated or corrupt" in result.output
