"""The CUDA kernels against the CPU kernels, bit for bit, on the inputs most likely to break them.

Every test but one needs a GPU and the CUDA kernels (the ``cuda`` marker; skipped without them)
and ``benchmarks/gpu_suite.sh`` runs them. The oracle is the CPU kernel of the same op, which
tests/test_ops.py holds to the pure-PyTorch references and a brute force, and which the one CPU
test here holds to the order of its label-weight sums (float64, one value at a time, row-major:
the order the CUDA kernels must reproduce); for the label weights of an all-zero region, numbers
worked out by hand. Ops are called through
``torch.ops.saliencymixplus``, which checks no values: odd values mean what
``csrc/mix_math.h`` says on both devices.

What is covered: the paste over dtypes, layouts, storage offsets 0-8 (odd and unaligned
addresses), widths 1-33; grids past their limits (70,000 images); tensors of more than 2^31
elements where memory allows; uint8 maps either side of the shared-memory limit the device
reports, and which kernel ran on each side (the profiler); one image of more than 2^31 paste
granules; non-contiguous saliency, perm, boxes and box sizes; ties; every saliency dtype, with
float maps whose sums are exact in any order (the CUDA kernel adds them in a tree) and maps whose
sums are not (one thread adds them in row-major order), told apart on the CPU by the kernel's own
rule; odd values; a side stream and a second device; fresh processes that call the ops in either
order, or whose first call is inside a CUDA-graph capture; compute-sanitizer's memcheck,
racecheck, synccheck and initcheck where the tool is installed.
"""

import math
import os
import struct
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import saliencymixplus

from test_ops import SUM_CASES, all_inside_maps

HAS_OPS = saliencymixplus.extension_info()["loaded"]
HAS_CUDA = torch.cuda.is_available() and saliencymixplus.extension_info()["cuda"]
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and the CUDA kernels")  # conftest adds `cuda`
kernels = torch.ops.saliencymixplus

SALIENCY_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]
IMAGE_DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]


# ----------------------------------------------------------------------------- helpers


def bits(t):
    """The bytes of a tensor in its logical order (so NaN payloads and -0.0 count too)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)


def assert_same(got, expected, what=""):
    """``got`` (from CUDA) equals ``expected`` (from the CPU kernel) bit for bit, in the same layout."""
    assert got.is_cuda, what
    assert got.dtype == expected.dtype and got.shape == expected.shape, (what, got.dtype, got.shape, expected.shape)
    assert got.stride() == expected.stride(), (what, got.stride(), expected.stride())
    assert torch.equal(bits(got), bits(expected)), (what, got.cpu(), expected)


def on_cuda(*tensors, device="cuda"):
    return [t.to(device) for t in tensors]


def make_maps(b, h, w, dtype, kind, seed):
    """Saliency ``Tensor[b, h, w]`` of ``dtype``. "rand": uniform in [0, 1), drawn in float64
    and cast, so float64 maps keep up to 53 significant bits and their sums are exact only in
    row-major order (see ``sums_exact_in_any_order``); float32 ones mostly pass that rule at
    these sizes, nothing guarantees it. "rounded": multiples of 2^-20 in [0, 1), whose sums are
    exact in any order in every float dtype for maps of up to 2^25 values. "wide": values over
    many binades (float64 and float32 sums exact only in row-major order). "ints" (many ties),
    "zeros", "constant", "odd" (NaN, inf, negative values)."""
    g = torch.Generator().manual_seed(seed)
    if kind in ("rand", "rounded"):
        s = torch.rand(b, h, w, generator=g, dtype=torch.float64)
        if kind == "rounded":
            s = torch.floor(s * 2**20) / 2**20
    elif kind == "wide":
        s = torch.exp(torch.randn(b, h, w, generator=g, dtype=torch.float64) * 12)
    elif kind == "ints":
        s = torch.randint(0, 3, (b, h, w), generator=g).double()
    elif kind == "zeros":
        s = torch.zeros(b, h, w, dtype=torch.float64)
    elif kind == "constant":
        s = torch.full((b, h, w), 0.75, dtype=torch.float64)
    elif kind == "odd":
        s = torch.randn(b, h, w, generator=g, dtype=torch.float64)
        flat = s.view(-1)
        picks = torch.randint(0, flat.numel(), (max(3, flat.numel() // 8),), generator=g)
        flat[picks[0::3]], flat[picks[1::3]], flat[picks[2::3]] = float("nan"), float("inf"), -float("inf")
    else:
        raise ValueError(kind)
    if dtype == torch.uint8:
        if kind == "odd":
            return torch.randint(0, 256, (b, h, w), generator=g, dtype=torch.uint8)
        return (s / max(s.max().item(), 1e-300) * 255).round().to(torch.uint8)
    return s.to(dtype)


# The map shapes (B, H, W) of test_search_and_weights_equal_the_cpu_kernels, whose maps have seed B * H + W.
SEARCH_SHAPES = [(1, 1, 1), (3, 1, 17), (4, 13, 1), (5, 9, 13), (6, 31, 17), (4, 32, 32), (2, 64, 48)]


def sums_exact_in_any_order(m):
    """Whether the CUDA label-weight kernel adds the values of the float map ``m``
    (``Tensor[H, W]``) in a tree: kernels.cu's rule (block_map_sums). The values that count
    (finite, > 0) are all multiples of 2^low and below 2^top; the sums of H * W of them are
    exact in any order when top + ceil(log2(H * W)) - low <= 53. Otherwise one thread adds them
    in row-major order."""
    values = [v for v in m.double().reshape(-1).tolist() if 0 < v < math.inf]
    if not values:
        return True
    biased = (struct.unpack("<Q", struct.pack("<d", max(values)))[0] >> 52) & 0x7FF
    top = max(biased, 1) - 1022  # max(values) < 2^top

    def lowest_bit(v):  # v is a multiple of 2^lowest_bit(v)
        numerator, denominator = v.as_integer_ratio()
        if denominator > 1:
            return 1 - denominator.bit_length()
        return (numerator & -numerator).bit_length() - 1

    low = min(lowest_bit(v) for v in values)
    ceil_log2 = (m.numel() - 1).bit_length()  # the least c with 2^c >= H * W
    return top + ceil_log2 - low <= 53


def test_which_float_maps_the_cuda_kernel_sums_in_a_tree():
    """On the CPU: the rule of ``sums_exact_in_any_order`` by hand, and which kind of map of
    ``make_maps`` takes which of the CUDA kernel's two ways of summing."""
    f64 = torch.float64
    assert sums_exact_in_any_order(torch.tensor([[0.5, 0.25], [0.75, 1.0]], dtype=f64))  # 1 + 2 - (-2) <= 53
    assert sums_exact_in_any_order(torch.tensor([[1 + 2**-52]], dtype=f64))  # 1 + 0 + 52 = 53
    assert not sums_exact_in_any_order(torch.tensor([[1 + 2**-52, 1.0]], dtype=f64))  # 54: 2 + 2^-52 rounds
    assert sums_exact_in_any_order(torch.tensor([[2.0**60, 2.0**20]], dtype=f64))  # 61 + 1 - 20 = 42
    assert not sums_exact_in_any_order(torch.tensor([[2.0**60, 2.0**7]], dtype=f64))  # 61 + 1 - 7 = 55
    assert sums_exact_in_any_order(torch.tensor([[float("nan"), -3.0, float("inf"), 0.0]], dtype=f64))
    for b, h, w in SEARCH_SHAPES + [(3, 240, 240)]:
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            maps = make_maps(b, h, w, dtype, "rounded", seed=b * h + w)
            assert all(sums_exact_in_any_order(m) for m in maps), (dtype, h, w)
        if h * w > 1:
            for dtype, kind in ((torch.float64, "rand"), (torch.float64, "wide"), (torch.float32, "wide")):
                maps = make_maps(b, h, w, dtype, kind, seed=b * h + w)
                assert not any(sums_exact_in_any_order(m) for m in maps), (dtype, kind, h, w)


