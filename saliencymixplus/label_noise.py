"""How wrong a mixer's labels are, measured against ground-truth object masks.

With the object mask ``m[i]`` (1 on the object) in place of saliency, the step-4 rule of
docs/design.md gives the *true* weight of the target label of mixed image ``i``::

    a = (sum(m[i]) - sum(m[i] in box)) / sum(m[i])        # share of the target object still visible
    b = sum(m[perm[i]] in box) / sum(m[perm[i]])          # share of the source object pasted in
    true_i = a / (a + b)

(the area rule ``1 - box_area / (H * W)`` where a mask is empty or ``a + b`` is 0: nothing of
either object is visible, so no label is more right than another). A mixer's label error is
``|lam_i - true_i|``; a *noisy* sample is one whose box holds under 5 % of the source object
while the source label still gets 30 % or more (``b < 0.05`` and ``1 - lam_i >= 0.3``).

Used by ``benchmarks/label_noise.py`` and ``tools/visualize_mix.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ops import area_rule

__all__ = ["box_sums", "object_shares", "true_label_weights", "area_weights", "label_errors", "noisy_mask",
           "NOISY_PASTED_BELOW", "NOISY_SOURCE_WEIGHT_FROM"]

#: A sample is noisy when its box holds less than this share of the source object ...
NOISY_PASTED_BELOW = 0.05
#: ... while the source label gets at least this weight.
NOISY_SOURCE_WEIGHT_FROM = 0.3


def _check(masks: Tensor, perm: Tensor, boxes: Tensor) -> None:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be a Tensor[B, H, W], got {getattr(masks, 'shape', type(masks).__name__)}")
    b, h, w = masks.shape
    if not isinstance(perm, Tensor) or perm.shape != (b,):
        raise ValueError(f"perm must be a Tensor[{b}], got {getattr(perm, 'shape', type(perm).__name__)}")
    if not isinstance(boxes, Tensor) or boxes.shape != (b, 4):
        raise ValueError(f"boxes must be a Tensor[{b}, 4] of (y1, x1, y2, x2), "
                         f"got {getattr(boxes, 'shape', type(boxes).__name__)}")
    if b:
        y1, x1, y2, x2 = boxes.long().unbind(1)
        if not bool(((0 <= y1) & (y1 <= y2) & (y2 <= h) & (0 <= x1) & (x1 <= x2) & (x2 <= w)).all()):
            raise ValueError(f"boxes must satisfy 0 <= y1 <= y2 <= {h} and 0 <= x1 <= x2 <= {w}")


def box_sums(maps: Tensor, boxes: Tensor) -> Tensor:
    """Sum of each map inside its box.

    Args:
        maps: ``Tensor[B, H, W]`` (any real dtype).
        boxes: ``Tensor[B, 4]`` of ``(y1, x1, y2, x2)``, exclusive ends.

    Returns:
        float64 ``Tensor[B]``.
    """
    b, h, w = maps.shape
    ys = torch.arange(h, device=maps.device).view(1, h, 1)
    xs = torch.arange(w, device=maps.device).view(1, 1, w)
    y1, x1, y2, x2 = (v.view(-1, 1, 1) for v in boxes.to(maps.device).long().unbind(1))
    inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
    return (maps.double() * inside).sum((1, 2))


def object_shares(masks: Tensor, perm: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)``: share of each target's object left visible and of its source's object pasted in.

    Args:
        masks: ``Tensor[B, H, W]``, the object masks (``> 0`` on the object; soft masks are
            weights) of the images *before* mixing.
        perm: ``LongTensor[B]``, image ``i`` received from ``perm[i]``.
        boxes: ``Tensor[B, 4]``, the box pasted into image ``i``.

    Returns:
        float64 ``Tensor[B]`` each (NaN where a mask is empty).
    """
    _check(masks, perm, boxes)
    m = masks.double()
    perm = perm.to(m.device).long()
    total = m.sum((1, 2))
    a = (total - box_sums(m, boxes)) / total
    b = box_sums(m[perm], boxes) / total[perm]
    return a, b


def area_weights(boxes: Tensor, height: int, width: int) -> Tensor:
    """The area rule (:func:`saliencymixplus.ops.area_rule`) as float64 ``Tensor[B]``."""
    return area_rule(boxes.long(), height, width).double()


def true_label_weights(masks: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """The true weight of each target label: the step-4 rule on object masks.

    Args: as :func:`object_shares`.

    Returns:
        float64 ``Tensor[B]`` in [0, 1]: ``a / (a + b)``, or the area rule where a mask is
        empty or ``a + b == 0``.
    """
    a, b = object_shares(masks, perm, boxes)
    lam = a / (a + b)
    ok = torch.isfinite(lam)
    return torch.where(ok, lam, area_weights(boxes, *masks.shape[1:]).to(lam.device))


def label_errors(weights: Tensor, true_weights: Tensor) -> Tensor:
    """``|weights - true_weights|`` as float64 ``Tensor[B]``."""
    return (weights.double().to(true_weights.device) - true_weights.double()).abs()


def noisy_mask(weights: Tensor, pasted: Tensor, *, pasted_below: float = NOISY_PASTED_BELOW,
               source_from: float = NOISY_SOURCE_WEIGHT_FROM) -> Tensor:
    """Samples whose box holds under ``pasted_below`` of the source object while the source
    label gets ``source_from`` or more.

    Args:
        weights: ``Tensor[B]``, the weight the mixer gave each target label (the source gets ``1 - w``).
        pasted: ``Tensor[B]``, the share ``b`` of each source object inside its box
            (:func:`object_shares`).

    Returns:
        ``BoolTensor[B]``.
    """
    w = weights.double().to(pasted.device)
    return (pasted.double() < pasted_below) & (1.0 - w >= source_from - 1e-12)
