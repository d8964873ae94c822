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


def test_linears_fed_one_tensor_share_its_gram_matrix(monkeypatch) -> None:
    """q/k/v (and gate/up) read the same hidden state: its Gram matrix is computed once per batch and each
    layer's Hessian equals the one computed from its own inputs."""
    from logmac.quant import calibrate, modules
    from logmac.quant.pipeline import wrap_model

    calls = []
    real = modules._gram
    monkeypatch.setattr(modules, "_gram", lambda rows: calls.append(rows.shape) or real(rows))
    model = ToyLM(depth=1).eval()
    block = model.layers[0]
    block.twin = nn.Linear(32, block.up.out_features)  # a second reader of the input of ``up``

    def forward(h, scale=1.0):
        return (block.down(torch.relu(block.up(h) + block.twin(h))) * scale + h,)

    block.forward = forward
    cfg = QuantConfig(method="log_dynamic", w_bits=3, a_bits=32, rounding="gptq", batch_size=4)
    wrap_model(model, cfg, scope=[block])
    x = model.embed(IDS[:4])
    hess = calibrate._observe_and_fit(block, modules.quant_layers(block), [[(x,), {}]], damp=0.0, keep=True)
    assert len(calls) == 2  # one Gram for up + twin, one for down
    rows = x.reshape(-1, 32).double()
    want = 2.0 * rows.T @ rows / rows.shape[0]
    for name in ("layers.0.up", "layers.0.twin"):
        torch.testing.assert_close(hess[name][0], want.float(), rtol=1e-6, atol=1e-6)
