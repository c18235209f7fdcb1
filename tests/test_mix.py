"""The mixers: targets, boxes, label weights, prob, pairing, reproducibility, bad options."""

import pytest
import torch
import torch.nn.functional as F

from saliencymixplus import CutMix, SaliencyMix, SaliencyMixPlus, mix_targets, one_hot, ops, soft_target_cross_entropy
from saliencymixplus.mix import sample_beta

from brute_force import brute_paste

K = 7


def batch(b=6, c=3, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, c, h, w, generator=g), torch.randint(0, K, (b,), generator=g),
            torch.rand(b, h, w, generator=g))


def run(mixer, images, labels, saliency, **kw):
    if isinstance(mixer, CutMix):
        return mixer.mix(images, labels, **kw)
    return mixer.mix(images, labels, saliency, **kw)


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
        r = run(mixer, images, labels, saliency)
        assert r.images.shape == images.shape and r.targets.shape == (6, K)
        torch.testing.assert_close(r.targets.sum(1), torch.ones(6))
        assert sorted(r.perm.tolist()) == list(range(6))
        torch.testing.assert_close(r.images, brute_paste(images, r.perm, r.boxes), rtol=0, atol=0)
        torch.testing.assert_close(r.targets, mix_targets(labels, r.perm, r.lam, K, smoothing))
        if smoothing:
            assert r.targets.min() >= smoothing / K - 1e-7


@pytest.mark.parametrize("name", ["cutmix", "saliencymix"])
def test_area_rule_baselines(name):
    images, labels, saliency = batch()
    r = run(MIXERS[name](generator=torch.Generator().manual_seed(3)), images, labels, saliency)
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
def test_saliencymixplus_lam_is_label_weights(box):
    images, labels, saliency = batch()
    r = SaliencyMixPlus(K, box=box, lam_mode="sample", generator=torch.Generator().manual_seed(4)).mix(
        images, labels, saliency)
    torch.testing.assert_close(r.lam, ops.label_weights(saliency, r.perm, r.boxes))
    find = ops.window_search if box == "window" else ops.peak_boxes
    sizes_h, sizes_w = r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]
    if box == "window":
        torch.testing.assert_close(r.boxes, find(saliency[r.perm], sizes_h, sizes_w))


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
        inside = saliency[src, y1:y2, x1:x2].sum() / saliency[src].sum()
        best = ops.window_search_reference(saliency[src : src + 1], y2 - y1, x2 - x1)[0].tolist()
        src_best = saliency[src, best[0]:best[2], best[1]:best[3]].sum() / saliency[src].sum()
        assert inside == src_best


@pytest.mark.parametrize("name", MIXERS)
def test_prob_zero_leaves_the_batch_untouched(name):
    images, labels, saliency = batch()
    r = run(MIXERS[name](prob=0.0, label_smoothing=0.1), images, labels, saliency)
    assert r.images is images and r.perm is None and r.boxes is None
    torch.testing.assert_close(r.targets, one_hot(labels, K, 0.1))
    torch.testing.assert_close(r.lam, torch.ones(6))


def test_prob_mixes_about_that_share_of_batches():
    images, labels, saliency = batch()
    mixer = CutMix(K, prob=0.3, generator=torch.Generator().manual_seed(0))
    mixed = sum(mixer.mix(images, labels).perm is not None for _ in range(400))
    assert 80 <= mixed <= 160


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
def test_same_generator_same_result(name, lam_mode):
    images, labels, saliency = batch()
    a = run(MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(9)), images, labels, saliency)
    b = run(MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(9)), images, labels, saliency)
    c = run(MIXERS[name](lam_mode=lam_mode), images, labels, saliency, generator=torch.Generator().manual_seed(9))
    for x, y in [(a, b), (a, c)]:
        torch.testing.assert_close(x.images, y.images, rtol=0, atol=0)
        torch.testing.assert_close(x.targets, y.targets, rtol=0, atol=0)
        assert x.boxes.tolist() == y.boxes.tolist()
    d = run(MIXERS[name](lam_mode=lam_mode, generator=torch.Generator().manual_seed(10)), images, labels, saliency)
    assert d.boxes.tolist() != a.boxes.tolist() or d.perm.tolist() != a.perm.tolist()


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
    not_mixed = SaliencyMixPlus(K, pairing="half", prob=0.0).mix(images, labels, saliency)
    assert not_mixed.images.shape[0] == 7, "unmixed batches are trained on whole"
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
        (lambda: CutMix(K, generator=0), "generator must be a CPU torch.Generator"),
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
        (lambda m, x, y, s: m(x, y, s[:, :5]), "saliency must be a Tensor\\[6, 12, 10\\]"),
        (lambda m, x, y, s: m(x, y, s - 1), "saliency must be finite and >= 0"),
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", MIXERS)
def test_cuda_equals_cpu(name):
    images, labels, saliency = batch()
    cpu = run(MIXERS[name](generator=torch.Generator().manual_seed(1)), images, labels, saliency)
    gpu = run(MIXERS[name](generator=torch.Generator().manual_seed(1)), images.cuda(), labels.cuda(), saliency.cuda())
    torch.testing.assert_close(gpu.images.cpu(), cpu.images)
    torch.testing.assert_close(gpu.targets.cpu(), cpu.targets)
