"""AdaLog end to end on a registry model: load, calibrate, score FP / fake-quant (/ emulator), one results row.

``logmac quantize --method adalog`` is a thin layer over :func:`adalog_registry_model`.  Supported models:
timm ViTs (``vit_fmnist``; top-1, and the integer emulator on the same images) and the MiniLM sentence
encoder (``minilm_l6_v2``; cosine similarity of the sentence embeddings to FP).
"""

from __future__ import annotations

import time
from typing import Any

from logmac.quant.config import QuantError
from logmac.quant.methods.adalog.vit import AdaLogConfig, quantize_vit

VIT_MODELS = ("vit_fmnist",)
BERT_MODELS = ("minilm_l6_v2",)


def adalog_registry_model(name: str, cfg: AdaLogConfig, *, eval_limit: int | None = None, path: str | None = None,
                          emulate: bool = True) -> tuple[Any, dict]:
    """Quantize ``name`` with AdaLog and score it; returns (the AdaLog result, one results row)."""
    from logmac.experiments.registry import load_for_quantization
    from logmac.models import calibration_samples, evaluate_model

    if name not in VIT_MODELS + BERT_MODELS:
        raise QuantError(f"AdaLog supports {', '.join(VIT_MODELS + BERT_MODELS)}; {name!r} is not one of them")
    loaded = load_for_quantization(name, path, None)
    model, tok = loaded.model, loaded.tokenizer
    calib = calibration_samples(name, cfg.calib_samples, seed=cfg.seed, tokenizer=tok, model=model)
    row: dict[str, Any] = {"model": name, "method": "adalog", "label": cfg.label(), **cfg.to_dict()}
    start = time.perf_counter()
    if name in VIT_MODELS:
        fp = evaluate_model(model, name, limit=eval_limit)
        res = quantize_vit(model, calib, cfg)
        quant = evaluate_model(res.model, name, limit=eval_limit)
        row.update(fp_top1=round(fp["top1"], 2), q_top1=round(quant["top1"], 2))
        if emulate:
            from logmac.backends.adalog import compare_vit
            from logmac.models import fashion_mnist

            images, labels = fashion_mnist("test", limit=eval_limit)
            emu_start = time.perf_counter()
            cmp = compare_vit(res.model, images, labels)
            row.update(emu_top1=round(cmp["emulator_top1"], 2), emu_same_prediction=round(cmp["same_prediction"], 2),
                       emu_max_logit_diff=cmp["max_logit_diff"], emu_overflows=cmp["overflows"],
                       emu_seconds=round(time.perf_counter() - emu_start, 1))
    else:
        from logmac.quant.float_view import FloatView
        from logmac.quant.methods.adalog.bert import quantize_bert
        from logmac.quant.methods.adalog.vit import set_quant as set_adalog_quant

        res = quantize_bert(model, calib, cfg)
        quant = evaluate_model(res.model, name, limit=eval_limit, tokenizer=tok, reference=FloatView(res.model, set_adalog_quant))
        row.update(q_cosine=round(quant["cosine"], 4), sentences=quant["sentences"])
    row.update(quant_seconds=round(res.seconds, 1), total_seconds=round(time.perf_counter() - start, 1),
               quantizers=len(res.quantizers))
    return res, row
