"""CutMix (Yun et al., ICCV 2019, https://arxiv.org/abs/1905.04899), SaliencyMix (Uddin et al.,
ICLR 2021, https://arxiv.org/abs/2006.01791), SaliencyMix+ and the soft-target loss. What they
compute and why a call never syncs: docs/design.md ("The algorithm", "The hot path").
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
        labels: ``LongTensor[B']``, each returned image's own label (with half pairing, the
            first half's).
    """

    images: Tensor
    targets: Tensor
    perm: Optional[Tensor]
    boxes: Optional[Tensor]
    lam: Tensor
    labels: Tensor

    @property
    def mixed(self) -> bool:
        """Whether the batch was mixed (the ``prob`` coin said so)."""
        return self.perm is not None


# ----------------------------------------------------------------------------- helpers


def one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """``FloatTensor[B, K]``: one-hot targets of ``LongTensor[B]`` labels in ``[0, K)``, ``K = num_classes``,
    label-smoothed by ``smoothing`` (docs/design.md, step 5); rows sum to 1."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def mix_targets(labels: Tensor, perm: Tensor, lam: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """``FloatTensor[B, K]``: ``lam[i] * one_hot(labels[i]) + (1 - lam[i]) * one_hot(labels[perm[i]])``,
    for ``labels`` and ``perm`` ``LongTensor[B]`` and ``lam`` ``FloatTensor[B]`` (as :func:`one_hot`)."""
    lam = lam.to(torch.float32).view(-1, 1)
    return lam * one_hot(labels, num_classes, smoothing) + (1.0 - lam) * one_hot(labels[perm], num_classes, smoothing)


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against soft targets, averaged over the batch (docs/design.md, step 5).

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


def sample_beta(alpha: float, n: int, generator: Optional[torch.Generator], device=None) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) as float64 on ``device`` (default: the CPU), from ``generator``
    (on that device, or ``None`` for its default generator)."""
    gammas = torch._standard_gamma(torch.full((2, n), float(alpha), dtype=torch.float64, device=device),
                                   generator=generator)
    return gammas[0] / (gammas[0] + gammas[1])


def _checked_generator(generator, default: Optional[torch.Generator] = None) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    return default if generator is None else generator


def _device_generator(generator: Optional[torch.Generator], device: torch.device) -> Optional[torch.Generator]:
    """The generator for the draws that shape the data, on the batch's ``device`` (docs/design.md, "The hot path")."""
    if generator is None or device.type == "meta":  # meta tensors have no generator
        return None
    if generator.device == device:
        return generator
    if generator.device.type == "cpu":
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        return torch.Generator(device=device).manual_seed(seed)
    raise ValueError(f"generator must be on {device} like the images, or on the CPU, got one on {generator.device}")


# ------------------------------------------------------------------------------ mixers


class _Mixer:
    """What the three mixers share: options, random draws, argument checks. Each mixer's ``_mix(images, labels,
    saliency, box_h, box_w, draws)`` mixes a batch the coin chose, with box sizes ``LongTensor[B]`` and the
    generator ``draws``, both on the batch's device."""

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
        ops.one_of("lam_mode", lam_mode, LAM_MODES)
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.label_smoothing = float(label_smoothing)
        self.lam_mode = lam_mode
        self.generator = _checked_generator(generator)
        self._coin_generator = (torch.Generator().manual_seed(generator.initial_seed())
                                if generator is not None and generator.device.type != "cpu" else None)

    needs_saliency = True

    def __call__(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor] = None, *,
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        result = self.mix(images, labels, saliency, generator=generator)
        return result.images, result.targets

    def mix(self, images: Tensor, labels: Tensor, saliency: Optional[Tensor] = None, *,
            generator: Optional[torch.Generator] = None, mixed: Optional[bool] = None) -> MixResult:
        """Mix a batch; like calling the mixer (its class docstring's Call), but returns the whole :class:`MixResult`.
        ``generator``: this call's, instead of the mixer's own; ``mixed``: the answer of :meth:`coin`, tossed
        beforehand by the caller (``None``: toss it here). The batch's shapes, dtypes and devices are checked,
        its label and saliency values only on the CPU (docs/design.md, "Checks")."""
        if self.needs_saliency and saliency is None:
            raise ValueError(f"{type(self).__name__} needs saliency: call it as mixer(images, labels, saliency)")
        ops.check_images(images, saliency if self.needs_saliency else None)
        if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be a LongTensor[{images.shape[0]}], got {ops.describe(labels)}")
        if labels.device != images.device:
            raise ValueError(f"labels must be on {images.device} like images, got {labels.device}")
        if images.device.type == "cpu":
            lo, hi = torch.aminmax(labels) if labels.numel() else (0, 0)
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}), got values in [{int(lo)}, {int(hi)}]")
            ops.check_values(saliency if self.needs_saliency else None)
        gen = _checked_generator(generator, self.generator)
        if not (self.coin(gen) if mixed is None else mixed):
            targets = one_hot(labels, self.num_classes, self.label_smoothing)
            return MixResult(images, targets, None, None, torch.ones(labels.shape[0], device=labels.device), labels)
        draws = _device_generator(gen, images.device)
        batch, _, height, width = images.shape
        lam = sample_beta(self.alpha, 1 if self.lam_mode == "batch" else batch, draws, images.device)
        box_h, box_w = (size.expand(batch) for size in ops.box_sizes(lam, height, width))  # sizes of 1 draw, then B
        return self._mix(images, labels, saliency, box_h, box_w, draws)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "generator")
        return f"{type(self).__name__}({options})"

    def _targets(self, labels: Tensor, perm: Tensor, lam: Tensor) -> Tensor:
        return mix_targets(labels, perm, lam, self.num_classes, self.label_smoothing)

    def coin(self, generator: Optional[torch.Generator] = None) -> bool:
        """Whether the next batch is mixed (probability ``prob``): one host draw, made even when
        ``prob`` is 0 or 1 so that streams stay aligned, from ``generator`` (or the mixer's own)
        when on the CPU, else from a CPU generator seeded like it (or the global one)."""
        gen = _checked_generator(generator, self.generator)
        host = gen if gen is not None and gen.device.type == "cpu" else self._coin_generator
        return bool(torch.rand((), generator=host, dtype=torch.float64) < self.prob)


