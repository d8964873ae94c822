"""Quantize a registry model end to end: load, FP metrics, calibrate, quantized metrics, results row.

This is what ``logmac quantize`` and the benchmark scripts call; each step is a public function so a user
can run the same flow from Python.  The FP reference is the same model with its QuantLayers switched to the
FP path (:class:`FloatView`), so the network is never held twice.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logmac.format.atomic import atomic_write_text
from logmac.memory import fp32_size_mib, peak_memory_mib
from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.float_view import FloatView
from logmac.quant.llm import decoder_blocks
from logmac.quant.modules import HESSIAN_ROWS
from logmac.quant.pipeline import QuantResult, quantize_model
from logmac.quant.stream import materialize_outside_blocks

ABLATION = [(d, s, a, r) for r in (False, True) for d in (False, True) for s in (False, True) for a in (False, True)]


@dataclass
class EvalOptions:
    """How much data evaluation and calibration use (kept small on shared CPUs)."""

    eval_limit: int | None = None  # images / sentences
    max_tokens: int = 4096  # LM evaluation tokens
    seq_len: int = 512  # LM calibration window
    data_path: str | None = None


LM_CALIB_SAMPLES = 128  # windows of EvalOptions.seq_len tokens: 128 x 512 by default (GPTQ / LogART use 128 x 2048)
IMAGE_CALIB_SAMPLES = 256


def default_calib_samples(name: str) -> int:
    """The calibration budget when the user names none: 128 windows for a causal LM, 256 inputs otherwise."""
    from logmac.models import UnknownModelError, model_info
    from logmac.models.causal_lm import is_local_path

    try:
        return LM_CALIB_SAMPLES if model_info(name).task == "causal-lm" else IMAGE_CALIB_SAMPLES
    except UnknownModelError:
        return LM_CALIB_SAMPLES if is_local_path(name) else IMAGE_CALIB_SAMPLES


def lm_batches(windows: torch.Tensor) -> list[torch.Tensor]:
    """Token windows in batches of at most ``HESSIAN_ROWS`` tokens: each batch's every token enters the layer
    Hessians (larger batches are subsampled to that many rows), and one batch's activations bound the memory
    a forward pass adds, whatever the budget."""
    return list(windows.split(max(1, HESSIAN_ROWS // windows.shape[-1])))


def evaluation_metrics(model: nn.Module, name: str, opts: EvalOptions, tokenizer: Any, reference: nn.Module | None) -> dict:
    from logmac.models import evaluate_model

    out = evaluate_model(model, name, reference=reference, limit=opts.eval_limit, tokenizer=tokenizer,
                         max_tokens=opts.max_tokens, data_path=opts.data_path)
    return {k: round(float(v), 4) for k, v in out.items()}


def load_for_quantization(name: str, path: str | None, device: str | None, lazy: bool = False) -> Any:
    """``logmac.models.load_model`` with an unknown name or an unreadable model file as a ``QuantError``
    (one line at the CLI, never a traceback)."""
    from logmac.models import UnknownModelError, load_model
    from logmac.models.causal_lm import ModelFileError

    try:  # an unreadable safetensors checkpoint arrives as a ModelFileError (load_causal_lm_lazy)
        return load_model(name, path, device=device, lazy=lazy)
    except UnknownModelError as exc:
        raise QuantError(exc.args[0] if exc.args else f"unknown model {name!r}") from exc
    except ModelFileError as exc:
        raise QuantError(str(exc)) from exc


def quantize_registry_model(name: str, cfg: QuantConfig, opts: EvalOptions | None = None, *,
                            path: str | None = None, progress: bool = True,
                            fp_metrics: dict | None = None, offload_dir: str | Path | None = None
                            ) -> tuple[QuantResult, dict]:
    """Quantize ``logmac.models`` model ``name``; returns the result and one results-table row.

    ``fp_metrics`` (the ``fp_*`` scores of an earlier row with the same model and ``opts``) skips the FP
    evaluation, which is a large share of a sweep's time on an LLM.  ``offload_dir`` streams an LLM's decoder
    blocks, one block in memory at a time (:mod:`logmac.quant.stream`): a safetensors checkpoint is never loaded
    whole (its blocks are read from it as they run); any other is loaded, then offloaded to that folder.
    """
    from logmac.models import calibration_samples
    from logmac.models.causal_lm import is_local_path

    opts = opts or EvalOptions()
    start = time.perf_counter()
    loaded = load_for_quantization(name, path, cfg.device, lazy=offload_dir is not None)
    model, tok = loaded.model, loaded.tokenizer
    model_mib = fp32_size_mib(model)
    blocks = decoder_blocks(model) if loaded.info.task == "causal-lm" else None
    if loaded.weights is not None:
        materialize_outside_blocks(loaded.weights, blocks, cfg.device)
    calib = calibration_samples(name, cfg.calib_samples, seed=cfg.seed, seq_len=opts.seq_len, tokenizer=tok,
                                model=model, device=cfg.device, data_path=opts.data_path)
    if blocks is not None and isinstance(calib, torch.Tensor):
        calib = lm_batches(calib)
    task = "lm" if blocks is not None else "classification"
    res = quantize_model(model, calib, cfg, model_name=name, task=task, blocks=blocks, progress=progress,
                         offload_dir=offload_dir if blocks is not None and loaded.weights is None else None,
                         source=loaded.weights)
    del calib
    fp = dict(fp_metrics) if fp_metrics is not None else evaluation_metrics(FloatView(res.model), name, opts, tok, None)
    quant = evaluation_metrics(res.model, name, opts, tok, FloatView(res.model))
    res.artifact.meta["metrics"] = {"fp": fp, "quant": quant}
    source = path if path is not None else (name if loaded.info.task == "causal-lm" and is_local_path(name) else None)
    res.artifact.meta["model_path"] = str(Path(source).expanduser().resolve()) if source is not None else None
    res.peak_mib = peak_memory_mib(cfg.device)  # quantization and evaluation, after the model was loaded
    row = {"model": name, "label": cfg.label(), **{k: getattr(cfg, k) for k in (
        "method", "w_bits", "a_bits", "granularity", "dbs", "sfs", "abs", "rounding", "learn_rounding", "hardware_approx",
        "zero", "calib_samples", "iters", "seed")}}
    row.update({f"fp_{k}": v for k, v in fp.items()})
    row.update({f"q_{k}": v for k, v in quant.items()})
    # Memory budget: the run may add at most about one more fp32 copy of the model (plus one unit's
    # activations) to what was resident when it started; quant_peak_mib is quantization alone.
    row.update(quant_seconds=round(res.seconds, 1), total_seconds=round(time.perf_counter() - start, 1),
               peak_mib=round(res.peak_mib, 1), model_fp32_mib=round(model_mib, 1),
               start_mib=round(res.start_mib, 1), quant_peak_mib=res.artifact.meta["calibration"]["peak_mib"])
    return res, row


def memory_summary(row: dict) -> str:
    """One line on the memory budget: quantization may add about one fp32 model copy (+ one unit's activations)."""
    added = float(row["quant_peak_mib"]) - float(row["start_mib"])
    model = float(row["model_fp32_mib"])
    return (f"peak memory {float(row['quant_peak_mib']):.0f} MiB while quantizing ({float(row['start_mib']):.0f} MiB "
            f"resident at start, +{added:.0f} MiB = {added / model:.2f}x the {model:.0f} MiB fp32 model; "
            f"{float(row['peak_mib']):.0f} MiB with evaluation)")


def append_csv(row: dict, path: str | Path) -> Path:
    """Append ``row`` to a CSV, writing the header first if the file is new (columns may grow: rewrite)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: str(v) for k, v in row.items()})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def ablation_configs(base: QuantConfig) -> list[QuantConfig]:
    """The 16 DBS/SFS/ABS/LLR combinations of ``base`` (LogART's ablation table)."""
    settings = base.to_dict()
    return [QuantConfig(**{**settings, "dbs": d, "sfs": s, "abs": a, "learn_rounding": r}) for d, s, a, r in ABLATION]


def markdown_table(rows: list[dict], metric: str) -> str:
    """Rows as a markdown table with check marks for the four components and the chosen metric."""
    lines = [f"| DBS | SFS | ABS | LLR | method | {metric} | time (s) | peak MiB | added while quantizing (MiB, x fp32 model) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        marks = ["✓" if r.get(k) in (True, "True") else "–" for k in ("dbs", "sfs", "abs", "learn_rounding")]
        is_log = str(r["method"]).startswith("log")
        if not is_log:
            marks = ["", "", "", "✓" if r.get("learn_rounding") in (True, "True") else "–"]
        added = ""
        if r.get("start_mib") not in (None, ""):
            extra = float(r["quant_peak_mib"]) - float(r["start_mib"])
            added = f"{extra:.0f} ({extra / float(r['model_fp32_mib']):.2f}x)"
        lines.append(f"| {' | '.join(marks)} | {r['label']} | {r.get('q_' + metric, '')} | "
                     f"{r.get('quant_seconds', '')} | {r.get('peak_mib', '')} | {added} |")
    return "\n".join(lines)
