"""The ops: compiled kernels == pure-PyTorch references == brute force, on awkward inputs.

Kernels are called through ``torch.ops.saliencymixplus`` (CPU, and CUDA when there is a
GPU); references through ``ops.*_reference``; the brute force below enumerates every
window with plain loops.
"""

import itertools

import pytest
import torch

import saliencymixplus
from saliencymixplus import ops

from brute_force import brute_paste, brute_peak, brute_weight, brute_window

HAS_OPS = saliencymixplus.extension_info()["loaded"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and saliencymixplus.extension_info()["cuda"] else [])
needs_ops = pytest.mark.skipif(not HAS_OPS, reason="the compiled extension is not built")
kernels = torch.ops.saliencymixplus if HAS_OPS else None

SHAPES = [(1, 1, 1), (1, 7, 5), (3, 9, 13), (4, 16, 16), (2, 31, 17)]


# ------------------------------------------------------------------------- inputs


def make_saliency(kind, shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        s = torch.rand(shape, generator=g, dtype=torch.float64)
    elif kind == "integers":  # many exact ties
        s = torch.randint(0, 3, shape, generator=g).double()
    elif kind == "zeros":
        s = torch.zeros(shape, dtype=torch.float64)
    elif kind == "blob":  # one salient pixel per map
        s = torch.zeros(shape, dtype=torch.float64)
        b, h, w = shape
        s[torch.arange(b), torch.randint(h, (b,), generator=g), torch.randint(w, (b,), generator=g)] = 1.0
    else:
        raise ValueError(kind)
    if dtype == torch.uint8:
        return (s / max(s.max().item(), 1e-12) * 255).round().to(torch.uint8)
    return s.to(dtype)


def box_sizes(kind, shape, seed):
    b, h, w = shape
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "zero":
        return torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    if kind == "full":
        return torch.full((b,), h), torch.full((b,), w)
    if kind == "oversize":  # clamped to the map
        return torch.full((b,), h + 5), torch.full((b,), -3)
    return torch.randint(0, h + 1, (b,), generator=g), torch.randint(0, w + 1, (b,), generator=g)


def random_perm(batch, seed):
    return torch.randperm(batch, generator=torch.Generator().manual_seed(seed + 2))


CASES = list(itertools.product(SHAPES, ["uniform", "integers", "zeros", "blob"], ["random", "zero", "full", "oversize"]))


# ---------------------------------------------------------------------- window search


@pytest.mark.parametrize("shape,kind,sizes", CASES)
def test_window_search_reference_matches_brute_force(shape, kind, sizes):
    s = make_saliency(kind, shape, seed=len(CASES))
    h, w = box_sizes(sizes, shape, seed=3)
    boxes = ops.window_search_reference(s, h, w)
    for i in range(shape[0]):
        expected, best = brute_window(s[i], int(h[i]), int(w[i]))
        y1, x1, y2, x2 = boxes[i].tolist()
        assert [y2 - y1, x2 - x1] == [expected[2] - expected[0], expected[3] - expected[1]]
        assert s[i, y1:y2, x1:x2].double().sum().item() == pytest.approx(best, rel=1e-12, abs=1e-12)
        if kind != "uniform":  # exact sums: the tie rule must pick the very same window
            assert boxes[i].tolist() == expected


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["window_search", "peak_boxes"])
@pytest.mark.parametrize("shape,kind,sizes", CASES)
def test_box_kernels_match_reference(device, op, shape, kind, sizes):
    s = make_saliency(kind, shape, seed=7)
    h, w = box_sizes(sizes, shape, seed=5)
    expected = getattr(ops, f"{op}_reference")(s, h, w)
    got = getattr(kernels, op)(s.to(device), h.to(device), w.to(device)).cpu()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # every device sums in the same order


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,kind", [("window_search", "integers"), ("peak_boxes", "blob")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
def test_box_kernels_saliency_dtypes(device, op, kind, dtype):
    s = make_saliency(kind, (3, 11, 9), seed=1, dtype=dtype)
    h, w = box_sizes("random", (3, 11, 9), seed=2)
    expected = getattr(ops, f"{op}_reference")(s, h, w)
    torch.testing.assert_close(getattr(kernels, op)(s.to(device), h.to(device), w.to(device)).cpu(), expected)


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
def test_window_search_non_contiguous_saliency(device):
    s = make_saliency("uniform", (3, 13, 10), seed=4).transpose(1, 2).to(device)  # [3, 10, 13], strided
    assert not s.is_contiguous()
    h, w = torch.tensor([3, 10, 1]), torch.tensor([5, 2, 13])
    expected = ops.window_search_reference(s.cpu().contiguous(), h, w)
    torch.testing.assert_close(kernels.window_search(s, h.to(device), w.to(device)).cpu(), expected)


