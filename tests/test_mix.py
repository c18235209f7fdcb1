"""The mixers: targets, boxes, label weights, prob, pairing, reproducibility, bad options,
and the hot path's promise: no host read of device data (meta tensors, CUDA sync debug mode,
CUDA graphs)."""

import math

import pytest
import torch
import torch.nn.functional as F

import saliencymixplus
from saliencymixplus import CutMix, SaliencyMix, SaliencyMixPlus, mix_targets, one_hot, ops, soft_target_cross_entropy
from saliencymixplus.mix import sample_beta

from brute_force import brute_paste, brute_peak, brute_weight, brute_window

K = 7
HAS_OPS = saliencymixplus.extension_info()["loaded"]
HAS_CUDA = torch.cuda.is_available() and saliencymixplus.extension_info()["cuda"]
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and the CUDA kernels")


def batch(b=6, c=3, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, c, h, w, generator=g), torch.randint(0, K, (b,), generator=g),
            torch.rand(b, h, w, generator=g))


def hand_targets(labels, perm, lam, smoothing=0.0):
    """Soft targets written out element by element: ``lam_i`` on the own label and ``1 - lam_i``
    on the source's, each one-hot smoothed as ``1 - s + s / K`` on the label and ``s / K`` elsewhere."""
    rows = []
    for i in range(len(labels)):
        own, source, w = int(labels[i]), int(labels[int(perm[i])]), float(lam[i])
        row = []
        for k in range(K):
            on_own = 1 - smoothing + smoothing / K if k == own else smoothing / K
            on_source = 1 - smoothing + smoothing / K if k == source else smoothing / K
            row.append(w * on_own + (1 - w) * on_source)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


MIXERS = {
    "cutmix": lambda **kw: CutMix(K, **kw),
    "saliencymix": lambda **kw: SaliencyMix(K, **kw),
    "saliencymixplus": lambda **kw: SaliencyMixPlus(K, **kw),
    "saliencymixplus-peak": lambda **kw: SaliencyMixPlus(K, box="peak", **kw),
}


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_targets_boxes_and_paste(name, lam_mode, smoothing):
    images, labels, saliency = batch()
    for seed in range(5):
        mixer = MIXERS[name](lam_mode=lam_mode, label_smoothing=smoothing, generator=torch.Generator().manual_seed(seed))
        r = mixer.mix(images, labels, saliency)
        assert r.images.shape == images.shape and r.targets.shape == (6, K)
        torch.testing.assert_close(r.targets.sum(1), torch.ones(6))
        assert sorted(r.perm.tolist()) == list(range(6))
        torch.testing.assert_close(r.images, brute_paste(images, r.perm, r.boxes), rtol=0, atol=0)
        torch.testing.assert_close(r.targets, hand_targets(labels, r.perm, r.lam, smoothing))
        if smoothing:
            assert r.targets.min() >= smoothing / K - 1e-7


