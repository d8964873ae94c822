"""The house reference networks: small Fashion-MNIST classifiers trained here, weights shipped in the package.

Nothing on the package registries ships these, so ``logmac models train NAME`` trains them
(:mod:`logmac.models.train`) and their fp16 weights live in ``logmac/models/weights/NAME.safetensors``
beside a ``NAME.json`` sidecar stating architecture, recipe and measured FP top-1.

Each architecture is built from the upstream library's own building blocks, adapted to 28x28 grey input:

- ``resnet18_fmnist``: torchvision's ``BasicBlock`` in the ResNet-18 layout (2-2-2-2 blocks), a 3x3 stride-1
  stem and 2x2 max-pool, and base width 16 instead of 64 (~1/16 of the compute) to train in minutes.
- ``mobilenetv2_fmnist``: torchvision's ``MobileNetV2`` class (width 0.5) with a 1-channel stride-2 stem and a
  shortened inverted-residual table (14 blocks instead of 17) sized for 28x28.
- ``vit_fmnist``: timm's ``VisionTransformer`` (DeiT-Tiny style: pre-norm, class token, 3 heads) with
  7x7 patches, shrunk from DeiT-Tiny's width 192 / depth 12 to width 96 / depth 6 for CPU training time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logmac.models.tv_compat import import_timm, import_torchvision

FMNIST_CLASSES = 10


class FashionResNet(nn.Module):
    """ResNet-18 layout of torchvision ``BasicBlock``s for 1x28x28 input.

    As in torchvision's ResNet the stem (here a 3x3 stride-1 conv) is followed by a max-pool, so the four stages
    run at 14, 7, 4 and 2 pixels square.
    """

    def __init__(self, width: int = 16, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = FMNIST_CLASSES):
        super().__init__()
        basic_block = import_torchvision().models.resnet.BasicBlock
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2)
        stages = []
        in_ch = width
        for i, count in enumerate(blocks):
            out_ch, stride = width * 2**i, (1 if i == 0 else 2)
            downsample = None
            if stride != 1 or in_ch != out_ch:
                downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
            stage = [basic_block(in_ch, out_ch, stride=stride, downsample=downsample)]
            stage += [basic_block(out_ch, out_ch) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet18(width: int = 16) -> nn.Module:
    """Narrow ResNet-18 for Fashion-MNIST (see :class:`FashionResNet`)."""
    return FashionResNet(width=width)


# MobileNetV2's (expansion t, channels c, repeats n, stride s) table for 28x28: after the stride-2 stem
# (28 -> 14) two more down-samplings, early (14 -> 7 -> 4) because depthwise layers at 14x14 dominate CPU
# training time, and 14 blocks instead of ImageNet's 17.
MOBILENET_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 1], [6, 64, 3, 2], [6, 96, 2, 1], [6, 160, 2, 1], [6, 320, 1, 1]]


def build_mobilenetv2(width_mult: float = 1.0) -> nn.Module:
    """torchvision ``MobileNetV2`` with its stride-2 stem taking 1 channel and a block table sized for 28x28."""
    tv = import_torchvision()
    model = tv.models.MobileNetV2(num_classes=FMNIST_CLASSES, width_mult=width_mult,
                                  inverted_residual_setting=MOBILENET_SETTING, dropout=0.1)
    stem_out = model.features[0][0].out_channels
    model.features[0] = tv.ops.misc.Conv2dNormActivation(1, stem_out, stride=2, activation_layer=nn.ReLU6)
    return model


def build_vit(embed_dim: int = 96, depth: int = 6, num_heads: int = 3, patch_size: int = 7) -> nn.Module:
    """timm ``VisionTransformer``, DeiT-Tiny style, shrunk to 1x28x28 input (7x7 patches: 16 tokens + class)."""
    vision_transformer = import_timm().models.vision_transformer.VisionTransformer
    return vision_transformer(img_size=28, patch_size=patch_size, in_chans=1, num_classes=FMNIST_CLASSES,
                              embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=4.0)


# name -> builder; the trained keyword arguments are recorded in the sidecar so loading rebuilds the same shape.
HOUSE_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18_fmnist": build_resnet18,
    "mobilenetv2_fmnist": build_mobilenetv2,
    "vit_fmnist": build_vit,
}


def weights_dir() -> Path:
    """Folder of the shipped house weights (inside the installed package)."""
    return Path(__file__).resolve().parent / "weights"


def house_sidecar(name: str, path: Path | None = None) -> dict[str, Any]:
    """The JSON sidecar of a house model: architecture, recipe, measured FP top-1; raises if not trained."""
    weights = _weights_path(name, path)
    sidecar = weights.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"house model {name!r} has no sidecar {sidecar}; train it with `logmac models train {name}`")
    return json.loads(sidecar.read_text())


def load_house(name: str, path: Path | None = None) -> nn.Module:
    """Build a house model and load its fp16 weights as fp32; ``path`` overrides the shipped file."""
    from safetensors.torch import load_file

    info = house_sidecar(name, path)
    model = HOUSE_BUILDERS[name](**info["architecture"]["kwargs"])
    weights = _weights_path(name, path)
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own types for truncated or foreign files
        raise ValueError(f"cannot read house weights {weights}: {err}; retrain with `logmac models train {name}`") from err
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model


def _weights_path(name: str, path: Path | None) -> Path:
    if name not in HOUSE_BUILDERS:
        raise KeyError(f"{name!r} is not a house model; house models are {sorted(HOUSE_BUILDERS)}")
    weights = Path(path) if path is not None else weights_dir() / f"{name}.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"house weights for {name!r} not found at {weights}; "
                                f"train them with `logmac models train {name}` (about 15 minutes on 2 cores)")
    return weights
