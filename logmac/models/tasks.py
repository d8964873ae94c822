"""Per-model data: calibration samples for the quantizer and the evaluation each model is scored by.

Both dispatch on ``ModelInfo.dataset``, so a new model of a known kind needs no code here. Calibration data
never comes from the evaluation split where a split exists (Fashion-MNIST train vs test, Austen's five novels
vs Persuasion); the ImageNet models' photos are the exception, stated in :func:`data.photo_crops`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from logmac.models import causal_lm, data, evaluate, pretrained, text
from logmac.models.registry import ModelInfo, load_model, model_info

SENTENCE_TOKENS = 128  # sentence-encoder inputs are cut to this many tokens (MiniLM was trained on up to 128)


def calibration_samples(name: str, n: int = 128, *, seed: int = 0, seq_len: int = 256,
                        data_path: str | Path | None = None, tokenizer: Any = None, model: nn.Module | None = None,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` calibration inputs for model ``name``, one tensor ready for ``model(x)`` (seeded, reproducible).

    - Fashion-MNIST models: ``[n, 1, 28, 28]`` random training images (never the test set).
    - ImageNet models: ``[n, 3, 224, 224]`` random crops of the sample photos, or images from ``data_path``.
    - Causal LMs: ``[n, seq_len]`` token windows at random offsets in the calibration novels.
    - Sentence encoders: ``[n, T]`` token ids of calibration-novel sentences, 0-padded (T <= 128).

    ``tokenizer`` avoids reloading one you already have (``LoadedModel.tokenizer``); ``model`` lets timm
    models supply their own mean/std.
    """
    info = model_info(name)
    generator = torch.Generator().manual_seed(seed)
    if info.dataset == "fashion-mnist":
        x, _ = data.fashion_mnist("train")
        return x[torch.randperm(len(x), generator=generator)[:n]].to(device)
    if info.dataset == "imagenet":
        mean, std = _image_stats(model)
        if data_path is not None:
            folder = data.image_folder(data_path, mean=mean, std=std)
            picks = torch.randperm(len(folder), generator=generator)[:n].tolist()
            return torch.stack([folder[i][0] for i in picks]).to(device)
        return data.photo_crops(n, seed=seed, mean=mean, std=std, device=device)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(info)
    if info.dataset == "austen-lm":
        return _text_windows(tokenizer, n, seq_len, generator).to(device)
    sentences = text.austen_sentences("calibration", 4 * n)
    picks = torch.randperm(len(sentences), generator=generator)[:n].tolist()
    return encode_sentences(tokenizer, [sentences[i] for i in picks]).to(device)


def evaluate_model(model: nn.Module, name: str, *, reference: nn.Module | None = None, limit: int | None = None,
                   data_path: str | Path | None = None, tokenizer: Any = None, max_tokens: int = 16384,
                   context: int = 512, stride: int = 256, batch_size: int = 64) -> dict[str, float]:
    """Score ``model`` (FP or quantized) on the evaluation data of ``name``; compare with ``reference`` if given.

    Returns percent for accuracies/agreements, nats for KL. Per dataset: Fashion-MNIST test top-1/top-5;
    ImageNet ``data_path`` top-1/top-5, else the 96 photo views (agreement and KL need ``reference``);
    Austen-LM perplexity over the first ``max_tokens`` tokens of Persuasion (window ``context``, ``stride``), and
    KL/agreement on the first window; sentence encoders the embedding cosine to ``reference`` over ``limit``
    (default 256) Persuasion sentences. ``limit`` cuts images/sentences for quick runs.
    """
    info = model_info(name)
    device = next(model.parameters()).device
    if info.dataset in ("fashion-mnist", "imagenet"):
        if info.dataset == "imagenet" and data_path is not None:
            return _evaluate_folder(model, data_path, reference=reference, limit=limit, batch_size=batch_size)
        inputs, labels = evaluation_images(model, name, limit)
        logits = evaluate.predict(model, inputs, batch_size=batch_size, desc=f"{name} eval")
        ref = None
        if reference is not None:
            ref = evaluate.predict(reference, inputs, batch_size=batch_size, desc=f"{name} FP reference")
        return image_scores(logits, labels, ref)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(info)
    if info.dataset == "austen-lm":
        ids = text.austen_tokens(tokenizer, "evaluation", max_tokens=max_tokens)
        scores = {"perplexity": evaluate.perplexity(model, ids, context=context, stride=stride, device=device,
                                                    bos_token_id=getattr(tokenizer, "bos_token_id", None)),
                  "tokens": len(ids), "context": context}
        if reference is not None:
            window = ids[:context][None].to(device)
            if getattr(tokenizer, "bos_token_id", None) is not None:
                window = torch.cat([window.new_tensor([[tokenizer.bos_token_id]]), window[:, :-1]], 1)
            with torch.no_grad():
                logits, ref = model(window)[0].float().cpu(), reference(window)[0].float().cpu()
            scores |= {"agreement": evaluate.fp_agreement(ref, logits), "kl": evaluate.kl_divergence(ref, logits)}
        return scores
    ids = encode_sentences(tokenizer, text.austen_sentences("evaluation", limit or 256))
    embeddings = evaluate.predict(model, ids, batch_size=batch_size, desc=f"{name} eval")
    scores = {"sentences": len(ids)}
    if reference is not None:
        ref = evaluate.predict(reference, ids, batch_size=batch_size, desc=f"{name} FP reference")
        scores["cosine"] = evaluate.embedding_cosine(ref, embeddings)
    return scores