def size_tensors(b, h, w, kind, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randint(0, h + 1, (b,), generator=g), torch.randint(0, w + 1, (b,), generator=g)
    if kind == "full":
        return torch.full((b,), h), torch.full((b,), w)
    if kind == "zero":
        return torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    return torch.randint(-3, h + 4, (b,), generator=g), torch.randint(-3, w + 4, (b,), generator=g)  # clamped


def random_boxes(b, h, w, seed, odd=False):
    g = torch.Generator().manual_seed(seed)
    if odd:  # outside the image, inverted: clamped by the kernels
        return torch.randint(-4, max(h, w) + 5, (b, 4), generator=g)
    y = torch.sort(torch.randint(0, h + 1, (b, 2), generator=g), 1).values
    x = torch.sort(torch.randint(0, w + 1, (b, 2), generator=g), 1).values
    return torch.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], 1)


def check_search_ops(s, perm, box_h, box_w, device="cuda"):
    """window_search, peak_boxes, label_weights and the fused op (window and peak) on ``device``
    equal the CPU kernels bit for bit on the CPU tensors given."""
    images = torch.rand(s.shape[0], 2, s.shape[1], s.shape[2], generator=torch.Generator().manual_seed(3))
    d_s, d_perm, d_h, d_w, d_images = on_cuda(s, perm, box_h, box_w, images, device=device)
    boxes = kernels.window_search(s, box_h, box_w)
    assert_same(kernels.window_search(d_s, d_h, d_w), boxes, "window_search")
    assert_same(kernels.peak_boxes(d_s, d_h, d_w), kernels.peak_boxes(s, box_h, box_w), "peak_boxes")
    assert_same(kernels.label_weights(d_s, d_perm, boxes.to(device)), kernels.label_weights(s, perm, boxes),
                "label_weights")
    for box in ("window", "peak"):
        expected = kernels.saliency_mix_plus(images, s, perm, box_h, box_w, box)
        got = kernels.saliency_mix_plus(d_images, d_s, d_perm, d_h, d_w, box)
        for name, a, b in zip(("mixed", "boxes", "lam"), got, expected):
            assert_same(a, b, f"saliency_mix_plus {box} {name}")


