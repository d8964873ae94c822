"""Every benchmark script parses its arguments, and its ``--quick`` mode runs, so none can rot unnoticed.

CI runs the argument check for all scripts and the quick modes that take seconds; the ones that quantize a
house model, synthesize or run a simulator matrix run with ``--full``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# script -> (extra arguments of its quick run, with {tmp} a scratch folder; CI runs it without --full)
QUICK = {
    "ablation.py": (["-o", "{tmp}/ablation.md"], False),
    "adalog_results.py": ([], False),
    "area_report.py": ([], False),
    "bench_cosim.py": ([], True),
    "bench_emulator.py": (["--threads", "1"], True),
    "emulate_smollm2.py": (["{tmp}/tiny.lmq"], False),
    "latticeq_results.py": ([], False),
    "llr_layers.py": ([], True),
    "iso_accuracy.py": ([], False),
    "lm_table.py": (["--bits", "3", "--results", "{tmp}/lm.csv", "-o", "{tmp}/lm.md"], False),
    "profile_quant.py": ([], False),
    "ptmq_results.py": ([], False),
    "ptmq_variants.py": (["quick"], False),
    "ptq_results.py": (["-o", "{tmp}/ptq.md"], False),
    "results_page.py": (["--csv={tmp}/runs.csv", "run"], False),
    "zero_modes.py": (["-o", "{tmp}/zero.md"], False),
}

# Runs each script's ``--help`` in one interpreter (torch imported once); prints the scripts that failed.
PARSE_ALL = """
import runpy, sys
bad = []
for script, argv in {cases!r}:
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        bad.append(f"{{script}}: --help did not exit")
    except SystemExit as exc:
        if exc.code not in (0, None):
            bad.append(f"{{script}}: exit {{exc.code}}")
    except Exception as exc:
        bad.append(f"{{script}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(bad))
"""


def test_every_script_has_a_quick_run() -> None:
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(QUICK)


def test_every_script_parses_its_arguments() -> None:
    cases = [(str(BENCH / name), ["run", "--help"] if name == "results_page.py" else ["--help"]) for name in QUICK]
    out = subprocess.run([sys.executable, "-c", PARSE_ALL.format(cases=cases)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    failures = [line for line in out.stdout.splitlines() if line.startswith(str(BENCH))]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_run(name: str, tmp_path: Path, request) -> None:
    args, in_ci = QUICK[name]
    if not in_ci and not request.config.getoption("--full"):
        pytest.skip("quick runs that quantize, synthesize or simulate a matrix run with --full")
    cmd = [sys.executable, str(BENCH / name), *(a.format(tmp=tmp_path) for a in args), "--quick"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
