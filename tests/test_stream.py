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
