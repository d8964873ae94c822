"""The offline data loaders on the real installed data, and their errors when data is missing or corrupt."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from logmac.models import DataMissingError, austen_sentences, austen_text, data, fashion_mnist, photo_crops, photo_views, text


def test_fashion_mnist_test_split_is_the_real_10k() -> None:
    x, y = fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [1000] * 10  # the published test set is balanced
    assert y[:5].tolist() == [9, 2, 1, 1, 6]  # first labels of t10k-labels-idx1-ubyte


def test_fashion_mnist_train_normalisation_matches_training() -> None:
    x, y = fashion_mnist("train", limit=20_000)
    assert x.shape == (20_000, 1, 28, 28) and len(y) == 20_000
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


def test_fashion_mnist_bad_split() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        fashion_mnist("validation")


def test_fashion_mnist_missing_names_the_debian_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOGMAC_FMNIST_DIR", str(tmp_path))
    with pytest.raises(DataMissingError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist("test")


def test_idx_corrupt_file_is_named(tmp_path) -> None:
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\0\0\x08\x01" + (10_000).to_bytes(4, "big") + b"\0" * 10))  # truncated body
    with pytest.raises(ValueError, match="corrupt"):
        data.read_idx(bad, expected_dims=(10_000,))
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable gzip IDX"):
        data.read_idx(bad, expected_dims=(10_000,))


def test_austen_split_is_fixed_and_disjoint() -> None:
    assert set(text.AUSTEN_SPLIT["calibration"]).isdisjoint(text.AUSTEN_SPLIT["evaluation"])
    assert set(text.AUSTEN_SPLIT["calibration"]) | set(text.AUSTEN_SPLIT["evaluation"]) == set(text.AUSTEN_NOVELS)
    evaluation = austen_text("evaluation")
    assert evaluation.startswith("Persuasion") and "Anne Elliot" in evaluation
    assert 80_000 < len(evaluation.split()) < 90_000
    calibration = austen_text("calibration")
    assert "It is a truth universally acknowledged" in calibration and "Anne Elliot" not in calibration


def test_austen_sentences_are_deterministic_and_whole() -> None:
    sentences = austen_sentences("evaluation", 64)
    assert sentences == austen_sentences("evaluation", 64)
    assert len(sentences) == 64 and all(len(s.split()) >= 6 for s in sentences)
    assert sentences[0].startswith("Sir Walter Elliot, of Kellynch Hall")


def test_austen_missing_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOGMAC_AUSTEN_DIR", str(tmp_path))
    with pytest.raises(DataMissingError, match="apt-get download r-cran-janeaustenr"):
        austen_text("evaluation")


def test_austen_corrupt_database_is_named(tmp_path, monkeypatch) -> None:
    real = text.austen_dir() / "data"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "Rdata.rdx").write_bytes((real / "Rdata.rdx").read_bytes())
    (tmp_path / "data" / "Rdata.rdb").write_bytes(b"\0" * 2_000_000)
    monkeypatch.setenv("LOGMAC_AUSTEN_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="corrupt"):
        austen_text("evaluation")


def test_photo_views_are_the_shipped_photos() -> None:
    x, names = photo_views()
    assert x.shape == (96, 3, 224, 224) and len(names) == 96
    assert names[0] == "astronaut@1" and "china@0.6-flip" in names
    assert torch.equal(x[1], x[0].flip(-1))


def test_photo_crops_are_seeded() -> None:
    a, b, c = photo_crops(4, seed=1), photo_crops(4, seed=1), photo_crops(4, seed=2)
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b) and not torch.equal(a, c)


def test_image_folder_reads_a_class_per_folder(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("n01440764", "n01443537"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    folder = data.image_folder(tmp_path)
    assert len(folder) == 4 and folder.classes == ["n01440764", "n01443537"]
    assert folder[3][0].shape == (3, 224, 224) and folder[3][1] == 1


def test_image_folder_missing_is_named(tmp_path) -> None:
    with pytest.raises(DataMissingError, match="not a folder"):
        data.image_folder(tmp_path / "imagenet" / "val")
    with pytest.raises(DataMissingError, match="ImageFolder layout"):
        data.image_folder(tmp_path)
