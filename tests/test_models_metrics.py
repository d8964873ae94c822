"""The evaluation metrics on inputs whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from logmac.models import embedding_cosine, fp_agreement, kl_divergence, perplexity, topk_accuracy
from logmac.models.tv_compat import import_timm, import_torchvision


def test_topk_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(logits, labels, ks=(1, 2)) == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3)}


def test_agreement_and_kl() -> None:
    ref = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    assert fp_agreement(ref, ref) == 100.0 and kl_divergence(ref, ref) == pytest.approx(0.0, abs=1e-6)
    assert fp_agreement(ref, -ref) == 0.0 and kl_divergence(ref, -ref) > 0.5
    two = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3.0)]])  # [1/2, 1/2] vs [1/4, 3/4]
    assert kl_divergence(*two) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


def test_embedding_cosine() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert embedding_cosine(a, a) == pytest.approx(1.0)
    assert embedding_cosine(a, torch.tensor([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(0.5)


class _Uniform(nn.Module):
    """A causal LM that knows nothing: uniform over ``vocab`` tokens, so its perplexity is exactly ``vocab``."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = nn.Parameter(torch.zeros(()))
        self.lengths: list[int] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.lengths.append(ids.shape[1])
        return torch.zeros(*ids.shape, self.vocab) + self.anchor


@pytest.mark.parametrize("length,context,stride", [(100, 32, 16), (33, 32, 31), (10, 32, 8), (2, 4, 1)])
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(length: int, context: int, stride: int) -> None:
    model = _Uniform(vocab=7)
    assert perplexity(model, torch.randint(0, 7, (length,)), context=context, stride=stride) == pytest.approx(7.0)
    assert max(model.lengths) <= context


class _Bigram(nn.Module):
    """Predicts the previous token again with certainty, so each token's loss says whether it was scored."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(ids, 50).float() * 100 + self.anchor


def test_perplexity_scores_each_token_once() -> None:
    # A stream of repeats except one change at position 40: exactly one token (of 99 scored) is mispredicted.
    ids = torch.tensor([3] * 40 + [5] * 60)
    nll_one_miss = -torch.log_softmax(torch.tensor([100.0] + [0.0] * 49), 0)[1].item()
    expected = math.exp(nll_one_miss / 99)
    assert perplexity(_Bigram(), ids, context=16, stride=5) == pytest.approx(expected, rel=1e-4)


def test_perplexity_rejects_gaps() -> None:
    with pytest.raises(ValueError, match="unscored or lack history"):
        perplexity(_Uniform(3), torch.zeros(10, dtype=torch.long), context=4, stride=4)


def test_torchvision_and_timm_import_on_this_torch() -> None:
    tv, timm = import_torchvision(), import_timm()
    assert tv.models.resnet.BasicBlock(4, 4)(torch.zeros(1, 4, 8, 8)).shape == (1, 4, 8, 8)
    assert hasattr(timm.models.vision_transformer, "VisionTransformer")