def run_fresh(script, timeout=300, prefix=(), env=None):
    """Runs ``script`` in a new Python process (the package and path of this one) and returns its
    output; it must exit 0. ``prefix``: a command to run Python under (compute-sanitizer);
    ``env``: variables to add."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), **(env or {})}
    code = textwrap.dedent(FRESH_PRELUDE) + textwrap.dedent(script)
    p = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       env=env)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return p.stdout + p.stderr


FRESH_PRELUDE = """
    import torch
    import saliencymixplus
    k = torch.ops.saliencymixplus

    def same(a, b, what):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert torch.equal(a.cpu().contiguous().reshape(-1).view(torch.uint8),
                           b.contiguous().reshape(-1).view(torch.uint8)), (what, a, b)

    def inputs(b, h, w, seed, dtype=torch.uint8):
        g = torch.Generator().manual_seed(seed)
        s = torch.rand(b, h, w, generator=g)
        s = (s * 255).to(torch.uint8) if dtype == torch.uint8 else s.to(dtype)
        return (torch.rand(b, 3, h, w, generator=g), s, torch.randperm(b, generator=g),
                torch.randint(0, h + 1, (b,), generator=g), torch.randint(0, w + 1, (b,), generator=g))
"""


# -------------------------------------------------------------------- label weights


@needs_gpu
@pytest.mark.parametrize("dtype,scale,spread", SUM_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_label_weights_of_a_region_without_saliency(dtype, scale, spread):
    """Issue 21's case (tests/test_ops.py): all of target 0's saliency lies in the box and its
    source has none there, so a = 0 and b = 0 and the area rule 1 - 9/64; image 1 keeps all of
    its saliency and receives all of map 0's: 0.5. The cases reach both ways the CUDA kernel
    sums a float map (a tree where the sums are exact in any order, else in row-major order)."""
    s = all_inside_maps(dtype, scale, spread)
    perm, boxes = torch.tensor([1, 0]), torch.tensor([[3, 3, 6, 6]] * 2)
    lam = kernels.label_weights(*on_cuda(s, perm, boxes))
    assert lam.cpu().tolist() == [1 - 9 / 64, 0.5]
    assert_same(lam, kernels.label_weights(s, perm, boxes))
    images = torch.rand(2, 3, 8, 8)
    for box in ("window", "peak"):
        expected = kernels.saliency_mix_plus(images, s, perm, torch.tensor([3, 3]), torch.tensor([3, 3]), box)
        got = kernels.saliency_mix_plus(*on_cuda(images, s, perm, torch.tensor([3, 3]), torch.tensor([3, 3])), box)
        for name, a, b in zip(("mixed", "boxes", "lam"), got, expected):
            assert_same(a, b, (box, name))


def ordered_weight(target, source, box):
    """lam of one image by hand, as the kernels must take it: Python floats (float64) added one
    at a time in row-major order (the map's total, and the box's sums), then the rule of
    csrc/mix_math.h (area rule where a total or a + b is 0), rounded to float32."""
    height, width = target.shape
    y1, x1, y2, x2 = box

    def counted(v):
        return v if 0 < v < math.inf else 0.0

    t, s = target.double().tolist(), source.double().tolist()
    total_t = total_s = in_t = in_s = 0.0
    for y in range(height):
        for x in range(width):
            total_t += counted(t[y][x])
            total_s += counted(s[y][x])
            if y1 <= y < y2 and x1 <= x < x2:
                in_t += counted(t[y][x])
                in_s += counted(s[y][x])
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    if total_t > 0 and total_s > 0:
        a, b = (total_t - in_t) / total_t, in_s / total_s
        if a + b > 0 and math.isfinite(a / (a + b)):
            lam = a / (a + b)
    return torch.tensor(lam, dtype=torch.float32)


@pytest.mark.skipif(not HAS_OPS, reason="the compiled extension is not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.uint8], ids=str)
def test_label_weight_sums_are_taken_in_row_major_order(dtype):
    """On the CPU. Even images keep their saliency in the box and almost none (1e-12 of it, over
    many binades) outside; odd ones the other way round; each receives from the next. Then an
    even image's a and b are small differences of large sums, and another order of the
    additions (column-major, say) changes several of the 16 in the last float32 bit or more."""
    g = torch.Generator().manual_seed(26)
    b, h, w, box = 32, 12, 10, (3, 2, 9, 8)
    s = torch.exp(torch.randn(b, h, w, generator=g, dtype=torch.float64) * (2 if dtype == torch.float16 else 8))
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[box[0]:box[2], box[1]:box[3]] = True
    s[0::2, ~inside] *= 1e-12
    s[1::2, inside] *= 1e-12
    s = (s / s.max() * 255).round().to(dtype) if dtype == torch.uint8 else s.to(dtype)
    perm = (torch.arange(b) + 1) % b
    boxes = torch.tensor([box] * b)
    expected = torch.stack([ordered_weight(s[i], s[int(perm[i])], box) for i in range(b)])
    assert torch.equal(kernels.label_weights(s, perm, boxes).view(torch.int32), expected.view(torch.int32))
    lam = kernels.saliency_mix_plus(torch.rand(b, 1, h, w), s, perm, torch.full((b,), 6), torch.full((b,), 6),
                                    "window")[2]
    fused_boxes = kernels.window_search(s[perm], torch.full((b,), 6), torch.full((b,), 6))
    expected = torch.stack([ordered_weight(s[i], s[int(perm[i])], fused_boxes[i].tolist()) for i in range(b)])
    assert torch.equal(lam.view(torch.int32), expected.view(torch.int32))


# ---------------------------------------------------------------------------- paste


def offset_images(shape, dtype, layout, offset, seed):
    """The same ``Tensor[B, C, H, W]`` of ``dtype`` on the CPU and on the GPU, its first element
    ``offset`` elements into its storage on both (so an odd or unaligned ``data_ptr``): "nchw",
    "channels_last" or "strided" (every other column of a wider tensor)."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    wide = 2 * w if layout == "strided" else w
    base = torch.rand(offset + b * c * h * wide, generator=g)
    if dtype == torch.bool:
        base = base > 0.5
    elif not dtype.is_floating_point:
        base = (base * 250).to(dtype)
    else:
        base = base.to(dtype)
    stride = {"nchw": (c * h * w, h * w, w, 1), "channels_last": (h * w * c, 1, w * c, c),
              "strided": (c * h * wide, h * wide, wide, 2)}[layout]
    return base.as_strided(shape, stride, offset), base.cuda().as_strided(shape, stride, offset)