def test_window_search_accepts_int_sizes_and_finds_the_blob():
    s = torch.zeros(2, 20, 30)
    s[0, 12:15, 3:7] = 1.0
    s[1, 0:4, 26:30] = 1.0
    boxes = ops.window_search(s, 4, 6)
    assert boxes.dtype == torch.long and boxes.shape == (2, 4)
    y1, x1, y2, x2 = boxes[0].tolist()
    assert y1 <= 12 and y2 >= 15 and x1 <= 3 and x2 >= 7 and (y2 - y1, x2 - x1) == (4, 6)
    assert boxes[1].tolist() == [0, 24, 4, 30]


# ------------------------------------------------------------------------- peak boxes


@pytest.mark.parametrize("shape,kind,sizes", CASES)
def test_peak_boxes_reference_matches_brute_force(shape, kind, sizes):
    s = make_saliency(kind, shape, seed=11)
    h, w = box_sizes(sizes, shape, seed=12)
    boxes = ops.peak_boxes_reference(s, h, w)
    assert boxes.tolist() == [brute_peak(s[i], int(h[i]), int(w[i])) for i in range(shape[0])]


def test_peak_box_is_the_published_rule():
    s = torch.zeros(1, 10, 10)
    s[0, 1, 8] = 1.0
    # y: clip(1 - 3, 0) .. 1 + 3; x: clip(8 - 2) .. clip(8 + 2, 10)
    assert ops.peak_boxes(s, 7, 5).tolist() == [[0, 6, 4, 10]]


# ------------------------------------------------------------------------------ paste


def random_boxes(batch, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.sort(torch.randint(0, height + 1, (batch, 2), generator=g), 1).values
    x = torch.sort(torch.randint(0, width + 1, (batch, 2), generator=g), 1).values
    boxes = torch.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], 1)
    boxes[0] = torch.tensor([0, 0, height, width])  # as large as the image
    if batch > 1:
        boxes[1] = torch.tensor([height // 2, 1 % (width + 1), height // 2, 1 % (width + 1)])  # empty
    return boxes


IMAGE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8]


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 7, 5), (3, 3, 9, 13), (5, 2, 31, 17)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_paste_reference_matches_brute_force(shape, layout):
    images = make_images(shape, torch.float32, layout, seed=20)
    perm, boxes = random_perm(shape[0], 21), random_boxes(shape[0], shape[2], shape[3], 22)
    torch.testing.assert_close(ops.paste_reference(images, perm, boxes), brute_paste(images, perm, boxes))


def make_images(shape, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":  # a view with gaps: every other column of a wider tensor
        b, c, h, w = shape
        base = torch.rand((b, c, h, 2 * w), generator=g)
        images = base[..., ::2]
    else:
        images = torch.rand(shape, generator=g)
    images = (images * 255).to(dtype) if dtype == torch.uint8 else images.to(dtype)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 7, 5), (3, 3, 9, 13), (4, 4, 32, 32)])
def test_paste_kernel_matches_reference(device, dtype, layout, shape):
    images = make_images(shape, dtype, layout, seed=23)
    perm, boxes = random_perm(shape[0], 24), random_boxes(shape[0], shape[2], shape[3], 25)
    got = kernels.paste(images.to(device), perm.to(device), boxes.to(device))
    assert got.dtype == dtype and got.shape == images.shape
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu(), brute_paste(images, perm, boxes), rtol=0, atol=0)
    assert got.data_ptr() != images.data_ptr()


