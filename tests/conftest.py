"""Shared pytest set-up: test modules import each other's helpers from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from logmac.toolchain import SIMULATORS, check_tool

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run the full cosim matrix (more builds and configurations; slow)")


@pytest.fixture(params=list(SIMULATORS))
def sim(request) -> str:
    """Each cosim test once per simulator; a missing simulator fails the test (CI must run both)."""
    problem = check_tool(request.param).problem
    if problem:
        pytest.fail(f"the cosim suite needs {request.param}: {problem}")
    return request.param


@pytest.fixture
def full(request) -> bool:
    """True with ``--full``: the longer cosim tiers run too."""
    return request.config.getoption("--full")


@pytest.fixture(scope="session")
def grouped_lm_artifact(tmp_path_factory) -> Path:
    """A real tiny causal LM (random 2-layer Llama, saved with save_pretrained) quantized as a user would:
    ``logmac quantize --group-size 16``, log_dynamic W3 A8, GPTQ rounding; every decoder linear has group
    exponents."""
    from click.testing import CliRunner

    from logmac.cli import main
    from logmac.models.tiny_lm import save_tiny_causal_lm

    root = tmp_path_factory.mktemp("grouped-lm")
    folder = save_tiny_causal_lm(root / "tiny-llama", "llama")
    out = root / "grouped.lmq"
    run = CliRunner().invoke(main, [
        "quantize", "--model", str(folder), "--method", "log_dynamic", "--w-bits", "3", "--a-bits", "8",
        "--hardware-approx", "--rounding", "gptq", "--group-size", "16", "--group-bits", "2", "--calib-samples", "8",
        "--batch-size", "8", "--seq-len", "32", "--max-tokens", "96", "--act-init", "percentile", "-o", str(out),
        "--results", str(root / "r.csv")])
    assert run.exit_code == 0, run.output
    return out