@needs_gpu
@pytest.mark.parametrize("dtype", IMAGE_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_paste_equals_the_cpu_kernel_at_every_offset_and_width(dtype, layout):
    perm = torch.tensor([2, 0, 1])
    for offset in range(9):
        for width in range(1, 34):
            images, d_images = offset_images((3, 2, 5, width), dtype, layout, offset, seed=offset * 40 + width)
            assert d_images.storage_offset() == images.storage_offset() == offset
            boxes = random_boxes(3, 5, width, seed=width)
            boxes[0] = torch.tensor([1, width // 3, 4, width - width // 4])  # x1 odd or even as width runs
            assert_same(kernels.paste(d_images, perm.cuda(), boxes.cuda()), kernels.paste(images, perm, boxes),
                        (offset, width))
            s = torch.rand(3, 5, width, generator=torch.Generator().manual_seed(width))
            sizes = torch.tensor([2, 5, 0]), torch.tensor([1, width, width // 2])
            expected = kernels.saliency_mix_plus(images, s, perm, *sizes, "window")
            got = kernels.saliency_mix_plus(d_images, *on_cuda(s, perm, *sizes), "window")
            for a, b in zip(got, expected):
                assert_same(a, b, (offset, width))


@needs_gpu
def test_paste_boxes_out_of_the_image_and_perm_out_of_range():
    images = torch.rand(6, 3, 9, 11)
    perm = torch.tensor([5, -1, 9, 0, 2, 6])  # out of range: the image itself
    boxes = random_boxes(6, 9, 11, seed=4, odd=True)
    assert_same(kernels.paste(*on_cuda(images, perm, boxes)), kernels.paste(images, perm, boxes))


# ------------------------------------------------------------- every dtype and shape


@needs_gpu
@pytest.mark.parametrize("dtype", SALIENCY_DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["rand", "rounded", "wide", "ints", "zeros", "constant"])
def test_search_and_weights_equal_the_cpu_kernels(dtype, kind):
    """The label weights of "rounded" float maps come from the CUDA kernel's tree sums, those of
    float64 "rand" and float64 and float32 "wide" maps of more than one value from its row-major
    sums (test_which_float_maps_the_cuda_kernel_sums_in_a_tree checks these maps on the CPU)."""
    for b, h, w in SEARCH_SHAPES:
        s = make_maps(b, h, w, dtype, kind, seed=b * h + w)
        for sizes in ("random", "full", "zero", "clamped"):
            box_h, box_w = size_tensors(b, h, w, sizes, seed=h)
            check_search_ops(s, torch.randperm(b, generator=torch.Generator().manual_seed(w)), box_h, box_w)


@needs_gpu
@pytest.mark.parametrize("dtype", SALIENCY_DTYPES, ids=str)
def test_ties_go_to_the_first_box_on_both_devices(dtype):
    for kind in ("zeros", "constant", "ints"):
        s = make_maps(8, 20, 24, dtype, kind, seed=5)
        box_h, box_w = size_tensors(8, 20, 24, "random", seed=6)
        check_search_ops(s, torch.arange(8).flip(0), box_h, box_w)
    boxes = kernels.window_search(make_maps(2, 20, 24, dtype, "zeros", seed=0).cuda(), torch.tensor([4, 20]).cuda(),
                                  torch.tensor([5, 24]).cuda())
    assert boxes.cpu().tolist() == [[0, 0, 4, 5], [0, 0, 20, 24]]


@needs_gpu
@pytest.mark.parametrize("dtype", SALIENCY_DTYPES, ids=str)
def test_odd_values_mean_the_same_on_both_devices(dtype):
    """NaN, inf and negative saliency count as 0, perm values out of range mean the image
    itself, boxes and box sizes are clamped: what ops.py's check=False lets through."""
    s = make_maps(7, 12, 15, dtype, "odd", seed=8)
    perm = torch.tensor([3, -2, 7, 100, 0, 6, 1])
    box_h, box_w = size_tensors(7, 12, 15, "clamped", seed=9)
    check_search_ops(s, perm, box_h, box_w)
    boxes = random_boxes(7, 12, 15, seed=10, odd=True)
    assert_same(kernels.label_weights(*on_cuda(s, perm, boxes)), kernels.label_weights(s, perm, boxes))


@needs_gpu
def test_huge_float64_values_whose_window_sums_overflow():
    s = torch.full((3, 6, 7), 1e308, dtype=torch.float64)
    s[1] = torch.rand(6, 7, dtype=torch.float64) * 1e308
    check_search_ops(s, torch.tensor([2, 0, 1]), torch.tensor([3, 6, 2]), torch.tensor([4, 7, 1]))


# --------------------------------------------------------------------- grid limits


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8], ids=str)
def test_70000_small_images(dtype):
    """More images than one grid dimension of the paste (65,535) and many blocks per search."""
    b, h, w = 70_000, 4, 5
    s = make_maps(b, h, w, dtype, "rand", seed=11)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(12))
    box_h, box_w = size_tensors(b, h, w, "random", seed=13)
    check_search_ops(s, perm, box_h, box_w)
    images = torch.rand(b, 3, h, w)
    boxes = kernels.window_search(s[perm], box_h, box_w)
    assert_same(kernels.paste(*on_cuda(images, perm, boxes)), kernels.paste(images, perm, boxes))


def free_bytes():
    """Free device memory and available host memory, bytes."""
    device_free = torch.cuda.mem_get_info()[0]
    host_free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return device_free, host_free


@needs_gpu
def test_images_of_more_than_2_31_elements():
    shape = (2_800, 3, 512, 512)  # 2.2e9 uint8 elements
    n = math.prod(shape)
    assert n > 2**31
    device_free, host_free = free_bytes()
    if device_free < 6 * n or host_free < 5 * n:  # on the GPU: images, mixed, maps, their float64 tables
        pytest.skip(f"needs {6 * n / 1e9:.1f} GB on the GPU and {5 * n / 1e9:.1f} GB of host memory")
    g = torch.Generator().manual_seed(14)
    images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    perm = torch.randperm(shape[0], generator=g)
    boxes = random_boxes(shape[0], 512, 512, seed=15)
    boxes[-1] = torch.tensor([0, 0, 512, 512])  # the last image, past element 2^31, pasted whole
    expected = kernels.paste(images, perm, boxes)
    got = kernels.paste(*on_cuda(images, perm, boxes))
    assert torch.equal(got.cpu(), expected)
    del got, expected
    s = (torch.rand(shape[0], 512, 512, generator=g) * 255).to(torch.uint8)
    box_h, box_w = size_tensors(shape[0], 512, 512, "random", seed=16)
    expected = kernels.saliency_mix_plus(images, s, perm, box_h, box_w, "window")
    got = kernels.saliency_mix_plus(*on_cuda(images, s, perm, box_h, box_w), "window")
    for a, b in zip(got, expected):
        assert torch.equal(a.cpu(), b)


@needs_gpu
def test_saliency_of_more_than_2_31_elements():
    shape = (149_200, 120, 120)  # uint8 maps whose tables fit on chip after the grant (sm80 and later)
    n = math.prod(shape)
    assert n > 2**31
    device_free, host_free = free_bytes()
    if device_free < 2 * n or host_free < 3 * n:
        pytest.skip(f"needs {2 * n / 1e9:.1f} GB on the GPU and {3 * n / 1e9:.1f} GB of host memory")
    g = torch.Generator().manual_seed(17)
    s = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    perm = torch.randperm(shape[0], generator=g)
    box_h, box_w = size_tensors(shape[0], 120, 120, "random", seed=18)
    d_s, d_perm, d_h, d_w = on_cuda(s, perm, box_h, box_w)
    boxes = kernels.window_search(s, box_h, box_w)
    assert_same(kernels.window_search(d_s, d_h, d_w), boxes)
    assert_same(kernels.label_weights(d_s, d_perm, boxes.cuda()), kernels.label_weights(s, perm, boxes))


@needs_gpu
def test_one_image_of_more_than_2_31_paste_granules():
    """uint8 images of 46,341 x 46,341 (2^31 + 4,633 bytes each) one element into their storage:
    an odd address, so granules of 1 byte, more than 2^31 - 1 of them in one image (the kernel's
    64-bit indices). Image 0 receives from image 1 a box over its last 3,000 rows from an odd
    x1, whose last row ends past the image's byte 2^31; image 1 all of image 0."""
    side = 46_341
    shape = (2, 1, side, side)
    n = math.prod(shape)
    assert side * side > 2**31
    device_free, host_free = free_bytes()
    if device_free < 2 * n + 2**30 or host_free < 3 * n + 2**30:  # in and out; in, out and out's copy
        pytest.skip(f"needs {2 * n / 1e9:.1f} GB on the GPU and {3 * n / 1e9:.1f} GB of host memory")
    base = torch.empty(n + 1, dtype=torch.uint8).random_(generator=torch.Generator().manual_seed(32))
    images, d_images = base[1:].view(shape), base.cuda()[1:].view(shape)
    assert d_images.data_ptr() % 2 == 1
    perm = torch.tensor([1, 0])
    boxes = torch.tensor([[side - 3_000, 3, side, side - 2], [0, 0, side, side]])
    expected = kernels.paste(images, perm, boxes)
    assert torch.equal(expected[0, :, side - 3_000:, 3:side - 2], images[1, :, side - 3_000:, 3:side - 2])
    assert torch.equal(expected[1], images[0])
    got = kernels.paste(d_images, perm.cuda(), boxes.cuda())
    del d_images, base
    assert torch.equal(got.cpu(), expected)


# ----------------------------------------------------------- the shared-memory limit


def shared_memory_optin(device=0):
    optin = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", 0)
    if not optin:
        pytest.skip("this torch does not report the GPU's opt-in shared memory per block")
    return optin


# window_on_chip_kernel's static shared memory (csrc/cuda/kernels.cu, kThreads = 256): block_best's
# double values[256] and int64_t indices[256], block_reduce<int64_t>'s int64_t values[256].
ON_CHIP_STATIC_BYTES = 256 * (8 + 8) + 256 * 8


def on_chip_boundary(optin):
    """(side, width): the largest square uint8 maps, side x side, and 1 x width maps whose int32
    table ((H + 1) x (W + 1) cells of 4 bytes) fits the shared memory the on-chip kernel may take
    on a device that opts in to ``optin`` bytes a block: optin less its static shared memory."""
    cells = (optin - ON_CHIP_STATIC_BYTES) // 4
    return math.isqrt(cells) - 1, cells // 2 - 1


def test_the_shared_memory_boundary_by_hand():
    """On the CPU. An H100 opts in to 232,448 bytes a block; less 6,144 static bytes, 56,576
    cells: 237^2 = 56,169 fit (236 x 236 maps), 238^2 = 56,644 do not; 2 x 28,288 = 56,576 fit
    (1 x 28,287 maps), 2 x 28,289 do not. An A100 (166,912 bytes): 40,192 cells, 200^2 = 40,000
    fit (199 x 199), 201^2 do not; 2 x 20,096 (1 x 20,095)."""
    assert on_chip_boundary(232_448) == (236, 28_287)
    assert on_chip_boundary(166_912) == (199, 20_095)


def cuda_kernels_run(fn):
    """The names of the CUDA kernels that ``fn()`` launches, as torch.profiler records them."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.events()
    names = {e.name for e in events if e.device_type == DeviceType.CUDA}
    return names | {kernel.name for e in events for kernel in getattr(e, "kernels", ())}


@needs_gpu
def test_uint8_maps_either_side_of_the_shared_memory_limit():
    """uint8 maps whose int32 table ((H + 1) x (W + 1) x 4 bytes) just fits the device's opt-in
    shared memory less the on-chip kernel's static shared memory (``on_chip_boundary``: 236 x 236
    and 1 x 28,287 on an H100) take that kernel, window_on_chip_kernel; one row or column more
    takes the float64 tables in device memory (row_sums_kernel, then search_kernel and
    label_weights_kernel): the profiler must see which ran. Over sizes around the boundary both
    give the CPU's boxes and weights."""
    side, widest = on_chip_boundary(shared_memory_optin())
    for size in range(side - 9, side + 2):
        s = make_maps(3, size, size, torch.uint8, "rand", seed=size)
        box_h, box_w = size_tensors(3, size, size, "random", seed=size + 1)
        check_search_ops(s, torch.tensor([1, 2, 0]), box_h, box_w)
    for width in range(widest - 1600, widest + 2):
        s = make_maps(2, 1, width, torch.uint8, "rand", seed=width)
        box_h, box_w = torch.tensor([1, 0]), torch.tensor([width // 3, width])
        d_s, d_h, d_w = on_cuda(s, box_h, box_w)
        boxes = kernels.window_search(s, box_h, box_w)
        assert_same(kernels.window_search(d_s, d_h, d_w), boxes, width)
        perm = torch.tensor([1, 0])
        images = torch.rand(2, 1, 1, width)
        expected = kernels.saliency_mix_plus(images, s, perm, box_h, box_w, "window")
        got = kernels.saliency_mix_plus(*on_cuda(images, s, perm, box_h, box_w), "window")
        for a, b in zip(got, expected):
            assert_same(a, b, width)
    for h, w, on_chip in [(side, side, True), (side + 1, side + 1, False), (1, widest, True), (1, widest + 1, False)]:
        s = make_maps(3, h, w, torch.uint8, "rand", seed=h + w)
        box_h, box_w = size_tensors(3, h, w, "random", seed=h + w + 1)
        d = on_cuda(torch.rand(3, 1, h, w), s, torch.tensor([2, 0, 1]), box_h, box_w)
        calls = {"window_search": lambda: kernels.window_search(d[1], d[3], d[4]),
                 "saliency_mix_plus": lambda: kernels.saliency_mix_plus(*d, "window")}
        for op, call in calls.items():
            names = cuda_kernels_run(call)
            ran = (any("window_on_chip_kernel" in n for n in names), any("row_sums_kernel" in n for n in names))
            assert ran == (on_chip, not on_chip), (
                f"{op} on {h} x {w} uint8 maps: expected the {'on-chip' if on_chip else 'device-memory'} path, "
                f"got kernels {sorted(names)} (is window_on_chip_kernel's static shared memory still "
                f"{ON_CHIP_STATIC_BYTES} bytes?)")


# ---------------------------------------------------------------- non-contiguous inputs


def strided_views(s, perm, box_h, box_w, boxes, device):
    """The values of the tensors given, on ``device``, as non-contiguous views: the square maps
    ``s`` as the transpose of their transpose, perm and the box sizes as every other element of
    a tensor twice as long (-5 between), boxes as columns 1-4 of a ``Tensor[B, 7]``."""
    def every_other(t):
        base = torch.full((2 * t.numel(),), -5, dtype=t.dtype, device=device)
        base[::2] = t.to(device)
        return base[::2]

    wide = torch.full((boxes.shape[0], 7), -5, dtype=boxes.dtype, device=device)
    wide[:, 1:5] = boxes.to(device)
    views = (s.transpose(1, 2).contiguous().to(device).transpose(1, 2), every_other(perm), every_other(box_h),
             every_other(box_w), wide[:, 1:5])
    assert not any(v.is_contiguous() for v in views)
    return views


@needs_gpu
@pytest.mark.parametrize("dtype", SALIENCY_DTYPES, ids=str)
def test_non_contiguous_inputs_equal_the_cpu_kernels(dtype):
    """Every op on non-contiguous saliency, perm, box sizes, boxes and images (every other
    column of a wider tensor, 3 elements into its storage) equals the CPU kernel on the same
    views, which equals the CPU kernel on contiguous copies."""
    b, n = 6, 20
    s = make_maps(b, n, n, dtype, "rand", seed=27)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(28))
    box_h, box_w = size_tensors(b, n, n, "random", seed=29)
    boxes = random_boxes(b, n, n, seed=30)
    images, d_images = offset_images((b, 2, n, n), torch.float32, "strided", 3, seed=31)
    c_s, c_perm, c_h, c_w, c_boxes = strided_views(s, perm, box_h, box_w, boxes, "cpu")
    d_s, d_perm, d_h, d_w, d_boxes = strided_views(s, perm, box_h, box_w, boxes, "cuda")
    pairs = [
        ("window_search", kernels.window_search(d_s, d_h, d_w), kernels.window_search(c_s, c_h, c_w),
         kernels.window_search(s, box_h, box_w)),
        ("peak_boxes", kernels.peak_boxes(d_s, d_h, d_w), kernels.peak_boxes(c_s, c_h, c_w),
         kernels.peak_boxes(s, box_h, box_w)),
        ("label_weights", kernels.label_weights(d_s, d_perm, d_boxes), kernels.label_weights(c_s, c_perm, c_boxes),
         kernels.label_weights(s, perm, boxes)),
        ("paste", kernels.paste(d_images, d_perm, d_boxes), kernels.paste(images, c_perm, c_boxes),
         kernels.paste(images.contiguous(), perm, boxes)),
    ]
    for box in ("window", "peak"):
        got = kernels.saliency_mix_plus(d_images, d_s, d_perm, d_h, d_w, box)
        expected = kernels.saliency_mix_plus(images, c_s, c_perm, c_h, c_w, box)
        contiguous = kernels.saliency_mix_plus(images.contiguous(), s, perm, box_h, box_w, box)
        pairs += [(f"saliency_mix_plus {box} {name}", *r) for name, *r in zip(("mixed", "boxes", "lam"), got,
                                                                             expected, contiguous)]
    for what, got, expected, contiguous in pairs:
        assert torch.equal(bits(expected), bits(contiguous)), what
        assert_same(got, expected, what)


# ---------------------------------------------------------- streams and devices


@needs_gpu
def test_ops_on_a_side_stream():
    s = make_maps(16, 40, 36, torch.uint8, "rand", seed=19)
    f = make_maps(16, 40, 36, torch.float32, "wide", seed=20)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(21))
    box_h, box_w = size_tensors(16, 40, 36, "random", seed=22)
    images = torch.rand(16, 3, 40, 36)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        for maps in (s, f):
            d = on_cuda(images, maps, perm, box_h, box_w)
            got = [kernels.saliency_mix_plus(*d, box) for box in ("window", "peak")]
            got.append(kernels.label_weights(d[1], d[2], got[0][1]))
            side.synchronize()
            for box, result in zip(("window", "peak"), got):
                for a, b in zip(result, kernels.saliency_mix_plus(images, maps, perm, box_h, box_w, box)):
                    assert_same(a, b, box)
            assert_same(got[2], kernels.label_weights(maps, perm, got[0][1].cpu()))


@needs_gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_ops_on_a_second_device_while_the_first_is_current():
    torch.cuda.set_device(0)
    s = make_maps(6, 230, 230, torch.uint8, "rand", seed=23)  # the table needs the opt-in on device 1
    box_h, box_w = size_tensors(6, 230, 230, "random", seed=24)
    check_search_ops(s, torch.randperm(6, generator=torch.Generator().manual_seed(25)), box_h, box_w,
                     device="cuda:1")


# ------------------------------------------------------------------ fresh processes


@needs_gpu
@pytest.mark.parametrize("first", ["window_search", "saliency_mix_plus", "label_weights"])
def test_a_fresh_process_calls_the_ops_in_any_order(first):
    """The first call of a process grants the on-chip kernel its shared memory, whichever op
    makes it; maps of 32x32 fit without the grant, 200x200 need it."""
    run_fresh(f"""
        first = {first!r}
        for size in (200, 32):
            x, s, p, h, w = inputs(8, size, size, seed=size)
            d = [t.cuda() for t in (x, s, p, h, w)]
            boxes = k.window_search(s[p], h, w)
            order = ["window_search", "saliency_mix_plus", "label_weights"]
            order.remove(first)
            for op in [first] + order:
                if op == "window_search":
                    same(k.window_search(d[1][d[2]], d[3], d[4]), boxes, op)
                elif op == "label_weights":
                    same(k.label_weights(d[1], d[2], boxes.cuda()), k.label_weights(s, p, boxes), op)
                else:
                    for a, b in zip(k.saliency_mix_plus(*d, "window"), k.saliency_mix_plus(x, s, p, h, w, "window")):
                        same(a, b, op)
        print("ok")
    """)


@needs_gpu
def test_first_op_call_inside_a_cuda_graph_capture():
    """The op's first call in the process is captured (no shared-memory grant may happen
    then: the tables go to global memory), replayed on new inputs copied in place, then called
    eagerly (the grant happens) and captured again; every result equals the CPU kernel's."""
    out = run_fresh("""
        def step(d):
            return k.saliency_mix_plus(*d, "window") + (k.window_search(d[1], d[3], d[4]),)

        for size in (200, 32):  # 200x200 uint8 tables need the grant, 32x32 do not
            d = [t.cuda() for t in inputs(8, size, size, seed=size)]
            torch.cuda.synchronize()
            for round in range(2):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    got = step(d)
                for replay in range(2):
                    new = inputs(8, size, size, seed=size + 10 * round + replay + 1)
                    for dst, src in zip(d, new):
                        dst.copy_(src)
                    graph.replay()
                    torch.cuda.synchronize()
                    x, s, p, h, w = new
                    expected = k.saliency_mix_plus(x, s, p, h, w, "window") + (k.window_search(s, h, w),)
                    for a, b in zip(got, expected):
                        same(a, b, (size, round, replay))
                for a, b in zip(step(d), expected):
                    same(a, b, (size, round, "eager"))
        print("captured and replayed")
    """)
    assert "captured and replayed" in out


def sanitizer():
    from torch.utils.cpp_extension import CUDA_HOME

    found = shutil.which("compute-sanitizer")
    if found is None and CUDA_HOME and (Path(CUDA_HOME) / "bin" / "compute-sanitizer").exists():
        found = str(Path(CUDA_HOME) / "bin" / "compute-sanitizer")
    if found is None:
        pytest.skip("compute-sanitizer is not installed with this CUDA (needs a CUDA GPU toolkit)")
    return found


SANITIZED_CASE = """
    import os

    cases = [inputs(5, size, size, seed=size, dtype=dtype)
             for dtype, size in ((torch.uint8, 24), (torch.uint8, 120), (torch.float32, 17), (torch.float64, 9))]
    x, s, p, h, w = inputs(5, 9, 9, seed=10, dtype=torch.float64)
    cases.append((x, torch.load(os.environ["SANITIZED_WIDE_MAPS"]), p, h, w))
    for x, s, p, h, w in cases:
        d = [t.cuda() for t in (x, s, p, h, w)]
        for box in ("window", "peak"):
            for a, b in zip(k.saliency_mix_plus(*d, box), k.saliency_mix_plus(x, s, p, h, w, box)):
                same(a, b, (s.dtype, s.shape, box))
        boxes = k.window_search(s, h, w)
        same(k.label_weights(d[1], d[2], boxes.cuda()), k.label_weights(s, p, boxes), (s.dtype, s.shape))
    base = torch.rand(32 * 6 * 7 * 9 + 1).half()  # one element in: an unaligned address
    x, xd = base[1:].view(32, 6, 7, 9), base.cuda()[1:].view(32, 6, 7, 9)
    p = torch.randperm(32)
    b = torch.tensor([[1, 2, 6, 7]] * 32)
    same(k.paste(xd, p.cuda(), b.cuda()), k.paste(x, p, b), "paste")
    print("sanitized case done")
"""


@needs_gpu
@pytest.mark.parametrize("tool", ["memcheck", "racecheck", "synccheck", "initcheck"])
def test_compute_sanitizer(tool, tmp_path):
    """Each kernel on small cases under compute-sanitizer's ``tool``: uint8 maps on chip (24 x 24)
    and beyond the default 48 KiB (120 x 120, after the grant), float32 and float64 maps from
    torch.rand in float32 (multiples of 2^-24: the label weights' tree sums) and float64 maps
    over many binades (one thread's row-major sums), the paste from an unaligned address."""
    found = sanitizer()
    listed = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=60)
    listed = listed.stdout + listed.stderr
    if tool not in listed:
        pytest.skip(f"this compute-sanitizer has no --tool {tool}")
    wide = make_maps(5, 9, 9, torch.float64, "wide", seed=33)
    assert not any(sums_exact_in_any_order(m) for m in wide)
    torch.save(wide, tmp_path / "wide.pt")
    out = run_fresh(SANITIZED_CASE, timeout=600,
                    prefix=(found, "--tool", tool, "--error-exitcode", "3", "--print-limit", "20"),
                    env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1",  # one allocation per tensor: exact bounds
                         "SANITIZED_WIDE_MAPS": str(tmp_path / "wide.pt")})
    assert "sanitized case done" in out
    assert "ERROR SUMMARY: 0 errors" in out or "RACECHECK SUMMARY: 0 hazards" in out, out[-3000:]