@needs_ops
def test_paste_leaves_input_untouched():
    images = torch.rand(3, 2, 5, 5)
    before = images.clone()
    ops.paste(images, torch.tensor([1, 2, 0]), torch.tensor([[0, 0, 5, 5]] * 3))
    torch.testing.assert_close(images, before, rtol=0, atol=0)


# ---------------------------------------------------------------------- label weights


@pytest.mark.parametrize("shape,kind", list(itertools.product(SHAPES, ["uniform", "integers", "zeros", "blob"])))
def test_label_weights_reference_matches_brute_force(shape, kind):
    s = make_saliency(kind, shape, seed=30)
    perm, boxes = random_perm(shape[0], 31), random_boxes(shape[0], shape[1], shape[2], 32)
    lam = ops.label_weights_reference(s, perm, boxes)
    assert lam.dtype == torch.float32 and lam.shape == (shape[0],)
    expected = [brute_weight(s[i], s[int(perm[i])], boxes[i].tolist(), shape[1], shape[2]) for i in range(shape[0])]
    torch.testing.assert_close(lam, torch.tensor(expected, dtype=torch.float32))


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,kind", list(itertools.product(SHAPES, ["uniform", "integers", "zeros", "blob"])))
def test_label_weights_kernel_matches_reference(device, shape, kind):
    s = make_saliency(kind, shape, seed=33)
    perm, boxes = random_perm(shape[0], 34), random_boxes(shape[0], shape[1], shape[2], 35)
    got = kernels.label_weights(s.to(device), perm.to(device), boxes.to(device)).cpu()
    torch.testing.assert_close(got, ops.label_weights_reference(s, perm, boxes))


def test_label_weights_known_values_and_fallbacks():
    s = torch.zeros(2, 4, 4)
    s[0, :2, :] = 1.0  # target 0: saliency in the top half
    s[1, :, :2] = 1.0  # image 1: saliency in the left half
    perm = torch.tensor([1, 0])
    box = torch.tensor([[0, 0, 1, 2], [0, 0, 4, 1]])
    # image 0 keeps 6/8 of its saliency (a = .75) and receives 2/8 of image 1's (b = .25)
    # image 1 keeps 4/8 (a = .5) and receives 2/8 of image 0's (b = .25)
    torch.testing.assert_close(ops.label_weights(s, perm, box), torch.tensor([0.75, 0.5 / 0.75]))
    box = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2]])
    # all-zero saliency: the area rule, 1 - 4 / 16
    zeros = torch.zeros(2, 4, 4)
    torch.testing.assert_close(ops.label_weights(zeros, perm, box), torch.tensor([0.75, 0.75]))
    # image 0: a box over all of its saliency and none of its source's, a + b = 0 (area rule);
    # image 1 keeps all of its own (a = 1) and receives all of image 0's (b = 1)
    s2 = torch.zeros(2, 4, 4)
    s2[0, 0, 0] = 1.0
    s2[1, 3, 3] = 1.0
    torch.testing.assert_close(ops.label_weights(s2, perm, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])),
                               torch.tensor([1 - 1 / 16, 0.5]))
    # empty box: the target keeps its label; full box: the source's label
    full = torch.tensor([[0, 0, 0, 0], [0, 0, 4, 4]])
    torch.testing.assert_close(ops.label_weights(s, perm, full), torch.tensor([1.0, 0.0]))


def all_inside_maps(dtype, scale, spread):
    """The case of issue 21: target 0's saliency lies wholly inside the box ``[3:6, 3:6]`` and its
    source (image 1) has none there, while the rest of image 1 is salient. Values times ``scale``,
    and every other row times ``spread`` too: rows of such different sizes do not sum exactly
    in float64, so a summed-area table's four-corner difference over a zero region is not 0."""
    g = torch.Generator().manual_seed(2)
    s = torch.zeros(2, 8, 8, dtype=torch.float64)
    s[0, 3:6, 3:6] = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.1
    s[1] = torch.rand(8, 8, generator=g, dtype=torch.float64)
    s[1, 3:6, 3:6] = 0
    s[:, ::2] *= spread
    return (s * 200).round().to(dtype) if dtype == torch.uint8 else (s * scale).to(dtype)


