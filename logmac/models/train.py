"""Train a house reference model on Fashion-MNIST and write its fp16 weights and JSON sidecar.

Deterministic: one seed drives initialisation, shuffling and augmentation, and each recipe has a fixed epoch
count chosen to finish within about 15 minutes on one core of a busy shared machine. The FP top-1 in the
sidecar is measured on the full 10k test set with the weights as stored (fp16, loaded back to fp32), so it is what users get.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from logmac.models.data import FMNIST_MEAN, FMNIST_STD, fashion_mnist
from logmac.models.evaluate import default_device, predict, topk_accuracy
from logmac.models.house import HOUSE_BUILDERS, load_house, weights_dir

# One recipe per house model: builder kwargs, optimiser, peak learning rate (one-cycle schedule), epochs.
RECIPES: dict[str, dict[str, Any]] = {
    "resnet18_fmnist": {"kwargs": {"width": 16}, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                        "epochs": 6, "batch_size": 128, "label_smoothing": 0.0},
    "mobilenetv2_fmnist": {"kwargs": {"width_mult": 0.5}, "optimizer": "sgd", "lr": 0.1, "weight_decay": 4e-5,
                           "epochs": 3, "batch_size": 128, "label_smoothing": 0.0},
    "vit_fmnist": {"kwargs": {"embed_dim": 96, "depth": 6, "num_heads": 3, "patch_size": 7}, "optimizer": "adamw", "lr": 2e-3,
                   "weight_decay": 0.05, "epochs": 10, "batch_size": 128, "label_smoothing": 0.1},
}
AUGMENTATION = "random shift of up to 2 pixels (zero padding) and horizontal flip, per image"


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Randomly shift each image by up to ``pad`` pixels and mirror half of them (cheap, on normalised tensors)."""
    n, _, h, w = x.shape
    background = -FMNIST_MEAN / FMNIST_STD  # a black pixel after normalisation
    padded = F.pad(x, (pad, pad, pad, pad), value=background)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(n, h, w)
    out = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_house(name: str, *, out_dir: str | Path | None = None, seed: int = 0, epochs: int | None = None,
                limit: int | None = None, test_limit: int | None = None, threads: int = 1,
                device: str | torch.device | None = None) -> dict[str, Any]:
    """Train house model ``name``, save ``NAME.safetensors`` (fp16) and ``NAME.json`` in ``out_dir``, return the sidecar.

    ``epochs`` overrides the recipe, ``limit`` keeps the first N training images and ``test_limit`` the first N
    test images for the stated top-1 (tests train a tiny run; the shipped sidecars use all 10k). ``threads``
    defaults to 1: on a shared 2-core machine two OpenMP threads spend their time waiting for each other
    (measured here under load: 4.85 s vs 0.45 s per ResNet step); the shipped weights were trained with 1.
    """
    if name not in RECIPES:
        raise KeyError(f"no training recipe for {name!r}; house models are {sorted(RECIPES)}")
    recipe = dict(RECIPES[name], epochs=epochs or RECIPES[name]["epochs"])
    device = torch.device(device) if device is not None else default_device()
    out = Path(out_dir) if out_dir is not None else weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = HOUSE_BUILDERS[name](**recipe["kwargs"]).to(device)
        x_train, y_train = fashion_mnist("train", limit=limit)
        train_seconds = _fit(name, model, recipe, x_train, y_train, torch.Generator().manual_seed(seed), device)
        weights = out / f"{name}.safetensors"
        save_file({k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
                   for k, v in model.state_dict().items()}, str(weights))
        sidecar = {
            "name": name,
            "architecture": {"builder": HOUSE_BUILDERS[name].__name__, "module": "logmac.models.house",
                             "kwargs": recipe["kwargs"], "parameters": sum(p.numel() for p in model.parameters())},
            "data": "Fashion-MNIST (Debian dataset-fashion-mnist), 60k train / 10k test, 1x28x28, "
                    f"normalised (x/255 - {FMNIST_MEAN}) / {FMNIST_STD}",
            "recipe": {**{k: v for k, v in recipe.items() if k != "kwargs"}, "train_images": len(x_train),
                       "schedule": "one-cycle, 15% warm-up", "momentum": 0.9 if recipe["optimizer"] == "sgd" else None,
                       "augmentation": AUGMENTATION, "seed": seed, "threads": threads},
            "command": f"logmac models train {name} --seed {seed} --threads {threads}",
            "weights_dtype": "float16",
            "train_seconds": round(train_seconds, 1),
            "trained_on": f"{platform.machine()} {device.type}, torch {torch.__version__}",
        }
        weights.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")  # load_house reads it
        x_test, y_test = fashion_mnist("test", limit=test_limit)
        stored = load_house(name, weights).to(device).eval()  # measure the weights as shipped (fp16 -> fp32)
        sidecar["fp_top1"] = round(topk_accuracy(predict(stored, x_test, device=device), y_test, ks=(1,))["top1"], 2)
        sidecar["fp_top1_on"] = ("full Fashion-MNIST test set (10,000 images)" if test_limit is None
                                 else f"first {len(x_test)} Fashion-MNIST test images")
        weights.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        return sidecar
    finally:
        torch.set_num_threads(previous_threads)


def _fit(name: str, model: torch.nn.Module, recipe: dict[str, Any], x_train: torch.Tensor, y_train: torch.Tensor,
         generator: torch.Generator, device: torch.device) -> float:
    """The training loop: shuffled mini-batches, augmentation, one-cycle schedule. Returns seconds taken."""
    optimizer = _optimizer(model, recipe)
    steps_per_epoch = -(-len(x_train) // recipe["batch_size"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], pct_start=0.15,
                                                   total_steps=recipe["epochs"] * steps_per_epoch)
    started = time.time()
    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{recipe['epochs']}", disable=None)
        epoch_loss = 0.0
        for step in bar:
            idx = order[step * recipe["batch_size"]:(step + 1) * recipe["batch_size"]]
            x = augment(x_train[idx], generator).to(device)
            loss = F.cross_entropy(model(x), y_train[idx].to(device), label_smoothing=recipe["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss += loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        # One line per epoch even when the bar is hidden (background runs log to a file).
        tqdm.write(f"{name} epoch {epoch + 1}/{recipe['epochs']}: mean loss {epoch_loss / steps_per_epoch:.4f}, "
                   f"{time.time() - started:.0f} s", file=sys.stderr)
    return time.time() - started


def _optimizer(model: torch.nn.Module, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters (1-d tensors), as is standard for both recipes.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe["lr"])
