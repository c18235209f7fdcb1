"""How wrong a mixer's labels are, measured against ground-truth object masks: the ops'
label-weight rule (docs/design.md, "The algorithm", step 4) on object masks in place of saliency
gives the *true* weight of each target label. Used by ``benchmarks/label_noise.py`` and
``tools/visualize_mix.py``.
"""

from __future__ import annotations

from torch import Tensor

from . import ops

__all__ = ["object_shares", "true_label_weights", "label_errors", "noisy_mask"]


def _checked(masks: Tensor, perm: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be a Tensor[B, H, W], got {ops.describe(masks)}")
    b, h, w = masks.shape
    if not isinstance(perm, Tensor) or perm.shape != (b,):
        raise ValueError(f"perm must be a Tensor[{b}], got {ops.describe(perm)}")
    if not isinstance(boxes, Tensor) or boxes.shape != (b, 4):
        raise ValueError(f"boxes must be a Tensor[{b}, 4] of (y1, x1, y2, x2), got {ops.describe(boxes)}")
    perm, boxes = perm.to(masks.device).long(), boxes.to(masks.device).long()
    ops.check_values(boxes=boxes, height=h, width=w)
    return perm, boxes


def object_shares(masks: Tensor, perm: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)``: share of each target's object left visible and of its source's object pasted in
    (:func:`~saliencymixplus.ops.saliency_shares`), of ``masks`` ``Tensor[B, H, W]`` (``> 0`` on the object;
    soft masks are weights) of the images *before* mixing and a :class:`~saliencymixplus.mix.MixResult`'s
    ``perm`` and ``boxes``."""
    return ops.saliency_shares(masks, *_checked(masks, perm, boxes))


def true_label_weights(masks: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """The true weight of each target label, float64 ``Tensor[B]`` in [0, 1], from the arguments
    of :func:`object_shares`."""
    return ops.saliency_weights(masks, *_checked(masks, perm, boxes))


def label_errors(weights: Tensor, true_weights: Tensor) -> Tensor:
    """``|weights - true_weights|`` as float64 ``Tensor[B]``."""
    return (weights.double().to(true_weights.device) - true_weights.double()).abs()


def noisy_mask(weights: Tensor, pasted: Tensor, *, pasted_below: float = 0.05, source_from: float = 0.3) -> Tensor:
    """``BoolTensor[B]``, the noisy samples: their box holds under ``pasted_below`` of the source object
    (``pasted``, the ``b`` of :func:`object_shares`) while the source label gets ``source_from`` or more
    (``1 - weights``, ``weights`` a mixer's ``lam``)."""
    w = weights.double().to(pasted.device)
    return (pasted.double() < pasted_below) & (1.0 - w >= source_from - 1e-12)