# (dtype, scale, spread). With a spread, a summed-area table of the map gets the zero region
# wrong on the side that breaks the rule; without one, the values are tiny (1e-30), subnormal in
# float32 (1e-38, 2**-127) or in float16 (2**-14 * [0, 1)), and must still count; uint8 maps.
SUM_CASES = [(torch.float64, 1.0, 1.0), (torch.float64, 1e-30, 2.0**-2), (torch.float32, 1.0, 2.0**-30),
             (torch.float32, 1e-20, 2.0**-29), (torch.bfloat16, 1.0, 2.0**-38), (torch.float32, 1e-30, 1.0),
             (torch.float32, 1e-38, 1.0), (torch.float32, 2.0**-127, 1.0), (torch.float16, 1.0, 1.0),
             (torch.float16, 2.0**-14, 1.0), (torch.uint8, 1.0, 1.0)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,scale,spread", SUM_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_label_weights_sum_an_all_zero_region_to_exactly_zero(device, dtype, scale, spread):
    s = all_inside_maps(dtype, scale, spread).to(device)
    assert (s[0] > 0).sum() == 9 and (s[1] > 0).sum() > 40
    perm, boxes = torch.tensor([1, 0], device=device), torch.tensor([[3, 3, 6, 6]] * 2, device=device)
    # image 0 keeps none of its saliency (a = 0) and receives none of image 1's (b = 0): a + b = 0,
    # so the area rule 1 - 9 / 64; image 1 keeps all of its own (a = 1) and receives all of image 0's (b = 1)
    expected = torch.tensor([1 - 9 / 64, 0.5])
    assert expected.tolist() == [0.859375, 0.5]
    torch.testing.assert_close(ops.label_weights(s, perm, boxes).cpu(), expected, rtol=0, atol=0)
    torch.testing.assert_close(ops.label_weights_reference(s, perm, boxes).cpu(), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------- fused op


@pytest.mark.parametrize("box", ["window", "peak"])
@pytest.mark.parametrize("kind", ["uniform", "integers", "zeros", "blob"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 7, 5), (3, 3, 9, 13), (6, 1, 16, 16)])
def test_saliency_mix_plus_reference_is_the_three_ops(shape, kind, box):
    b, c, h, w = shape
    images = make_images(shape, torch.float32, "contiguous", seed=40)
    s = make_saliency(kind, (b, h, w), seed=41)
    perm = random_perm(b, 42)
    bh, bw = box_sizes("random", (b, h, w), seed=43)
    mixed, boxes, lam = ops.saliency_mix_plus_reference(images, s, perm, bh, bw, box)
    find = brute_window if box == "window" else brute_peak
    for i in range(b):
        src = int(perm[i])
        expected = find(s[src], int(bh[i]), int(bw[i]))
        expected = expected[0] if box == "window" else expected
        if kind != "uniform":
            assert boxes[i].tolist() == expected
    torch.testing.assert_close(mixed, brute_paste(images, perm, boxes))
    expected = [brute_weight(s[i], s[int(perm[i])], boxes[i].tolist(), h, w) for i in range(b)]
    torch.testing.assert_close(lam, torch.tensor(expected, dtype=torch.float32))


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("box", ["window", "peak"])
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "contiguous"), (torch.float16, "channels_last"),
                                          (torch.bfloat16, "strided"), (torch.uint8, "contiguous")])
