"""Tests of saliencymixplus.models.build_model."""

import pytest
import torch
from torch import nn

from saliencymixplus.models import MODELS, TinyResNet, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


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
    """A few SGD steps on one fixed batch: every parameter gets a gradient and the loss falls
    (a network that cannot fit 16 images is broken, e.g. a detached layer or a dead head)."""
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10, 32).train()
    assert isinstance(model, TinyResNet)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(15):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
            assert all(p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        final = nn.functional.cross_entropy(model.eval()(x), y).item()
    assert final < losses[0], (final, losses)  # also in eval mode (running BatchNorm statistics)
    assert build_model("resnet_tiny", 5, 96)(torch.randn(1, 3, 96, 96)).shape == (1, 5)


@pytest.mark.parametrize("args, match", [
    (("resnet9000", 10, 32), "unknown model 'resnet9000'; expected one of"),
    (("resnet18", 0, 32), "num_classes must be positive"),
    (("resnet18", 10, 0), "image_size must be positive"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args)
