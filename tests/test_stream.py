"""Layer-streamed calibration: one decoder block's weights in memory at a time, the same codes as a whole model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logmac.quant import QuantConfig, quantize_model
from logmac.quant.config import QuantError
from logmac.quant.float_view import FloatView
from logmac.quant.llm import decoder_blocks
from tests.test_quant_llm import IDS, ToyLM

CFG = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, rounding="gptq", batch_size=4, alpha_steps=3)


def model() -> ToyLM:
    torch.manual_seed(0)
    return ToyLM(depth=5).eval()


def resident_bytes(blocks) -> int:
    """Bytes of weight matrices currently materialised (not on ``meta``) in the blocks."""
    return sum(p.numel() * p.element_size() for b in blocks for p in b.parameters() if p.ndim >= 2 and not p.is_meta)


def test_streamed_run_holds_one_block_and_gives_the_same_codes(tmp_path) -> None:
    whole = model()
    ref = quantize_model(whole, IDS, CFG, task="lm", blocks=decoder_blocks(whole), progress=False)
    streamed = model()
    blocks = decoder_blocks(streamed)
    one_block = resident_bytes(blocks[:1])
    seen: list[int] = []
    for b in blocks:  # what is resident as each block finishes a forward pass, in calibration and evaluation
        b.register_forward_hook(lambda *_: seen.append(resident_bytes(blocks)))
    res = quantize_model(streamed, IDS, CFG, task="lm", blocks=blocks, progress=False, offload_dir=tmp_path / "off")
    calibration = len(seen)
    with torch.no_grad():
        out, fp = res.model(IDS), FloatView(res.model)(IDS)
        torch.testing.assert_close(out, ref.model(IDS), rtol=0, atol=0)
        torch.testing.assert_close(fp, FloatView(ref.model)(IDS), rtol=0, atol=0)
    assert calibration >= 2 * 5 and len(seen) > calibration  # both phases were measured
    assert set(seen) == {one_block}  # exactly one block's weight matrices whenever a block runs
    assert res.stream.peak_bytes == one_block
    for name, q in ref.artifact.layers.items():
        np.testing.assert_array_equal(res.artifact.layers[name].codes, q.codes)
    res.stream.close()
    assert resident_bytes(blocks) == 5 * one_block


def test_streaming_needs_blocks(tmp_path) -> None:
    with pytest.raises(QuantError, match="blocks"):
        quantize_model(model(), IDS, CFG, task="lm", progress=False, offload_dir=tmp_path)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from logmac.models.tiny_lm import save_tiny_causal_lm

    return save_tiny_causal_lm(tmp_path_factory.mktemp("lazy") / "llama", "llama")


LM_CFG = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, rounding="gptq", calib_samples=8, alpha_steps=3)


def test_lazy_load_builds_the_model_without_weights(tiny_folder) -> None:
    from logmac.models import load_model

    loaded = load_model(str(tiny_folder), lazy=True, device="cpu")
    assert loaded.weights is not None and loaded.weights.folder == tiny_folder
    assert all(p.is_meta for p in loaded.model.parameters())  # nothing is read until it is needed


def test_checkpoint_streamed_run_never_holds_two_blocks_and_gives_the_same_codes(tiny_folder, tmp_path) -> None:
    """A safetensors model is read block by block from its checkpoint (nothing is offloaded), not loaded whole."""
    from logmac.experiments.registry import EvalOptions, quantize_registry_model

    opts = EvalOptions(max_tokens=128, seq_len=32)
    ref, row = quantize_registry_model(str(tiny_folder), LM_CFG, opts, progress=False)
    res, streamed_row = quantize_registry_model(str(tiny_folder), LM_CFG, opts, progress=False,
                                                offload_dir=tmp_path / "off")
    assert res.stream.source is not None and not (tmp_path / "off").exists()
    blocks = decoder_blocks(res.model)
    assert res.stream.peak_bytes == max(res.stream.block_bytes) and len(blocks) >= 2
    assert sum(p.numel() for b in blocks for p in b.parameters() if p.ndim >= 2 and not p.is_meta) \
        <= max(res.stream.block_bytes) // 4  # after the run at most the last block is resident
    for name, q in ref.artifact.layers.items():
        np.testing.assert_array_equal(res.artifact.layers[name].codes, q.codes)
    assert streamed_row["q_perplexity"] == row["q_perplexity"] and streamed_row["fp_perplexity"] == row["fp_perplexity"]


def _rewrite_checkpoint(src, dst, edit) -> None:
    """Copy a save_pretrained folder with its tensors passed through ``edit(dict) -> dict``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    save_file(edit(load_file(src / "model.safetensors")), dst / "model.safetensors", metadata={"format": "pt"})


def test_streamed_checkpoint_errors_name_the_tensor(tiny_folder, tmp_path) -> None:
    from logmac.experiments.registry import EvalOptions, quantize_registry_model

    key = "model.layers.1.mlp.down_proj.weight"
    missing, poisoned = tmp_path / "missing", tmp_path / "nan"
    _rewrite_checkpoint(tiny_folder, missing, lambda t: {k: v for k, v in t.items() if k != key})
    _rewrite_checkpoint(tiny_folder, poisoned, lambda t: {**t, key: t[key].index_fill(0, torch.tensor([0]), float("nan"))})
    opts = EvalOptions(max_tokens=128, seq_len=32)
    with pytest.raises(QuantError, match=f"no tensor for {key}"):
        quantize_registry_model(str(missing), LM_CFG, opts, progress=False, offload_dir=tmp_path / "off")
    with pytest.raises(QuantError, match=f"layer {key} has NaN or Inf"):
        quantize_registry_model(str(poisoned), LM_CFG, opts, progress=False, offload_dir=tmp_path / "off")
    corrupt = tmp_path / "corrupt"
    _rewrite_checkpoint(tiny_folder, corrupt, lambda t: t)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00not a safetensors header")
    with pytest.raises(QuantError, match="cannot be read as safetensors"):
        quantize_registry_model(str(corrupt), LM_CFG, opts, progress=False, offload_dir=tmp_path / "off")
