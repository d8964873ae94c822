"""``logmac inspect``: what an exported artifact holds and what it costs to store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from logmac.format import artifact as artifact_io


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(file: Path, as_json: bool) -> None:
    """Summarise an artifact: layers, formats, storage size and compression vs fp32."""
    try:
        art = artifact_io.load(file)
    except artifact_io.ArtifactError as exc:
        raise click.ClickException(str(exc)) from exc
    info = artifact_io.summary(art)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{file}  (artifact format v{info['format_version']})")
    model = art.meta.get("model")
    if model:
        click.echo(f"model: {model}")
    if art.settings:
        click.echo("settings: " + ", ".join(f"{k}={v}" for k, v in sorted(art.settings.items())))
    name_w = max([len("layer")] + [len(r["name"]) for r in info["layers"]])
    op_w = max([8] + [len(r["op"]) for r in info["layers"]])
    click.echo(f"{'layer':<{name_w}}  {'op':<{op_w}} {'shape':<18} {'format':<44} {'bits':>4} {'stored':>10}")
    for r in info["layers"]:
        shape = "x".join(str(d) for d in r["shape"])
        click.echo(f"{r['name']:<{name_w}}  {r['op']:<{op_w}} {shape:<18} {r['format']:<44} "
                   f"{r['bits_per_weight']:>4} {_human(r['code_bytes'] + r['table_bytes']):>10}")
    for a in info["activations"]:
        click.echo(f"{a['name']:<{name_w}}  {'act':<{op_w}} {'':<18} {a['format']:<44} {a['bits']:>4}")
    click.echo(f"{len(info['layers'])} layers, {info['weights']:,} weights: {_human(info['stored_bytes'])} stored "
               f"vs {_human(info['fp32_bytes'])} fp32 ({info['compression_vs_fp32']:.2f}x smaller, "
               f"{info['stored_bits_per_weight']:.3f} bits per weight with scales, tables and group exponents)")
