"""Per-group exponent offsets through the RTL: real grouped layers of a tiny quantized LM, traced out of the
emulator, replayed on the exponent-scheduled engine (terms store, each group's shift folded into its weights'
term exponents) on Icarus and Verilator bit for bit; a wrong group exponent is caught by the scoreboard, and
the general engine refuses such vectors by name."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_cosim_sched import assert_clean

import logmac.cosim.sched_runner as sr
from logmac.cosim import run_vectors
from logmac.cosim.sched_runner import run_sched_vectors
from logmac.cosim.vectors import Vectors, golden, load_vectors
from logmac.format import FormatError
from logmac.format import artifact as artifact_io
from logmac.models import load_model
from logmac.models.text import austen_tokens
from logmac.sim.emulator import Emulator
from logmac.verify import sched_config_for

pytestmark = pytest.mark.cosim

LAYERS = ("model.model.layers.0.self_attn.q_proj", "model.model.layers.1.mlp.down_proj")  # K = 32 and 64
CHANNELS = 6  # per layer: those whose group exponents differ the most
ROWS = 4


@pytest.fixture(scope="module")
def traced(grouped_lm_artifact, tmp_path_factory) -> list[Vectors]:
    """A few token rows of two grouped layers, traced as ``logmac verify`` traces them."""
    art = artifact_io.load(grouped_lm_artifact)
    loaded = load_model(art.meta["model"], path=art.meta["model_path"], device="cpu")
    emu = Emulator(art, loaded.model)
    ids = austen_tokens(loaded.tokenizer, "evaluation", max_tokens=32)[None]
    out = tmp_path_factory.mktemp("traces")
    vs = []
    for i, name in enumerate(LAYERS):
        v = load_vectors(emu.capture(name, ids, out / f"{i}.npz", max_rows=ROWS, seed=i))
        span = v.group_exp.max(axis=1) - v.group_exp.min(axis=1)
        vs.append(v.tile(np.arange(v.rows), np.sort(np.argsort(-span, kind="stable")[:CHANNELS]), name=name))
    return vs


def test_the_traces_carry_shifts_that_matter(traced) -> None:
    """The replay below exercises group shifts: every set shifts some weights, and its expected registers
    differ from the same codes without group exponents."""
    for v in traced:
        assert v.has_groups and v.term_shift().any()
        plain = replace(v, group_exp=None, group_size=None, trace_expected={})
        assert not np.array_equal(golden(v).acc, golden(plain).acc)


def test_real_grouped_layers_on_the_scheduled_engine(sim: str, traced) -> None:
    cfg = sched_config_for(traced)
    assert cfg.store == "terms" and cfg.max_shift > max(v.fmt.max_shift for v in traced)
    assert_clean(run_sched_vectors(traced, sim, cfg, bp=40, gap_prob=0.1, seed=7))


def test_a_wrong_group_exponent_is_caught(sim: str, traced, monkeypatch) -> None:
    """The engine runs one channel with one group's exponent copied from its neighbour (the shift span does
    not grow, so the same build takes it) while the scoreboard expects the traced layer."""
    right = traced[0]
    c = int(np.flatnonzero(right.group_exp[:, 0] != right.group_exp[:, 1])[0])
    exps = right.group_exp.copy()
    exps[c, 0] = exps[c, 1]
    wrong = replace(right, group_exp=exps, trace_expected={}, name="wrong group exponent")
    real = sr.golden
    monkeypatch.setattr(sr, "golden", lambda v: real(replace(v, group_exp=right.group_exp, trace_expected={})))
    monkeypatch.setattr(sr, "check_golden", lambda *a: None)
    rep = run_sched_vectors(wrong, sim, sched_config_for(traced), waves_on_failure=False)
    assert rep.mismatches >= 1 and "wrong group exponent" in rep.first_mismatch


def test_a_corrupted_trace_value_is_refused(traced) -> None:
    """The traced registers are held against the group reference before anything runs."""
    v = traced[1]
    acc = v.trace_expected["acc"].copy()
    acc[0, 0] += 1
    with pytest.raises(FormatError, match="acc disagrees"):
        golden(replace(v, trace_expected={**v.trace_expected, "acc": acc}))


def test_the_general_engine_refuses_group_exponents(traced) -> None:
    with pytest.raises(ValueError, match="the general engine has no group shift; use the scheduled engine"):
        run_vectors(traced[0], "icarus")


def test_cosim_command_refuses_grouped_and_corrupt_files_in_one_line(traced, tmp_path) -> None:
    """``logmac cosim --vectors`` on the general engine: a grouped file and a corrupt file each end in one
    ``Error:`` line naming the problem, never a traceback."""
    from click.testing import CliRunner

    from logmac.cli import main
    from logmac.cosim.vectors import save_vectors

    grouped = save_vectors(traced[0], tmp_path / "grouped.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not a zip")
    for path, message in ((grouped, "no group shift"), (corrupt, "corrupt.npz")):
        out = CliRunner().invoke(main, ["cosim", "--sim", "icarus", "--vectors", str(path)])
        assert out.exit_code != 0 and isinstance(out.exception, SystemExit), out.exception
        errors = [line for line in out.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and message in errors[0], out.output
