"""CutMix, SaliencyMix and SaliencyMix+ behind one callable shape, and the soft-target loss.

Papers:
    CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features,
        Yun et al., ICCV 2019 (https://arxiv.org/abs/1905.04899).
    SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better Regularization,
        Uddin et al., ICLR 2021 (https://arxiv.org/abs/2006.01791).
    SaliencyMix+: saliency-guided CutMix whose labels are weighted by the saliency that
        stays visible (see ARCHITECTURE.md).

Every mixer is called as ``mixer(images, labels[, saliency]) -> (images, targets)`` with
``images`` ``Tensor[B, C, H, W]`` on any device and ``targets`` ``FloatTensor[B', K]`` soft
labels whose rows sum to 1. ``mixer.mix(...)`` returns a :class:`MixResult` that also holds
the pairing, the boxes and the label weights. Random numbers come from the mixer's
``generator`` (or a per-call one), drawn on the CPU, so a call is reproducible on any device.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops

__all__ = [
    "CutMix",
    "SaliencyMix",
    "SaliencyMixPlus",
    "MixResult",
    "one_hot",
    "mix_targets",
    "soft_target_cross_entropy",
]

LAM_MODES = ("batch", "sample")
PAIRINGS = ("full", "half")


class MixResult(NamedTuple):
    """What a mixer did to a batch.

    Attributes:
        images: ``Tensor[B', C, H, W]``, the mixed batch (the input itself when not mixed).
        targets: ``FloatTensor[B', K]``, soft targets.
        perm: ``LongTensor[B]``, image ``i`` received from ``perm[i]`` (``None`` when not mixed).
        boxes: ``LongTensor[B, 4]``, ``(y1, x1, y2, x2)`` pasted into image ``i`` (``None`` when not mixed).
        lam: ``FloatTensor[B']``, the weight of each image's own label (ones when not mixed).
    """

    images: Tensor
    targets: Tensor
    perm: Optional[Tensor]
    boxes: Optional[Tensor]
    lam: Tensor


# ----------------------------------------------------------------------------- helpers


def one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Label-smoothed one-hot targets.

    Args:
        labels: ``LongTensor[B]`` of class indices in ``[0, num_classes)``.
        num_classes: K.
        smoothing: mass spread evenly over all classes: the true class gets
            ``1 - smoothing + smoothing / K``, the others ``smoothing / K``.

    Returns:
        ``FloatTensor[B, K]`` whose rows sum to 1.
    """
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def mix_targets(labels: Tensor, perm: Tensor, lam: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """``lam_i * onehot(y[i]) + (1 - lam_i) * onehot(y[perm[i]])``.

    Args:
        labels: ``LongTensor[B]``.
        perm: ``LongTensor[B]``, the source of each image.
        lam: ``FloatTensor[B]``, the weight of each image's own label.
        num_classes: K.
        smoothing: label smoothing, as in :func:`one_hot`.

    Returns:
        ``FloatTensor[B, K]``.
    """
    lam = lam.to(torch.float32).view(-1, 1)
    return lam * one_hot(labels, num_classes, smoothing) + (1.0 - lam) * one_hot(labels[perm], num_classes, smoothing)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft targets, averaged over the batch.

    Each sample keeps its own label weights (the published code's batch-mean loss times a
    weight vector collapses them; this does not).

    Args:
        logits: ``Tensor[B, K]``, any float dtype (computed in float32).
        targets: ``FloatTensor[B, K]``, rows summing to 1.

    Returns:
        A scalar float32 tensor.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape [B, K], got {list(logits.shape)} "
                         f"and {list(targets.shape)}")
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def sample_beta(alpha: float, n: int, generator: Optional[torch.Generator]) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) as float64 on the CPU, from ``generator``."""
    gammas = torch._standard_gamma(torch.full((2, n), float(alpha), dtype=torch.float64), generator=generator)
    return gammas[0] / (gammas[0] + gammas[1])


# ------------------------------------------------------------------------------ mixers


class _Mixer:
    """What the three mixers share: options, random draws, argument checks."""

    def __init__(
        self,
        num_classes: int,
        *,
        alpha: float = 1.0,
        prob: float = 1.0,
        label_smoothing: float = 0.0,
        lam_mode: str = "batch",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if lam_mode not in LAM_MODES:
            raise ValueError(f"lam_mode must be one of {LAM_MODES}, got {lam_mode!r}")
        if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
            raise ValueError(f"generator must be a CPU torch.Generator or None, got {generator!r}")
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.label_smoothing = float(label_smoothing)
        self.lam_mode = lam_mode
        self.generator = generator

    needs_saliency = True

    def __call__(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor] = None, *,
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        result = self.mix(images, labels, saliency, generator=generator)
        return result.images, result.targets

    def mix(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor] = None, *,
            generator: Optional[torch.Generator] = None) -> MixResult:
        """Mix a batch; like calling the mixer, but returns the whole :class:`MixResult`.

        Args:
            images: ``Tensor[B, C, H, W]``, any dtype and device.
            labels: ``LongTensor[B]`` in ``[0, num_classes)`` on the same device.
            saliency: ``Tensor[B, H, W]`` (float or uint8, ``>= 0``) on the same device; needed by
                the saliency mixers, ignored by :class:`CutMix`.
            generator: a CPU ``torch.Generator`` for this call's draws, instead of the mixer's own.
        """
        if self.needs_saliency and saliency is None:
            raise ValueError(f"{type(self).__name__} needs saliency: call it as mixer(images, labels, saliency)")
        self._check(images, labels, saliency if self.needs_saliency else None)
        gen = generator if generator is not None else self.generator
        if self._skip(gen):
            targets = one_hot(labels, self.num_classes, self.label_smoothing)
            return MixResult(images, targets, None, None, torch.ones(labels.shape[0], device=labels.device))
        batch, _, height, width = images.shape
        cut_h, cut_w = self._box_sizes(batch, height, width, gen)
        return self._mix(images, labels, saliency, cut_h, cut_w, gen)

    def _mix(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor], cut_h: Tensor, cut_w: Tensor,
             gen: Optional[torch.Generator]) -> MixResult:
        """Mix a batch that is to be mixed, with box sizes ``cut_h``/``cut_w`` (``LongTensor[B]`` on the CPU)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({options})"

    # The pieces the subclasses put together.

    def _check(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor] = None) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a Tensor[B, C, H, W], got {_describe(images)}")
        if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be a LongTensor[{images.shape[0]}], got {_describe(labels)}")
        if labels.device != images.device:
            raise ValueError(f"labels must be on {images.device} like images, got {labels.device}")
        if labels.numel():
            lo, hi = torch.aminmax(labels)
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}), got values in [{int(lo)}, {int(hi)}]")
        if saliency is not None:
            expected = [images.shape[0], *images.shape[2:]]
            if not isinstance(saliency, Tensor) or list(saliency.shape) != expected:
                raise ValueError(f"saliency must be a Tensor{expected} to match images {list(images.shape)}, "
                                 f"got {_describe(saliency)}")
            if saliency.device != images.device:
                raise ValueError(f"saliency must be on {images.device} like images, got {saliency.device}")

    def _skip(self, gen: Optional[torch.Generator]) -> bool:
        """Whether this batch stays unmixed (drawn even when prob is 0 or 1, so streams stay aligned)."""
        return not bool(torch.rand((), generator=gen, dtype=torch.float64) < self.prob)

    def _box_sizes(self, batch: int, height: int, width: int, gen: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
        """``cut = int(size * sqrt(1 - lam))`` with lam ~ Beta(alpha, alpha): ``LongTensor[B]`` each, on the CPU."""
        lam = sample_beta(self.alpha, 1 if self.lam_mode == "batch" else batch, gen).expand(batch)
        cut = torch.sqrt(1.0 - lam)
        return (height * cut).long(), (width * cut).long()

    def _targets(self, labels: Tensor, perm: Tensor, lam: Tensor) -> Tensor:
        return mix_targets(labels, perm, lam, self.num_classes, self.label_smoothing)


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} of shape {list(value.shape)}"
    return type(value).__name__


