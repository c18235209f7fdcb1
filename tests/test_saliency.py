"""Saliency sources: the OpenCV methods against direct OpenCV calls, and gradient saliency
(no parameter gradients, BatchNorm statistics untouched, mode restored)."""

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from fixtures_data import smooth_images, tiny_net
from saliencymixplus.checkpoint_file import load_checkpoint_model
from saliencymixplus.saliency import METHODS, compute_saliency, gradient_saliency


@pytest.fixture(scope="module")
def images():
    return smooth_images(np.random.default_rng(0), 6, 32, 40)


@pytest.mark.parametrize("method", ["fine_grained", "spectral_residual"])
def test_opencv_methods_equal_direct_calls(images, method):
    out = compute_saliency(images, method)
    assert out.shape == (6, 32, 40) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    make = {"fine_grained": cv2.saliency.StaticSaliencyFineGrained_create,
            "spectral_residual": cv2.saliency.StaticSaliencySpectralResidual_create}[method]
    for i in range(len(images)):
        ok, want = make().computeSaliency(cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        assert ok
        np.testing.assert_allclose(out[i], np.clip(want, 0, 1), atol=1e-6)
    assert out.reshape(6, -1).std(1).min() > 0.01  # not flat
    one = compute_saliency(images[0], method)  # a single HWC image
    np.testing.assert_array_equal(one, out[:1])


def test_compute_saliency_bad_inputs(images):
    assert METHODS == ("fine_grained", "spectral_residual", "gradient")
    with pytest.raises(ValueError, match="gradient_saliency"):
        compute_saliency(images, "gradient")
    with pytest.raises(ValueError, match="method must be one of"):
        compute_saliency(images, "itti")
    with pytest.raises(ValueError, match=r"np.uint8\[N, H, W, 3\]"):
        compute_saliency(images.astype(np.float32), "fine_grained")
    with pytest.raises(ValueError, match=r"np.uint8\[N, H, W, 3\]"):
        compute_saliency(images[..., 0], "fine_grained")


def test_gradient_saliency_leaves_the_model_alone():
    model = tiny_net().train()
    bn = model[1]
    mean, var, nbt = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    x = torch.randn(7, 3, 12, 10)
    y = torch.randint(0, 5, (7,))
    s = gradient_saliency(model, x, y)
    assert s.shape == (7, 12, 10) and s.dtype == torch.float32
    torch.testing.assert_close(s.flatten(1).amax(1), torch.ones(7))
    assert s.min() >= 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, nbt)
    assert model.training  # restored
    model.eval()
    gradient_saliency(model, x, y)
    assert not model.training
    assert not x.requires_grad and x.grad is None


def test_gradient_saliency_matches_a_direct_computation():
    model = tiny_net().eval()
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    s = gradient_saliency(model, x, y)
    for i in range(4):
        xi = x[i:i + 1].clone().requires_grad_(True)
        nn.functional.cross_entropy(model(xi), y[i:i + 1]).backward()
        g = xi.grad[0].abs().sum(0)
        torch.testing.assert_close(s[i], g / g.max())
    torch.testing.assert_close(gradient_saliency(model, x, y, batch_size=3), s)  # batching does not matter
    with torch.no_grad():  # works inside no_grad too (e.g. an eval loop)
        torch.testing.assert_close(gradient_saliency(model, x, y), s)


def test_gradient_saliency_bad_inputs():
    model = tiny_net()
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        gradient_saliency(model, torch.randn(3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="float"):
        gradient_saliency(model, torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be a Tensor\[2\]"):
        gradient_saliency(model, torch.randn(2, 3, 8, 8), torch.zeros(3, dtype=torch.long))


def test_load_checkpoint_model(tmp_path, fake_models):
    net = tiny_net(100)
    with torch.no_grad():
        net[5].weight.add_(1.0)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"_orig_mod." + k: v for k, v in net.state_dict().items()},
                "config": {"model": "tiny", "dataset": "cifar100", "num_classes": 100}}, path)
    model, cfg = load_checkpoint_model(path, "cpu")
    assert fake_models == [("tiny", 100, 32)] and cfg["image_size"] == 32 and not model.training
    torch.testing.assert_close(model[5].weight, net[5].weight)
    torch.save({"model": net.state_dict()}, path)
    with pytest.raises(ValueError, match="'model' and 'config'"):
        load_checkpoint_model(path)
    torch.save({"model": net.state_dict(), "config": {"model": "tiny"}}, path)
    with pytest.raises(ValueError, match="config lacks 'dataset'"):
        load_checkpoint_model(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint_model(tmp_path / "nope.pt")
    torch.save({"model": {"x": torch.zeros(1)}, "config": {"model": "tiny", "dataset": "demo", "num_classes": 10}},
               path)
    with pytest.raises(ValueError, match=r"weights do not fit the model its config names \('tiny', 10 classes\)"):
        load_checkpoint_model(path)
