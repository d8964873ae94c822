"""``logmac models``: list, evaluate and train the reference models (a thin layer over :mod:`logmac.models`)."""

from __future__ import annotations

import json
from typing import Any

import click


@click.group(name="models")
def models() -> None:
    """List, evaluate and train the reference models (all offline)."""


@models.command(name="list")
@click.option("--measure", is_flag=True, help="Load each available model and measure params, load time and FP score.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (what docs/models.md holds).")
@click.option("--max-tokens", default=16384, show_default=True, help="Perplexity tokens when measuring the LM.")
def list_command(measure: bool, markdown: bool, max_tokens: int) -> None:
    """What is available on this machine, and which names need local weights."""
    from logmac.models import list_models, measure_model

    rows = list_models()
    if measure:
        for row in rows:
            if row["available"]:
                click.echo(f"measuring {row['name']} ...", err=True)
                row.update(measure_model(row["name"], max_tokens=max_tokens))
    if markdown:
        _print_markdown(rows)
        return
    click.echo("Shipped (work offline after scripts/setup.sh):")
    for row in (r for r in rows if r["available"] is not None):
        status = "available" if row["available"] else "MISSING"
        extra = f"\n    params {row['params']:,}, load {row['load_s']} s, {row['score']}" if "score" in row else ""
        click.echo(f"  {row['name']:<20} {status:<10} {row['task']:<20} {row['source']}{extra}")
    click.echo("By name, when you have the weights (--path or the standard caches):")
    for row in (r for r in rows if r["available"] is None):
        click.echo(f"  {row['name']:<44} {row['task']:<20} {row['source']}")


def _print_markdown(rows: list[dict[str, Any]]) -> None:
    click.echo("| model | params | data | metric | FP score | load time here |")
    click.echo("| --- | --- | --- | --- | --- | --- |")
    for row in (r for r in rows if r["available"] is not None):
        params = f"{row['params'] / 1e6:.2f} M" if "params" in row else ""
        load = f"{row['load_s']} s" if "load_s" in row else ""
        click.echo(f"| `{row['name']}` | {params} | {row['data']} | {row['metric']} | {row.get('score', '')} | {load} |")


@models.command(name="eval")
@click.argument("name")
@click.option("--path", type=click.Path(), default=None, help="Weights file or folder (overrides the shipped ones).")
@click.option("--data-path", type=click.Path(), default=None, help="ImageFolder root for ImageNet models.")
@click.option("--limit", type=int, default=None, help="Evaluate on the first N images / sentences only.")
@click.option("--max-tokens", default=16384, show_default=True, help="Perplexity tokens for causal LMs.")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present).")
def eval_command(name: str, path: str | None, data_path: str | None, limit: int | None, max_tokens: int,
                 device: str | None) -> None:
    """Load NAME and print its FP evaluation as JSON."""
    from logmac.models import evaluate_model, load_model

    loaded = _or_click_error(lambda: load_model(name, path=path, device=device))
    scores = _or_click_error(lambda: evaluate_model(loaded.model, name, data_path=data_path, limit=limit,
                                                    tokenizer=loaded.tokenizer, max_tokens=max_tokens))
    click.echo(json.dumps({"model": name, **scores}, indent=2))


@models.command(name="train")
@click.argument("name")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the recipe's epoch count.")
@click.option("--out-dir", type=click.Path(), default=None, help="Where to write NAME.safetensors/.json "
              "(default: logmac/models/weights, the shipped copy).")
@click.option("--threads", default=1, show_default=True,
              help="CPU threads; 1 reproduces the shipped weights and is fastest on a busy shared machine.")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present).")
def train_command(name: str, seed: int, epochs: int | None, out_dir: str | None, threads: int, device: str | None) -> None:
    """Train house model NAME on Fashion-MNIST and write its fp16 weights and JSON sidecar."""
    from logmac.models.train import train_house

    sidecar = _or_click_error(lambda: train_house(name, out_dir=out_dir, seed=seed, epochs=epochs, threads=threads,
                                                  device=device))
    click.echo(f"{name}: FP top-1 {sidecar['fp_top1']}% on the 10k test set after {sidecar['train_seconds']} s")


def _or_click_error(action):
    """Run ``action``; turn the package's clear errors into a one-line CLI error instead of a traceback."""
    try:
        return action()
    except (KeyError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err).strip("'\"")) from err
