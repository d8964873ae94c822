"""The rooms import downwards only, no private name crosses a module, and no two modules import each other.

The allowed directions are the layout in docs/architecture.md.  Imports that still point the wrong way are
listed in ``REMAINING_UPWARD`` by name: the test fails on any new one, and on a listed one that is gone (so the
list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "logmac"

# room -> the rooms it may import (its own room always).  Top-level modules not named here (cli, verify,
# report, experiments and the *_commands modules) sit on top and may import anything.
ALLOWED = {
    "format": set(),
    "sim": {"format", "memory"},
    "hw": {"format", "toolchain"},
    "cosim": {"format", "sim", "hw", "stimulus", "toolchain"},
    "quant": {"format", "models", "memory", "paths"},
    "models": set(),
    "stimulus": {"format"},
    "toolchain": set(),
    "backends": {"format", "sim", "hw", "cosim", "quant", "models", "memory", "stimulus", "toolchain"},
    "experiments": {"format", "sim", "hw", "cosim", "quant", "models", "memory", "stimulus", "toolchain", "backends",
                    "paths"},
    "memory": set(),
}

REMAINING_UPWARD: set[tuple[str, str]] = set()  # every import points down; a new exception is named here
REMAINING_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports_of(path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for every ``logmac`` import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "logmac":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.append((sub, "") if is_module else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "logmac"]
    return found


def graph() -> dict[str, list[tuple[str, str]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports() -> set[tuple[str, str]]:
    bad = set()
    for src, targets in graph().items():
        allowed = ALLOWED.get(room(src))
        if allowed is None:
            continue
        for target, _ in targets:
            dst = room(target)
            if dst is not None and dst != room(src) and dst not in allowed:
                bad.add((src, target))
    return bad


def test_imports_point_downwards():
    found = upward_imports()
    assert found - REMAINING_UPWARD == set(), "new upward imports (see docs/architecture.md)"
    assert REMAINING_UPWARD - found == set(), "fixed: remove these from REMAINING_UPWARD"


def test_format_imports_nothing_of_ours_but_itself():
    for src, targets in graph().items():
        if room(src) == "format":
            assert all(room(t) == "format" for t, _ in targets), src


def test_no_private_name_crosses_a_module():
    crossing = []
    for src, targets in graph().items():
        for target, name in targets:
            if name.startswith("_") and not name.startswith("__") and target != src:
                crossing.append(f"{src} imports {target}.{name}")
    assert crossing == []


def test_no_two_modules_import_each_other():
    edges = {src: {t for t, _ in targets} for src, targets in graph().items()}
    cycles = {frozenset({a, b}) for a, outs in edges.items() for b in outs if a != b and a in edges.get(b, set())}
    assert cycles == REMAINING_CYCLES


@pytest.mark.parametrize("bad", [("logmac.sim.x", "logmac.quant.y"), ("logmac.format.x", "logmac.sim.y")])
def test_the_rule_catches_an_upward_import(bad):
    src, target = bad
    assert room(target) not in ALLOWED[room(src)]


def test_every_method_exposes_quantize_and_one_fake_quant_switch():
    import inspect

    from logmac.quant import methods
    from logmac.quant.methods import adalog, latticeq, logart, ptmq

    for method in (logart, adalog, ptmq, latticeq):
        assert callable(method.quantize) and callable(method.set_quant), method.__name__
        assert list(inspect.signature(method.quantize).parameters)[:3] == ["model", "calib", "cfg"], method.__name__
        assert method.__name__.rsplit(".", 1)[1] in methods.__doc__
