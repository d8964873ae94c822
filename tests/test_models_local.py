"""Names that resolve from a local path: torchvision, timm and HF causal-LM checkpoints written here."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from logmac.models import load_model, pretrained
from logmac.models.tv_compat import import_timm, import_torchvision


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_torchvision_name_from_a_path(tmp_path) -> None:
    torch.manual_seed(0)
    original = import_torchvision().models.mobilenet_v2()
    torch.save(original.state_dict(), tmp_path / "mobilenet_v2-local.pth")
    loaded = load_model("mobilenet_v2", path=tmp_path / "mobilenet_v2-local.pth", device="cpu")
    assert loaded.info.needs_path and _same_outputs(original, loaded.model, torch.randn(1, 3, 64, 64))


def test_torchvision_name_from_the_hub_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    original = import_torchvision().models.resnet18()
    torch.save(original.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    assert _same_outputs(original, load_model("resnet18", device="cpu").model, torch.randn(1, 3, 32, 32))


def test_timm_name_from_a_safetensors_file(tmp_path) -> None:
    original = import_timm().create_model("deit_tiny_patch16_224", pretrained=False)
    save_file(original.state_dict(), str(tmp_path / "deit.safetensors"))
    loaded = load_model("deit_tiny_patch16_224", path=tmp_path / "deit.safetensors", device="cpu")
    assert _same_outputs(original, loaded.model, torch.randn(1, 3, 224, 224))


def test_hf_llama_name_from_a_save_pretrained_folder(tmp_path) -> None:
    import_torchvision()
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = pretrained.load_minilm()  # any tokenizer will do for a folder layout check
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model("someone/tiny-llama", path=tmp_path, device="cpu")
    ids = torch.randint(0, tokenizer.vocab_size, (2, 8))
    assert loaded.model(ids).shape == (2, 8, tokenizer.vocab_size) and loaded.tokenizer is not None


def test_corrupt_local_checkpoint_is_named(tmp_path) -> None:
    (tmp_path / "resnet18.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights .*resnet18.pth"):
        load_model("resnet18", path=tmp_path / "resnet18.pth", device="cpu")
