"""The Saliency tv_tensor: a map stays aligned with its image through torchvision v2 pipelines.

Checked these ways: the map against the transformed image's own channel when the image *is* the
map (three copies, bilinear both, so every step must move the map exactly as it moves the
image), or the map enlarged to the image's size when it is stored coarser; a coordinate ramp against the coordinates worked out by hand from the drawn crop and
flip, also for maps stored at another resolution than the image's; hand-computed bilinear and
nearest values; and against the project's composed path (``transforms.resample_saliency``) on
the same random draws.
"""

import copy
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from saliencymixplus.transforms import JointTransform, resample_saliency, train_transform
from saliencymixplus.tv_tensors import Saliency

ROOT = Path(__file__).resolve().parent.parent
BILINEAR, NEAREST = v2.InterpolationMode.BILINEAR, v2.InterpolationMode.NEAREST


def _smooth_map(seed: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """``Tensor[h, w]`` of ``dtype``: a random 5x7 grid enlarged bilinearly, in [0, 1] (``0..255`` for uint8)."""
    g = torch.Generator().manual_seed(seed)
    m = F.resize_image(torch.rand(1, 5, 7, generator=g), [h, w], interpolation=BILINEAR)[0]
    m = (m - m.min()) / (m.max() - m.min())
    return (m * 255).round().to(torch.uint8) if dtype == torch.uint8 else m.to(dtype)


PIPELINES = {
    "random_resized_crop": [v2.RandomResizedCrop((24, 32))],
    "pet_recipe": [v2.Resize((64, 64)), v2.RandomResizedCrop(48), v2.RandomHorizontalFlip()],
    "resize_shorter_side": [v2.Resize(30, max_size=50)],
    "flips": [v2.RandomVerticalFlip(1.0), v2.RandomHorizontalFlip(1.0)],
    "random_crop_padded": [v2.RandomCrop(40, padding=6)],
    "center_crop_larger_than_image": [v2.CenterCrop((70, 50))],
    "affine": [v2.RandomAffine(25, (0.1, 0.2), (0.7, 1.3), (5, 10), interpolation=BILINEAR)],
    "rotation_expand": [v2.RandomRotation(40, interpolation=BILINEAR, expand=True)],
    "perspective": [v2.RandomPerspective(0.5, p=1.0)],
    "elastic": [v2.ElasticTransform(alpha=20.0)],
    "zoom_out_then_crop": [v2.RandomZoomOut(p=1.0), v2.RandomResizedCrop(40)],
    "reflect_pad_then_crop": [v2.Pad(5, padding_mode="reflect"), v2.RandomCrop(36)],
    "long_chain": [v2.RandomZoomOut(p=0.5), v2.RandomResizedCrop(40, scale=(0.3, 1.0)), v2.RandomVerticalFlip(),
                   v2.RandomAffine(15, interpolation=BILINEAR), v2.RandomHorizontalFlip(), v2.Resize(33)],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.float64])
@pytest.mark.parametrize("name", PIPELINES)
def test_map_moves_exactly_as_the_images_channel(name, dtype):
    """The image is the map three times over: after any pipeline the Saliency equals the
    image's channel (both bilinear, both filled with 0), in the map's dtype."""
    pipeline = v2.Compose(PIPELINES[name])
    for seed in range(4):
        m = _smooth_map(seed, 48, 64, dtype)
        torch.manual_seed(seed)
        img, s = pipeline(m.expand(3, -1, -1).clone(), Saliency(m))
        assert type(s) is Saliency and s.dtype == dtype and s.canvas_size == tuple(s.shape) == img.shape[-2:]
        assert torch.equal(s.as_subclass(torch.Tensor), img[0]), (name, seed)


@pytest.mark.parametrize("name", PIPELINES)
def test_map_stored_coarser_than_its_image_moves_with_it(name):
    """A 24x32 map of a 48x64 image; the image is the map enlarged bilinearly. Steps without a
    direct path enlarge the map the same way first: equal to the image's channel. A resize or
    random-resized crop samples the stored map directly, where the image went through two
    resamplings: within 0.06 (the maps span 0..1 over about 12 pixels)."""
    steps = PIPELINES[name]
    atol = 0.06 if any(isinstance(t, (v2.Resize, v2.RandomResizedCrop)) for t in steps) else 0.0
    for seed in range(4):
        m = _smooth_map(seed, 24, 32)
        image = F.resize_image(m[None], [48, 64], interpolation=BILINEAR, antialias=True).expand(3, -1, -1).clone()
        torch.manual_seed(seed)
        img, s = v2.Compose(steps)(image, Saliency(m, canvas_size=(48, 64)))
        assert s.canvas_size == tuple(s.shape) == img.shape[-2:]
        torch.testing.assert_close(s.as_subclass(torch.Tensor), img[0], rtol=0, atol=atol)


