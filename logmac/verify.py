"""``logmac verify`` and ``logmac demo``: accuracy and hardware equivalence of one quantized model, in one run.

The flow: quantize a model (or load an artifact), score it three ways (FP, fake-quant, the bit-exact
emulator), trace real output tiles of every quantized layer out of the emulator and replay them through the
general RTL engine and (log-coded layers) the exponent-scheduled engine under cocotb, take the engine
comparison of ``logmac hw compare`` from the synthesis cache, and write one report with plots and a JSON of
every number.  Any RTL/emulator mismatch on either engine makes the run fail.

A causal-LM artifact (``meta.task`` = ``lm``) is scored by perplexity on the first evaluation tokens instead
(``backends.lm.compare_lm``) and its tiles are token rows.  A layer with per-group exponent offsets runs on the
scheduled engine only (a terms-store build with the group shifts folded into its term exponents; the general
engine has no group shift), and the run says how many layers skipped the general engine for that reason.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import torch

from logmac.format import GridKind, LogFormat, ZeroMode, decode_float, level_values
from logmac.format import artifact as artifact_io
from logmac.format.artifact import Artifact
from logmac.format.groups import GROUP_EXP, group_factors
from logmac.paths import results_home

if TYPE_CHECKING:
    from logmac.cosim.runner import Report
    from logmac.cosim.vectors import Vectors
    from logmac.hw.sched_config import SchedConfig

DEFAULT_MODEL = "resnet18_fmnist"
TILE = 16  # a tile is TILE input rows (output pixels / tokens) x TILE output channels
SCHED_LANES = 16
LM_CONTEXT = 128  # perplexity window of a causal-LM artifact; its first window's tokens feed the traced tiles


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
    fmax: bool = False  # place and route the 16-lane builds (minutes each on a cold cache)
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
class SchedCheck:
    """The traced log-coded tiles replayed through the exponent-scheduled engine (codes store; terms store when
    a layer has group exponents, whose shifts a codes store cannot apply)."""

    config: dict[str, Any]
    macs_checked: int
    mismatches: int
    first_mismatch: str | None
    sim_seconds: float


@dataclass
class VerifyResult:
    """Every number of a run (also written as report.json)."""

    options: dict[str, Any]
    metrics: dict[str, float]
    layers: list[LayerCheck] = field(default_factory=list)
    macs_checked: int = 0  # macs_checked .. cosim_seconds: the general engine
    mismatches: int = 0
    first_mismatch: str | None = None
    cosim_seconds: float = 0.0
    sched: SchedCheck | None = None  # None when no traced layer is log-coded
    group_shift_layers: list[str] = field(default_factory=list)  # scheduled engine only: group exponents
    storage: dict[str, float] = field(default_factory=dict)
    area: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        sched_ok = self.sched is None or (self.sched.mismatches == 0 and self.sched.macs_checked > 0)
        general_ran = self.macs_checked > 0 or (self.group_shift_layers and self.sched is not None)
        return self.mismatches == 0 and bool(general_ran) and sched_ok


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
        if GROUP_EXP in layer.extras:
            rows = q.reshape(q.shape[0], -1)
            q = (rows * group_factors(layer.extras[GROUP_EXP], rows.shape[1], layer.attrs["group_size"])).reshape(q.shape)
        out[name] = float(np.linalg.norm(w - q) / max(np.linalg.norm(w), 1e-30))
    return out


def trace_tiles(emu, art: Artifact, inputs: torch.Tensor, opts: VerifyOptions, workdir: Path) -> list[Vectors]:
    """``opts.tiles`` random output tiles (``TILE`` rows x ``TILE`` channels) of every checked layer, traced
    out of the emulator as cosim vectors (expected values included)."""
    from logmac.cosim import load_vectors

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
    return vectors


def group_shift_span(v: Vectors) -> int:
    """Largest left shift ``e[c, g] - min_g e[c, g]`` a set's group exponents apply (0 without them)."""
    if not v.has_groups or not v.group_exp.size:
        return 0
    return int((v.group_exp.max(axis=1) - v.group_exp.min(axis=1)).max())


