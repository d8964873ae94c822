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


def test_a_settings_file_sets_defaults_the_command_line_overrides_and_the_artifact_records(tmp_path):
    settings = tmp_path / "w3.toml"
    text = ('[quantize]\nmodel = "resnet18_fmnist"\nmethod = "log_2"\nw-bits = 3\na_bits = 32\ncalib_samples = 8\n'
            'eval_limit = 16\n')
    settings.write_text(text)
    out = tmp_path / "m.lmq"
    result = CliRunner().invoke(main, ["quantize", "--settings", str(settings), "--w-bits", "4", "--no-sfs", "--no-dbs",
                                       "--no-abs", "--results", str(tmp_path / "r.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    loaded = art.load(out)
    assert loaded.settings["settings_file"] == {"file": str(settings), "text": text}
    formats = {layer.fmt.to_dict()["grid"] for layer in loaded.layers.values()}
    assert formats == {"log_2"} and {layer.fmt.bits for layer in loaded.layers.values()} == {4}  # the option won


def test_a_bad_settings_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    for body, message in [("w_bits = ", "not valid TOML"), ("wbits = 3\n", "unknown settings ['wbits']")]:
        bad.write_text(body)
        result = CliRunner().invoke(main, ["quantize", "--settings", str(bad), "--model", "resnet18_fmnist"])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