def test_five_and_ten_crop_give_five_and_ten_maps():
    m = _smooth_map(0, 40, 50)
    for t, n in ((v2.FiveCrop((20, 24)), 5), (v2.TenCrop(18, vertical_flip=True), 10)):
        crops, maps = t(m.expand(3, -1, -1).clone(), Saliency(m))
        assert len(maps) == n and all(type(s) is Saliency for s in maps)
        for c, s in zip(crops, maps):
            assert torch.equal(s.as_subclass(torch.Tensor), c[0]) and s.canvas_size == tuple(s.shape)


def test_bilinear_whatever_the_step_asks_unlike_mask():
    """A 2x2 map ``[[0, 1], [0, 1]]`` widened to 2x4: bilinear with pixel centres at ``(x + 0.5) / 2 - 0.5``
    = -0.25, 0.25, 0.75, 1.25 gives 0, 0.25, 0.75, 1 (clamped at the edges); nearest gives 0, 0, 1, 1."""
    m = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    img, s, mask = v2.Resize((2, 4), interpolation=NEAREST)(m.expand(3, -1, -1).clone(), Saliency(m),
                                                             tv_tensors.Mask(m))
    assert torch.equal(img[0], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert torch.equal(mask, torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert torch.equal(s.as_subclass(torch.Tensor), torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 2))
    s8 = v2.Resize((2, 4), interpolation=NEAREST)(Saliency((m * 255).to(torch.uint8)))
    assert s8.dtype == torch.uint8 and s8.tolist() == [[0, 64, 191, 255]] * 2  # 63.75 and 191.25, rounded
    image = _smooth_map(0, 40, 50).expand(3, -1, -1).clone()
    for step in (v2.RandomAffine, v2.RandomRotation):  # their default interpolation is nearest
        torch.manual_seed(0)
        img_nearest, s = step(30)(image, Saliency(image[0]))
        torch.manual_seed(0)
        img_bilinear = step(30, interpolation=BILINEAR)(image)
        assert torch.equal(s.as_subclass(torch.Tensor), img_bilinear[0]) and not torch.equal(img_nearest, img_bilinear)


def test_uint8_map_is_the_float_map_rounded():
    """The same pipelines on the map as uint8 and as float / 255: within one level per resampling
    step (each step rounds back to uint8)."""
    for name, steps in (("pet_recipe", 2), ("affine", 1), ("perspective", 1), ("long_chain", 3)):
        pipeline = v2.Compose(PIPELINES[name])
        m8 = _smooth_map(3, 48, 64, torch.uint8)
        outs = []
        for m in (m8, m8.float() / 255):
            torch.manual_seed(7)
            outs.append(pipeline(m.expand(3, -1, -1).clone(), Saliency(m, canvas_size=(48, 64)))[1])
        assert outs[0].dtype == torch.uint8 and outs[1].dtype == torch.float32
        assert (outs[0].float() - outs[1] * 255).abs().max() <= steps, name


def _drawn_crop_and_flip(seed, canvas, scale):
    """The (top, left, height, width) and flip that ``RandomResizedCrop(scale=scale)`` then
    ``RandomHorizontalFlip()`` draw after ``torch.manual_seed(seed)``: same draws, same order."""
    torch.manual_seed(seed)
    top, left, height, width = v2.RandomResizedCrop.get_params(torch.empty(1, *canvas), scale, [3 / 4, 4 / 3])
    return top, left, height, width, bool(torch.rand(1) < 0.5)


@pytest.mark.parametrize("stored", [(75, 100), (23, 31), (160, 210)], ids=["at_canvas", "coarser", "finer"])
@pytest.mark.parametrize("axis", [0, 1])
def test_ramp_lands_on_the_drawn_coordinates(stored, axis):
    """A map whose value is the image fraction of its pixel centre, ``(r + 0.5) / n``, stored at
    ``stored`` for a 75x100 image: after RandomResizedCrop(40x48) and a flip, output pixel ``y``
    holds ``(top + (y + 0.5) * height / 40) / 75`` (likewise columns, mirrored when flipped),
    wherever its footprint stays one stored pixel clear of the crop's edges (bilinear sampling,
    and roi_align's average of it, is exact on a linear ramp away from edge-clamped pixels;
    torch's antialiased resize, which the map at the image's resolution goes through, truncates
    its filter to whole pixels: within 0.1 stored pixel)."""
    canvas, out, n = (75, 100), (40, 48), stored[axis]
    ramp = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    m = ramp[:, None].expand(stored) if axis == 0 else ramp[None, :].expand(stored)
    pipeline = v2.Compose([v2.RandomResizedCrop(out, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()])
    for seed in range(6):
        top, left, height, width, flip = _drawn_crop_and_flip(seed, canvas, (0.2, 1.0))
        torch.manual_seed(seed)
        _, s = pipeline(torch.zeros(3, *canvas, dtype=torch.uint8), Saliency(m.clone(), canvas_size=canvas))
        assert s.shape == out and s.dtype == torch.float64
        start, length, size = (top, height, canvas[0]) if axis == 0 else (left, width, canvas[1])
        k = torch.arange(out[axis], dtype=torch.float64)
        want = (start + (k + 0.5) * length / out[axis]) / size
        if axis == 1 and flip:
            want = want.flip(0)
        got = s[:, 0] if axis == 0 else s[0, :]
        footprint = length / size * n / out[axis]  # stored pixels per output pixel
        at = want * n  # in stored pixels (edges at whole numbers)
        clear = (at >= start / size * n + 1 + footprint) & (at <= (start + length) / size * n - 1 - footprint)
        assert clear.sum() >= out[axis] // 3
        atol = 0.1 / n if stored == canvas else 1e-9
        torch.testing.assert_close(got[clear], want[clear], rtol=0, atol=atol)
        other = s[0, :] if axis == 0 else s[:, 0]
        torch.testing.assert_close(other, other[:1].expand_as(other), rtol=0, atol=1e-12)  # constant along it


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("case", ["pet_recipe", "crop_of_raw_image"])
def test_matches_the_composed_path_on_the_same_draws(case, dtype):
    """375x500 images. ``pet_recipe``: train.py's Oxford-IIIT Pet pipeline (resize 256x256,
    random-resized crop 224, flip) with a 256x256 map, against ``transforms.train_transform``
    (whose map path crops, then resizes without antialiasing below 1.2x: within 3 levels).
    ``crop_of_raw_image``: random-resized crop 224 and flip straight from the raw image, a 96x96
    map (ImageNet-style), both paths one bilinear step from the stored map: within rounding."""
    if case == "pet_recipe":
        composed, stored, atol = train_transform("oxford_pet"), 256, (3 if dtype == torch.uint8 else 0.01)
    else:
        composed = JointTransform([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()],
                                  [0.5] * 3, [0.25] * 3)
        stored, atol = 96, (1 if dtype == torch.uint8 else 1e-5)
    pipeline = v2.Compose(composed.steps)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=g)
    worst = 0.0
    for seed in range(12):
        m = _smooth_map(seed, stored, stored, dtype)
        torch.manual_seed(seed)
        img_composed, geometry = composed.apply_image(image)
        want = resample_saliency(m, geometry)
        torch.manual_seed(seed)
        img, s = pipeline(image, Saliency(m, canvas_size=(375, 500)))
        assert torch.equal(img, img_composed)  # the same draws
        assert s.dtype == want.dtype and s.shape == want.shape
        worst = max(worst, (s.double() - want.double()).abs().max().item())
    assert worst <= atol


def test_fill_is_zero_whatever_the_step_fills_the_image_with():
    """All-ones image and map, affine-moved with fill 0.25 (per channel) for the image. torchvision
    blends a bilinear fill as ``a (sampled - fill) + fill``, ``sampled`` zero-padded, ``a`` the
    pixel's weight inside the image (so ``sampled = a``): the image gets ``a (a - 0.25) + 0.25``,
    the map, filled with 0, ``a^2``: 0 fully outside, 1 fully inside."""
    image = torch.ones(3, 40, 50)
    torch.manual_seed(0)
    img, out = v2.RandomAffine(30, (0.2, 0.2), (0.6, 0.9), interpolation=BILINEAR, fill=[0.25] * 3)(
        image, Saliency(torch.ones(40, 50)))
    v, a = img[0].double(), out.double().sqrt()
    assert (v == 0.25).sum() > 100 and (v == 1).sum() > 100 and ((v > 0.25) & (v < 1)).sum() > 20
    torch.testing.assert_close(v, a * (a - 0.25) + 0.25, rtol=0, atol=1e-6)
    assert torch.all(out[v == 0.25] == 0) and torch.all(out[v == 1] == 1)
    padded_img, padded = v2.Pad(3, fill=200)(torch.full((3, 40, 50), 255, dtype=torch.uint8),
                                             Saliency(torch.full((40, 50), 255, dtype=torch.uint8)))
    assert torch.all(padded_img[:, :3] == 200) and torch.all(padded[:3] == 0) and torch.all(padded[3:-3, 3:-3] == 255)


def test_colour_steps_pass_it_through_untouched():
    s = Saliency(_smooth_map(0, 32, 40, torch.uint8))
    image = torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8)
    colour = v2.Compose([v2.ColorJitter(0.5, 0.5, 0.5, 0.1), v2.RandomGrayscale(1.0), v2.GaussianBlur(5),
                         v2.RandomAutocontrast(1.0), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize([0.5] * 3, [0.25] * 3), v2.RandomErasing(1.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, out = colour(image, s)
    assert img.dtype == torch.float32 and out is s


def test_to_dtype_converts_it_when_asked_by_type():
    m = torch.tensor([[0, 51], [255, 102]], dtype=torch.uint8)
    s = v2.ToDtype({Saliency: torch.float32, "others": None}, scale=True)(Saliency(m, canvas_size=(4, 4)))
    assert type(s) is Saliency and s.canvas_size == (4, 4)
    torch.testing.assert_close(s.as_subclass(torch.Tensor), torch.tensor([[0.0, 0.2], [1.0, 0.4]]), rtol=0, atol=1e-7)


def test_several_maps_of_one_image_move_together():
    """``Saliency[2, h, w]`` (two maps of one image, stored coarser than it) = each map on its own."""
    maps = torch.stack([_smooth_map(1, 24, 32), _smooth_map(2, 24, 32)])
    image = torch.zeros(3, 60, 80)
    for steps in (PIPELINES["random_resized_crop"], PIPELINES["affine"], PIPELINES["pet_recipe"]):
        torch.manual_seed(3)
        _, both = v2.Compose(steps)(image, Saliency(maps, canvas_size=(60, 80)))
        for k in range(2):
            torch.manual_seed(3)
            _, one = v2.Compose(steps)(image, Saliency(maps[k], canvas_size=(60, 80)))
            assert torch.equal(both[k], one)


def test_it_keeps_its_type_and_canvas_size():
    s = Saliency(torch.rand(4, 5), canvas_size=(8, 10))
    for copied in (s.clone(), s.detach(), s.to(torch.float64), copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert type(copied) is Saliency and copied.canvas_size == (8, 10)
    assert type(s * 2) is torch.Tensor  # arithmetic gives plain tensors, as for every TVTensor
    assert "canvas_size=(8, 10)" in repr(s)
    assert Saliency(torch.zeros(3, 6, 7, dtype=torch.uint8)).canvas_size == (6, 7)
    assert Saliency(torch.zeros(2, 3), canvas_size=np.zeros((375, 500, 3)).shape[:2]).canvas_size == (375, 500)
    assert Saliency(torch.zeros(2, 3), canvas_size=torch.zeros(3, 8, 9).shape[-2:]).canvas_size == (8, 9)


@pytest.mark.parametrize("data, kwargs, message", [
    (torch.zeros(5), {}, "data must be a uint8 or float map [..., H, W], got torch.float32[5]"),
    (torch.zeros(4, 5, dtype=torch.int32), {}, "data must be a uint8 or float map [..., H, W], got torch.int32[4, 5]"),
    (torch.zeros(4, 5), {"canvas_size": (0, 5)}, "canvas_size must be (H, W), two positive integers, got (0, 5)"),
    (torch.zeros(4, 5), {"canvas_size": (4,)}, "canvas_size must be (H, W), two positive integers, got (4,)"),
    (torch.zeros(4, 5), {"canvas_size": (4.0, 5.0)},
     "canvas_size must be (H, W), two positive integers, got (4.0, 5.0)"),
])
def test_bad_inputs(data, kwargs, message):
    with pytest.raises(ValueError) as e:
        Saliency(data, **kwargs)
    assert str(e.value) == message


def test_cuda_maps_match_cpu_maps():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    for dtype, atol in ((torch.uint8, 1.0), (torch.float32, 1e-5)):
        for name in ("pet_recipe", "affine", "random_resized_crop"):
            m = _smooth_map(5, 48, 64, dtype)
            outs = []
            for device in ("cpu", "cuda"):
                torch.manual_seed(11)
                outs.append(v2.Compose(PIPELINES[name])(torch.zeros(3, 96, 128, device=device),
                                                        Saliency(m.to(device), canvas_size=(96, 128)))[1])
            assert outs[1].device.type == "cuda" and outs[1].dtype == dtype
            assert (outs[1].cpu().double() - outs[0].double()).abs().max() <= atol, (name, dtype)


def test_benchmark_quick_mode_prints_its_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tv_pipeline.py"), "--quick"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "| pipeline | images/s | CPU ms / image | speed vs image alone (CPU) |" in p.stdout
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    assert len(rows) == 5, p.stdout