def sched_config_for(vectors: list[Vectors]) -> SchedConfig:
    """The one in-place build that runs every log-coded set: half steps split unless every grid is log_2
    (whose levels have none), each format's full shift range (not just this table's), a signed port one bit
    wider for unsigned activations, guard bits for the longest K.  A codes store holding the widest code,
    unless a set has group exponents: then a terms store (a codes store walks the table's levels and cannot
    apply a group shift) whose ``max_shift`` also holds the largest group shift of the sets."""
    from logmac.hw.sched_config import SchedConfig

    fmts = [v.fmt for v in vectors]
    grouped = any(v.has_groups for v in vectors)
    store = {"store": "terms"} if grouped else {
        "store": "codes", "code_bits": max(2, *(f.bits for f in fmts)),
        "zero_flag": any(f.zero is ZeroMode.FLAG for f in fmts)}
    return SchedConfig(
        variant="inplace", half="none" if all(f.grid is GridKind.LOG_2 for f in fmts) else "split", **store,
        lanes=SCHED_LANES, act_bits=max(9, *(v.act_bits + (0 if v.act_signed else 1) for v in vectors)),
        act_signed=True, max_shift=max(1, *(f.max_shift for f in fmts)) + max(0, *map(group_shift_span, vectors)),
        max_k=max(4096, *(v.k for v in vectors)), acc_bits=max(32, *(v.acc_bits for v in vectors)))


def check_hardware(vectors: list[Vectors], sim: str, seed: int) -> Report:
    """Replay ``vectors`` through the general RTL engine in one simulator run (a disagreement of the traced
    expectations with ``logmac.sim``'s golden model counts as a mismatch); an empty list checks nothing."""
    from logmac.cosim import run_vectors, runner
    from logmac.format import FormatError

    if not vectors:
        return runner.Report(sim, {})
    try:
        return run_vectors(vectors, sim=sim, seed=seed)
    except FormatError as exc:
        return runner.Report(sim, {}, mismatches=1, first_mismatch=str(exc))


def check_sched(vectors: list[Vectors], sim: str, seed: int) -> SchedCheck | None:
    """Replay the log-coded ``vectors`` through the exponent-scheduled engine (codes store) in one simulator
    run; None if there are none.  A schedule that disagrees with ``logmac.sim`` counts as a mismatch."""
    from logmac.cosim.sched_runner import run_sched_vectors
    from logmac.format import FormatError

    logs = [v for v in vectors if v.is_log]
    if not logs:
        return None
    cfg = sched_config_for(logs)
    try:  # no waves re-run on a failure: the report names the first mismatch, not a waveform
        rep = run_sched_vectors(logs, sim, cfg, seed=seed, waves_on_failure=False)
    except FormatError as exc:
        return SchedCheck(cfg.to_dict(), 0, 1, str(exc), 0.0)
    return SchedCheck(cfg.to_dict(), rep.macs_checked, rep.mismatches, rep.first_mismatch, rep.sim_seconds)


def engine_comparison(w_bits: int, grid: str, fmax: bool = False) -> list[dict[str, Any]]:
    """The rows of ``logmac hw compare`` for this run's weight bits and grid (every registered engine against int,
    16 and 32 lanes), read from the synthesis cache when it holds them; the full sweep is ``logmac hw compare``.
    ``fmax`` adds place and route of the 16-lane builds (the slow step: minutes per build on a cold cache)."""
    from logmac.hw import compare
    from logmac.hw_compare import register_sched_engines

    register_sched_engines()
    return compare.compare_rows(grids=(grid,), weight_bits=(w_bits,), fmax=fmax, fmax_lanes=(16,))


def area_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``engine_comparison`` rows flattened to the report's table columns (those of ``logmac hw compare``)."""
    return [{"engine": r["engine"], "grid": r["grid"], "w": r["weight_bits"], "a": r["act_bits"], "lanes": r["lanes"],
             "LUT4": r["lut4"], "LUT4/lane": r["lut4_per_lane"], "GE/lane": r["ge_per_lane"],
             "Fmax MHz": r["fmax_mhz"], "cycles/out": r["cycles_per_output"], "w bits stored": r["weight_bits_stored"],
             "LUT4/lane vs int": r["ratio_vs_int"]["lut4_per_lane"],
             "LUT4 x cycles/MAC vs int": r["ratio_vs_int"]["lut4_x_cycles_per_mac"], "note": r["note"]}
            for r in rows]


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


@dataclass
class Scored:
    """A model scored three ways, with what the rest of the flow needs from it before its layers were swapped."""

    emulator: Any
    tile_inputs: torch.Tensor  # what the traced tiles are run on
    metrics: dict[str, Any]
    errors: dict[str, float]  # weight_errors
    plot_weights: dict[str, np.ndarray]  # float weights of the layers the report plots


