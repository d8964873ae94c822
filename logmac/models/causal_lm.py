"""Any Hugging Face causal LM from a ``save_pretrained`` folder, a ``.gguf`` file or the offline HF cache.

Nothing here knows a model family: ``AutoModelForCausalLM`` reads the architecture from the checkpoint, and
the quantizer finds the decoder layers from the module structure.  Every way loading can fail ends in one
line that names the file or folder: :class:`~logmac.models.pretrained.WeightsMissingError` when something is
not on this machine, :class:`ModelFileError` when it is there but cannot be read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from logmac.models.checkpoint import CheckpointError, LazyWeights
from logmac.models.pretrained import CausalLMLogits, WeightsMissingError
from logmac.models.tv_compat import import_torchvision


class ModelFileError(ValueError):
    """A model file or folder that exists but this machine's transformers cannot read; the message says why."""


def is_local_path(name: str) -> bool:
    """Whether ``name`` means a file or folder rather than a Hugging Face name (``org/model``, one slash)."""
    return (Path(name).expanduser().exists() or name.endswith(".gguf") or name.startswith(("/", ".", "~"))
            or name.count("/") > 1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _resolve(name: str, path: str | Path | None) -> tuple[str, dict, str]:
    """``(where, from_pretrained kwargs, description)`` of the checkpoint, after checking it is here."""
    from transformers import AutoTokenizer

    source = Path(path).expanduser() if path is not None else (Path(name).expanduser() if is_local_path(name) else None)
    if source is None:  # a name in the Hugging Face cache (HF_HUB_OFFLINE: never the network)
        try:
            AutoTokenizer.from_pretrained(name, local_files_only=True)
        except OSError as err:
            raise WeightsMissingError(f"HF model {name} is not in the offline Hugging Face cache (HF_HOME); pass --path or "
                                      "--model PATH to a save_pretrained folder or a .gguf file") from err
        return name, {}, f"HF model {name}"
    if source.suffix == ".gguf":
        if not source.is_file():
            raise WeightsMissingError(f"GGUF file {source} not found")
        return str(source.parent), {"gguf_file": source.name}, f"GGUF file {source}"
    if not source.is_dir():
        raise WeightsMissingError(f"model folder {source} not found")
    if not (source / "config.json").is_file():
        raise WeightsMissingError(f"model folder {source} has no config.json: give a folder written by "
                                  "save_pretrained, or a .gguf file")
    return str(source), {}, f"model folder {source}"


def causal_lm_tokenizer(name: str, path: str | Path | None = None) -> Any:
    """The tokenizer alone (calibration data without the model); errors as :func:`load_causal_lm`."""
    import_torchvision()  # transformers imports torchvision when present
    from transformers import AutoTokenizer

    where, kwargs, what = _resolve(name, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **kwargs)
    except Exception as err:  # tokenizers raise OSError, ValueError, TypeError... for missing or unreadable files
        if "gguf_file" in kwargs:
            raise ModelFileError(f"{what} cannot be read by the installed transformers ({_first_line(err)})") from err
        raise ModelFileError(f"the tokenizer of {what} cannot be loaded ({_first_line(err)}); it needs "
                             "tokenizer.json (or the slow tokenizer's vocabulary files) and tokenizer_config.json"
                             ) from err
    if tokenizer is None or isinstance(tokenizer, bool):
        raise ModelFileError(f"the tokenizer of {what} cannot be loaded: no tokenizer files found")
    return tokenizer


def load_causal_lm(name: str, path: str | Path | None = None) -> tuple[CausalLMLogits, Any]:
    """The model as ``ids -> logits`` and its tokenizer, from ``path`` (or ``name`` when it is a path) or the
    offline HF cache; raises :class:`WeightsMissingError` or :class:`ModelFileError` with a one-line message."""
    tokenizer = causal_lm_tokenizer(name, path)
    from transformers import AutoModelForCausalLM

    where, kwargs, what = _resolve(name, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise WeightsMissingError(f"{what} has no readable weights ({_first_line(err)})") from err
    except Exception as err:  # an architecture or GGUF layout this transformers version does not know
        import transformers

        raise ModelFileError(f"{what} cannot be read by the installed transformers {transformers.__version__} "
                             f"({_first_line(err)})") from err
    return CausalLMLogits(model), tokenizer


def load_causal_lm_lazy(name: str, path: str | Path | None = None) -> tuple[CausalLMLogits, Any, LazyWeights] | None:
    """The model built on ``meta`` (no weights in memory), its tokenizer and the checkpoint to read its tensors
    from one at a time; None when the checkpoint is not a safetensors folder (a GGUF file or ``.bin`` weights
    must be loaded whole).  Errors as :func:`load_causal_lm`."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    where, kwargs, what = _resolve(name, path)
    if kwargs:  # GGUF: transformers dequantizes the whole file on load
        return None
    folder = Path(where)
    if not folder.is_dir():  # a name in the Hugging Face cache: its snapshot folder
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(where, local_files_only=True))
    if not LazyWeights.available(folder):
        return None
    tokenizer = causal_lm_tokenizer(name, path)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        weights = LazyWeights(model, folder)
    except CheckpointError as err:
        raise ModelFileError(f"{what}: {err}") from err
    except Exception as err:  # an architecture this transformers version does not know
        import transformers

        raise ModelFileError(f"{what} cannot be read by the installed transformers {transformers.__version__} "
                             f"({_first_line(err)})") from err
    return CausalLMLogits(model.eval()), tokenizer, weights