def evaluation_images(model: nn.Module, name: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The evaluation images of image model ``name`` (first ``limit``): the Fashion-MNIST test split with its
    labels, or the shipped photo views (normalised with ``model``'s mean/std) without labels."""
    info = model_info(name)
    if info.dataset == "fashion-mnist":
        return data.fashion_mnist("test", limit=limit)
    if info.dataset == "imagenet":
        mean, std = _image_stats(model)
        return data.photo_views(mean=mean, std=std)[0][:limit], None
    raise ValueError(f"model {name!r} is scored on {info.dataset!r} data, not on images")


def image_scores(logits: torch.Tensor, labels: torch.Tensor | None, reference: torch.Tensor | None = None
                 ) -> dict[str, float]:
    """Top-1/top-5 (percent) where there are labels, else the number of views; with ``reference`` logits
    (the FP model's on the same images) also the agreement of predictions (percent) and KL (nats)."""
    scores = evaluate.topk_accuracy(logits, labels) if labels is not None else {"views": len(logits)}
    if reference is not None:
        scores |= {"agreement": evaluate.fp_agreement(reference, logits), "kl": evaluate.kl_divergence(reference, logits)}
    return scores


def _text_windows(tokenizer: Any, n: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens at random places in the calibration novels.

    Tokenising the 3 MB of calibration text takes seconds, so each window tokenises only a chunk from a random
    character offset, dropping the first token (the offset may cut a word).  A window starts with the
    tokenizer's BOS token when it has one, as evaluation windows do.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    head = [] if bos is None else [bos]
    corpus = text.austen_text("calibration")
    chunk = 16 * seq_len  # characters; English averages ~4-5 characters a token
    starts = torch.randint(0, len(corpus) - chunk, (n,), generator=generator).tolist()
    windows = [head + tokenizer(corpus[s:s + chunk], add_special_tokens=False)["input_ids"][1:seq_len + 1 - len(head)]
               for s in starts]
    if min(len(w) for w in windows) < seq_len:
        raise ValueError(f"seq_len {seq_len} too long for a {chunk}-character chunk of text")
    return torch.tensor(windows, dtype=torch.long)


def measure_model(name: str, max_tokens: int = 16384) -> dict[str, Any]:
    """Parameters, load time (s) and FP score (as text) of one model on CPU: the numbers in docs/models.md."""
    started = time.perf_counter()
    loaded = load_model(name, device="cpu")
    load_s = round(time.perf_counter() - started, 1)
    scores = evaluate_model(loaded.model, name, tokenizer=loaded.tokenizer, max_tokens=max_tokens)
    if loaded.info.dataset == "fashion-mnist":
        score = f"top-1 {scores['top1']:.2f}%, top-5 {scores['top5']:.2f}% (10k test)"
    elif loaded.info.dataset == "imagenet":
        score = f"FP reference over {scores['views']} photo views (agreement 100%, KL 0 by definition)"
    elif loaded.info.dataset == "austen-lm":
        score = f"perplexity {scores['perplexity']:.2f} ({scores['tokens']} tokens, context {scores['context']})"
    else:
        score = f"FP reference over {scores['sentences']} sentences (cosine 1.0 by definition)"
    params = sum(p.numel() for p in loaded.model.parameters())
    return {"params": params, "load_s": load_s, "score": score}


def load_tokenizer(info: ModelInfo | str, path: str | Path | None = None) -> Any:
    """The tokenizer of a text model, without loading the model itself."""
    info = model_info(info) if isinstance(info, str) else info
    if info.name == "smollm2_135m":
        return pretrained.smollm2_tokenizer(path)
    if info.name == "minilm_l6_v2":
        return pretrained.minilm_tokenizer(path)
    if info.task == "causal-lm":
        return causal_lm.causal_lm_tokenizer(info.name, path)
    raise ValueError(f"{info.name} is not a text model and has no tokenizer")


def encode_sentences(tokenizer: Any, sentences: list[str]) -> torch.Tensor:
    """Token ids ``[N, T]`` for a sentence encoder: truncated to :data:`SENTENCE_TOKENS`, 0-padded to the longest."""
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=SENTENCE_TOKENS, return_tensors="pt")
    return batch["input_ids"]


def _image_stats(model: nn.Module | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A timm model's own mean/std (some ViTs use 0.5/0.5), else ImageNet's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", data.IMAGENET_MEAN)), tuple(cfg.get("std", data.IMAGENET_STD))


@torch.no_grad()
def _evaluate_folder(model: nn.Module, data_path: str | Path, *, reference: nn.Module | None, limit: int | None,
                     batch_size: int) -> dict[str, float]:
    mean, std = _image_stats(model)
    folder = data.image_folder(data_path, mean=mean, std=std)
    classes = folder.classes
    if limit is not None:
        folder = torch.utils.data.Subset(folder, range(min(limit, len(folder))))
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, num_workers=2)
    device = next(model.parameters()).device
    logits, refs, labels = [], [], []
    for x, y in tqdm(loader, desc=f"ImageFolder {data_path}", disable=None):
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
        if reference is not None:
            refs.append(reference(x.to(device)).float().cpu())
    logits, labels = torch.cat(logits), torch.cat(labels)
    if logits.shape[1] != len(classes):
        raise ValueError(f"--data-path {data_path} has {len(classes)} class folders but the model has {logits.shape[1]} "
                         "outputs; labels are folder indices in sorted order, so give all class folders (ImageNet: "
                         "the 1000 wnid folders n01440764 ... n15075141; empty ones are allowed)")
    scores = evaluate.topk_accuracy(logits, labels) | {"images": len(labels)}
    if reference is not None:
        ref = torch.cat(refs)
        scores |= {"agreement": evaluate.fp_agreement(ref, logits), "kl": evaluate.kl_divergence(ref, logits)}
    return scores