@pytest.mark.parametrize("name", ["cutmix", "saliencymix"])
def test_area_rule_baselines(name):
    images, labels, saliency = batch()
    r = MIXERS[name](generator=torch.Generator().manual_seed(3)).mix(images, labels, saliency)
    area = (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
    torch.testing.assert_close(r.lam, 1 - area.float() / (12 * 10))
    assert (r.boxes == r.boxes[0]).all(), "one box for the whole batch"


@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
def test_saliencymix_box_is_centred_on_the_first_sources_peak(lam_mode):
    images, labels, saliency = batch()
    r = SaliencyMix(K, lam_mode=lam_mode, generator=torch.Generator().manual_seed(1)).mix(images, labels, saliency)
    replay = torch.Generator().manual_seed(1)  # the mixer's draws: the prob coin, then lam
    torch.rand((), generator=replay, dtype=torch.float64)
    lam = sample_beta(1.0, 1 if lam_mode == "batch" else 6, replay).expand(6)
    cut_h, cut_w = (12 * torch.sqrt(1 - lam)).long(), (10 * torch.sqrt(1 - lam)).long()
    source = saliency[r.perm[:1]].expand(6, 12, 10)
    torch.testing.assert_close(r.boxes, ops.peak_boxes_reference(source, cut_h, cut_w), rtol=0, atol=0)


@pytest.mark.parametrize("box", ["window", "peak"])
def test_saliencymixplus_boxes_and_lam_against_brute_force(box):
    images, labels, saliency = batch()
    saliency = (saliency * 4).round()  # integer values: exact sums, so the tie rule is exact too
    r = SaliencyMixPlus(K, box=box, lam_mode="sample", generator=torch.Generator().manual_seed(4)).mix(
        images, labels, saliency)
    replay = torch.Generator().manual_seed(4)  # the mixer's draws on the CPU: the prob coin, then lam
    torch.rand((), generator=replay, dtype=torch.float64)
    lam = sample_beta(1.0, 6, replay)
    for i in range(6):
        src = int(r.perm[i])
        h, w = int(12 * math.sqrt(1 - float(lam[i]))), int(10 * math.sqrt(1 - float(lam[i])))
        expected = brute_window(saliency[src], h, w)[0] if box == "window" else brute_peak(saliency[src], h, w)
        assert r.boxes[i].tolist() == expected
        assert r.lam[i].item() == pytest.approx(brute_weight(saliency[i], saliency[src], expected, 12, 10), abs=1e-6)


def test_window_boxes_follow_the_source_saliency():
    images, labels, _ = batch(b=4, h=16, w=16)
    saliency = torch.zeros(4, 16, 16)
    for i in range(4):  # each image's object in a different corner
        y, x = divmod(i, 2)
        saliency[i, 8 * y : 8 * y + 4, 8 * x : 8 * x + 4] = 1.0
    r = SaliencyMixPlus(K, alpha=1.0, generator=torch.Generator().manual_seed(0)).mix(images, labels, saliency)
    for i in range(4):
        src = int(r.perm[i])
        y1, x1, y2, x2 = r.boxes[i].tolist()
        assert [y1, x1, y2, x2] == brute_window(saliency[src], y2 - y1, x2 - x1)[0]
        if y2 - y1 >= 4 and x2 - x1 >= 4:  # a box that can hold the 4 x 4 object holds all of it
            assert saliency[src, y1:y2, x1:x2].sum() == 16


@pytest.mark.parametrize("name", MIXERS)
def test_prob_zero_leaves_the_batch_untouched(name):
    images, labels, saliency = batch()
    r = MIXERS[name](prob=0.0, label_smoothing=0.1).mix(images, labels, saliency)
    assert r.images is images and r.perm is None and r.boxes is None
    torch.testing.assert_close(r.targets, one_hot(labels, K, 0.1))
    torch.testing.assert_close(r.lam, torch.ones(6))


def test_prob_mixes_about_that_share_of_batches():
    images, labels, saliency = batch()
    mixer = CutMix(K, prob=0.3, generator=torch.Generator().manual_seed(0))
    mixed = sum(mixer.mix(images, labels).perm is not None for _ in range(400))
    assert 80 <= mixed <= 160


@pytest.mark.parametrize("name", MIXERS)
def test_coin_asked_first_is_the_coin_mix_tosses(name):
    """``coin()`` then ``mix(mixed=...)`` decides as ``mix()`` alone does from the same generator,
    draw for draw; ``mixed=`` is obeyed whatever ``prob`` says, and draws no coin."""
    images, labels, saliency = batch()
    mixer = MIXERS[name](prob=0.5)
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    results = []
    for _ in range(40):
        asked = mixer.mix(images, labels, saliency, generator=a, mixed=mixer.coin(a))
        alone = mixer.mix(images, labels, saliency, generator=b)
        assert asked.mixed == alone.mixed and torch.equal(asked.images, alone.images)
        results.append(alone.mixed)
    assert 5 < sum(results) < 35
    never = MIXERS[name](prob=0.0).mix(images, labels, saliency, generator=a, mixed=True)
    assert never.mixed and never.images.shape == images.shape
    state = a.get_state()
    always = MIXERS[name](prob=1.0).mix(images, labels, saliency, generator=a, mixed=False)
    assert not always.mixed and torch.equal(always.images, images) and torch.equal(a.get_state(), state)


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
def test_same_generator_same_result(name, lam_mode):
    images, labels, saliency = batch()
    a = MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(9)).mix(images, labels, saliency)
    b = MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(9)).mix(images, labels, saliency)
    c = MIXERS[name](lam_mode=lam_mode).mix(images, labels, saliency, generator=torch.Generator().manual_seed(9))
    for x, y in [(a, b), (a, c)]:
        torch.testing.assert_close(x.images, y.images, rtol=0, atol=0)
        torch.testing.assert_close(x.targets, y.targets, rtol=0, atol=0)
        assert x.boxes.tolist() == y.boxes.tolist()
    d = MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(10)).mix(images, labels, saliency)
    assert d.boxes.tolist() != a.boxes.tolist() or d.perm.tolist() != a.perm.tolist()


