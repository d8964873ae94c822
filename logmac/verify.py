"""``logmac verify`` and ``logmac demo``: accuracy and hardware equivalence of one quantized model, in one run.

The flow: quantize a model (or load an artifact), score it three ways (FP, fake-quant, the bit-exact
emulator), trace real output tiles of every quantized layer out of the emulator and replay them through the
RTL engine under cocotb, synthesise the engine for area and Fmax, and write one report with plots and a JSON
of every number.  Any RTL/emulator mismatch makes the run fail.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from logmac.format import LogFormat, decode_float, level_values
from logmac.format import artifact as artifact_io
from logmac.format.artifact import Artifact
from logmac.paths import results_home

DEFAULT_MODEL = "resnet18_fmnist"
TILE = 16  # a tile is TILE input rows (output pixels / tokens) x TILE output channels


@dataclass
class VerifyOptions:
    """What one ``verify`` run does; the CLI options map onto these fields one to one."""

    model: str = DEFAULT_MODEL
    w_bits: int = 3
    method: str = "log_dynamic"
    a_bits: int = 8
    hardware_approx: bool = True
    learn_rounding: bool = False
    iters: int = 100
    calib_samples: int = 256
    eval_limit: int | None = 2000
    sim: str = "verilator"
    tiles: int = 4
    seed: int = 0
    artifact: str | None = None
    out_dir: str = field(default_factory=lambda: str(results_home() / "verify"))
    sweep_bits: tuple[int, ...] = (3, 4)
    sweep_methods: tuple[str, ...] = ("log_dynamic", "log_2", "linear_mse")
    area: bool = True
    layers: tuple[str, ...] = ()  # layers whose tiles go through the RTL (empty: every quantized layer)
    device: str = "cpu"


@dataclass
class LayerCheck:
    name: str
    weights: int
    bits: int
    weight_rel_error: float
    tiles: int
    macs_checked: int
    mismatches: int


@dataclass
class VerifyResult:
    """Every number of a run (also written as report.json)."""

    options: dict[str, Any]
    metrics: dict[str, float]
    layers: list[LayerCheck] = field(default_factory=list)
    macs_checked: int = 0
    mismatches: int = 0
    first_mismatch: str | None = None
    cosim_seconds: float = 0.0
    storage: dict[str, float] = field(default_factory=dict)
    area: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.macs_checked > 0


def _quant_config(opts: VerifyOptions, **overrides):
    from logmac.quant.config import QuantConfig

    fields = dict(method=opts.method, w_bits=opts.w_bits, a_bits=opts.a_bits, hardware_approx=opts.hardware_approx,
                  learn_rounding=opts.learn_rounding, iters=opts.iters, calib_samples=opts.calib_samples,
                  seed=opts.seed, device=opts.device)
    fields.update(overrides)
    return QuantConfig(**fields)


def quantize_for_verify(opts: VerifyOptions) -> tuple[Artifact, dict[str, float]]:
    """The artifact under test and its FP / fake-quant metrics (quantized here unless ``opts.artifact``)."""
    if opts.artifact:
        art = artifact_io.load(opts.artifact)
        metrics = art.meta.get("metrics", {})
        return art, {"fp_top1": metrics.get("fp", {}).get("top1"), "fake_quant_top1": metrics.get("quant", {}).get("top1")}
    from logmac.experiments.registry import EvalOptions, quantize_registry_model

    res, row = quantize_registry_model(opts.model, _quant_config(opts), EvalOptions(eval_limit=opts.eval_limit))
    return res.artifact, {"fp_top1": row.get("fp_top1"), "fake_quant_top1": row.get("q_top1")}


def weight_errors(art: Artifact, float_model: torch.nn.Module) -> dict[str, float]:
    """||W - Q(W)|| / ||W|| per layer, Q(W) decoded from the artifact's codes exactly as exported."""
    modules = dict(float_model.named_modules())
    out = {}
    for name, layer in art.layers.items():
        w = modules[name].weight.detach().double().cpu().numpy()
        if isinstance(layer.fmt, LogFormat):
            q = decode_float(layer.codes, layer.table, layer.fmt)
        else:
            zp = 0 if layer.zero_point is None else layer.zero_point.reshape(-1, *[1] * (w.ndim - 1))
            q = (layer.codes.astype(np.float64) - zp) * layer.scale.reshape(-1, *[1] * (w.ndim - 1))
        out[name] = float(np.linalg.norm(w - q) / max(np.linalg.norm(w), 1e-30))
    return out