def plotted_layers(art: Artifact) -> list[str]:
    """The three log-coded layers with the most weights per channel (their histograms are worth a look)."""
    log_layers = [n for n, layer in art.layers.items() if isinstance(layer.fmt, LogFormat)]
    widest = sorted(log_layers, key=lambda n: -art.layers[n].num_weights // art.layers[n].weight_shape[0])[:3]
    return sorted(widest, key=log_layers.index)


def _float_side(art: Artifact, float_model: torch.nn.Module) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Weight errors and plotted float weights, read before the emulator swaps the model's layers."""
    modules = dict(float_model.named_modules())
    return weight_errors(art, float_model), {n: modules[n].weight.detach().double().cpu().numpy()
                                             for n in plotted_layers(art)}


def score_images(art: Artifact, opts: VerifyOptions, metrics: dict[str, Any]) -> Scored:
    """FP / fake-quant / emulator top-1 on Fashion-MNIST test images; eight of them feed the traced tiles."""
    from logmac.backends import compare, open_backends
    from logmac.backends.float_model import build_float_model
    from logmac.models import fashion_mnist

    images, labels = fashion_mnist("test", limit=opts.eval_limit)
    float_model = build_float_model(art)
    errors, plot_weights = _float_side(art, float_model)
    backends = open_backends(art, model=float_model, device=opts.device)
    comparison = compare(art, inputs=images, labels=labels, backends=backends)
    metrics.update(emulator_top1=comparison["scores"]["emulator"]["top1"],
                   emulator_fake_quant_top1=comparison["scores"]["fake_quant"]["top1"],
                   emulator_vs_fake_quant_argmax_agreement=comparison["emulator_vs_fake_quant"]["same_prediction"],
                   outputs_differing=comparison["emulator_vs_fake_quant"]["outputs_differing"])
    gen = torch.Generator().manual_seed(opts.seed)
    tile_images = images[torch.randperm(len(images), generator=gen)[:8]]
    return Scored(backends["emulator"].forward, tile_images, metrics, errors, plot_weights)


def score_lm(art: Artifact, opts: VerifyOptions) -> Scored:
    """FP / fake-quant / emulator perplexity of a causal LM on its first ``eval_limit`` evaluation tokens (the
    float model from where the artifact says it was loaded); the first window's tokens feed the traced tiles."""
    from logmac.backends.lm import compare_lm
    from logmac.models import load_model
    from logmac.models.text import austen_tokens

    loaded = load_model(art.meta["model"], path=art.meta.get("model_path"), device=opts.device)
    ids = austen_tokens(loaded.tokenizer, "evaluation", max_tokens=opts.eval_limit)
    context = min(LM_CONTEXT, len(ids))
    errors, plot_weights = _float_side(art, loaded.model)
    result, emu = compare_lm(art, loaded.model, ids, context=context, stride=max(1, context // 2),
                             device=opts.device, bos_token_id=getattr(loaded.tokenizer, "bos_token_id", None))
    quant = art.meta.get("metrics", {})
    metrics = {"fp_ppl": result.fp_ppl, "fake_quant_ppl": result.fake_quant_ppl, "emulator_ppl": result.emulator_ppl,
               "emulator_vs_fake_quant_next_token_agreement": result.next_token_agreement,
               "export_fake_quant_ppl": quant.get("quant", {}).get("perplexity")}
    return Scored(emu, ids[:context][None], metrics, errors, plot_weights)


def run_verify(opts: VerifyOptions) -> VerifyResult:
    """The whole flow; see the module docstring.  Raises nothing on a mismatch: check ``result.passed``."""
    torch.manual_seed(opts.seed)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    art, metrics = quantize_for_verify(opts)
    artifact_io.save(art, out / "model.lmq")
    seconds["quantize"] = time.perf_counter() - t
    is_lm = art.meta.get("task") == "lm"

    t = time.perf_counter()
    scored = score_lm(art, opts) if is_lm else score_images(art, opts, metrics)
    seconds["emulate"] = time.perf_counter() - t

    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="logmac-verify-") as tmp:
        vectors = trace_tiles(scored.emulator, art, scored.tile_inputs, opts, Path(tmp))
    uniform_grouped = sorted({v.name.rsplit("#", 1)[0] for v in vectors if v.has_groups and not v.is_log})
    if uniform_grouped:
        raise ValueError(f"layers {uniform_grouped} have group exponents on uniform codes: neither RTL engine "
                         "applies a group shift to them (the scheduled engine takes log codes); leave them out "
                         "with --layer")
    report = check_hardware([v for v in vectors if not v.has_groups], opts.sim, opts.seed)
    seconds["cosim"] = time.perf_counter() - t
    t = time.perf_counter()
    sched = check_sched(vectors, opts.sim, opts.seed)
    seconds["cosim_sched"] = time.perf_counter() - t

    summ = artifact_io.summary(art)
    per_layer: dict[str, list] = {name: [] for name in art.layers}
    for chk in report.checks:
        per_layer[chk.name.rsplit("#", 1)[0]].append(chk)
    layers = [LayerCheck(name, layer.num_weights, layer.fmt.storage_bits, scored.errors[name], len(per_layer[name]),
                         sum(c.macs_checked for c in per_layer[name]), sum(c.mismatches for c in per_layer[name]))
              for name, layer in art.layers.items()]
    result = VerifyResult(
        options=asdict(opts), metrics=scored.metrics, layers=layers, macs_checked=report.macs_checked,
        mismatches=report.mismatches, first_mismatch=report.first_mismatch, cosim_seconds=report.sim_seconds,
        sched=sched, storage={k: summ[k] for k in ("weights", "stored_bytes", "fp32_bytes", "compression_vs_fp32")},
        group_shift_layers=sorted({v.name.rsplit("#", 1)[0] for v in vectors if v.has_groups}, key=list(art.layers).index),
    )
    if opts.area:
        t = time.perf_counter()
        grid = opts.method if opts.method in ("log_2", "log_dynamic") else "log_dynamic"  # sqrt(2) steps: half steps
        result.area = engine_comparison(opts.w_bits, grid, opts.fmax)
        seconds["area"] = time.perf_counter() - t
    if opts.sweep_bits and not is_lm:  # the sweep re-quantizes the image model at each width
        t = time.perf_counter()
        # this run is itself a sweep cell when it used round to nearest on a freshly quantized model
        own = {} if opts.learn_rounding or opts.artifact else {(opts.method, opts.w_bits): metrics["fake_quant_top1"]}
        result.sweep = metric_sweep(opts, own)
        seconds["sweep"] = time.perf_counter() - t
    result.seconds = {k: round(v, 1) for k, v in seconds.items()}
    result.report = {k: str(v) for k, v in write_verify_report(result, art, scored.plot_weights, out).items()}
    return result


def write_verify_report(result: VerifyResult, art: Artifact, plot_weights: dict[str, np.ndarray],
                        out: Path) -> dict[str, Path]:
    """report.html / .md / .json of a run; ``plot_weights``: float weights of the ``plotted_layers``."""
    from logmac import report

    opts = result.options
    plots: dict[str, bytes] = {}
    if result.sweep:
        plots["top-1 vs weight bits (round to nearest), this run's FP as the dashed line"] = report.plot_metric_vs_bits(
            result.sweep, "top-1 (%)", result.metrics.get("fp_top1"))
    for name, weight in plot_weights.items():
        layer = art.layers[name]
        w = weight.reshape(layer.weight_shape[0], -1)
        ch = int(np.argmax(np.abs(w).max(axis=1)))
        first = 1 if layer.fmt.zero.value == "code" else 0
        lv = level_values(layer.table, layer.fmt)[ch] * layer.table.scale[ch]
        levels = np.concatenate([lv[0, first:], -lv[1, first:]])
        plots[f"{name}, channel {ch}: weights and its log grid"] = report.plot_weight_histogram(name, w[ch], levels)
    plots["per-layer weight error"] = report.plot_layer_errors([asdict(r) for r in result.layers])
    if result.area:
        plots["every engine against the integer-multiplier engine (iCE40 LUT4, house ResNet-18 layers)"] = \
            report.plot_compare(result.area)
    m = result.metrics
    scores = ({"FP perplexity": m.get("fp_ppl"), "fake-quant perplexity": m.get("fake_quant_ppl"),
               "emulator perplexity": m.get("emulator_ppl"),
               "emulator vs fake-quant next-token agreement": m.get("emulator_vs_fake_quant_next_token_agreement")}
              if "fp_ppl" in m else
              {"FP top-1 (%)": m.get("fp_top1"), "fake-quant top-1 (%)": m.get("fake_quant_top1"),
               "emulator top-1 (%)": m.get("emulator_top1"),
               "emulator vs fake-quant argmax agreement (%)": m.get("emulator_vs_fake_quant_argmax_agreement")})
    summary = {
        "model": art.meta.get("model", opts["model"]) if opts["artifact"] else opts["model"],
        "method": f"{opts['method']} W{opts['w_bits']}A{opts['a_bits']}"
        + (" +hardware approx" if opts["hardware_approx"] else "") + (" +LLR" if opts["learn_rounding"] else ""),
        **scores,
        "RTL simulator": opts["sim"], "MACs checked against the general engine": result.macs_checked,
        "mismatches (general engine)": result.mismatches,
        "layers skipped on the general engine because of group shifts": len(result.group_shift_layers),
        **({f"MACs checked against the exponent-scheduled engine ({result.sched.config['store']} store)":
            result.sched.macs_checked, "mismatches (exponent-scheduled engine)": result.sched.mismatches}
           if result.sched else {"exponent-scheduled engine": "n/a (no log-coded layer)"}),
        "weights stored": f"{result.storage['stored_bytes']:,} B vs "
        f"{result.storage['fp32_bytes']:,} B fp32 ({result.storage['compression_vs_fp32']:.2f}x smaller)",
        **{f"time: {k} (s)": v for k, v in result.seconds.items()},
    }
    results = {"title": f"logmac verify: {opts['model']}", "summary": summary,
               "layers": [asdict(r) for r in result.layers], "area": area_table(result.area), "raw": asdict(result)}
    return report.write_report(results, plots, out)


def _print(result: VerifyResult) -> None:
    m = result.metrics
    if "fp_ppl" in m:
        click.echo(f"perplexity FP {m['fp_ppl']:.3f} | fake-quant {m['fake_quant_ppl']:.3f} | emulator "
                   f"{m['emulator_ppl']:.3f} (next-token agreement with fake-quant "
                   f"{100 * m['emulator_vs_fake_quant_next_token_agreement']:.2f}%)")
    else:
        click.echo(f"FP top-1 {m.get('fp_top1')} | fake-quant {m.get('fake_quant_top1')} | emulator "
                   f"{m.get('emulator_top1'):.2f} (argmax agreement with fake-quant "
                   f"{m.get('emulator_vs_fake_quant_argmax_agreement'):.2f}%)")
    skipped = len(result.group_shift_layers)
    click.echo(f"RTL general engine ({result.options['sim']}): {len(result.layers) - skipped} layers, "
               f"{result.macs_checked:,} MACs checked, {result.mismatches} mismatches"
               + (f"; {skipped} layers skipped on the general engine because of group shifts (it has none), "
                  "checked on the scheduled engine" if skipped else ""))
    if result.first_mismatch:
        click.echo(f"first mismatch: {result.first_mismatch}")
    if result.sched:
        click.echo(f"RTL exponent-scheduled engine, {result.sched.config['store']} store ({result.options['sim']}): "
                   f"{result.sched.macs_checked:,} MACs checked, {result.sched.mismatches} mismatches "
                   f"(+{result.seconds['cosim_sched']} s)")
        if result.sched.first_mismatch:
            click.echo(f"first mismatch: {result.sched.first_mismatch}")
    for row in result.area:
        if row["lanes"] == min(r["lanes"] for r in result.area) and row["engine"] != "int":
            q = row["ratio_vs_int"]
            click.echo(f"area {row['engine']:>13} {row['grid']:>11} W{row['weight_bits']} x{row['lanes']}: "
                       f"{row['lut4']} LUT4, {q['lut4_per_lane']:.2f}x int LUT4 per lane, "
                       f"{q['lut4_x_cycles_per_mac']:.2f}x int LUT4 x cycles per MAC")
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
        click.option("--no-area", is_flag=True, help="Skip the engine comparison (synthesis, area and Fmax)."),
        click.option("--fmax", is_flag=True, help="Also place and route the 16-lane builds for Fmax (minutes per "
                     "build the first time; `logmac hw compare` gives the full sweep)."),
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
        area=not kw["no_area"], fmax=kw["fmax"], layers=kw["layers"], device=kw["device"])
    try:
        result = run_verify(opts)
    except (ValueError, FileNotFoundError) as exc:  # bad options, a bad artifact, missing data or weights
        raise click.ClickException(str(exc)) from exc
    _print(result)
    if not result.passed:
        sched = f", {result.sched.mismatches} in {result.sched.macs_checked:,} on the exponent-scheduled engine" \
            if result.sched else ""
        raise click.ClickException(f"hardware equivalence FAILED: {result.mismatches} mismatches in "
                                   f"{result.macs_checked:,} MACs checked on the general engine{sched}")


@click.command()
@_options
def verify(**kw) -> None:
    """Quantize, score FP / fake-quant / emulator, replay real layer tiles through both RTL engines, report."""
    _run_cli(**kw)


@click.command()
@_options
def demo(**kw) -> None:
    """`verify` on the embedded default: house ResNet-18, Fashion-MNIST, W3 log_dynamic + hardware approx."""
    _run_cli(**kw)