@pytest.mark.parametrize("kind", ["uniform", "integers", "zeros", "blob"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3, 7, 5), (3, 3, 9, 13), (5, 3, 32, 32)])
def test_saliency_mix_plus_kernel_matches_reference(device, box, dtype, layout, kind, shape):
    b, c, h, w = shape
    images = make_images(shape, dtype, layout, seed=50)
    s = make_saliency(kind, (b, h, w), seed=51)
    perm = random_perm(b, 52)
    bh, bw = box_sizes("random", (b, h, w), seed=53)
    expected = ops.saliency_mix_plus_reference(images, s, perm, bh, bw, box)
    got = kernels.saliency_mix_plus(images.to(device), s.to(device), perm.to(device), bh.to(device), bw.to(device),
                                     box)
    mixed, boxes, lam = (t.cpu() for t in got)
    assert mixed.dtype == dtype
    torch.testing.assert_close(boxes, expected[1], rtol=0, atol=0)
    torch.testing.assert_close(lam, expected[2])
    torch.testing.assert_close(mixed, brute_paste(images, perm, boxes), rtol=0, atol=0)
    torch.testing.assert_close(lam, ops.label_weights_reference(s, perm, boxes))


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("box", ["window", "peak"])
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (3, 2, 17, 23), (2, 3, 224, 224), (2, 1, 257, 250), (130, 1, 8, 8)])
def test_saliency_mix_plus_uint8_maps(device, box, shape):
    """uint8 maps (the cache's dtype) take the on-chip path on a GPU where their table fits
    (224 x 224) and the float64 path where it does not (257 x 250); both equal the brute force."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(h * w)
    images = torch.rand(shape, generator=g)
    s = torch.randint(0, 256, (b, h, w), generator=g, dtype=torch.uint8)
    s[0] = 0  # an all-zero map: the area rule
    perm = random_perm(b, 44)
    bh, bw = torch.randint(0, h + 1, (b,), generator=g), torch.randint(0, w + 1, (b,), generator=g)
    mixed, boxes, lam = (t.cpu() for t in ops.saliency_mix_plus(
        images.to(device), s.to(device), perm.to(device), bh.to(device), bw.to(device), box))
    find = brute_window if box == "window" else brute_peak
    for i in range(min(b, 4)) if h * w > 10000 else range(b):
        src = int(perm[i])
        if h * w <= 10000:
            expected = find(s[src], int(bh[i]), int(bw[i]))
            assert boxes[i].tolist() == (expected[0] if box == "window" else expected)
        assert lam[i].item() == pytest.approx(brute_weight(s[i], s[src], boxes[i].tolist(), h, w), abs=1e-6)
    torch.testing.assert_close(boxes, ops.saliency_mix_plus_reference(images, s, perm, bh, bw, box)[1], rtol=0, atol=0)
    torch.testing.assert_close(mixed, brute_paste(images, perm, boxes), rtol=0, atol=0)


def odd_inputs():
    """Values a user could pass with check=False, and what the kernels must read them as,
    written out by hand: odd saliency counts as 0, boxes clamp, perm out of range means itself."""
    g = torch.Generator().manual_seed(70)
    s = torch.rand(5, 9, 7, generator=g)
    s[0, 2, 3] = float("nan")
    s[1, 0, 0] = -5.0
    s[2, 4, 4] = float("inf")
    s[3] = -1.0  # all negative: counts as an all-zero map
    s[4, 1, 1] = float("-inf")
    counted = s.clone()
    counted[0, 2, 3] = counted[1, 0, 0] = counted[2, 4, 4] = counted[4, 1, 1] = 0.0
    counted[3] = 0.0
    perm = torch.tensor([4, -1, 9, 0, 2])
    sources = torch.tensor([4, 1, 2, 0, 2])
    boxes = torch.tensor([[-3, -2, 4, 3], [2, 5, 1, 9], [0, 0, 99, 99], [5, 1, 6, 2], [3, 3, 3, 3]])
    clamped = torch.tensor([[0, 0, 4, 3], [2, 5, 2, 7], [0, 0, 9, 7], [5, 1, 6, 2], [3, 3, 3, 3]])
    images = torch.rand(5, 2, 9, 7, generator=g)
    return images, s, counted, perm, sources, boxes, clamped


@pytest.mark.parametrize("device", DEVICES)
def test_odd_values_unchecked_are_read_as_documented(path, device):
    images, s, counted, perm, sources, boxes, clamped = (t.to(device) for t in odd_inputs())
    h, w = torch.tensor([3, 2, 9, 0, 4], device=device), torch.tensor([2, 7, 1, 3, 3], device=device)
    cpu = [t.cpu() for t in (images, counted, sources, clamped)]
    got = ops.window_search(s, h, w, check=False).cpu()
    assert got.tolist() == [brute_window(cpu[1][i], int(h[i]), int(w[i]))[0] for i in range(5)]
    got = ops.peak_boxes(s, h, w, check=False).cpu()
    assert got.tolist() == [brute_peak(cpu[1][i], int(h[i]), int(w[i])) for i in range(5)]
    torch.testing.assert_close(ops.paste(images, perm, boxes, check=False).cpu(), brute_paste(cpu[0], cpu[2], cpu[3]))
    expected = [brute_weight(cpu[1][i], cpu[1][int(cpu[2][i])], cpu[3][i].tolist(), 9, 7) for i in range(5)]
    torch.testing.assert_close(ops.label_weights(s, perm, boxes, check=False).cpu(), torch.tensor(expected))
    mixed, got_boxes, lam = (t.cpu() for t in ops.saliency_mix_plus(images, s, perm, h, w, check=False))
    for i in range(5):
        src = int(cpu[2][i])
        assert got_boxes[i].tolist() == brute_window(cpu[1][src], int(h[i]), int(w[i]))[0]
        assert lam[i].item() == pytest.approx(brute_weight(cpu[1][i], cpu[1][src], got_boxes[i].tolist(), 9, 7))
    torch.testing.assert_close(mixed, brute_paste(cpu[0], cpu[2], got_boxes))
    with pytest.raises(ValueError, match="saliency must be finite and >= 0"):
        ops.saliency_mix_plus(images, s, sources, h, w)  # checked by default


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
def test_saliency_mix_box_sizes_extremes(device):
    """Boxes of size 0 paste nothing; boxes as large as the image paste everything."""
    images = torch.rand(3, 3, 8, 6, device=device)
    s = torch.rand(3, 8, 6, device=device)
    perm = torch.tensor([2, 0, 1], device=device)
    mixed, boxes, lam = ops.saliency_mix_plus(images, s, perm, 0, 0)
    torch.testing.assert_close(mixed, images)
    torch.testing.assert_close(lam, torch.ones(3, device=device))
    mixed, boxes, lam = ops.saliency_mix_plus(images, s, perm, 8, 6)
    torch.testing.assert_close(mixed, images[perm])
    torch.testing.assert_close(lam, torch.zeros(3, device=device))
    assert boxes.tolist() == [[0, 0, 8, 6]] * 3


def test_empty_batch():
    s = torch.rand(0, 5, 5)
    assert ops.window_search(s, 2, 2).shape == (0, 4)
    assert ops.peak_boxes(s, 2, 2).shape == (0, 4)
    empty_perm, empty_boxes = torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long)
    assert ops.label_weights(s, empty_perm, empty_boxes).shape == (0,)
    assert ops.paste(torch.rand(0, 3, 5, 5), empty_perm, empty_boxes).shape == (0, 3, 5, 5)
    mixed, boxes, lam = ops.saliency_mix_plus(torch.rand(0, 3, 5, 5), s, empty_perm, 2, 2)
    assert mixed.shape == (0, 3, 5, 5) and boxes.shape == (0, 4) and lam.shape == (0,)


# ------------------------------------------------------------------------- bad input

# Every public op, on the compiled path and on the reference path.
PATHS = ["compiled", "reference"] if HAS_OPS else ["reference"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setattr(saliencymixplus._extension, "has_ops", lambda: False)
    return request.param


def good():
    images, s = torch.rand(3, 3, 6, 5), torch.rand(3, 6, 5)
    return images, s, torch.tensor([2, 0, 1]), torch.tensor([[0, 0, 2, 2]] * 3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda i, s, p, b: ops.window_search(s[0], 2, 2), "saliency must be a Tensor\\[B, H, W\\]"),
        (lambda i, s, p, b: ops.window_search(s.unsqueeze(0), 2, 2), "saliency must be a Tensor\\[B, H, W\\]"),
        (lambda i, s, p, b: ops.window_search(s - 0.5, 2, 2), "saliency must be finite and >= 0"),
        (lambda i, s, p, b: ops.window_search(s.index_fill(1, torch.tensor([0]), float("nan")), 2, 2),
         "saliency must be finite and >= 0"),
        (lambda i, s, p, b: ops.peak_boxes(s.index_fill(1, torch.tensor([0]), float("inf")), 2, 2),
         "saliency must be finite and >= 0"),
        (lambda i, s, p, b: ops.window_search(s.long(), 2, 2), "saliency must be a float32, float64"),
        (lambda i, s, p, b: ops.window_search(s.to(torch.float8_e4m3fn), 2, 2), "saliency must be a float32, float64"),
        (lambda i, s, p, b: ops.window_search(s[:, :0], 2, 2), "saliency must have H > 0 and W > 0"),
        (lambda i, s, p, b: ops.window_search(s, torch.tensor([1, 2]), 2), "box_h must be"),
        (lambda i, s, p, b: ops.peak_boxes(s, 2, torch.ones(3)), "box_w must be"),
        (lambda i, s, p, b: ops.paste(i[0], p, b), "images must be a Tensor\\[B, C, H, W\\]"),
        (lambda i, s, p, b: ops.paste(i, torch.tensor([0, 1, 3]), b), "perm values must be in \\[0, 3\\)"),
        (lambda i, s, p, b: ops.paste(i, torch.tensor([0, -1, 2]), b), "perm values must be in \\[0, 3\\)"),
        (lambda i, s, p, b: ops.paste(i, p[:2], b), "perm must be"),
        (lambda i, s, p, b: ops.paste(i, p.float(), b), "perm must be"),
        (lambda i, s, p, b: ops.paste(i, p, b[:, :3]), "boxes must be"),
        (lambda i, s, p, b: ops.paste(i, p, torch.tensor([[0, 0, 7, 2]] * 3)), "y2 > H"),
        (lambda i, s, p, b: ops.paste(i, p, torch.tensor([[0, 3, 2, 2]] * 3)), "x2 < x1"),
        (lambda i, s, p, b: ops.paste(i, p, torch.tensor([[-1, 0, 2, 2]] * 3)), "y1 < 0"),
        (lambda i, s, p, b: ops.label_weights(s, p, torch.tensor([[0, 0, 2, 6]] * 3)), "x2 > W"),
        (lambda i, s, p, b: ops.label_weights(s - 1, p, b), "saliency must be finite and >= 0"),
        (lambda i, s, p, b: ops.saliency_mix_plus(i, s[:, :5], p, 2, 2), "saliency must be a Tensor\\[B, H, W\\] = \\[3, 6, 5\\]"),
        (lambda i, s, p, b: ops.saliency_mix_plus(i, s[:2], p, 2, 2), "saliency must be a Tensor\\[B, H, W\\]"),
        (lambda i, s, p, b: ops.saliency_mix_plus(i, s, p, 2, 2, "center"), "box must be"),
        (lambda i, s, p, b: ops.saliency_mix_plus(i, s * float("nan"), p, 2, 2), "saliency must be finite and >= 0"),
        (lambda i, s, p, b: ops.saliency_mix_plus(i, s, torch.tensor([3, 0, 1]), 2, 2), "perm values must be in"),
    ],
)
def test_bad_input_names_the_argument(path, call, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        call(*good())


def test_bad_box_size_types():
    _, s, _, _ = good()
    with pytest.raises(TypeError, match="box_h must be an int or an integer Tensor"):
        ops.window_search(s, 2.5, 2)
    with pytest.raises(TypeError, match="box_w must be an int or an integer Tensor"):
        ops.saliency_mix_plus(torch.rand(3, 3, 6, 5), s, torch.tensor([2, 0, 1]), 2, None)


@pytest.mark.parametrize("call,name", [
    (lambda s: ops.window_search(s, 2**70, 3), "box_h"),
    (lambda s: ops.peak_boxes(s, 3, -2**63 - 1), "box_w"),
    (lambda s: ops.saliency_mix_plus(torch.rand(3, 3, 6, 5), s, torch.tensor([2, 0, 1]), 2, 2**64), "box_w"),
    (lambda s: ops.window_search_reference(s, -2**100, 3), "box_h"),
])
def test_box_sizes_outside_int64_are_refused(path, call, name):
    _, s, _, _ = good()
    with pytest.raises(ValueError, match=f"{name} must be an int64 value"):
        call(s)


def test_int_box_sizes_at_the_ends_of_int64_are_clamped(path):
    s = torch.zeros(2, 6, 5)  # all ties: the first window, at (0, 0)
    assert ops.window_search(s, 2**63 - 1, -2**63).tolist() == [[0, 0, 6, 0]] * 2
    assert ops.window_search(s, -2**63, 2**63 - 1).tolist() == [[0, 0, 0, 5]] * 2


@needs_ops
@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA GPU")
def test_cuda_devices_that_differ():
    images, s, p, b = good()
    with pytest.raises((ValueError, RuntimeError), match="saliency must be on"):
        ops.saliency_mix_plus(images.cuda(), s, p.cuda(), 2, 2)
    with pytest.raises((ValueError, RuntimeError), match="perm must be on"):
        ops.paste(images.cuda(), p, b.cuda())
    with pytest.raises((ValueError, RuntimeError), match="boxes must be on"):
        ops.label_weights(s.cuda(), p.cuda(), b)


def test_devices_that_differ_on_the_reference_path():
    images, s, p, b = good()
    with pytest.raises(ValueError, match="perm must be on cpu"):
        ops.paste_reference(images, p.to("meta"), b)
    with pytest.raises(ValueError, match="saliency must be on cpu like images"):
        ops.saliency_mix_plus_reference(images, s.to("meta"), p, 2, 2)


# ----------------------------------------------------------- opcheck and torch.compile


def opcheck_cases():
    images, s, p, b = good()
    h, w = torch.tensor([2, 0, 6]), torch.tensor([5, 1, 3])
    return [
        ("window_search", (s, h, w)),
        ("peak_boxes", (s, h, w)),
        ("paste", (images, p, b)),
        ("paste", (images.contiguous(memory_format=torch.channels_last), p, b)),
        ("label_weights", (s, p, b)),
        ("saliency_mix_plus", (images, s, p, h, w, "window")),
        ("saliency_mix_plus", (images.half(), s, p, h, w, "peak")),
    ]


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,args", opcheck_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(device, name, args):
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(getattr(kernels, name).default, args)


@needs_ops
def test_ops_under_torch_compile_fullgraph():
    images, s, p, _ = good()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def mix(images, s, p):
        boxes = torch.ops.saliencymixplus.window_search(s[p], torch.full((3,), 3), torch.full((3,), 2))
        out = torch.ops.saliencymixplus.paste(images * 2, p, boxes)
        return out, torch.ops.saliencymixplus.label_weights(s, p, boxes)

    out, lam = mix(images, s, p)
    boxes = ops.window_search(s[p], 3, 2)
    torch.testing.assert_close(out, ops.paste(images * 2, p, boxes))
    torch.testing.assert_close(lam, ops.label_weights(s, p, boxes))


@needs_ops
@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA GPU")
def test_cuda_many_maps_equal_cpu():
    g = torch.Generator().manual_seed(60)
    s = torch.rand(4096, 24, 40, generator=g)
    h, w = torch.randint(0, 25, (4096,), generator=g), torch.randint(0, 41, (4096,), generator=g)
    perm = torch.randperm(4096, generator=g)
    boxes = kernels.window_search(s, h, w)
    torch.testing.assert_close(kernels.window_search(s.cuda(), h.cuda(), w.cuda()).cpu(), boxes, rtol=0, atol=0)
    torch.testing.assert_close(kernels.label_weights(s.cuda(), perm.cuda(), boxes.cuda()).cpu(),
                               kernels.label_weights(s, perm, boxes))
