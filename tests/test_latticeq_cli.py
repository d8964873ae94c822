"""``logmac quantize --method latticeq``: options reach LatticeConfig, bad input is a clear error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from logmac.cli import main
from logmac.quant import lattice_run


def test_cli_passes_lattice_options(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = {}

    def fake(name, cfg, *, eval_limit=None, path=None, **_):
        seen.update(name=name, cfg=cfg, eval_limit=eval_limit)
        return None, {"fp_top1": 90.0, "q_top1": 89.0, "int_top1": 89.0, "quant_seconds": 1.0}

    monkeypatch.setattr(lattice_run, "lattice_registry_model", fake)
    out = CliRunner().invoke(main, ["quantize", "--model", "resnet18_fmnist", "--method", "latticeq", "--w-bits", "3",
                                    "--basis-bits", "6", "--search-steps", "7", "--restarts", "2", "--eval-limit", "50",
                                    "--results", str(tmp_path / "r.csv")])
    assert out.exit_code == 0, out.output
    cfg = seen["cfg"]
    assert (cfg.w_bits, cfg.basis_bits, cfg.steps, cfg.restarts, seen["eval_limit"]) == (3, 6, 7, 2, 50)
    assert "int_top1" in out.output and (tmp_path / "r.csv").read_text().startswith("fp_top1")


@pytest.mark.parametrize("args, message", [
    (["--basis-bits", "1"], "basis_bits"),
    (["--restarts", "0"], "restarts"),
    (["-o", "x.lmq"], "no artifact export"),
    (["--model", "no_such_model"], "no_such_model"),
])
def test_cli_rejects_bad_lattice_input(args: list[str], message: str) -> None:
    base = ["quantize", "--method", "latticeq"] + ([] if "--model" in args else ["--model", "resnet18_fmnist"])
    out = CliRunner().invoke(main, base + args)
    assert out.exit_code != 0 and message in out.output, out.output
