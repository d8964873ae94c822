"""The GPTQ/aespa-style LLM path: decoder layers calibrated as a chain, linears rounded on their Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from logmac.quant import QuantConfig, quantize_model
from logmac.quant.llm import decoder_blocks


class ToyDecoderLayer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.down = nn.Linear(4 * d, d, bias=False)

    def forward(self, hidden: torch.Tensor, *, scale: float = 1.0) -> tuple[torch.Tensor]:
        return (hidden + scale * self.down(torch.relu(self.up(self.norm(hidden)))),)


class ToyLM(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(ToyDecoderLayer(d) for _ in range(depth))
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h, scale=0.5)[0]
        return self.head(h)


def toy() -> ToyLM:
    torch.manual_seed(0)
    return ToyLM().eval()


IDS = torch.randint(0, 50, (16, 12), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("llr", [False, True])
def test_chain_quantizes_only_decoder_linears(llr: bool) -> None:
    model = toy()
    ref = model(IDS).detach()
    cfg = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, learn_rounding=llr, iters=40, batch_size=4)
    res = quantize_model(model, IDS, cfg, task="lm", blocks=decoder_blocks(model), progress=False)
    assert set(res.artifact.layers) == {f"layers.{i}.{n}" for i in range(3) for n in ("up", "down")}
    assert "head" in res.float_modules and "embed" in res.float_modules
    with torch.no_grad():
        err = (res.model(IDS) - ref).pow(2).mean() / ref.pow(2).mean()
    assert err < 0.2
    if llr:
        assert all(v["learned"] <= v["rtn"] for v in res.losses.values() if v["kept_learned"])
        assert any(v["learned"] < 0.95 * v["rtn"] for v in res.losses.values())


def test_exact_and_low_rank_hessian_objectives_agree_in_direction() -> None:
    codes = {}
    for rank in (0, 8):
        model = toy()
        cfg = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, learn_rounding=True, iters=40, batch_size=4,
                          hessian_rank=rank)
        res = quantize_model(model, IDS, cfg, task="lm", blocks=decoder_blocks(model), progress=False)
        codes[rank] = res.artifact.layers["layers.0.up"].codes
        assert all(v["learned"] <= v["rtn"] for v in res.losses.values() if v["kept_learned"])
    assert np.mean(codes[0] == codes[8]) > 0.8
