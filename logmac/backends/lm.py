"""Causal language models on the emulator: FP, fake-quant and emulated perplexity on the same tokens.

Every quantized ``nn.Linear`` of the decoder runs on the integer log MAC (:class:`~logmac.sim.emulator.IntLayer`:
A8 input codes, exact integer sums, float32 out); RMSNorm, RoPE, attention scores and softmax, SiLU, the
residual adds, the embedding and the (float) ``lm_head`` run in float32 in the model's own forward, and
:meth:`Emulator.placement` with inputs lists them.  The network is held once: it is scored as FP, then with
its quantized layers swapped for their fake-quant twins, then swapped for integer layers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from logmac.format.artifact import Artifact
from logmac.memory import peak_memory_mib, reset_peak_memory
from logmac.models.evaluate import perplexity
from logmac.sim.emulator import Emulator
from logmac.sim.layers import EmulatorError, FakeQuantLayer, check_module, layer_specs, swap_module


@dataclass
class LMComparison:
    """What ``benchmarks/emulate_smollm2.py`` and ``logmac emulate`` print for a causal LM."""

    tokens: int
    context: int
    stride: int
    fp_ppl: float
    fake_quant_ppl: float
    emulator_ppl: float
    seconds: dict[str, float] = field(default_factory=dict)  # fp, fake_quant, emulator: perplexity run time
    peak_mib: dict[str, float] = field(default_factory=dict)  # peak resident memory during each stage
    diff_tokens: int = 0  # the logit comparison below runs on the first diff_tokens tokens
    logits_max_abs_diff: float = math.nan  # emulator vs fake-quant
    logits_mean_abs_diff: float = math.nan
    logits_absmax: float = math.nan
    next_token_agreement: float = math.nan  # same argmax, emulator vs fake-quant, same tokens
    int_layers: int = 0
    float_linears: list[str] = field(default_factory=list)  # nn.Linear left float (lm_head)

    @property
    def margin(self) -> float:
        """Relative perplexity difference of the emulator from the fake-quant model."""
        return abs(self.emulator_ppl - self.fake_quant_ppl) / self.fake_quant_ppl

    def to_dict(self) -> dict:
        return {**asdict(self), "margin": self.margin}


def _timed_stage(name: str, fn, seconds: dict, peaks: dict):
    reset_peak_memory()
    start = time.perf_counter()
    out = fn()
    seconds[name], peaks[name] = time.perf_counter() - start, peak_memory_mib()
    return out


def compare_lm(artifact: Artifact, model: nn.Module, token_ids: torch.Tensor, *, context: int = 512, stride: int = 256,
               stream: bool = True, device: torch.device | str = "cpu", diff_tokens: int = 128,
               bos_token_id: int | None = None) -> tuple[LMComparison, Emulator]:
    """Perplexity of ``model`` (``ids [1, T] -> logits [1, T, V]``) as FP, fake-quant and emulated on ``token_ids``,
    and the logit difference emulator vs fake-quant on the first ``diff_tokens`` tokens.

    ``model`` is changed in place and ends up inside the returned :class:`Emulator`.  ``stream`` keeps only
    the narrow integer weights between layer calls (see :class:`Emulator`).  ``bos_token_id`` starts every
    perplexity window with it, as the evaluation in ``logmac.models`` does for a tokenizer that has one.
    """
    if artifact.meta.get("task", "lm") != "lm":
        raise EmulatorError(f"artifact of a {artifact.meta.get('task')!r} model, not a causal LM")
    model = model.to(device).eval()
    ids = token_ids.reshape(-1)
    first = ids[:min(context, diff_tokens)][None].to(device)
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def ppl(fn) -> float:
        return perplexity(fn, ids, context=context, stride=stride, device=device, bos_token_id=bos_token_id)

    fp = _timed_stage("fp", lambda: ppl(model), seconds, peaks)
    originals = {}
    for name, spec in layer_specs(artifact).items():
        check_module(spec, model.get_submodule(name))
        originals[name] = swap_module(model, name, FakeQuantLayer(spec, model.get_submodule(name)).to(device))
    fq = _timed_stage("fake_quant", lambda: ppl(model), seconds, peaks)
    with torch.no_grad():
        fq_logits = model(first)[0].float()
    for name, module in originals.items():  # back to the float layers the emulator swaps out
        swap_module(model, name, module)
    del originals
    emu = Emulator(artifact, model, device=device, stream=stream)
    emulated = _timed_stage("emulator", lambda: ppl(emu), seconds, peaks)
    emu_logits = emu(first)[0].float()
    diff = (emu_logits - fq_logits).abs()
    return LMComparison(
        tokens=len(ids), context=context, stride=stride, fp_ppl=fp, fake_quant_ppl=fq, emulator_ppl=emulated,
        seconds=seconds, peak_mib=peaks, diff_tokens=first.shape[1],
        logits_max_abs_diff=float(diff.max()), logits_mean_abs_diff=float(diff.mean()),
        logits_absmax=float(fq_logits.abs().max()),
        next_token_agreement=float((emu_logits.argmax(-1) == fq_logits.argmax(-1)).float().mean()),
        int_layers=len(emu.layers),
        float_linears=[n for n, m in emu.model.named_modules() if isinstance(m, nn.Linear)],
    ), emu

