"""Joint transforms: shapes, ranges, and alignment of the saliency map with its image under
the same random flip / resize / random-resized-crop."""

import numpy as np
import pytest
import torch

from saliencymixplus.rawdata import MEAN_STD
from saliencymixplus.transforms import normalize_batch, random_flip_batch, train_transform
from saliencymixplus.transforms import test_transform as eval_transform


def _marked(h, w, y, x):
    img = np.zeros((h, w, 3), np.uint8)
    img[y, x] = 255
    sal = np.zeros((h, w), np.float32)
    sal[y, x] = 1.0
    return img, sal


def _raw_view(x, name):
    """Undo the normalisation of ``Tensor[3, H, W]`` and sum the channels -> ``[H, W]``."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in MEAN_STD[name])
    return (x * std + mean).sum(0)


@pytest.mark.parametrize("name,size,out", [("cifar100", (32, 32), 32), ("demo", (32, 32), 32),
                                           ("oxford_pet", (150, 190), 224)])
def test_shapes_and_ranges(name, size, out):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    sal = rng.random((20, 24), dtype=np.float32)  # any cache resolution
    for tf in (train_transform(name), eval_transform(name)):
        x, s = tf(img, sal)
        assert x.shape == (3, out, out) and x.dtype == torch.float32 and type(x) is torch.Tensor
        assert s.shape == (out, out) and s.dtype == torch.float32 and type(s) is torch.Tensor
        assert 0 <= s.min() and s.max() <= 1
        x2, none = tf(img, None)
        assert none is None and x2.shape == x.shape
        x3, _ = tf(torch.from_numpy(img), None)  # HWC tensor accepted too
        assert x3.shape == x.shape


def test_test_transform_is_deterministic_and_normalises():
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x, _ = eval_transform("cifar100")(img)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in MEAN_STD["cifar100"])
    want = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, want)
    batch = normalize_batch(torch.from_numpy(img).permute(2, 0, 1)[None], "cifar100")
    torch.testing.assert_close(batch[0], want)


@pytest.mark.parametrize("name,size", [("cifar100", (32, 32)), ("oxford_pet", (120, 97))])
def test_marked_pixel_stays_aligned(name, size):
    """For a saliency map that marks one pixel, after the random crop/flip/resize the map's peak
    is where the image's marked pixel went."""
    tf = train_transform(name)
    rng = np.random.default_rng(2)
    flips_seen, kept = set(), 0
    for trial in range(24):
        y, x = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        img, sal = _marked(*size, y, x)
        torch.manual_seed(trial)
        xt, st = tf(img, sal)
        view = _raw_view(xt, name)
        if st.max() == 0:  # the crop missed the pixel: then the image lost it too
            assert view.max() < 0.05
            continue
        kept += 1
        py, px = np.unravel_index(int(st.argmax()), st.shape)
        assert view[py, px] >= view.max() - 3 / 255, (trial, (py, px), np.unravel_index(int(view.argmax()), view.shape))
        # and the two maps agree everywhere, up to the image's uint8 rounding
        np.testing.assert_allclose(view / view.max(), st / st.max(), atol=0.05)
        if name == "cifar100":
            assert py == y and px in (x, size[1] - 1 - x)
            flips_seen.add(px != x or x == size[1] - 1 - x)
    assert kept >= 12
    if name == "cifar100":
        assert flips_seen == {True, False}


def test_low_resolution_saliency_is_resized_then_aligned():
    """A 16x16 cache map of a 32x32 image: the marked quarter stays on the image's marked quarter."""
    img = np.zeros((32, 32, 3), np.uint8)
    img[:16, :16] = 200  # top-left quarter
    sal = np.zeros((16, 16), np.float32)
    sal[:8, :8] = 1.0
    tf = train_transform("cifar100")
    for seed in range(8):
        torch.manual_seed(seed)
        x, s = tf(img, sal)
        bright = _raw_view(x, "cifar100") > 1.0
        assert ((s > 0.5) == bright).float().mean() > 0.95


def test_bad_inputs():
    tf = eval_transform("cifar100")
    with pytest.raises(ValueError, match="uint8"):
        tf(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8\[H, W, 3\]"):
        tf(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"saliency must be \[h, w\]"):
        tf(np.zeros((32, 32, 3), np.uint8), np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="name must be one of"):
        train_transform("imagenet")


def test_random_flip_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(6 * 3 * 4 * 5, dtype=torch.float32).view(6, 3, 4, 5)
    sal = images[:, 0] * 10
    fi, fs = random_flip_batch(images, sal, g)
    flipped = (fi != images).flatten(1).any(1)
    for i in range(6):
        want = images[i].flip(-1) if flipped[i] else images[i]
        torch.testing.assert_close(fi[i], want)
        torch.testing.assert_close(fs[i], fi[i, 0] * 10)  # saliency follows its image
    fi2, _ = random_flip_batch(images, sal, torch.Generator().manual_seed(0))
    torch.testing.assert_close(fi, fi2)  # reproducible from the generator
    many = random_flip_batch(torch.rand(400, 1, 2, 2), None, g)[0]
    assert many.shape == (400, 1, 2, 2)
    u8 = torch.randint(0, 255, (8, 3, 4, 4), dtype=torch.uint8)
    assert random_flip_batch(u8, None)[0].dtype == torch.uint8
    with pytest.raises(ValueError, match="saliency must be"):
        random_flip_batch(images, sal[:, :3])
    with pytest.raises(ValueError, match="images must be"):
        random_flip_batch(images[0])


def test_random_flip_batch_flips_about_half():
    g = torch.Generator().manual_seed(3)
    images = torch.arange(2).float().view(1, 1, 1, 2).expand(1000, 1, 1, 2)
    out, _ = random_flip_batch(images, None, g)
    frac = (out[:, 0, 0, 0] == 1).float().mean().item()
    assert 0.4 < frac < 0.6
