"""The label-noise measures on hand-made masks whose true label weights are known exactly."""

import numpy as np
import pytest
import torch

from saliencymixplus import ops
from saliencymixplus.label_noise import label_errors, noisy_mask, object_shares, true_label_weights
from saliencymixplus.saliency import format_postprocess, parse_postprocess, sharpen


def _masks():
    """Three 8x8 masks: a 4x4 square at (0, 0), a 2x2 square at (6, 6), a 2x4 bar at (2, 2)."""
    m = torch.zeros(3, 8, 8)
    m[0, 0:4, 0:4] = 1  # 16 px
    m[1, 6:8, 6:8] = 1  # 4 px
    m[2, 2:4, 2:6] = 1  # 8 px
    return m


def test_true_weights_exact():
    m = _masks()
    perm = torch.tensor([1, 2, 0])
    boxes = torch.tensor([
        [0, 0, 2, 4],  # image 0 loses 8/16 of its square; source 1 (at 6,6) pastes nothing in
        [4, 4, 8, 8],  # image 1 loses all of its square; source 2 (rows 2-3) pastes nothing in
        [2, 2, 4, 4],  # image 2 loses 4/8 of its bar; source 0 pastes its 2x2 corner (4/16) in
    ])
    a, b = object_shares(m, perm, boxes)
    np.testing.assert_allclose(a.numpy(), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(b.numpy(), [0.0, 0.0, 0.25])
    w = true_label_weights(m, perm, boxes)
    # 0: a / (a + b) = 1; 1: a + b = 0 -> area rule 1 - 16/64; 2: 0.5 / 0.75
    np.testing.assert_allclose(w.numpy(), [1.0, 0.75, 2.0 / 3.0])
    assert w.dtype == torch.float64


def test_true_weights_match_the_saliency_rule_on_masks():
    """Masks scored by the rule the ops implement: the op's own kernel (compiled when built) agrees."""
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(16, 12, 10, generator=g) > 0.7).float()
    m[:, 5, 5] = 1  # no empty mask
    m[0], m[1, :, :5] = 0, 0  # an empty mask (the area rule) and a half-empty one
    perm = torch.randperm(16, generator=g)
    boxes = ops.window_search(m[perm], 5, 4)
    np.testing.assert_allclose(true_label_weights(m, perm, boxes).numpy(),
                               ops.label_weights(m, perm, boxes).numpy(), rtol=1e-6)


def test_empty_mask_falls_back_to_area():
    m = _masks()
    m[1] = 0
    perm = torch.tensor([1, 0, 2])
    boxes = torch.tensor([[0, 0, 4, 2], [0, 0, 4, 4], [0, 0, 0, 0]])
    w = true_label_weights(m, perm, boxes)
    np.testing.assert_allclose(w.numpy(), [1.0 - 8 / 64, 1.0 - 16 / 64, 1.0])


def test_area_errors_and_noisy():
    boxes = torch.tensor([[0, 0, 4, 4], [2, 2, 6, 6]])
    np.testing.assert_allclose(ops.area_rule(boxes, 8, 8, torch.float64).numpy(), [0.75, 0.75])
    np.testing.assert_allclose(label_errors(torch.tensor([0.75, 0.5]), torch.tensor([1.0, 0.5],
                                                                                   dtype=torch.float64)).numpy(),
                               [0.25, 0.0])
    # box holds 0 % of the source: source weight 0.3 is noisy, 0.29 is not; 10 % pasted is never noisy
    w = torch.tensor([0.7, 0.71, 0.2])
    pasted = torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64)
    assert noisy_mask(w, pasted).tolist() == [True, False, False]


def test_direct_sums_in_boxes():
    m = _masks()
    s = ops.direct_sums(m, torch.tensor([[0, 0, 8, 8], [0, 0, 7, 7], [3, 0, 8, 8]]))
    np.testing.assert_allclose(s.numpy(), [16, 1, 4])


def test_bad_shapes_raise():
    m = _masks()
    with pytest.raises(ValueError, match="boxes must be a Tensor"):
        object_shares(m, torch.arange(3), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="perm must be a Tensor"):
        object_shares(m, torch.arange(2), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="0 <= y1 <= y2 <= H = 8"):
        object_shares(m, torch.arange(3), torch.tensor([[0, 0, 9, 1]] * 3))


def test_sharpen():
    m = np.arange(1, 11, dtype=np.float32).reshape(1, 2, 5) / 20  # max 0.5
    s = sharpen(m, top=0.2, power=2)
    assert s.max() == 1.0 and (s > 0).sum() == 2  # the two largest pixels survive
    np.testing.assert_allclose(sharpen(m), m / 0.5, rtol=1e-6)  # identity but normalised
    np.testing.assert_allclose(sharpen(m, power=2), (m / 0.5) ** 2, rtol=1e-6)
    assert sharpen(np.zeros((2, 3, 3)), top=0.2).max() == 0  # empty stays empty
    assert sharpen(np.ones((3, 3)), top=0.1).min() == 1  # a flat map is kept whole
    with pytest.raises(ValueError, match="top must be in"):
        sharpen(m, top=0)
    assert format_postprocess("power=2, top=0.2") == "top=0.2,power=2"
    assert format_postprocess("none") == "none" and parse_postprocess("top=1,power=1") == {}
    with pytest.raises(ValueError, match="keys must be"):
        parse_postprocess("gamma=2")
