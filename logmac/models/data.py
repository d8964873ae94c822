"""Image data that works offline: Fashion-MNIST from Debian, sample photos from scikit-image/scikit-learn,
and an ImageNet-style folder the user points at.

Every loader returns float tensors ready for its model and fails with a :class:`DataMissingError` that names
the missing thing and the command that installs it.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

# Debian's dataset-fashion-mnist installs the four original IDX files here; LOGMAC_FMNIST_DIR overrides.
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
# Mean and std of the 60k training pixels (scaled to [0, 1]); the house models were trained on exactly this.
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# ImageNet preprocessing of the torchvision/timm/EfficientNet-Lite checkpoints.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataMissingError(FileNotFoundError):
    """A data set is not installed here; the message says what to install."""


def fmnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are looked for."""
    return Path(os.environ.get("LOGMAC_FMNIST_DIR", FMNIST_DIR))


def fashion_mnist(split: str = "test", *, limit: int | None = None, root: str | Path | None = None,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as normalised ``[N, 1, 28, 28]`` floats and int64 labels.

    The normalisation (``FMNIST_MEAN``/``FMNIST_STD``) is the one the house models were trained with; ``limit``
    keeps the first N examples (the files' own order, so subsets are reproducible).
    """
    if split not in FMNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(FMNIST_FILES)}, not {split!r}")
    images, labels = _read_fmnist(Path(root) if root is not None else fmnist_dir(), split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = (torch.from_numpy(images).float().div_(255.0).sub_(FMNIST_MEAN).div_(FMNIST_STD)).unsqueeze(1)
    return x.to(device), torch.from_numpy(labels).long().to(device)


@functools.lru_cache(maxsize=4)
def _read_fmnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file, count = FMNIST_FILES[split]
    for name in (image_file, label_file):
        if not (root / name).is_file():
            raise DataMissingError(f"Fashion-MNIST file {root / name} is missing; install it with "
                                   "`apt-get install dataset-fashion-mnist` (scripts/setup.sh does) "
                                   "or set LOGMAC_FMNIST_DIR to a folder holding the four IDX .gz files")
    images = read_idx(root / image_file, expected_dims=(count, 28, 28))
    labels = read_idx(root / label_file, expected_dims=(count,))
    return images, labels


def read_idx(path: Path, expected_dims: tuple[int, ...]) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST format) and check its shape."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable gzip IDX file ({err}); reinstall dataset-fashion-mnist") from err
    ndim = len(expected_dims)
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"{path} has no IDX header for {ndim}-d unsigned bytes; the file is corrupt")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims != expected_dims or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise ValueError(f"{path} holds shape {dims} in {len(raw)} bytes, expected {expected_dims}; the file is corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


# The photos: scikit-image's colour photographs and grey-scale scenes (skimage.data names), then
# scikit-learn's two sample JPEGs. All ship inside the wheels, so no download happens.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "camera", "clock", "coins", "moon", "grass", "gravel", "brick")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def sample_photos() -> dict[str, np.ndarray]:
    """The shipped sample photos as ``H x W x 3`` uint8 arrays (grey ones repeated to 3 channels), by name."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as err:
        raise DataMissingError(f"sample photos need scikit-image and scikit-learn ({err}); "
                               "install logmac with `pip install -c constraints.txt -e .[models]`") from err
    photos = {}
    for name in SKIMAGE_PHOTOS:
        photos[name] = getattr(skimage.data, name)()
    sklearn_images = load_sample_images()
    for filename, image in zip(sklearn_images.filenames, sklearn_images.images, strict=True):
        photos[Path(filename).name.removesuffix(".jpg")] = image
    return {name: _as_rgb(image) for name, image in photos.items()}


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)


def photo_views(size: int = 224, *, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, list[str]]:
    """Normalised ``[N, 3, size, size]`` views of the sample photos (the evaluation set), and a name for each view.

    With 16 photos one centre crop each would make FP-agreement too coarse, so each photo gives a centre square
    at 3 scales (1, 0.8, 0.6 of the shorter side), each also mirrored: 96 deterministic views. Resizing is
    bilinear with antialiasing, as torchvision's ``Resize``.
    """
    views, names = _photo_views_raw(size)
    return _normalize(views, mean, std).to(device), list(names)


@functools.lru_cache(maxsize=2)
def _photo_views_raw(size: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    views, names = [], []
    for name, image in sample_photos().items():
        t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        for scale in (1.0, 0.8, 0.6):
            crop = _resize(_centre_square(t, scale), size)
            views += [crop, crop.flip(-1)]
            names += [f"{name}@{scale:g}", f"{name}@{scale:g}-flip"]
    return torch.stack(views), tuple(names)


def photo_crops(n: int, size: int = 224, *, seed: int = 0, mean: tuple[float, ...] = IMAGENET_MEAN,
                std: tuple[float, ...] = IMAGENET_STD, device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` seeded random crops of the sample photos (calibration data for the ImageNet models).

    Each crop covers 25-100% of a random photo's area with aspect ratio 3/4-4/3 and is mirrored half the time.
    With no other photos offline these overlap the evaluation views; calibration only sets ranges, so that is
    acceptable, but real held-out calibration needs ``--data-path``.
    """
    photos = [torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0) for image in sample_photos().values()]
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(n):
        image = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        _, h, w = image.shape
        area, ratio = torch.empty(2).uniform_(0, 1, generator=generator).tolist()
        area, ratio = 0.25 + 0.75 * area, (3 / 4) * (16 / 9) ** ratio
        ch = min(h, int(round((area * h * w / ratio) ** 0.5)))
        cw = min(w, int(round((area * h * w * ratio) ** 0.5)))
        top = int(torch.randint(h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(w - cw + 1, (1,), generator=generator))
        crop = _resize(image[:, top:top + ch, left:left + cw], size)
        crops.append(crop.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else crop)
    return _normalize(torch.stack(crops), mean, std).to(device)


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)[0]


def _centre_square(image: torch.Tensor, scale: float) -> torch.Tensor:
    _, h, w = image.shape
    side = max(1, int(round(min(h, w) * scale)))
    top, left = (h - side) // 2, (w - side) // 2
    return image[:, top:top + side, left:left + side]


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def image_folder(path: str | Path, *, size: int = 224, resize: int = 256, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD):
    """A torchvision ``ImageFolder`` over ``path`` (one sub-folder per class) with the standard ImageNet eval
    transform (resize ``resize``, centre-crop ``size``, normalise). Class indices follow sorted folder names,
    which matches the ImageNet checkpoints when the folders are the 1000 WordNet ids (n01440764, ...); empty
    class folders are allowed, so a subset of images keeps the full class list."""
    from logmac.models.tv_compat import import_torchvision

    root = Path(path)
    if not root.is_dir():
        raise DataMissingError(f"--data-path {root} is not a folder; give an ImageFolder root "
                               "(one sub-folder of images per class, e.g. ImageNet's val/n01440764/*.JPEG)")
    tv = import_torchvision()
    transform = tv.transforms.Compose([
        tv.transforms.Resize(resize), tv.transforms.CenterCrop(size), tv.transforms.ToTensor(),
        tv.transforms.Normalize(mean, std),
    ])
    try:
        return tv.datasets.ImageFolder(str(root), transform=transform, allow_empty=True)
    except (FileNotFoundError, RuntimeError) as err:
        raise DataMissingError(f"--data-path {root} is not an ImageFolder layout: {err}") from err
