"""Tiny random causal LMs of several architectures, saved as ``save_pretrained`` folders, built offline.

They exercise the by-path flow (load, quantize, export, emulate, evaluate) on every decoder family in
seconds: tests and the ``--quick`` benchmark smoke run use them.  The tokenizer is a word-level one fitted
on a few sentences (unknown words map to ``[UNK]``) with a BOS token, wrapped as a fast tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from logmac.models.tv_compat import import_torchvision

SENTENCES = (
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who never took up any book but the Baronetage.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, seemed to unite some "
    "of the best blessings of existence.",
    "The family of Dashwood had long been settled in Sussex.",
    "No one who had ever seen Catherine Morland in her infancy would have supposed her born to be an heroine.",
)
SPECIALS = {"unk": "[UNK]", "pad": "<pad>", "bos": "<s>", "eos": "</s>"}
ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma", "opt")


def tiny_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` (punctuation split off, BOS ``<s>``) over :data:`SENTENCES`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    import_torchvision()  # transformers imports torchvision when present
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token=SPECIALS["unk"]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=list(SPECIALS.values())))
    return PreTrainedTokenizerFast(tokenizer_object=core, **{f"{k}_token": v for k, v in SPECIALS.items()})


def tiny_config(arch: str, tokenizer: Any) -> Any:
    """A 2-layer config of ``arch`` with hidden size 32 (Gemma: tied embeddings and its (1 + w) RMSNorm)."""
    import_torchvision()
    import transformers

    ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 512}
    if arch == "opt":
        return transformers.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                      word_embed_proj_dim=32, **ids)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, **ids)
    configs = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "mistral": transformers.MistralConfig, "gemma": transformers.GemmaConfig}
    if arch not in configs:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES}")
    extra = {"head_dim": 8, "tie_word_embeddings": True} if arch == "gemma" else {}
    return configs[arch](**common, **extra)


def save_tiny_causal_lm(folder: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """Write a random tiny ``arch`` model and its tokenizer to ``folder`` with ``save_pretrained``."""
    import_torchvision()
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
