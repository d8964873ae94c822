"""Bad invocations end in a one-line error and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_artifact import make_artifact

from logmac.cli import main
from logmac.format import artifact as art


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    good = art.save(make_artifact(), tmp_path / "good.lmq")
    corrupt = tmp_path / "corrupt.lmq"
    corrupt.write_bytes(good.read_bytes()[:-40])
    unreadable = tmp_path / "locked.lmq"
    unreadable.write_bytes(good.read_bytes())
    return {"good": str(good), "corrupt": str(corrupt), "missing": str(tmp_path / "absent.lmq"),
            "unreadable": str(unreadable), "dir": str(tmp_path)}


CASES = [
    (["inspect", "{missing}"], "no such artifact file"),
    (["inspect", "{corrupt}"], "truncated or corrupt"),
    (["inspect", "{dir}"], "no such artifact file"),
    (["emulate", "{corrupt}"], "truncated or corrupt"),
    (["emulate", "{missing}"], "no such artifact file"),
    (["quantize", "--model", "no_such_model"], "no_such_model"),
    (["quantize", "--method", "ptmq", "--model", "no_such_model"], "no_such_model"),
    (["quantize", "--method", "latticeq", "--model", "no_such_model"], "no_such_model"),
    (["quantize", "--model", "{missing}"], "absent.lmq"),
    (["quantize", "--model", "resnet18_fmnist", "--w-bits", "9"], "9 is not in the range"),
    (["quantize", "--model", "resnet18_fmnist", "--a-bits", "40"], "a_bits"),
    (["quantize", "--model", "resnet18_fmnist", "-o", "{good}"], "exists; pass --force"),
    (["quantize", "--model", "resnet18_fmnist", "--calib-samples", "0"], "calib"),
    (["nonsense"], "No such command"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:2]) + f" [{m}]" for a, m in CASES])
def test_bad_invocation_is_one_line(files, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [a.format(**files) for a in args])
    assert result.exit_code not in (0, None), result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message.lower() in errors[0].lower(), result.output


def test_unreadable_file_is_an_error_not_a_traceback(files, monkeypatch) -> None:
    """File permissions do not stop root (CI containers), so the refusal to read is simulated."""
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "locked.lmq":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    for command in ("inspect", "emulate"):
        result = CliRunner().invoke(main, [command, files["unreadable"]])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.exception
        assert result.output.startswith("Error: ") and "Permission denied" in result.output