def check_hardware(emu, art: Artifact, inputs: torch.Tensor, opts: VerifyOptions, workdir: Path):
    """Trace ``opts.tiles`` random output tiles (``TILE`` rows x ``TILE`` channels) of every layer out of the
    emulator and replay them all through the RTL in one simulator run."""
    from logmac.cosim import load_vectors, run_vectors
    from logmac.cosim.runner import Report
    from logmac.format import FormatError

    tiles = max(1, opts.tiles)
    rng = np.random.default_rng(opts.seed)
    vectors = []
    unknown = set(opts.layers) - set(art.layers)
    if unknown:
        raise ValueError(f"no quantized layer(s) {sorted(unknown)}; layers are {list(art.layers)}")
    for i, name in enumerate(art.layers):
        if opts.layers and name not in opts.layers:
            continue
        path = emu.capture(name, inputs, workdir / f"{i:03d}.npz", max_rows=tiles * TILE, seed=opts.seed + i)
        traced = load_vectors(path)
        for t in range(tiles):
            rows = np.arange(t * TILE, min((t + 1) * TILE, traced.rows))
            if rows.size == 0:
                break
            channels = np.sort(rng.choice(traced.channels, min(TILE, traced.channels), replace=False))
            vectors.append(traced.tile(rows, channels, name=f"{name}#{t}"))
    try:
        return run_vectors(vectors, sim=opts.sim, seed=opts.seed)
    except FormatError as exc:  # the traced expectations disagree with logmac.sim's golden model
        return Report(opts.sim, {}, mismatches=1, first_mismatch=str(exc))


def metric_sweep(opts: VerifyOptions, known: dict[tuple[str, int], float] | None = None) -> list[dict[str, Any]]:
    """Round-to-nearest top-1 at each (method, bits): the curve the report plots next to this run.

    ``known`` holds cells already measured with the same settings (this run's own), which are not redone.
    """
    from logmac.experiments.registry import EvalOptions, quantize_registry_model

    rows = []
    for method in opts.sweep_methods:
        for bits in opts.sweep_bits:
            if known and (method, bits) in known:
                rows.append({"method": method, "w_bits": bits, "metric": known[(method, bits)]})
                continue
            cfg = _quant_config(opts, method=method, w_bits=bits, learn_rounding=False, iters=0,
                                hardware_approx=opts.hardware_approx and method.startswith("log"))
            _, row = quantize_registry_model(opts.model, cfg, EvalOptions(eval_limit=opts.eval_limit), progress=False)
            rows.append({"method": method, "w_bits": bits, "metric": row.get("q_top1")})
    return rows


