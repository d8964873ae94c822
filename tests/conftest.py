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