class CutMix(_Mixer):
    """CutMix: a random box of a shuffled batch pasted in, labels weighted by area.

    Args:
        num_classes: number of classes K of the soft targets.
        alpha: Beta(alpha, alpha) parameter of the mixing ratio lam.
        prob: chance that a batch is mixed at all.
        label_smoothing: label smoothing of the targets.
        lam_mode: ``"batch"``: one lam and one box centre per batch (as published);
            ``"sample"``: one per image.
        generator: a ``torch.Generator``, on the CPU or the batch's device, for every random
            draw (``None``: the default ones).

    Call: ``CutMix(...)(images Tensor[B, C, H, W], labels LongTensor[B]) -> (images, targets FloatTensor[B, K])``
    (a saliency argument is accepted and ignored, so the three mixers are called alike).
    """

    needs_saliency = False

    def _mix(self, images, labels, saliency, box_h, box_w, draws):
        batch, _, height, width = images.shape
        device = images.device
        centres = 1 if self.lam_mode == "batch" else batch
        cy = torch.randint(height, (centres,), generator=draws, device=device).expand(batch)
        cx = torch.randint(width, (centres,), generator=draws, device=device).expand(batch)
        boxes = ops.centred_boxes(cy, cx, box_h, box_w, height, width)
        perm = torch.randperm(batch, generator=draws, device=device)
        lam = ops.area_rule(boxes, height, width)
        mixed = ops.dispatch("paste", images, perm, boxes)  # boxes and perm made right here
        return MixResult(mixed, self._targets(labels, perm, lam), perm, boxes, lam, labels)


class SaliencyMix(_Mixer):
    """SaliencyMix: one box centred on the saliency peak of one source image, for the whole batch.

    Args: as :class:`CutMix`. With ``lam_mode="sample"`` each image gets its own box size,
    all centred on the same peak.

    Call: ``SaliencyMix(...)(images Tensor[B, C, H, W], labels LongTensor[B], saliency Tensor[B, H, W])
    -> (images, targets FloatTensor[B, K])``; the peak is that of ``saliency[perm[0]]``.
    """

    def _mix(self, images, labels, saliency, box_h, box_w, draws):
        batch, _, height, width = images.shape
        perm = torch.randperm(batch, generator=draws, device=images.device)
        py, px = ops.saliency_peaks(saliency[perm[:1]])
        boxes = ops.centred_boxes(py.expand(batch), px.expand(batch), box_h, box_w, height, width)
        lam = ops.area_rule(boxes, height, width)
        mixed = ops.dispatch("paste", images, perm, boxes)  # boxes and perm made right here
        return MixResult(mixed, self._targets(labels, perm, lam), perm, boxes, lam, labels)


class SaliencyMixPlus(_Mixer):
    """SaliencyMix+: each image receives the most salient patch of its source, labels weighted by saliency.

    Args:
        num_classes, alpha, prob, label_smoothing, lam_mode, generator: as :class:`CutMix`.
        box: ``"window"``: the most salient ``box_h x box_w`` window inside the source
            (default); ``"peak"``: centred on the source's saliency peak and clipped (as published).
        pairing: ``"full"``: image ``i`` receives from ``perm[i]`` of a random permutation;
            ``"half"`` (as published): the first ``B // 2`` images receive from a shuffled
            second half and only they are returned, so ``B' = B // 2`` on mixed batches.

    Call: ``SaliencyMixPlus(...)(images Tensor[B, C, H, W], labels LongTensor[B], saliency Tensor[B, H, W])
    -> (images Tensor[B', C, H, W], targets FloatTensor[B', K])``.
    """

    def __init__(self, num_classes: int, *, box: str = "window", pairing: str = "full", **options) -> None:
        super().__init__(num_classes, **options)
        ops.one_of("box", box, ops.BOXES)
        ops.one_of("pairing", pairing, PAIRINGS)
        self.box = box
        self.pairing = pairing

    def _mix(self, images, labels, saliency, box_h, box_w, draws):
        batch = images.shape[0]
        if self.pairing == "half" and batch < 2:
            raise ValueError(f"pairing='half' needs a batch of at least 2 images, got {batch}")
        perm = self._pairing(batch, draws, images.device)
        mixed, boxes, lam = ops.dispatch("saliency_mix_plus", images, saliency, perm, box_h, box_w, self.box)
        targets = self._targets(labels, perm, lam)
        if self.pairing == "half":
            kept = batch // 2
            mixed, targets, lam, labels = mixed[:kept], targets[:kept], lam[:kept], labels[:kept]
        return MixResult(mixed, targets, perm, boxes, lam, labels)

    def _pairing(self, batch: int, draws: Optional[torch.Generator], device: torch.device) -> Tensor:
        """``LongTensor[B]`` on ``device``; for ``half`` the second half maps to itself (and is dropped)."""
        if self.pairing == "full":
            return torch.randperm(batch, generator=draws, device=device)
        kept = batch // 2
        sources = kept + torch.randperm(batch - kept, generator=draws, device=device)[:kept]
        return torch.cat([sources, torch.arange(kept, batch, device=device)])
