"""Tests of saliencymixplus.models.build_model."""

import pytest
import torch
from torch import nn

from saliencymixplus.models import MODELS, TinyResNet, build_model


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_with_cifar_stem(name):
    # The big networks are built and run on the meta device (shapes only, no compute).
    device = "cpu" if name in ("resnet_tiny", "resnet18") else "meta"
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(name, 7, 32).eval()
        x = torch.randn(2, 3, 32, 32)
    if name != "resnet_tiny":
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    if device == "cpu":
        assert torch.isfinite(out).all()


def test_large_inputs_keep_the_imagenet_stem():
    model = build_model("resnet18", 37, 224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.fc.out_features == 37


def test_tiny_resnet_trains_and_handles_other_sizes():
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, 32)
    assert isinstance(model, TinyResNet)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert build_model("resnet_tiny", 5, 96)(torch.randn(1, 3, 96, 96)).shape == (1, 5)


@pytest.mark.parametrize("args, match", [
    (("resnet9000", 10, 32), "unknown model 'resnet9000'; expected one of"),
    (("resnet18", 0, 32), "num_classes must be positive"),
    (("resnet18", 10, 0), "image_size must be positive"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)
