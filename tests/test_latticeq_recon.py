"""LatticeQ block reconstruction: it lowers a block's output error and keeps the codes on the lattice."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from logmac.backends.lattice import emulate_lattice
from logmac.quant.calibrate import find_units, recon_loss
from logmac.quant.methods.latticeq.calibrate import lattice_quantize_model
from logmac.quant.methods.latticeq.model import LatticeConfig, LatticeLayer, lattice_layers, set_lattice_quant
from logmac.quant.methods.latticeq.search import LatticeError


class TinyBlock(nn.Module):
    """A residual unit (conv-ReLU-conv + skip), named like the blocks BRECQ-style reconstruction looks for."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), TinyBlock(8), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10)).eval()


def _block_mse(model: nn.Module, x: torch.Tensor) -> float:
    """Output error of the block (index 2) with the quantized prefix, against the FP network's block output."""
    got = {}
    hook = model[2].register_forward_hook(lambda _m, _a, out: got.__setitem__("y", out))
    with torch.no_grad():
        model(x)
        q = got["y"]
        set_lattice_quant(model, False)
        model(x)
        set_lattice_quant(model, True)
    hook.remove()
    return float(recon_loss(q, got["y"]))


@pytest.fixture(scope="module")
def runs():
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    base = dict(w_bits=3, basis_bits=6, a_bits=8, steps=3, restarts=2, edge="same", batch_size=16)
    plain = lattice_quantize_model(_model(), x, LatticeConfig(**base), progress=False)
    recon = lattice_quantize_model(_model(), x, LatticeConfig(**base, recon_iters=50, recon_lr=1e-2), progress=False)
    return x, plain, recon


def test_reconstruction_lowers_the_block_output_error(runs) -> None:
    x, plain, recon = runs
    assert list(recon.recon) == ["0", "2", "5"]
    before, after = recon.recon["2"]  # "before": block 2 on the already reconstructed stem's output
    assert after < 0.9 * before, recon.recon
    assert after == pytest.approx(_block_mse(recon.model, x), rel=1e-5)
    assert _block_mse(recon.model, x) < 0.8 * _block_mse(plain.model, x)


def test_reconstructed_codes_stay_on_the_lattice(runs) -> None:
    x, plain, recon = runs
    changed = 0
    for a, b in zip(lattice_layers(plain.model), lattice_layers(recon.model), strict=True):
        assert torch.equal(a.code.basis, b.code.basis) and torch.equal(a.code.mu, b.code.mu)
        lo, hi = -(1 << (b.code.bits - 1)) + 1, 1 << (b.code.bits - 1)
        assert int(b.code.coords.min()) >= lo and int(b.code.coords.max()) <= hi
        assert torch.equal(b.qweight, b.code.decode().float()) and b.latent is None
        changed += int((a.code.coords != b.code.coords).sum())
    assert changed > 0
    emu, stats = emulate_lattice(recon.model)
    assert torch.allclose(emu(x), recon.model(x), atol=1e-5, rtol=1e-5)
    assert all(s.overflows == 0 for s in stats.values())


def test_units_are_blocks_and_lone_layers() -> None:
    model = _model()
    x = torch.randn(4, 3, 8, 8)
    res = lattice_quantize_model(copy.deepcopy(model), x, LatticeConfig(steps=1, restarts=1, edge="same"), progress=False)
    assert [n for n, _ in find_units(res.model, x[:1], LatticeLayer)] == ["0", "2", "5"]


@pytest.mark.parametrize("kw", [dict(recon_iters=-1), dict(recon_lr=0.0), dict(recon_iters=5, basis_bits=None)])
def test_bad_reconstruction_settings_are_rejected(kw: dict) -> None:
    with pytest.raises(LatticeError):
        LatticeConfig(**kw)
