"""The emulator on a Llama-style causal LM: every decoder Linear on the integer MAC, the rest float32, close to
fake-quant, and the fast path equal to the int64 reference engine."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from logmac import sim
from logmac.backends.lm import compare_lm
from logmac.format import artifact as art
from logmac.models.tv_compat import import_torchvision
from logmac.quant import QuantConfig, quantize_model
from logmac.quant.llm import decoder_blocks
from logmac.sim.layers import EmulatorError, fake_quant_model

import_torchvision()  # transformers imports torchvision; this makes the CPU-torch + CUDA-torchvision pair import
transformers = pytest.importorskip("transformers")

VOCAB = 96


def tiny_llama() -> nn.Module:
    """A random 2-layer Llama (RMSNorm, RoPE, grouped-query attention, SiLU MLP) as ``ids -> logits``."""
    from logmac.models.pretrained import CausalLMLogits

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return CausalLMLogits(transformers.LlamaForCausalLM(cfg)).eval()


@pytest.fixture(scope="module")
def lm():
    model = tiny_llama()
    calib = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(1))
    cfg = QuantConfig(method="log_dynamic", w_bits=4, a_bits=8, hardware_approx=True, dbs=False, sfs=False, batch_size=4,
                      act_init="percentile")
    res = quantize_model(model, calib, cfg, model_name="tiny_llama", task="lm", blocks=decoder_blocks(model),
                         progress=False)
    artifact = art.from_bytes(art.to_bytes(res.artifact))
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(2))
    return artifact, ids


def test_every_decoder_linear_runs_on_the_integer_mac(lm):
    artifact, ids = lm
    emu = sim.Emulator(artifact, tiny_llama(), stream=True)
    assert len(emu.layers) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert [n for n, m in emu.model.named_modules() if isinstance(m, nn.Linear)] == ["model.lm_head"]
    rows = emu.placement(ids)
    assert all(emu.layers[r["op"]].stats.outputs > 0 for r in rows if r["where"] == "int")
    assert sum(r["where"] == "int" for r in rows) == 14
    floats = {r["kind"]: r["detail"] for r in rows if r["where"] == "float32"}
    assert "rsqrt" in floats["LlamaRMSNorm"]
    assert "silu" in floats["SiLUActivation"] or "silu" in floats.get("SiLU", "")
    attention = floats["LlamaAttention"]
    assert "scaled_dot_product_attention" in attention or "softmax" in attention
    assert "linear" in floats["Linear"]  # the float lm_head


def test_lm_fast_equals_reference_and_is_close_to_fake_quant(lm):
    artifact, ids = lm
    fast = sim.Emulator(artifact, tiny_llama(), stream=True)(ids)
    ref = sim.Emulator(artifact, tiny_llama(), engine="reference")(ids)
    assert torch.equal(fast, ref)
    with torch.no_grad():
        fake = fake_quant_model(artifact, tiny_llama())(ids)
    assert (fast - fake).abs().max() < 0.02 * fake.abs().max()
    assert (fast.argmax(-1) == fake.argmax(-1)).float().mean() > 0.9


def test_compare_lm_reports_three_perplexities(lm):
    artifact, _ = lm
    stream = torch.randint(0, VOCAB, (60,), generator=torch.Generator().manual_seed(3))
    result, emu = compare_lm(artifact, tiny_llama(), stream, context=24, stride=12)
    assert result.tokens == 60 and result.int_layers == 14 and result.float_linears == ["model.lm_head"]
    for ppl in (result.fp_ppl, result.fake_quant_ppl, result.emulator_ppl):
        assert 1 < ppl < 4 * VOCAB
    assert result.margin < 0.02
    assert set(result.seconds) == set(result.peak_mib) == {"fp", "fake_quant", "emulator"}
    with pytest.raises(EmulatorError, match="model has"):
        compare_lm(artifact, copy.deepcopy(emu.model), stream)  # its Linears are integer layers now


def test_emulate_command_scores_a_causal_lm(lm, tmp_path, monkeypatch):
    """`logmac emulate` on an LM artifact prints the three perplexities and the recorded op placement."""
    from click.testing import CliRunner

    import logmac.models
    import logmac.models.text
    from logmac.cli import main
    from logmac.models.registry import LoadedModel, model_info

    artifact, _ = lm
    assert artifact.meta["task"] == "lm"
    path = art.save(artifact, tmp_path / "tiny_llama.lmq")
    monkeypatch.setattr(logmac.models, "load_model",
                        lambda name, path=None, device=None: LoadedModel(tiny_llama(), model_info("smollm2_135m"), None))
    monkeypatch.setattr(logmac.models.text, "austen_tokens", lambda tok, split, max_tokens: torch.arange(max_tokens) % VOCAB)
    out = CliRunner().invoke(main, ["emulate", str(path), "--limit", "40", "--context", "16", "--stride", "8",
                                    "--placement"])
    assert out.exit_code == 0, out.output
    assert "first 40 tokens" in out.output and "14 Linear layers on the integer MAC" in out.output
    assert "scaled_dot_product_attention" in out.output or "softmax" in out.output
