"""Shared pytest set-up: test modules import each other's helpers from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run the full cosim matrix (more builds and configurations; slow)")