def run_verify(opts: VerifyOptions) -> VerifyResult:
    """The whole flow; see the module docstring.  Raises nothing on a mismatch: check ``result.passed``."""
    from logmac.backends import compare, open_backends
    from logmac.backends.float_model import build_float_model
    from logmac.models import fashion_mnist

    torch.manual_seed(opts.seed)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    art, metrics = quantize_for_verify(opts)
    artifact_io.save(art, out / "model.lmq")
    seconds["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    images, labels = fashion_mnist("test", limit=opts.eval_limit)
    float_model = build_float_model(art)
    backends = open_backends(art, model=float_model, device=opts.device)
    comparison = compare(art, inputs=images, labels=labels, backends=backends)
    emu = backends["emulator"].forward
    metrics.update(emulator_top1=comparison["scores"]["emulator"]["top1"],
                   emulator_fake_quant_top1=comparison["scores"]["fake_quant"]["top1"],
                   emulator_vs_fake_quant_argmax_agreement=comparison["emulator_vs_fake_quant"]["same_prediction"],
                   outputs_differing=comparison["emulator_vs_fake_quant"]["outputs_differing"])
    seconds["emulate"] = time.perf_counter() - t

    t = time.perf_counter()
    gen = torch.Generator().manual_seed(opts.seed)
    tile_images = images[torch.randperm(len(images), generator=gen)[:8]]
    with tempfile.TemporaryDirectory(prefix="logmac-verify-") as tmp:
        report = check_hardware(emu, art, tile_images, opts, Path(tmp))
    seconds["cosim"] = time.perf_counter() - t

    errors = weight_errors(art, float_model)
    summ = artifact_io.summary(art)
    per_layer: dict[str, list] = {name: [] for name in art.layers}
    for chk in report.checks:
        per_layer[chk.name.rsplit("#", 1)[0]].append(chk)
    layers = [LayerCheck(name, layer.num_weights, layer.fmt.storage_bits, errors[name], len(per_layer[name]),
                         sum(c.macs_checked for c in per_layer[name]), sum(c.mismatches for c in per_layer[name]))
              for name, layer in art.layers.items()]
    result = VerifyResult(
        options=asdict(opts), metrics=metrics, layers=layers, macs_checked=report.macs_checked,
        mismatches=report.mismatches, first_mismatch=report.first_mismatch, cosim_seconds=report.sim_seconds,
        storage={k: summ[k] for k in ("weights", "stored_bytes", "fp32_bytes", "compression_vs_fp32")},
    )
    if opts.area:
        t = time.perf_counter()
        from logmac.hw.area import area_report, comparison_configs

        result.area = [r.as_dict() for r in area_report(comparison_configs(bits=tuple(sorted({3, 4, opts.w_bits}))))]
        seconds["area"] = time.perf_counter() - t
    if opts.sweep_bits:
        t = time.perf_counter()
        # this run is itself a sweep cell when it used round to nearest on a freshly quantized model
        own = {} if opts.learn_rounding or opts.artifact else {(opts.method, opts.w_bits): metrics["fake_quant_top1"]}
        result.sweep = metric_sweep(opts, own)
        seconds["sweep"] = time.perf_counter() - t
    result.seconds = {k: round(v, 1) for k, v in seconds.items()}
    result.report = {k: str(v) for k, v in write_verify_report(result, art, float_model, out).items()}
    return result


def write_verify_report(result: VerifyResult, art: Artifact, float_model: torch.nn.Module, out: Path) -> dict[str, Path]:
    from logmac import report

    opts = result.options
    plots: dict[str, bytes] = {}
    if result.sweep:
        plots["top-1 vs weight bits (round to nearest), this run's FP as the dashed line"] = report.plot_metric_vs_bits(
            result.sweep, "top-1 (%)", result.metrics.get("fp_top1"))
    modules = dict(float_model.named_modules())
    log_layers = [n for n, layer in art.layers.items() if isinstance(layer.fmt, LogFormat)]
    # the three layers with the most weights per channel give histograms worth looking at
    widest = sorted(log_layers, key=lambda n: -art.layers[n].num_weights // art.layers[n].weight_shape[0])[:3]
    for name in sorted(widest, key=log_layers.index):
        layer = art.layers[name]
        w = modules[name].weight.detach().double().cpu().numpy().reshape(layer.weight_shape[0], -1)
        ch = int(np.argmax(np.abs(w).max(axis=1)))
        first = 1 if layer.fmt.zero.value == "code" else 0
        lv = level_values(layer.table, layer.fmt)[ch] * layer.table.scale[ch]
        levels = np.concatenate([lv[0, first:], -lv[1, first:]])
        plots[f"{name}, channel {ch}: weights and its log grid"] = report.plot_weight_histogram(name, w[ch], levels)
    plots["per-layer weight error"] = report.plot_layer_errors([asdict(r) for r in result.layers])
    if result.area:
        plots["area (iCE40 LUTs) of the log engine vs the integer-multiplier engine"] = report.plot_area(result.area)
    m = result.metrics
    summary = {
        "model": opts["model"], "method": f"{opts['method']} W{opts['w_bits']}A{opts['a_bits']}"
        + (" +hardware approx" if opts["hardware_approx"] else "") + (" +LLR" if opts["learn_rounding"] else ""),
        "FP top-1 (%)": m.get("fp_top1"), "fake-quant top-1 (%)": m.get("fake_quant_top1"),
        "emulator top-1 (%)": m.get("emulator_top1"),
        "emulator vs fake-quant argmax agreement (%)": m.get("emulator_vs_fake_quant_argmax_agreement"),
        "RTL simulator": opts["sim"], "MACs checked against the RTL": result.macs_checked,
        "mismatches": result.mismatches, "weights stored": f"{result.storage['stored_bytes']:,} B vs "
        f"{result.storage['fp32_bytes']:,} B fp32 ({result.storage['compression_vs_fp32']:.2f}x smaller)",
        **{f"time: {k} (s)": v for k, v in result.seconds.items()},
    }
    results = {"title": f"logmac verify: {opts['model']}", "summary": summary,
               "layers": [asdict(r) for r in result.layers], "area": result.area, "raw": asdict(result)}
    return report.write_report(results, plots, out)


def _print(result: VerifyResult) -> None:
    m = result.metrics
    click.echo(f"FP top-1 {m.get('fp_top1')} | fake-quant {m.get('fake_quant_top1')} | emulator {m.get('emulator_top1'):.2f}"
               f" (argmax agreement with fake-quant {m.get('emulator_vs_fake_quant_argmax_agreement'):.2f}%)")
    click.echo(f"RTL ({result.options['sim']}): {len(result.layers)} layers, {result.macs_checked:,} MACs checked, "
               f"{result.mismatches} mismatches")
    if result.first_mismatch:
        click.echo(f"first mismatch: {result.first_mismatch}")
    for row in result.area:
        click.echo(f"area {row['kind']:>3} W{row['weight_bits']} x{row['lanes']:>2} lanes: {row['luts']} LUTs, "
                   f"Fmax {row['fmax_mhz']} MHz")
    click.echo(f"weights: {result.storage['compression_vs_fp32']:.2f}x smaller than fp32")
    click.echo(f"report: {result.report['html']} (also report.md, report.json)")


def _bits_list(text: str) -> tuple[int, ...]:
    return tuple(int(b) for b in text.split(",") if b.strip())


def _options(f):
    for decorator in reversed([
        click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model name (logmac models list)."),
        click.option("--w-bits", type=int, default=3, show_default=True),
        click.option("--method", default="log_dynamic", show_default=True),
        click.option("--a-bits", type=int, default=8, show_default=True),
        click.option("--hardware-approx/--no-hardware-approx", default=True, show_default=True),
        click.option("--learn-rounding", is_flag=True, help="LLR (log) / AdaRound (linear) block reconstruction."),
        click.option("--iters", type=int, default=100, show_default=True),
        click.option("--calib-samples", type=int, default=256, show_default=True),
        click.option("--eval-limit", type=int, default=2000, show_default=True, help="Test images scored."),
        click.option("--sim", type=click.Choice(["verilator", "icarus"]), default="verilator", show_default=True),
        click.option("--tiles", type=int, default=4, show_default=True, help=f"Output tiles ({TILE}x{TILE}) per layer."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--artifact", type=click.Path(exists=True), help="Verify this artifact instead of quantizing."),
        click.option("-o", "--out-dir", default=lambda: str(results_home() / "verify"),
                     show_default="$LOGMAC_HOME/verify (~/.local/share/logmac/verify)"),
        click.option("--sweep-bits", default="3,4", show_default=True, help="Bits of the RTN sweep plot ('' = none)."),
        click.option("--layer", "layers", multiple=True, help="Check only this layer in the RTL (repeatable)."),
        click.option("--no-area", is_flag=True, help="Skip synthesis (area and Fmax)."),
        click.option("--device", default="cpu", show_default=True),
    ]):
        f = decorator(f)
    return f


def _run_cli(**kw) -> None:
    opts = VerifyOptions(
        model=kw["model"], w_bits=kw["w_bits"], method=kw["method"], a_bits=kw["a_bits"],
        hardware_approx=kw["hardware_approx"], learn_rounding=kw["learn_rounding"], iters=kw["iters"],
        calib_samples=kw["calib_samples"], eval_limit=kw["eval_limit"], sim=kw["sim"], tiles=kw["tiles"],
        seed=kw["seed"], artifact=kw["artifact"], out_dir=kw["out_dir"], sweep_bits=_bits_list(kw["sweep_bits"]),
        area=not kw["no_area"], layers=kw["layers"], device=kw["device"])
    try:
        result = run_verify(opts)
    except (ValueError, FileNotFoundError) as exc:  # bad options, a bad artifact, missing data or weights
        raise click.ClickException(str(exc)) from exc
    _print(result)
    if not result.passed:
        raise click.ClickException(f"hardware equivalence FAILED: {result.mismatches} mismatches in "
                                   f"{result.macs_checked:,} MACs checked")


@click.command()
@_options
def verify(**kw) -> None:
    """Quantize, score FP / fake-quant / emulator, replay real layer tiles through the RTL, report."""
    _run_cli(**kw)


@click.command()
@_options
def demo(**kw) -> None:
    """`verify` on the embedded default: house ResNet-18, Fashion-MNIST, W3 log_dynamic + hardware approx."""
    _run_cli(**kw)