@pytest.mark.parametrize("name", ["saliencymix", "saliencymixplus", "saliencymixplus-peak"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("value,found", [(float("nan"), "NaN"), (float("inf"), ", inf\\]"),
                                         (float("-inf"), "\\[-inf, "), (-0.5, "\\[-0.5, ")])
def test_odd_saliency_is_refused_on_the_cpu(name, dtype, value, found):
    """On the CPU reading saliency costs no sync, so a mixer checks it as it checks labels,
    mixed batch or not, and says what it found."""
    images, labels, saliency = batch()
    odd = saliency.to(dtype)
    odd[2, 3, 4] = value
    for prob in (1.0, 0.0):
        with pytest.raises(ValueError, match=f"saliency must be finite and >= 0, got .*{found}"):
            MIXERS[name](prob=prob).mix(images, labels, odd)
    MIXERS[name]().mix(images, labels, odd.clamp(0, 1).nan_to_num(0.0))
    CutMix(K)(images, labels, odd)  # CutMix ignores saliency


@needs_cuda
def test_odd_saliency_counts_as_zero_in_the_mixers_on_cuda():
    """On a GPU the mixers never read saliency values on the host: negative, NaN and infinite
    values mean 0, as in the kernels."""
    images, labels, saliency = (t.cuda() for t in batch())
    odd = saliency.clone()
    odd[0, :3] = -1.0
    odd[1, 2, 2] = float("nan")
    odd[2, 5, 5] = float("inf")
    odd[3] = -2.0
    counted = odd.clone()
    counted[0, :3] = counted[1, 2, 2] = counted[2, 5, 5] = 0.0
    counted[3] = 0.0
    for box in ("window", "peak"):
        a = SaliencyMixPlus(K, box=box, generator=torch.Generator().manual_seed(3)).mix(images, labels, odd)
        b = SaliencyMixPlus(K, box=box, generator=torch.Generator().manual_seed(3)).mix(images, labels, counted)
        assert a.boxes.tolist() == b.boxes.tolist()
        torch.testing.assert_close(a.targets, b.targets)
    a = SaliencyMix(K, generator=torch.Generator().manual_seed(3)).mix(images, labels, odd)
    b = SaliencyMix(K, generator=torch.Generator().manual_seed(3)).mix(images, labels, counted)
    assert a.boxes.tolist() == b.boxes.tolist()


def test_cutmix_is_called_like_the_others():
    images, labels, saliency = batch()
    a = CutMix(K, generator=torch.Generator().manual_seed(0))(images, labels)
    b = CutMix(K, generator=torch.Generator().manual_seed(0))(images, labels, saliency)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lam_modes():
    images, labels, saliency = batch(b=16, h=32, w=32)
    r = SaliencyMixPlus(K, lam_mode="sample", generator=torch.Generator().manual_seed(2)).mix(images, labels, saliency)
    heights = (r.boxes[:, 2] - r.boxes[:, 0]).unique()
    assert len(heights) > 1, "one box size per image"
    r = SaliencyMixPlus(K, lam_mode="batch", generator=torch.Generator().manual_seed(2)).mix(images, labels, saliency)
    assert len((r.boxes[:, 2] - r.boxes[:, 0]).unique()) == 1


def test_half_pairing():
    images, labels, saliency = batch(b=7)
    r = SaliencyMixPlus(K, pairing="half", box="peak", generator=torch.Generator().manual_seed(5)).mix(
        images, labels, saliency)
    assert r.images.shape[0] == 3 and r.targets.shape == (3, K) and r.lam.shape == (3,)
    sources = r.perm[:3].tolist()
    assert all(3 <= s < 7 for s in sources) and len(set(sources)) == 3
    torch.testing.assert_close(r.images, brute_paste(images, r.perm, r.boxes)[:3])
    assert r.mixed and r.labels.tolist() == labels[:3].tolist()  # the returned images' own labels
    not_mixed = SaliencyMixPlus(K, pairing="half", prob=0.0).mix(images, labels, saliency)
    assert not_mixed.images.shape[0] == 7, "unmixed batches are trained on whole"
    assert not not_mixed.mixed and not_mixed.labels.tolist() == labels.tolist()
    with pytest.raises(ValueError, match="at least 2"):
        SaliencyMixPlus(K, pairing="half").mix(images[:1], labels[:1], saliency[:1])


def test_beta_draws():
    draws = sample_beta(1.0, 20000, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 1
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs(draws.var().item() - 1 / 12) < 0.005  # Beta(1, 1) is uniform
    skewed = sample_beta(0.2, 20000, torch.Generator().manual_seed(0))
    assert ((skewed < 0.1) | (skewed > 0.9)).float().mean() > 0.5  # U-shaped


def test_soft_target_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, K, generator=g), torch.randint(0, K, (5,), generator=g)
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot(labels, K)), F.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn(5, K, generator=g), 1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, soft), F.cross_entropy(logits, soft))
    # per-sample weights survive: a sample's gradient follows its own target
    logits.requires_grad_(True)
    targets = mix_targets(labels, torch.tensor([1, 2, 3, 4, 0]), torch.tensor([1.0, 0.9, 0.5, 0.1, 0.0]), K)
    soft_target_cross_entropy(logits, targets).backward()
    torch.testing.assert_close(logits.grad, (torch.softmax(logits.detach(), 1) - targets) / 5)
    with pytest.raises(ValueError, match="same shape"):
        soft_target_cross_entropy(logits, targets[:, :3])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: CutMix(0), "num_classes must be a positive int"),
        (lambda: CutMix(K, alpha=0), "alpha must be > 0"),
        (lambda: CutMix(K, prob=1.5), "prob must be in \\[0, 1\\]"),
        (lambda: CutMix(K, label_smoothing=1.0), "label_smoothing must be in \\[0, 1\\)"),
        (lambda: SaliencyMix(K, lam_mode="pixel"), "lam_mode must be one of"),
        (lambda: SaliencyMixPlus(K, box="center"), "box must be one of"),
        (lambda: SaliencyMixPlus(K, pairing="third"), "pairing must be one of"),
        (lambda: CutMix(K, generator=0), "generator must be a torch.Generator or None"),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, x, y, s: m(x[0], y, s), "images must be a Tensor\\[B, C, H, W\\]"),
        (lambda m, x, y, s: m(x, y.float(), s), "labels must be a LongTensor\\[6\\]"),
        (lambda m, x, y, s: m(x, y[:3], s), "labels must be a LongTensor\\[6\\]"),
        (lambda m, x, y, s: m(x, y + K, s), "labels must be in \\[0, 7\\)"),
        (lambda m, x, y, s: m(x, y, s[:, :5]), "saliency must be a Tensor\\[B, H, W\\] = \\[6, 12, 10\\]"),
        (lambda m, x, y, s: m(x, y, s.to("meta")), "saliency must be on cpu like images"),
        (lambda m, x, y, s: m(x, y), "SaliencyMixPlus needs saliency"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(SaliencyMixPlus(K), *batch())


def test_mixer_under_torch_compile():
    images, labels, saliency = batch()
    mixer = SaliencyMixPlus(K, generator=torch.Generator().manual_seed(0))
    eager = SaliencyMixPlus(K, generator=torch.Generator().manual_seed(0))

    @torch.compile(backend="aot_eager")
    def step(images, labels, saliency):
        mixed, targets = mixer(images * 1.0, labels, saliency)
        return mixed.sum((1, 2, 3)), targets

    got = step(images, labels, saliency)
    mixed, targets = eager(images, labels, saliency)
    torch.testing.assert_close(got[0], mixed.sum((1, 2, 3)))
    torch.testing.assert_close(got[1], targets)


# ------------------------------------------------------------- targets built by hand


def test_mix_targets_hand_derived_rows():
    labels, perm = torch.tensor([0, 1]), torch.tensor([1, 0])
    # own label weight .75, smoothing .3 over K = 3: each one-hot is (.8, .1, .1) on its label
    got = mix_targets(labels, perm, torch.tensor([0.75, 0.25]), 3, 0.3)
    torch.testing.assert_close(got, torch.tensor([[0.625, 0.275, 0.1], [0.625, 0.275, 0.1]]))
    got = mix_targets(torch.tensor([0, 2]), perm, torch.tensor([0.75, 0.4]), 3, 0.3)
    torch.testing.assert_close(got, torch.tensor([[0.625, 0.1, 0.275], [0.52, 0.1, 0.38]]))
    got = mix_targets(torch.tensor([0, 2]), perm, torch.tensor([0.75, 0.4]), 3)
    torch.testing.assert_close(got, torch.tensor([[0.75, 0.0, 0.25], [0.6, 0.0, 0.4]]))
    torch.testing.assert_close(one_hot(torch.tensor([2]), 4, 0.2), torch.tensor([[0.05, 0.05, 0.85, 0.05]]))


def blob_batch():
    """Two 10 x 10 images; image 0's saliency is one 2 x 2 blob at rows/columns 1-2, image 1's
    at rows/columns 6-7; labels 3 and 5."""
    images = torch.arange(2 * 1 * 10 * 10, dtype=torch.float32).reshape(2, 1, 10, 10)
    saliency = torch.zeros(2, 10, 10)
    saliency[0, 1:3, 1:3] = 1.0
    saliency[1, 6:8, 6:8] = 1.0
    return images, torch.tensor([3, 5]), saliency


def blob_pixels_inside(blob_top_left, box):
    """How many of the 4 pixels of a 2 x 2 blob lie in box (y1, x1, y2, x2), counted one by one."""
    y0, x0 = blob_top_left
    y1, x1, y2, x2 = box
    return sum(1 for y in (y0, y0 + 1) for x in (x0, x0 + 1) if y1 <= y < y2 and x1 <= x < x2)


def swapped_pair_seeds(make, n=2):
    """Seeds whose call swaps the two images (perm [1, 0]) and mixes."""
    images, labels, saliency = blob_batch()
    found = []
    for seed in range(200):
        r = make(seed).mix(images, labels, saliency)
        if r.perm is not None and r.perm.tolist() == [1, 0] and (r.boxes[:, 2] > r.boxes[:, 0]).all():
            found.append(seed)
        if len(found) == n:
            return found
    raise AssertionError("no seed swaps the pair")


@pytest.mark.parametrize("box", ["window", "peak"])
def test_saliencymixplus_targets_by_hand_from_one_blob(box):
    images, labels, saliency = blob_batch()
    blobs = {0: (1, 1), 1: (6, 6)}
    for seed in swapped_pair_seeds(lambda s: SaliencyMixPlus(10, box=box, generator=torch.Generator().manual_seed(s))):
        r = SaliencyMixPlus(10, box=box, generator=torch.Generator().manual_seed(seed)).mix(images, labels, saliency)
        for i, source in ((0, 1), (1, 0)):
            box_i = r.boxes[i].tolist()
            kept = 1 - blob_pixels_inside(blobs[i], box_i) / 4  # the share of the target's blob still visible
            pasted = blob_pixels_inside(blobs[source], box_i) / 4  # the share of the source's blob pasted in
            if kept + pasted == 0:
                lam = 1 - (box_i[2] - box_i[0]) * (box_i[3] - box_i[1]) / 100
            else:
                lam = kept / (kept + pasted)
            expected = [0.0] * 10
            expected[int(labels[i])] += lam
            expected[int(labels[source])] += 1 - lam
            torch.testing.assert_close(r.targets[i], torch.tensor(expected))


@pytest.mark.parametrize("name", ["cutmix", "saliencymix"])
def test_baseline_targets_by_hand(name):
    images, labels, saliency = blob_batch()
    make = {"cutmix": lambda s: CutMix(10, generator=torch.Generator().manual_seed(s)),
            "saliencymix": lambda s: SaliencyMix(10, generator=torch.Generator().manual_seed(s))}[name]
    for seed in swapped_pair_seeds(make):
        r = make(seed).mix(images, labels, saliency)
        y1, x1, y2, x2 = r.boxes[0].tolist()
        if name == "saliencymix":  # centred on the source's (image 1's) first peak pixel, (6, 6)
            h = int(10 * math.sqrt(1 - float(sample_beta(1.0, 1, _after_coin(seed))[0])))
            assert [y1, x1, y2, x2] == [max(6 - h // 2, 0), max(6 - h // 2, 0), min(6 + h // 2, 10), min(6 + h // 2, 10)]
        lam = 1 - (y2 - y1) * (x2 - x1) / 100
        torch.testing.assert_close(r.targets, torch.tensor([[0, 0, 0, lam, 0, 1 - lam, 0, 0, 0, 0],
                                                            [0, 0, 0, 1 - lam, 0, lam, 0, 0, 0, 0]]))


def _after_coin(seed):
    g = torch.Generator().manual_seed(seed)
    torch.rand((), generator=g, dtype=torch.float64)
    return g


# ------------------------------------------------------- the hot path: no host reads


MIXER_OPTIONS = [
    ("cutmix", {}), ("cutmix", {"lam_mode": "sample"}), ("saliencymix", {}), ("saliencymix", {"lam_mode": "sample"}),
    ("saliencymixplus", {}), ("saliencymixplus", {"lam_mode": "sample", "label_smoothing": 0.1}),
    ("saliencymixplus-peak", {}), ("saliencymixplus", {"pairing": "half"}),
    ("saliencymixplus-peak", {"pairing": "half", "lam_mode": "sample"}), ("saliencymixplus", {"prob": 0.5}),
    ("cutmix", {"prob": 0.0}),
]


@pytest.mark.skipif(not HAS_OPS, reason="meta tensors need the compiled ops' fake kernels")
@pytest.mark.parametrize("name,options", MIXER_OPTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype,layout,saliency_dtype", [(torch.float32, "contiguous", torch.float32),
                                                         (torch.bfloat16, "channels_last", torch.uint8),
                                                         (torch.uint8, "contiguous", torch.float16)])
@pytest.mark.parametrize("seeded", [False, True])
def test_mixers_run_on_meta_tensors(name, options, dtype, layout, saliency_dtype, seeded):
    """Any host read of a meta tensor raises, so a mixer that runs on meta never syncs a GPU."""
    meta = torch.device("meta")
    images = torch.empty(8, 3, 12, 10, dtype=dtype, device=meta)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.empty(8, dtype=torch.long, device=meta)
    saliency = torch.empty(8, 12, 10, dtype=saliency_dtype, device=meta)
    generator = torch.Generator().manual_seed(0) if seeded else None
    for _ in range(4):  # prob=0.5 takes both branches
        r = MIXERS[name](generator=generator, **options).mix(images, labels, saliency)
        kept = 4 if options.get("pairing") == "half" and r.perm is not None else 8
        assert r.images.device == meta and r.images.shape == (kept, 3, 12, 10) and r.images.dtype == dtype
        assert r.targets.shape == (kept, K) and r.lam.shape == (kept,)
        if r.perm is not None:
            assert r.perm.shape == (8,) and r.boxes.shape == (8, 4)


def test_meta_tensors_catch_host_reads():
    """The meta test above is only worth something if a host read of a meta tensor fails."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.empty(3, device="meta").max().item()
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool(torch.empty((), device="meta") < 1)


def test_generator_on_another_device_is_refused():
    images, labels, saliency = batch()
    with pytest.raises(ValueError, match="generator must be on cpu like the images, or on the CPU, got one on meta"):
        SaliencyMixPlus(K, generator=_FakeMetaGenerator()).mix(images, labels, saliency)


class _FakeMetaGenerator(torch.Generator):
    """A CPU generator that says it lives on meta (no real device generator exists without a GPU)."""

    @property
    def device(self):
        return torch.device("meta")


@needs_cuda
@pytest.mark.parametrize("name,options", MIXER_OPTIONS, ids=lambda v: str(v))
@pytest.mark.parametrize("seeded", [False, True])
def test_mixers_do_not_sync_on_cuda(name, options, seeded):
    images, labels, saliency = (t.cuda() for t in batch(b=8, h=32, w=32))
    images = images.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0) if seeded else None
    mixer = MIXERS[name](generator=generator, **options)
    mixer.mix(images, labels, saliency)  # first call: lazy initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            r = mixer.mix(images, labels, saliency)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert r.images.is_cuda and r.targets.is_cuda


@needs_cuda
@pytest.mark.parametrize("name", MIXERS)
def test_cuda_mixers_against_brute_force_and_reproducible(name):
    images, labels, saliency = batch(b=8, h=16, w=12)
    saliency = (saliency * 4).round()
    a = MIXERS[name](generator=torch.Generator().manual_seed(1)).mix(images.cuda(), labels.cuda(), saliency.cuda())
    b = MIXERS[name](generator=torch.Generator().manual_seed(1)).mix(images.cuda(), labels.cuda(), saliency.cuda())
    assert a.perm.tolist() == b.perm.tolist() and a.boxes.tolist() == b.boxes.tolist()
    perm, boxes = a.perm.cpu(), a.boxes.cpu()
    torch.testing.assert_close(a.images.cpu(), brute_paste(images, perm, boxes), rtol=0, atol=0)
    if name.startswith("saliencymixplus"):
        lam = [brute_weight(saliency[i], saliency[int(perm[i])], boxes[i].tolist(), 16, 12) for i in range(8)]
        torch.testing.assert_close(a.lam.cpu(), torch.tensor(lam, dtype=torch.float32))
    torch.testing.assert_close(a.targets.cpu(), hand_targets(labels, perm, a.lam.cpu()))


@needs_cuda
@pytest.mark.parametrize("name", MIXERS)
def test_mixer_call_captured_in_a_cuda_graph(name):
    """Captured once, replayed: each replay draws fresh numbers (the default CUDA generator is
    registered with the graph) and computes the mix of its own draws."""
    images, labels, saliency = (t.cuda() for t in batch(b=16, h=24, w=20))
    mixer = MIXERS[name]()  # prob=1: the coin is decided at capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            mixer.mix(images, labels, saliency)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = mixer.mix(images, labels, saliency)
    seen = set()
    for _ in range(4):
        graph.replay()
        torch.cuda.synchronize()
        perm, boxes = out.perm.cpu(), out.boxes.cpu()
        seen.add((tuple(perm.tolist()), tuple(boxes.flatten().tolist())))
        torch.testing.assert_close(out.images.cpu(), brute_paste(images.cpu(), perm, boxes), rtol=0, atol=0)
        torch.testing.assert_close(out.targets.cpu(), hand_targets(labels.cpu(), perm, out.lam.cpu()))
    assert len(seen) > 1, "replays must draw fresh random numbers"
