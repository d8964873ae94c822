"""``logmac hw``: export the engine as Verilog with its parameters, report area and Fmax, check the tools."""

from __future__ import annotations

import json

import click


def _config(config_path: str | None, overrides: tuple[str, ...], engine: str = "mac"):
    from logmac.hw.config import HwConfig, HwConfigError, check_field_types
    from logmac.hw.logact_engine import LogActConfig
    from logmac.hw.sched_config import SchedConfig

    base = json.loads(open(config_path).read()) if config_path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--set takes key=value, got {item!r}")
        try:
            base[key] = json.loads(value)
        except json.JSONDecodeError:
            base[key] = value  # a string value: kind=log, variant=inplace
    try:
        if engine == "sched":
            check_field_types(SchedConfig, base, "scheduled engine")
            return SchedConfig(**base)
        return (LogActConfig if engine == "logact" else HwConfig).from_dict(base)
    except (HwConfigError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("hw")
def hw() -> None:
    """The log-MAC engine RTL (Amaranth): export, area report, toolchain check."""


@hw.command("export")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="build parameters as JSON (keys of logmac.hw.HwConfig); missing keys take defaults")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override one parameter, e.g. lanes=4")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--engine", type=click.Choice(["mac", "logact", "sched"]), default="mac", show_default=True,
              help="mac: the weight engine (HwConfig keys); logact: AdaLog activations (LogActConfig keys); "
                   "sched: the exponent-scheduled engine (SchedConfig keys)")
def export_cmd(config_path: str | None, overrides: tuple[str, ...], out_dir: str, engine: str) -> None:
    """Write <module>.v and <module>.json (parameters, widths, payload fields, registers, tables, arithmetic)."""
    from logmac.hw import logact_engine
    from logmac.hw.export import export

    write = {"logact": logact_engine.export, "sched": _export_sched}.get(engine, export)
    v_path, j_path = write(_config(config_path, overrides, engine), out_dir)
    click.echo(f"wrote {v_path}\nwrote {j_path}")


def _export_sched(cfg, out_dir: str):
    """The scheduled engine's ``.v`` and ``.json``, named like the other engines' exports."""
    from pathlib import Path

    from logmac.hw.sched_engine import SCHED_ENGINE_NAME, sched_parameters, sched_verilog

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path = out / f"{SCHED_ENGINE_NAME}.v", out / f"{SCHED_ENGINE_NAME}.json"
    v_path.write_text(sched_verilog(cfg))
    j_path.write_text(json.dumps(sched_parameters(cfg), indent=2) + "\n")
    return v_path, j_path


@hw.command("area")
@click.option("--bits", default="3,4", show_default=True, help="weight bit widths, comma-separated")
@click.option("--lanes", default="1,16", show_default=True, help="lane counts, comma-separated")
@click.option("--act-bits", default=8, show_default=True)
@click.option("--no-fmax", is_flag=True, help="skip nextpnr place and route")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the rows as JSON")
def area_cmd(bits: str, lanes: str, act_bits: int, no_fmax: bool, json_out: str | None) -> None:
    """Log engine vs integer-multiplier engine: iCE40 LUTs, carries, FFs, Fmax and generic yosys cells."""
    from logmac.hw.area import area_report, comparison_configs, format_table

    cfgs = comparison_configs(tuple(int(b) for b in bits.split(",")), tuple(int(n) for n in lanes.split(",")), act_bits)
    rows = area_report(cfgs, fmax=not no_fmax)
    click.echo(format_table(rows))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump([r.as_dict() for r in rows], fh, indent=2)


@hw.command("logact-area")
@click.option("--act-bits", default=4, show_default=True, help="AdaLog code bits (and the int engine's activation bits)")
@click.option("--weight-bits", default=4, show_default=True)
@click.option("--lanes", default="1,16", show_default=True, help="lane counts, comma-separated")
@click.option("--act-max-shift", default="15,7", show_default=True, help="activation shift caps, comma-separated")
@click.option("--no-fmax", is_flag=True, help="skip nextpnr place and route")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the rows as JSON")
def logact_area_cmd(act_bits: int, weight_bits: int, lanes: str, act_max_shift: str, no_fmax: bool,
                    json_out: str | None) -> None:
    """AdaLog-activation engine (x log, x int weights) vs the integer-multiplier engine: iCE40 LUTs, FFs, Fmax."""
    from logmac.hw.logact_area import comparison_builds, format_table, logact_area_report

    builds = comparison_builds(act_bits, weight_bits, tuple(int(n) for n in lanes.split(",")),
                               tuple(int(s) for s in act_max_shift.split(",")))
    rows = logact_area_report(builds, fmax=not no_fmax)
    click.echo(format_table(rows))
    if json_out:
        with open(json_out, "w") as fh:
            json.dump([r.as_dict() for r in rows], fh, indent=2)


@hw.command("tools")
def tools_cmd() -> None:
    """Say which simulators and synthesis tools are installed, and what is missing."""
    from logmac.toolchain import report

    click.echo(report())
