"""Evaluation metrics: top-k accuracy, agreement and KL against the FP model, perplexity, embedding cosine.

Every model in the registry maps one input tensor to one output tensor (logits or embeddings), so the metrics
take a model and tensors, or two output tensors when comparing a quantized model with its FP reference.
Long loops show a tqdm bar on a terminal (silent under pytest/CI).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 256, device: str | torch.device | None = None,
            desc: str = "predict") -> torch.Tensor:
    """Run ``model`` over ``inputs`` in batches on ``device`` (default: the model's); outputs come back on CPU."""
    if device is None:
        device = next(model.parameters()).device
    outputs = []
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=None, leave=False):
        outputs.append(model(inputs[start:start + batch_size].to(device)).float().cpu())
    return torch.cat(outputs)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent for each k, e.g. ``{"top1": 91.2, "top5": 99.8}``."""
    labels = labels.to(logits.device)
    ranked = logits.topk(max(ks), dim=1).indices
    hits = ranked == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def fp_agreement(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Percent of inputs whose top-1 class matches the FP reference's (the metric when no labels exist)."""
    return 100.0 * (reference.argmax(dim=-1) == logits.argmax(dim=-1)).float().mean().item()


def kl_divergence(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL(P_ref || P) in nats between the softmax distributions, over all but the last dimension."""
    ref_logp = F.log_softmax(reference.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1).mean().item()


def embedding_cosine(reference: torch.Tensor, embeddings: torch.Tensor) -> float:
    """Mean cosine similarity between matching rows (1.0: the quantized encoder is indistinguishable)."""
    return F.cosine_similarity(reference.float(), embeddings.float(), dim=-1).mean().item()


@torch.no_grad()
def perplexity(model: nn.Module, token_ids: torch.Tensor, *, context: int = 512, stride: int = 256,
               device: str | torch.device | None = None, desc: str = "perplexity",
               bos_token_id: int | None = None) -> float:
    """Perplexity of a causal LM over one long token stream, by sliding window.

    Windows of at most ``context`` tokens end every ``stride`` tokens; each window scores only the tokens that
    earlier windows did not, so every token but the first is predicted exactly once, with at least
    ``context - stride`` tokens of history (fewer only at the very start). ``model(ids)`` must return logits
    ``[1, T, vocab]``.  With ``bos_token_id`` every window starts with that token (as the model saw text in
    training) followed by at most ``context - 1`` tokens, and the first token is scored too.
    """
    if not 0 < stride < context:
        raise ValueError(f"stride {stride} must be in [1, context={context}): otherwise tokens go unscored or lack history")
    if device is None:
        device = next(model.parameters()).device
    ids = token_ids.reshape(-1)
    if len(ids) < 2:
        raise ValueError("perplexity needs at least 2 tokens")
    bos = ids.new_tensor([] if bos_token_id is None else [bos_token_id])
    span = context - len(bos)
    total_nll, prev_end, end = 0.0, 1 - len(bos), min(span, len(ids))  # without BOS token 0 is never scored
    windows = 1 + -(-(len(ids) - end) // stride)
    for _ in tqdm(range(windows), desc=desc, disable=None, leave=False):
        window = torch.cat([bos, ids[max(0, end - span):end]]).to(device)[None]
        new = end - prev_end  # tokens this window scores for the first time
        logits = model(window)[0, -new - 1:-1].float()
        total_nll += F.cross_entropy(logits, window[0, -new:], reduction="sum").item()
        prev_end, end = end, min(end + stride, len(ids))
    return math.exp(total_nll / (len(ids) - 1 + len(bos)))
