"""The one flow: a real quantized house model, its emulator and the RTL agree, and the flow fails when they don't."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from logmac.cosim.vectors import random_vectors
from logmac.format import GridKind, LogFormat, ZeroMode
from logmac.verify import VerifyOptions, run_verify, sched_config_for

pytestmark = pytest.mark.cosim


def small_options(tmp_path, **kw) -> VerifyOptions:
    base = dict(w_bits=3, method="log_dynamic", iters=0, calib_samples=64, eval_limit=200, tiles=1, area=False,
                sweep_bits=(), out_dir=str(tmp_path / "run"))
    base.update(kw)
    return VerifyOptions(**base)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> str:
    """One quantized model for the tests that break a path on purpose (they check the failure, not the model)."""
    from logmac.format import artifact as artifact_io
    from logmac.verify import quantize_for_verify

    path = tmp_path_factory.mktemp("artifact") / "model.lmq"
    art, _ = quantize_for_verify(small_options(path.parent))
    artifact_io.save(art, path)
    return str(path)


def test_verify_house_resnet_is_bit_exact_and_writes_the_report(tmp_path):
    result = run_verify(small_options(tmp_path))
    assert result.passed, result.first_mismatch
    assert result.macs_checked > 0 and all(layer.macs_checked > 0 for layer in result.layers)
    assert result.macs_checked == sum(layer.macs_checked for layer in result.layers)
    # every layer is log-coded, so the exponent-scheduled engine replays the same tiles
    assert result.sched.macs_checked == result.macs_checked and result.sched.mismatches == 0
    assert result.sched.config["store"] == "codes" and result.sched.config["half"] == "split"
    assert result.metrics["emulator_vs_fake_quant_argmax_agreement"] > 95
    assert result.metrics["fake_quant_top1"] > 50  # far above chance (10 %) at W3A8
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    assert data["raw"]["mismatches"] == 0 and data["raw"]["sched"]["mismatches"] == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "data:image/png;base64" in html


def test_a_corrupted_rtl_decode_table_makes_verify_fail(tmp_path, monkeypatch, artifact):
    """Flip the half-step bit of one loaded table entry: the RTL computes other products than logmac.sim."""
    import logmac.cosim.stream as stream
    from logmac.hw.regmap import table_image

    def corrupted(hw, fmt, table, channel):
        image = table_image(hw, fmt, table, channel).copy()
        if channel == 0:
            image[1] ^= 1 << hw.shift_bits
        return image

    monkeypatch.setattr(stream, "table_image", corrupted)
    result = run_verify(small_options(tmp_path, sim="icarus", layers=("conv1", "layer1.0.conv1"), artifact=artifact))
    assert not result.passed and result.mismatches > 0
    assert result.first_mismatch


def test_the_scheduled_build_fits_every_traced_format():
    """log_2 alone takes no half-step hardware; a log_dynamic layer with a zero flag widens the one build."""
    rng = np.random.default_rng(0)
    log2 = random_vectors(LogFormat(3, GridKind.LOG_2), rng, k=20, act_signed=False, acc_bits=40)
    dyn = random_vectors(LogFormat(4, GridKind.LOG_DYNAMIC, zero=ZeroMode.FLAG), rng, rows=1, k=5000, channels=1)
    cfg = sched_config_for([log2])
    assert (cfg.store, cfg.half, cfg.code_bits, cfg.zero_flag, cfg.act_bits, cfg.acc_bits) == \
        ("codes", "none", 3, False, 9, 40)
    assert cfg.max_shift == LogFormat(3, GridKind.LOG_2).max_shift
    cfg = sched_config_for([log2, dyn])
    assert (cfg.half, cfg.code_bits, cfg.zero_flag, cfg.max_k) == ("split", 4, True, 5000)
    assert cfg.max_shift == LogFormat(4, GridKind.LOG_DYNAMIC).max_shift
    grouped = replace(log2, group_exp=np.array([[0, -1, 1], [0, 0, 0], [-2, -2, -1]]), group_size=8)
    cfg = sched_config_for([log2, grouped])  # a codes store cannot shift a group: terms, max_shift + span 2
    assert (cfg.store, cfg.half, cfg.max_shift) == ("terms", "none", LogFormat(3, GridKind.LOG_2).max_shift + 2)


def test_a_flipped_scheduled_expectation_makes_verify_fail(tmp_path, monkeypatch, artifact):
    """One accumulator bit flipped in the scheduled replay's expectations only: the general engine still
    agrees, the scheduled engine's scoreboard reports it and the run fails."""
    import logmac.cosim.sched_runner as sr

    real = sr.golden

    def flipped(v):
        exp = real(v)
        exp.acc[0, 0] ^= 1 << 2
        return exp

    monkeypatch.setattr(sr, "golden", flipped)
    monkeypatch.setattr(sr, "check_golden", lambda *a: None)
    result = run_verify(small_options(tmp_path, layers=("conv1",), artifact=artifact))
    assert result.mismatches == 0 and result.macs_checked > 0
    assert not result.passed and result.sched.mismatches > 0 and result.sched.first_mismatch


def test_a_changed_emulator_makes_verify_fail(tmp_path, monkeypatch, artifact):
    """An emulator whose accumulators are off by one no longer agrees with the RTL (or its own golden model)."""
    import logmac.sim.trace as trace

    real = trace.save_trace

    def off_by_one(path, x_int, codes, fmt, **kw):
        out = real(path, x_int, codes, fmt, **kw)
        data = dict(np.load(out))
        data["acc"] = data["acc"] + 1
        np.savez(out, **data)
        return out

    monkeypatch.setattr(trace, "save_trace", off_by_one)
    monkeypatch.setattr("logmac.sim.emulator.save_trace", off_by_one)
    result = run_verify(small_options(tmp_path, artifact=artifact))
    assert not result.passed


def test_verify_a_grouped_lm_artifact_on_the_scheduled_engine(tmp_path, grouped_lm_artifact):
    """A causal LM with group exponents: perplexity three ways, every traced layer on the scheduled engine only
    (terms store, max_shift widened by the group shift), none on the general engine, and the run says so."""
    from click.testing import CliRunner

    from logmac.cli import main

    result = run_verify(small_options(tmp_path, sim="icarus", artifact=str(grouped_lm_artifact), eval_limit=128))
    assert result.passed and result.macs_checked == 0
    assert len(result.group_shift_layers) == 14 and result.sched.config["store"] == "terms"
    assert result.sched.macs_checked > 0 and result.sched.mismatches == 0
    assert result.sched.config["max_shift"] > LogFormat(3, GridKind.LOG_DYNAMIC).max_shift
    assert result.metrics["emulator_ppl"] > 1 and result.metrics["fp_ppl"] > 1
    summary = json.loads((tmp_path / "run" / "report.json").read_text())["summary"]
    assert summary["layers skipped on the general engine because of group shifts"] == 14
    run = CliRunner().invoke(main, ["verify", "--artifact", str(grouped_lm_artifact), "--sim", "icarus", "--no-area",
                                    "--sweep-bits", "", "--eval-limit", "128", "--tiles", "1", "-o", str(tmp_path / "cli")])
    assert run.exit_code == 0, run.output
    assert "14 layers skipped on the general engine because of group shifts" in run.output