def _centred_boxes(cy: Tensor, cx: Tensor, cut_h: Tensor, cut_w: Tensor, height: int, width: int) -> Tensor:
    """The published box: ``cut_h x cut_w`` centred on ``(cy, cx)`` with half sizes ``cut // 2``,
    clipped to the image. All ``LongTensor[B]`` on one device -> ``LongTensor[B, 4]``."""
    return torch.stack([(cy - cut_h // 2).clamp(0, height), (cx - cut_w // 2).clamp(0, width),
                        (cy + cut_h // 2).clamp(0, height), (cx + cut_w // 2).clamp(0, width)], 1)


def _area_rule(boxes: Tensor, height: int, width: int) -> Tensor:
    """``1 - box_area / (H * W)`` for ``LongTensor[B, 4]`` boxes -> ``FloatTensor[B]``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (1.0 - area.double() / (height * width)).float()


class CutMix(_Mixer):
    """CutMix: a random box of a shuffled batch pasted in, labels weighted by area.

    Args:
        num_classes: number of classes K of the soft targets.
        alpha: Beta(alpha, alpha) parameter of the mixing ratio lam.
        prob: chance that a batch is mixed at all.
        label_smoothing: label smoothing of the targets.
        lam_mode: ``"batch"``: one lam and one box centre per batch (as published);
            ``"sample"``: one per image.
        generator: a CPU ``torch.Generator`` for every random draw (``None``: the global RNG).

    Call: ``CutMix(...)(images Tensor[B, C, H, W], labels LongTensor[B]) -> (images, targets FloatTensor[B, K])``
    (a saliency argument is accepted and ignored, so the three mixers are called alike).
    The box is ``cut = int(size * sqrt(1 - lam))`` centred on a uniform pixel, clipped to
    the image; the label weight is ``1 - box_area / (H * W)``.
    """

    needs_saliency = False

    def _mix(self, images, labels, saliency, cut_h, cut_w, gen):
        batch, _, height, width = images.shape
        centres = 1 if self.lam_mode == "batch" else batch
        cy = torch.randint(height, (centres,), generator=gen).expand(batch)
        cx = torch.randint(width, (centres,), generator=gen).expand(batch)
        boxes = _centred_boxes(cy, cx, cut_h, cut_w, height, width)
        perm = torch.randperm(batch, generator=gen)
        lam = _area_rule(boxes, height, width)
        perm, boxes, lam = (t.to(images.device, non_blocking=True) for t in (perm, boxes, lam))
        mixed = ops.paste(images, perm, boxes)
        return MixResult(mixed, self._targets(labels, perm, lam), perm, boxes, lam)


class SaliencyMix(_Mixer):
    """SaliencyMix: one box centred on the saliency peak of one source image, for the whole batch.

    Args: as :class:`CutMix`. With ``lam_mode="sample"`` each image gets its own box size,
    all centred on the same peak.

    Call: ``SaliencyMix(...)(images Tensor[B, C, H, W], labels LongTensor[B], saliency Tensor[B, H, W])
    -> (images, targets FloatTensor[B, K])``. The source of the box is the saliency of
    ``images[perm[0]]``; labels are weighted by area.
    """

    def _mix(self, images, labels, saliency, cut_h, cut_w, gen):
        batch, _, height, width = images.shape
        perm = torch.randperm(batch, generator=gen).to(images.device, non_blocking=True)
        peak = ops.peak_boxes(saliency[perm[:1]], 0, 0)[0]  # a 0-size box: (py, px, py, px)
        boxes = _centred_boxes(peak[0].expand(batch), peak[1].expand(batch), cut_h.to(images.device),
                               cut_w.to(images.device), height, width)
        lam = _area_rule(boxes, height, width)
        mixed = ops.paste(images, perm, boxes)
        return MixResult(mixed, self._targets(labels, perm, lam), perm, boxes, lam)


class SaliencyMixPlus(_Mixer):
    """SaliencyMix+: each image receives the most salient patch of its source, labels weighted by saliency.

    Args:
        num_classes, alpha, prob, label_smoothing, lam_mode, generator: as :class:`CutMix`.
        box: ``"window"``: the most salient ``cut_h x cut_w`` window inside the source
            (default); ``"peak"``: centred on the source's saliency peak and clipped (as published).
        pairing: ``"full"``: image ``i`` receives from ``perm[i]`` of a random permutation;
            ``"half"`` (as published): the first ``B // 2`` images receive from a shuffled
            second half and only they are returned, so ``B' = B // 2`` on mixed batches.

    Call: ``SaliencyMixPlus(...)(images Tensor[B, C, H, W], labels LongTensor[B], saliency Tensor[B, H, W])
    -> (images Tensor[B', C, H, W], targets FloatTensor[B', K])``. The weight of image ``i``'s
    own label is the share of saliency it keeps against the share its source pastes in
    (:func:`saliencymixplus.ops.label_weights`).
    """

    def __init__(self, num_classes: int, *, box: str = "window", pairing: str = "full", **options) -> None:
        super().__init__(num_classes, **options)
        if box not in ops.MODES:
            raise ValueError(f"box must be one of {ops.MODES}, got {box!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
        self.box = box
        self.pairing = pairing

    def _mix(self, images, labels, saliency, cut_h, cut_w, gen):
        batch = images.shape[0]
        if self.pairing == "half" and batch < 2:
            raise ValueError(f"pairing='half' needs a batch of at least 2 images, got {batch}")
        perm = self._pairing(batch, gen).to(images.device, non_blocking=True)
        mixed, boxes, lam = ops.saliency_mix(images, saliency, perm, cut_h.to(images.device),
                                             cut_w.to(images.device), self.box)
        targets = self._targets(labels, perm, lam)
        if self.pairing == "half":
            kept = batch // 2
            mixed, targets, lam = mixed[:kept], targets[:kept], lam[:kept]
        return MixResult(mixed, targets, perm, boxes, lam)

    def _pairing(self, batch: int, gen: Optional[torch.Generator]) -> Tensor:
        """``LongTensor[B]`` on the CPU; for ``half`` the second half maps to itself (and is dropped)."""
        if self.pairing == "full":
            return torch.randperm(batch, generator=gen)
        kept = batch // 2
        sources = kept + torch.randperm(batch - kept, generator=gen)[:kept]
        return torch.cat([sources, torch.arange(kept, batch)])
