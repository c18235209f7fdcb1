"""Joint transforms: shapes, ranges, and alignment of the saliency map with its image under
the same random flip / resize / random-resized-crop.

The map is cut and resized once from the composed geometry; it is checked against the two-step
path (resize the map to the image's size, then run the v2 steps on both), against the exact
coordinates that torchvision's own random draws give (a coordinate ramp as the map), and
against a float64 bilinear sampling of the stored map written out by hand.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from saliencymixplus.datasets import SPECS
from saliencymixplus.transforms import (AREA_ABOVE, Geometry, JointTransform, Normalize, eval_transform,
                                        random_flip_batch, resample_saliency, train_transform)

MEAN_STD = {name: spec.mean_std for name, spec in SPECS.items()}


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


def _as_unit(s):
    """A transformed map as float in [0, 1] (uint8 maps come back as 0..255)."""
    return s.float() / 255 if s.dtype == torch.uint8 else s


def _two_step(tf, image, saliency):
    """The reference path: the map is resized to the image's size
    (bilinear, antialiased), then the v2 steps run on image and map in one call (one draw).
    Returns ``(uint8 image [3, H, W], float map [H, W] in [0, 1])``."""
    s = torch.as_tensor(np.asarray(saliency)).float()
    s = (s / 255 if s.max() > 1 else s)[None]
    h, w = image.shape[:2]
    if tuple(s.shape[-2:]) != (h, w):
        s = TF.resize(s, [h, w], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    img, s = v2.Compose(tf.steps)(img, tv_tensors.Image(s))
    return img.as_subclass(torch.Tensor), s.as_subclass(torch.Tensor)[0].clamp(0, 1)


def _drawn_view(name, train, seed):
    """``(box, flip)`` the Pet pipeline shows after ``torch.manual_seed(seed)``, from torchvision's
    own parameter draws (not from the code under test): box in fractions of the raw image."""
    if not train:
        return (0.0, 0.0, 1.0, 1.0), False
    torch.manual_seed(seed)
    frame = tv_tensors.Image(torch.zeros(3, 256, 256, dtype=torch.uint8))
    p = v2.RandomResizedCrop(224).make_params([frame])
    flip = bool(torch.rand(1) < 0.5)
    t, l, h, w = p["top"], p["left"], p["height"], p["width"]
    return (t / 256, l / 256, (t + h) / 256, (l + w) / 256), flip


def _smooth(rng, h, w, features=8):
    """``uint8[h, w]``: a smooth random map (``features`` bumps across), like a blurred saliency map."""
    z = torch.from_numpy(rng.random((1, 1, features, features)).astype(np.float32))
    z = F.interpolate(z, size=(h, w), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1)
    return (z * 255).round().to(torch.uint8).numpy()


def _bilinear_by_hand(m, box, size, flip):
    """float64 bilinear sampling of ``m`` at the output pixel centres (the documented contract of
    resample_saliency): output pixel ``(y, x)`` shows raw-image fraction
    ``top + (y + 0.5) / H * (bottom - top)``; samples repeat the edge pixels of the box when its
    edges are whole map pixels (crop, then resize), else of the map."""
    m = np.asarray(m, np.float64)
    h, w = m.shape
    H, W = size
    t, l, b, r = box[0] * h, box[1] * w, box[2] * h, box[3] * w
    whole = all(abs(v - round(v)) < 1e-9 for v in (t, l, b, r))
    sy = t + (np.arange(H) + 0.5) / H * (b - t) - 0.5  # sample position, in pixel indices
    sx = l + (np.arange(W) + 0.5) / W * (r - l) - 0.5
    if flip:
        sx = sx[::-1]
    sy = np.clip(sy, round(t) if whole else 0, (round(b) if whole else h) - 1)
    sx = np.clip(sx, round(l) if whole else 0, (round(r) if whole else w) - 1)
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (sy - y0)[:, None], (sx - x0)[None, :]
    return ((1 - fy) * ((1 - fx) * m[y0][:, x0] + fx * m[y0][:, x1])
            + fy * ((1 - fx) * m[y1][:, x0] + fx * m[y1][:, x1]))


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
        _, s8 = tf(img, (sal * 255).round().astype(np.uint8))  # the cache's storage stays uint8
        assert s8.shape == (out, out) and s8.dtype == torch.uint8
        _, s16 = tf(img, torch.from_numpy(sal).half())  # float16 caches: float32 out
        assert s16.dtype == torch.float32 and 0 <= s16.min() and s16.max() <= 1
        x2, none = tf(img, None)
        assert none is None and x2.shape == x.shape
        x3, _ = tf(torch.from_numpy(img), None)  # HWC tensor accepted too
        assert x3.shape == x.shape


def test_eval_transform_is_deterministic_and_normalises():
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x, _ = eval_transform("cifar100")(img)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in MEAN_STD["cifar100"])
    want = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, want)
    batch = Normalize(*MEAN_STD["cifar100"])(torch.from_numpy(img).permute(2, 0, 1)[None])
    torch.testing.assert_close(batch[0], want)


@pytest.mark.parametrize("name,train", [("oxford_pet", True), ("oxford_pet", False), ("cifar100", True)])
def test_image_is_the_v2_pipelines_and_draws_are_unchanged(name, train):
    """The image goes through the same v2 ops with the same random draws as before, pixel for pixel,
    whether or not a map comes along."""
    tf = (train_transform if train else eval_transform)(name)
    rng = np.random.default_rng(3)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in MEAN_STD[name])
    for seed in range(4):
        size = (32, 32) if name == "cifar100" else (int(rng.integers(50, 400)), int(rng.integers(50, 400)))
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        sal = _smooth(rng, 37, 53)
        torch.manual_seed(seed)
        want, _ = _two_step(tf, img, sal)
        torch.manual_seed(seed)
        x, _ = tf(img, sal)
        torch.testing.assert_close(x, (want.float() / 255 - mean) / std, atol=1e-5, rtol=0)
        torch.manual_seed(seed)
        x_alone, _ = tf(img, None)
        torch.testing.assert_close(x_alone, x, atol=0, rtol=0)


@pytest.mark.parametrize("train", [True, False])
def test_composed_map_matches_the_two_step_path(train):
    """Random crops and flips, odd image sizes, odd stored resolutions (coarser and finer than the
    image and than the output): the composed map equals the two-step path's within 0.06 (max) and
    0.008 (mean) on smooth maps. Why not closer: the two-step path resamples the map three times
    (to the image's size, to 256x256, to 224x224), which blurs it by about one image pixel and
    misplaces it by up to 0.4 output pixels (see the ramp test); on maps whose bumps span 1/8
    of the image that moves values by a few hundredths, never by the 0.2+ that a misplaced or
    unflipped map gives."""
    tf = (train_transform if train else eval_transform)("oxford_pet")
    rng = np.random.default_rng(7)
    worst = 0.0
    for seed in range(12):
        h, w = int(rng.integers(41, 500)), int(rng.integers(41, 500))
        hs, ws = int(rng.integers(17, 620)), int(rng.integers(17, 620))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sal = _smooth(rng, hs, ws)
        torch.manual_seed(seed)
        _, want = _two_step(tf, img, sal)
        torch.manual_seed(seed)
        _, got = tf(img, sal)
        d = (_as_unit(got) - want).abs()
        assert d.max() <= 0.06 and d.mean() <= 0.008, (seed, (h, w), (hs, ws), d.max().item(), d.mean().item())
        worst = max(worst, d.max().item())
    assert worst > 0  # it is not the same computation


@pytest.mark.parametrize("train", [True, False])
def test_composed_map_lands_on_the_drawn_coordinates(train):
    """A map whose value is its own coordinate (a ramp): after the transform each output pixel
    must hold the raw-image coordinate of its centre, as torchvision's draw places it, to 1/100
    of an output pixel (flip included; 8/100 where a fine map is area-averaged first). The two-step
    path agrees to within half an output pixel: its antialiased resizes are not exact on a ramp."""
    tf = (train_transform if train else eval_transform)("oxford_pet")
    rng = np.random.default_rng(11)
    for seed in range(10):
        h, w = int(rng.integers(60, 500)), int(rng.integers(60, 500))
        img = np.zeros((h, w, 3), np.uint8)
        box, flip = _drawn_view("oxford_pet", train, seed)
        for axis in (0, 1):
            n = int(rng.integers(17, 900))  # stored resolution along the ramp (coarse, fine, > 1.5x output)
            hs, ws = (n, int(rng.integers(17, 300))) if axis == 0 else (int(rng.integers(17, 300)), n)
            ramp = (np.arange(n) + 0.5) / n  # pixel centre, in fractions of the image
            sal = np.broadcast_to(ramp[:, None] if axis == 0 else ramp[None, :], (hs, ws)).astype(np.float32)
            torch.manual_seed(seed)
            _, got = tf(img, sal)
            got = (got[:, 0] if axis == 0 else got[0]).double().numpy()
            lo, hi = box[axis], box[axis + 2]
            centres = lo + (np.arange(224) + 0.5) / 224 * (hi - lo)
            if axis == 1 and flip:
                centres = centres[::-1]
            pitch = (hi - lo) / 224
            # the outermost half stored pixel repeats its edge value (the map is clamped there)
            z = math.ceil(0.5 / n / pitch) + 1
            err = np.abs(got - centres)[z:-z] / pitch
            # bilinear: exact; area-averaged first (fine maps): OpenCV's area filter treats pixels as
            # little squares, which moves a sampled ramp by up to 1/18 pixel
            tol = 0.01 if (hi - lo) * n / 224 <= AREA_ABOVE else 0.08
            assert err.max() < tol, (seed, axis, n, err.max())
            torch.manual_seed(seed)
            _, old = _two_step(tf, img, sal)
            old = (old[:, 0] if axis == 0 else old[0]).double().numpy()
            assert (np.abs(old - got)[z + 6:-z - 6] / pitch).max() < 0.5, (seed, axis)


@pytest.mark.parametrize("res", [(256, 256), (173, 211), (200, 270)])
def test_composed_map_is_bilinear_sampling_of_the_stored_map(res):
    """Noise maps (the hardest case for a resampler) at the cache default 256x256 (whole-pixel
    crops) and at odd resolutions (fractional boxes): the map equals a float64 bilinear sample at
    the output pixel centres, written out by hand, to 1 level of 255 (uint8 rounding plus
    OpenCV's fixed-point weights)."""
    tf = train_transform("oxford_pet")
    small = JointTransform([v2.Resize((64, 64)), v2.RandomResizedCrop(24), v2.RandomHorizontalFlip()],
                           *MEAN_STD["oxford_pet"])
    rng = np.random.default_rng(5)
    checked = 0
    for seed in range(12):
        img = rng.integers(0, 256, (int(rng.integers(90, 400)), int(rng.integers(90, 400)), 3), dtype=np.uint8)
        sal = rng.integers(0, 256, res, dtype=np.uint8)
        # the Pet pipeline (box from torchvision's own draw), and a small output whose crop is
        # drawn in a 64x64 frame, whose pixels are not the map's (box from the geometry)
        torch.manual_seed(seed)
        box, flip = _drawn_view("oxford_pet", True, seed)
        for t, view, size in ((tf, (box, flip), (224, 224)), (small, None, (24, 24))):
            torch.manual_seed(seed)
            _, got = t(img, sal)
            if view is None:
                torch.manual_seed(seed)
                geo = small.apply_image(img)[1]
                view = (geo.box, geo.flip)
            assert got.dtype == torch.uint8 and got.shape == size
            if max((view[0][2] - view[0][0]) * res[0] / size[0],
                   (view[0][3] - view[0][1]) * res[1] / size[1]) > AREA_ABOVE:
                continue  # area-averaged first (next test)
            want = _bilinear_by_hand(sal, view[0], size, view[1])
            assert np.abs(got.double().numpy() - want).max() <= 1.0, (seed, size)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("steps", [
    [v2.RandomHorizontalFlip(p=1.0), v2.RandomResizedCrop(48)],  # a crop of a mirrored frame
    [v2.Resize(100), v2.RandomResizedCrop((40, 56), scale=(0.3, 1.0)), v2.RandomHorizontalFlip()],
    [v2.RandomResizedCrop(64), v2.Resize((50, 70)), v2.RandomHorizontalFlip(p=1.0)],
], ids=["flip-then-crop", "short-side-resize", "resize-after-crop"])
def test_any_order_of_steps_composes(steps):
    """Other pipelines than the published ones: a coordinate ramp map ends where the
    two-step path puts it (its interior, to half an output pixel) and the image is unchanged."""
    tf = JointTransform(steps, *MEAN_STD["oxford_pet"])
    rng = np.random.default_rng(13)
    for seed in range(6):
        h, w = int(rng.integers(80, 300)), int(rng.integers(80, 300))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for axis in (0, 1):
            n = int(rng.integers(30, 200))
            ramp = ((np.arange(n) + 0.5) / n).astype(np.float32)
            sal = np.broadcast_to(ramp[:, None] if axis == 0 else ramp[None, :], (n, n)).copy()
            torch.manual_seed(seed)
            old_img, old = _two_step(tf, img, sal)
            torch.manual_seed(seed)
            new_img, geo = tf.apply_image(img)
            assert torch.equal(new_img, old_img)
            got = resample_saliency(sal, geo)
            pitch = (geo.box[axis + 2] - geo.box[axis]) / geo.size[axis]
            z = 4 + math.ceil(1.0 / n / pitch)
            d = (got - old).abs()[z:-z, z:-z] / pitch
            assert d.max() < 0.5, (seed, axis, d.max().item(), geo)


def test_fine_maps_are_area_averaged_not_aliased():
    """A stored map 4x finer than the output, a one-pixel checkerboard: every output pixel
    averages over its footprint (0.5), where sampling every fourth pixel would give 0 or 1."""
    sal = np.indices((896, 896)).sum(0) % 2 * 255
    tf = eval_transform("oxford_pet")
    _, s = tf(np.zeros((300, 400, 3), np.uint8), sal.astype(np.uint8))
    assert s.shape == (224, 224) and (s.float() / 255 - 0.5).abs().max() <= 1 / 255
    geo = Geometry((0.1, 0.2, 0.9, 0.7), (224, 224), True)  # fractional box, > 1.5 map pixels per output pixel
    s = resample_saliency(sal.astype(np.float32) / 255, geo)
    assert (s - 0.5)[1:-1, 1:-1].abs().max() <= 0.02


@pytest.mark.parametrize("name,size,stored", [("cifar100", (32, 32), None), ("oxford_pet", (120, 97), None),
                                              ("oxford_pet", (375, 500), (256, 256))])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_marked_pixel_stays_aligned(name, size, stored, dtype):
    """A saliency map that marks one pixel lands on the output pixel where the image's marked
    pixel went, and the two blobs have the same centre of mass (to half an output pixel: the
    image's uint8 rounding after each of its two resizes trims its blob's tails unevenly). With
    a 256x256 map of a 375x500 image, the mark is a Gaussian of one map pixel in both frames."""
    tf = train_transform(name)
    rng = np.random.default_rng(2)
    flips_seen, kept = set(), 0
    for trial in range(24):
        y, x = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        img, sal = _marked(*size, y, x)
        if stored is not None:  # the same mark, a Gaussian of one map pixel, in both frames
            sy, sx = size[0] / stored[0], size[1] / stored[1]  # image pixels per map pixel
            yy, xx = np.mgrid[0:stored[0], 0:stored[1]]
            cy, cx = (y + 0.5) / sy - 0.5, (x + 0.5) / sx - 0.5  # the image pixel's centre, in the map
            sal = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0).astype(np.float32)
            ys, xs = np.mgrid[0:size[0], 0:size[1]]
            img = np.zeros((*size, 3), np.uint8)
            img[..., 0] = np.round(255 * np.exp(-(((ys - y) / sy) ** 2 + ((xs - x) / sx) ** 2) / 2.0))
        if dtype == "uint8":
            sal = np.round(sal * 255).astype(np.uint8)
        torch.manual_seed(trial)
        xt, st = tf(img, sal)
        st = _as_unit(st)
        view = _raw_view(xt, name)
        view = view - view.min()
        if st.max() < 0.2:  # the crop missed the mark: then the image lost it too
            assert view.max() < 0.2
            continue
        kept += 1
        py, px = np.unravel_index(int(st.argmax()), st.shape)
        vy, vx = np.unravel_index(int(view.argmax()), view.shape)
        # the image's brightest pixel is the map's, or a near tie next to it (the image is resampled
        # twice, the map once, so a mark between two output pixels may tip either way)
        assert st[vy, vx] >= 0.5 * st.max() and abs(vy - py) <= 1 and abs(vx - px) <= 1, (trial, (py, px), (vy, vx))
        if 1 < py < st.shape[0] - 2 and 1 < px < st.shape[1] - 2:  # mark inside: same centre of mass
            centres = []
            for a in (st.numpy().copy(), view.numpy().copy()):
                a[a < 0.05 * a.max()] = 0
                centres.append(np.array([(g * a).sum() / a.sum() for g in np.indices(a.shape)]))
            assert np.abs(centres[0] - centres[1]).max() <= 0.5, (trial, centres)
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


def test_resample_returns_a_new_array():
    sal = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    keep = sal.copy()
    for geo in (Geometry((0, 0, 1, 1), (32, 32), False), Geometry((0, 0, 1, 1), (32, 32), True),
                Geometry((0, 0, 0.5, 0.5), (16, 16), False)):
        s = resample_saliency(sal, geo)
        s.fill_(7)
        np.testing.assert_array_equal(sal, keep)
    s = resample_saliency(sal, Geometry((0, 0, 1, 1), (32, 32), True))
    np.testing.assert_array_equal(s.numpy(), sal[:, ::-1])


def test_bad_inputs():
    tf = eval_transform("cifar100")
    with pytest.raises(ValueError, match="uint8"):
        tf(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8\[H, W, 3\]"):
        tf(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"saliency must be \[h, w\]"):
        tf(np.zeros((32, 32, 3), np.uint8), np.zeros((1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="name must be one of"):
        train_transform("no_such_set")
    with pytest.raises(ValueError, match=r"saliency must be uint8 \(0..255\) or float in \[0, 1\], got int64"):
        tf(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.int64))
    with pytest.raises(TypeError, match=r"geometric steps must be among .*RandomResizedCrop.*, got RandomRotation"):
        JointTransform([v2.RandomRotation(10)], *MEAN_STD["cifar100"])


def test_random_flip_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.arange(6 * 3 * 4 * 5, dtype=torch.float32).view(6, 3, 4, 5)
    sal = images[:, 0] * 10
    fi, fs = random_flip_batch(images, sal, g)
    # Each output is its input or its mirror (every row of arange is asymmetric, so the two differ);
    # which one is read from the output, so the flips must be checked to happen at all: with this
    # seed, both kinds occur (a no-op or an always-flip fails here).
    flipped = torch.tensor([bool(torch.equal(fi[i], images[i].flip(-1))) for i in range(6)])
    kept = torch.tensor([bool(torch.equal(fi[i], images[i])) for i in range(6)])
    assert bool((flipped ^ kept).all()), (flipped, kept)  # exactly one of the two, per image
    assert 0 < int(flipped.sum()) < 6, flipped
    for i in range(6):
        want = sal[i].flip(-1) if flipped[i] else sal[i]
        torch.testing.assert_close(fs[i], want)  # saliency follows its image
    fi2, _, flips = random_flip_batch(images, sal, torch.Generator().manual_seed(0), return_flips=True)
    torch.testing.assert_close(fi, fi2)  # reproducible from the generator
    assert flips.dtype == torch.bool and torch.equal(flips, flipped)  # the flips it reports are the ones it made
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


def test_every_data_set_has_one_recipe_and_one_normalisation():
    assert [SPECS[n].recipe.batchable for n in ("cifar100", "demo", "demo_hard", "oxford_pet")] == [True] * 3 + [False]
    pet = train_transform("oxford_pet").steps
    assert [type(t) for t in pet] == [v2.Resize, v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    assert list(pet[0].size) == [256, 256] and list(pet[1].size) == [224, 224]
    assert [type(t) for t in train_transform("demo").steps] == [v2.RandomHorizontalFlip]
    assert eval_transform("cifar100").steps == [] and list(eval_transform("oxford_pet").steps[0].size) == [224, 224]


def test_normalize_by_hand():
    """(x / 255 - mean) / std per channel, written out for one pixel; float input in [0, 1]."""
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 0.125))
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    want = torch.tensor([(0 / 255 - 0.5) / 0.5, (51 / 255 - 0.25) / 0.25, (1.0 - 0.0) / 0.125]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), want)
    torch.testing.assert_close(norm(x.double() / 255, torch.float64), want.double())
    y = x.float() / 255
    norm(y)
    assert y.max() <= 1  # the input is not changed in place
    with pytest.raises(ValueError, match=r"images must be Tensor\[..., 3, H, W\]"):
        norm(torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="std > 0"):
        Normalize((0, 0, 0), (1, 0, 1))
