"""Real loads of every shipped model on small batches, the house models' stated FP top-1, and the clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from logmac.models import (
    UnknownModelError,
    WeightsMissingError,
    austen_tokens,
    calibration_samples,
    evaluate_model,
    fashion_mnist,
    house,
    list_models,
    load_model,
    perplexity,
    photo_views,
    predict,
    topk_accuracy,
)
from logmac.models.commands import models as models_cli
from logmac.models.data import sample_photos
from logmac.models.train import train_house

HOUSE = sorted(house.HOUSE_BUILDERS)


@pytest.mark.parametrize("name", HOUSE)
def test_house_weights_reach_their_stated_top1_on_the_full_test_set(name: str) -> None:
    sidecar = house.house_sidecar(name)
    assert sidecar["fp_top1_on"].startswith("full Fashion-MNIST test set")
    loaded = load_model(name, device="cpu")
    assert not loaded.model.training and loaded.info.dataset == "fashion-mnist"
    assert sum(p.numel() for p in loaded.model.parameters()) == sidecar["architecture"]["parameters"]
    x, y = fashion_mnist("test")
    top1 = topk_accuracy(predict(loaded.model, x, batch_size=500), y, ks=(1,))["top1"]
    assert abs(top1 - sidecar["fp_top1"]) <= 0.5, f"{name}: measured {top1:.2f}%, sidecar says {sidecar['fp_top1']}%"


def test_house_weights_stay_small() -> None:
    total = sum(f.stat().st_size for f in house.weights_dir().glob("*.safetensors"))
    assert 0 < total < 30 * 2**20


@pytest.mark.parametrize("name", HOUSE)
def test_house_calibration_comes_from_the_training_split(name: str) -> None:
    x = calibration_samples(name, 16, seed=3)
    assert x.shape == (16, 1, 28, 28)
    assert torch.equal(x, calibration_samples(name, 16, seed=3))
    test_x, _ = fashion_mnist("test")
    assert not (x[:, None] == test_x[None, :2000]).flatten(2).all(-1).any()


def test_train_writes_loadable_fp16_weights_and_sidecar(tmp_path) -> None:
    sidecar = train_house("resnet18_fmnist", out_dir=tmp_path, epochs=1, limit=512, test_limit=500)
    weights = tmp_path / "resnet18_fmnist.safetensors"
    assert json.loads(weights.with_suffix(".json").read_text()) == sidecar
    assert sidecar["weights_dtype"] == "float16" and sidecar["recipe"]["train_images"] == 512
    assert sidecar["fp_top1_on"] == "first 500 Fashion-MNIST test images"
    model = house.load_house("resnet18_fmnist", weights)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("efficientnet_lite0", device="cpu")


def test_efficientnet_lite0_recognises_the_cat_photo(efficientnet) -> None:
    loaded = efficientnet
    x, names = photo_views()
    picks = [names.index("chelsea@1"), names.index("coffee@1")]
    with torch.no_grad():
        top1 = loaded.model(x[picks]).argmax(-1).tolist()
    assert 281 <= top1[0] <= 285  # ImageNet's domestic-cat classes (tabby ... Egyptian cat)
    assert top1[1] in (504, 967, 968)  # coffee mug, espresso, cup
    scores = evaluate_model(loaded.model, "efficientnet_lite0", reference=loaded.model, limit=8)
    assert scores == {"views": 8, "agreement": 100.0, "kl": pytest.approx(0.0, abs=1e-6)}
    assert calibration_samples("efficientnet_lite0", 2).shape == (2, 3, 224, 224)


def test_efficientnet_lite0_top1_on_an_image_folder(efficientnet, tmp_path) -> None:
    from PIL import Image

    # 1000 class folders sorted like ImageNet's; two hold a photo: tabby cat (281) and espresso (967).
    for index in range(1000):
        (tmp_path / f"class{index:04d}").mkdir()
    images = sample_photos()
    Image.fromarray(images["chelsea"]).save(tmp_path / "class0281" / "chelsea.png")
    Image.fromarray(images["coffee"]).save(tmp_path / "class0967" / "coffee.png")
    scores = evaluate_model(efficientnet.model, "efficientnet_lite0", data_path=tmp_path, reference=efficientnet.model)
    assert scores["images"] == 2 and scores["agreement"] == 100.0
    assert scores["top5"] == 100.0 and scores["top1"] >= 50.0


def test_image_folder_with_too_few_classes_is_refused(efficientnet, tmp_path) -> None:
    from PIL import Image

    (tmp_path / "n02123045").mkdir()
    Image.fromarray(sample_photos()["chelsea"]).save(tmp_path / "n02123045" / "chelsea.png")
    with pytest.raises(ValueError, match="1 class folders but the model has 1000 outputs"):
        evaluate_model(efficientnet.model, "efficientnet_lite0", data_path=tmp_path)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2_135m", device="cpu")


def test_smollm2_perplexity_on_persuasion(smollm2) -> None:
    assert smollm2.info.task == "causal-lm" and type(smollm2.model.model).__name__ == "LlamaForCausalLM"
    scores = evaluate_model(smollm2.model, "smollm2_135m", tokenizer=smollm2.tokenizer, max_tokens=160, context=96,
                            stride=32)
    assert scores["tokens"] == 160 and scores["context"] == 96
    assert 5 < scores["perplexity"] < 200  # the opening of Persuasion (title page, names) is hard; 16k tokens: 38
    ids = austen_tokens(smollm2.tokenizer, "evaluation", max_tokens=160)
    shuffled = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
    # The same tokens in random order: a model that knows English must find them far less likely.
    assert perplexity(smollm2.model, shuffled, context=96, stride=32) > 5 * scores["perplexity"]


def test_smollm2_calibration_windows(smollm2) -> None:
    ids = calibration_samples("smollm2_135m", 2, seq_len=32, tokenizer=smollm2.tokenizer)
    assert ids.shape == (2, 32) and ids.dtype == torch.int64
    with torch.no_grad():
        assert smollm2.model(ids).shape == (2, 32, 49152)


def test_minilm_embeds_similar_sentences_close() -> None:
    loaded = load_model("minilm_l6_v2", device="cpu")
    ids = loaded.tokenizer(["The weather is lovely today.", "It is a beautiful sunny day.", "He sold his shares."],
                           padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        e = loaded.model(ids)
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2
    scores = evaluate_model(loaded.model, "minilm_l6_v2", reference=loaded.model, limit=16)
    assert scores["sentences"] == 16 and scores["cosine"] == pytest.approx(1.0, abs=1e-5)
    calib = calibration_samples("minilm_l6_v2", 4, tokenizer=loaded.tokenizer)
    assert calib.shape[0] == 4 and calib.shape[1] <= 128


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(UnknownModelError, match="resnet18_fmnist.*smollm2_135m"):
        load_model("resnet19")


def test_missing_local_weights_say_where_to_put_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsMissingError, match="resnet50-.*pth into .*checkpoints"):
        load_model("resnet50")
    with pytest.raises(WeightsMissingError, match="--path"):
        load_model("facebook/opt-125m", device="cpu")
    with pytest.raises(FileNotFoundError, match="logmac models train"):
        load_model("vit_fmnist", path=tmp_path / "vit.safetensors")


def test_corrupt_weights_are_named(tmp_path) -> None:
    weights = tmp_path / "resnet18_fmnist.safetensors"
    weights.write_bytes(b"\x08\0\0\0\0\0\0\0{garbage")
    weights.with_suffix(".json").write_text((house.weights_dir() / "resnet18_fmnist.json").read_text())
    with pytest.raises(ValueError, match="cannot read house weights"):
        load_model("resnet18_fmnist", path=weights)


def test_every_shipped_model_is_available_here() -> None:
    shipped = [row for row in list_models() if row["available"] is not None]
    assert {row["name"] for row in shipped} == {"resnet18_fmnist", "mobilenetv2_fmnist", "vit_fmnist",
                                                "efficientnet_lite0", "smollm2_135m", "minilm_l6_v2"}
    assert all(row["available"] for row in shipped), [row["name"] for row in shipped if not row["available"]]


def test_cli_list_and_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(models_cli, ["list"])
    assert result.exit_code == 0 and "MISSING" not in result.output and "needs local weights" in result.output
    result = runner.invoke(models_cli, ["eval", "resnet19"])
    assert result.exit_code == 1 and "unknown model 'resnet19'" in result.output
    result = runner.invoke(models_cli, ["eval", "resnet18_fmnist", "--limit", "200", "--device", "cpu"])
    assert result.exit_code == 0 and json.loads(result.output)["top1"] > 80
