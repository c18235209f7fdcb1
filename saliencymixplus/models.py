"""The classifiers ``train.py`` trains (:func:`build_model`): torchvision's ResNets, with the CIFAR
stem for small inputs as in the published SaliencyMix+ code, and ``resnet_tiny`` (about 78 k
parameters), which trains the demo set on a laptop CPU in seconds per epoch. Each data set's
default model is in its spec (:mod:`saliencymixplus.datasets`).
"""

from __future__ import annotations

import torch
from torch import nn
import torchvision.models as tvm

__all__ = ["MODELS", "build_model", "TinyResNet"]

_TORCHVISION = {name: getattr(tvm, name) for name in
                ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")}

#: Names accepted by :func:`build_model`.
MODELS: tuple[str, ...] = ("resnet_tiny", *_TORCHVISION)

#: Inputs at most this many pixels on a side get the CIFAR stem (:func:`build_model`).
SMALL_INPUT_MAX = 64
#: ``resnet_tiny`` keeps full resolution in its stem only up to this side (the demo's 32 px);
#: larger inputs (the hard demo set's 48 px, Pet's 224 px) get a stride-2 stem, which keeps a
#: training run of the 48 px set cheaper than one of the 32 px demo set.
TINY_FULL_RES_MAX = 32


class _Block(nn.Module):
    """Pre-activation-free basic residual block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """``resnet_tiny``: a three-stage ResNet of one basic block per stage."""

    def __init__(self, num_classes: int, width: int = 16, image_size: int = 32):
        super().__init__()
        stem_stride = 1 if image_size <= TINY_FULL_RES_MAX else 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.layers = nn.Sequential(
            _Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 3, H, W]`` -> logits ``Tensor[N, num_classes]``."""
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """A randomly initialised classifier ``name`` (:data:`MODELS`) of ``Tensor[N, 3, image_size,
    image_size]`` to ``Tensor[N, num_classes]``; for inputs up to :data:`SMALL_INPUT_MAX` px the
    torchvision ResNets get the CIFAR stem (3x3 stride-1 first conv, no max-pool)."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if name == "resnet_tiny":
        return TinyResNet(num_classes, image_size=image_size)
    if name not in _TORCHVISION:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    model = _TORCHVISION[name](weights=None, num_classes=num_classes)
    if image_size <= SMALL_INPUT_MAX:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model
