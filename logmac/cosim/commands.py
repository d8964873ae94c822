"""``logmac cosim``: run the RTL regression or one trace file on Icarus or Verilator, with a summary."""

from __future__ import annotations

import json

import click
import numpy as np


@click.command("cosim")
@click.option("--sim", type=click.Choice(["verilator", "icarus"]), default="verilator", show_default=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="engine build parameters (JSON, keys of logmac.hw.HwConfig); default: a generic 16-lane build")
@click.option("--vectors", "vector_paths", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="emulator trace file(s) (.npz, logmac.sim.trace); default: the built-in format matrix")
@click.option("--bp", default=0, show_default=True, help="output back-pressure threshold 0..255 (ready low ~bp/256)")
@click.option("--gaps", default=0.0, show_default=True, help="probability of idle cycles before an input beat")
@click.option("--reset-at", type=int, default=None, help="reset the engine this many cycles into each stream")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the report as JSON")
@click.option("--logact", is_flag=True,
              help="the AdaLog-activation engine: its built-in matrix (log and uniform weights), or --vectors as "
                   "logmac.cosim.logact_vectors files / saved attention-tile captures")
@click.option("--full", is_flag=True, help="with --logact: more q values, rows and every-word weight sets")
@click.option("--soak-macs", type=click.IntRange(min=1), default=None,
              help="soak: random configurations of every engine family until this many MACs are checked")
@click.option("--soak-families", default=None, metavar="NAME,...",
              help="with --soak-macs: only these families (logmac.cosim.soak.FAMILIES; default all)")
def cosim(sim: str, config_path: str | None, vector_paths: tuple[str, ...], bp: int, gaps: float,
          reset_at: int | None, seed: int, json_out: str | None, logact: bool, full: bool,
          soak_macs: int | None, soak_families: str | None) -> None:
    """Check the exported RTL against the emulator (logmac.sim) bit for bit under cocotb."""
    from logmac import toolchain
    from logmac.cosim.runner import run_vectors
    from logmac.cosim.suite import format_matrix
    from logmac.cosim.vectors import load_vectors
    from logmac.format.atomic import atomic_write_text
    from logmac.hw.config import HwConfig

    try:
        toolchain.require(sim)
    except toolchain.ToolchainError as exc:
        raise click.ClickException(str(exc)) from exc
    if logact:
        _cosim_logact(sim, vector_paths, full, bp, gaps, reset_at, seed)
        return
    if soak_macs:
        _soak(sim, soak_macs, seed, json_out, tuple(soak_families.split(",")) if soak_families else None)
        return
    rng = np.random.default_rng(seed)
    try:  # a corrupt file, or vectors this engine cannot run (group shifts, a too-narrow build): one line
        vs = [load_vectors(p) for p in vector_paths] if vector_paths else format_matrix(rng)
        hw = HwConfig.load(config_path) if config_path else None
        rep = run_vectors(vs, sim, hw, bp=bp, gap_prob=gaps, reset_at=reset_at, seed=seed)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(rep.summary())
    if json_out:
        data = {k: getattr(rep, k) for k in ("sim", "config", "transactions", "macs_checked", "mismatches", "cycles",
                                             "sim_seconds", "wall_seconds", "first_mismatch", "waveform")}
        atomic_write_text(json_out, json.dumps(data, indent=2))
    if not rep.passed:
        raise click.ClickException(f"{rep.mismatches} mismatch(es); first: {rep.first_mismatch}")


def _cosim_logact(sim: str, paths: tuple[str, ...], full: bool, bp: int, gaps: float, reset_at: int | None,
                  seed: int) -> None:
    """``--logact``: one run per weight kind on the AdaLog-activation engine, a summary each."""
    from logmac.cosim.logact_suite import run_suite

    reports = run_suite(sim, paths, full=full, bp=bp, gap_prob=gaps, reset_at=reset_at, seed=seed)
    for rep in reports:
        click.echo(f"-- {rep.config['kind']} weights, {len(rep.checks)} vector sets")
        click.echo(rep.summary())
    failed = [rep for rep in reports if not rep.passed]
    if failed:
        raise click.ClickException(f"{sum(r.mismatches for r in failed)} mismatch(es); first: {failed[0].first_mismatch}")


def _soak(sim: str, macs: int, seed: int, json_out: str | None, families: tuple[str, ...] | None) -> None:
    """``--soak-macs``: random configurations until ``macs`` MACs are checked; a summary, optionally JSON."""
    from dataclasses import asdict

    from logmac.cosim.soak import run_soak
    from logmac.format.atomic import atomic_write_text

    try:
        rep = run_soak(macs, seed, sim, families=families)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(rep.summary())
    if json_out:
        atomic_write_text(json_out, json.dumps({**asdict(rep), "macs_per_second": rep.macs_per_second}, indent=2))
    if not rep.passed:
        raise click.ClickException(f"{rep.mismatches} mismatch(es); first: {rep.first_mismatch}")
