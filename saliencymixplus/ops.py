"""The mixing ops, their pure-PyTorch references (``*_reference``, used where the extension is not
built) and the rules the mixers share. What they compute, what odd values mean, which checks run
where: docs/design.md ("The algorithm", "Checks").

The ops' arguments:

- ``images``: ``Tensor[B, C, H, W]`` of any dtype and strides;
- ``saliency``: ``Tensor[B, H, W]``, float (any precision) or uint8, ``>= 0`` and finite;
- ``perm``: integer ``Tensor[B]`` in ``[0, B)``: image ``i`` receives from image ``perm[i]``;
- ``boxes``: ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)``, exclusive ends, inside the image;
- ``box_h``, ``box_w``: an ``int`` or an integer ``Tensor[B]``, clamped to ``[0, H]`` / ``[0, W]``;
- ``check``: validate the values of ``saliency``, ``perm`` and ``boxes`` (one host read: a sync on a GPU).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from . import _extension

__all__ = [
    "window_search",
    "peak_boxes",
    "paste",
    "label_weights",
    "saliency_mix_plus",
    "paste_memory_format",
    "box_sizes",
    "centred_boxes",
    "area_rule",
    "saliency_peaks",
    "window_search_reference",
    "peak_boxes_reference",
    "paste_reference",
    "label_weights_reference",
    "saliency_mix_plus_reference",
    "BOXES",
]

BoxSize = Union[int, Tensor]
BOXES = ("window", "peak")  # where a box goes: the most salient window, or centred on the peak
SALIENCY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8)


# --------------------------------------------------------------------------- public ops


def window_search(saliency: Tensor, box_h: BoxSize, box_w: BoxSize, *, check: bool = True) -> Tensor:
    """``LongTensor[B, 4]``: the most salient ``box_h x box_w`` window of each map (docs/design.md, step 2)."""
    return _run("window_search", (saliency, box_h, box_w), check)


def peak_boxes(saliency: Tensor, box_h: BoxSize, box_w: BoxSize, *, check: bool = True) -> Tensor:
    """``LongTensor[B, 4]``: boxes centred on each map's most salient pixel (:func:`saliency_peaks`),
    clipped as published (:func:`centred_boxes`)."""
    return _run("peak_boxes", (saliency, box_h, box_w), check)


def paste(images: Tensor, perm: Tensor, boxes: Tensor, *, check: bool = True) -> Tensor:
    """Paste box ``i`` of image ``perm[i]`` into image ``i`` at the same coordinates: a new
    ``Tensor[B, C, H, W]`` laid out as :func:`paste_memory_format` says."""
    return _run("paste", (images, perm, boxes), check)


def label_weights(saliency: Tensor, perm: Tensor, boxes: Tensor, *, check: bool = True) -> Tensor:
    """``FloatTensor[B]``: the saliency-weighted weight ``lam_i`` of each target label ``y[i]``
    (docs/design.md, step 4); ``y[perm[i]]`` gets ``1 - lam_i``."""
    return _run("label_weights", (saliency, perm, boxes), check)


def saliency_mix_plus(images: Tensor, saliency: Tensor, perm: Tensor, box_h: BoxSize, box_w: BoxSize,
                      box: str = "window", *, check: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Search, paste and weigh in one op: SaliencyMix+ for a batch, ``box`` ``"window"`` or ``"peak"``
    (:data:`BOXES`), placed on the source's saliency.

    Returns:
        ``(mixed Tensor[B, C, H, W], boxes LongTensor[B, 4], lam FloatTensor[B])``, equal to
        ``paste(images, perm, boxes)`` and ``label_weights(saliency, perm, boxes)`` with
        ``boxes = window_search(saliency[perm], box_h, box_w)`` (or ``peak_boxes``).
    """
    return _run("saliency_mix_plus", (images, saliency, perm, box_h, box_w, box), check)


# ------------------------------------------------------------------------ the argument path


def _run(op: str, values: tuple, check: bool, reference: bool = False):
    """The path of every public op and reference: the arguments by name, integer tensors made int64
    and ``int`` box sizes ``LongTensor[B]``, their shapes, dtypes and devices checked against the
    batch (the first argument), their values when ``check``; then :func:`dispatch` (or the reference)."""
    names, run_reference = _OPS[op]
    args = dict(zip(names, values))
    if "box" in args:
        one_of("box", args["box"], BOXES)
    if "images" in args:
        check_images(values[0], args.get("saliency"))
    else:
        check_saliency(values[0])
    batch, device = values[0].shape[0], values[0].device
    for name in ("perm", "box_h", "box_w", "boxes"):
        if name in args:
            args[name] = _long_tensor(args[name], name, (batch, 4) if name == "boxes" else (batch,), device)
    if check:
        check_values(args.get("saliency"), args.get("perm"), args.get("boxes"), *values[0].shape[-2:])
    return run_reference(*args.values()) if reference else dispatch(op, *args.values())


def dispatch(op: str, *args):
    """The compiled op ``op`` on arguments already converted and checked (by :func:`_run`, or by a
    mixer that made them), or its reference where the extension is not built."""
    if _extension.has_ops():
        return getattr(torch.ops.saliencymixplus, op)(*args)
    return _OPS[op][1](*args)


def _long_tensor(value, name: str, shape: tuple, device: torch.device) -> Tensor:
    """``perm``, ``box_h``, ``box_w`` or ``boxes`` as the ``LongTensor`` of ``shape`` on ``device`` the
    kernels take: an integer tensor made int64; a box size may also be an ``int``."""
    sizes = name in ("box_h", "box_w")
    if sizes and isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{name} must be an int64 value (box sizes are clamped to [0, H] and [0, W]), got {value}")
        return torch.full(shape, value, dtype=torch.long, device=device)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be {'an int or ' if sizes else ''}an integer Tensor{list(shape)}, "
                        f"got {describe(value)}")
    if value.dtype != torch.long and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        value = value.long()
    if value.dtype != torch.long or value.shape != shape:
        raise ValueError(f"{name} must be a LongTensor{list(shape)}, got {describe(value)}")
    if value.device != device:
        raise ValueError(f"{name} must be on {device}, got {value.device}")
    return value


def check_images(images: Tensor, saliency: Optional[Tensor] = None) -> None:
    """``images`` a ``Tensor[B, C, H, W]`` and ``saliency``, when given, a map of each image on
    the same device (:func:`check_saliency`): the shapes, dtypes and devices a batch needs."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a Tensor[B, C, H, W], got {describe(images)}")
    if saliency is None:
        return
    check_saliency(saliency)
    expected = [images.shape[0], *images.shape[2:]]
    if list(saliency.shape) != expected:
        raise ValueError(f"saliency must be a Tensor[B, H, W] = {expected} to match images {list(images.shape)}, "
                         f"got {list(saliency.shape)}")
    if saliency.device != images.device:
        raise ValueError(f"saliency must be on {images.device} like images, got {saliency.device}")


def check_saliency(saliency: Tensor) -> None:
    """``saliency`` a ``Tensor[B, H, W]`` of a saliency dtype, with ``H, W > 0``."""
    if not isinstance(saliency, Tensor) or saliency.dim() != 3:
        raise ValueError(f"saliency must be a Tensor[B, H, W], got {describe(saliency)}")
    if saliency.dtype not in SALIENCY_DTYPES:
        raise ValueError(f"saliency must be a float32, float64, float16, bfloat16 or uint8 tensor, got {saliency.dtype}")
    if saliency.shape[1] == 0 or saliency.shape[2] == 0:
        raise ValueError(f"saliency must have H > 0 and W > 0, got shape {list(saliency.shape)}")


def check_values(saliency: Optional[Tensor] = None, perm: Optional[Tensor] = None, boxes: Optional[Tensor] = None,
                 height: int = 0, width: int = 0) -> None:
    """Saliency finite and ``>= 0``, ``perm`` in ``[0, B)``, boxes inside ``height x width``: the
    statistics are gathered on the data's device and read back in one copy (a sync on a GPU)."""
    has_saliency = saliency is not None and saliency.numel() > 0 and saliency.is_floating_point()
    has_perm = perm is not None and perm.numel() > 0
    has_boxes = boxes is not None and boxes.numel() > 0
    stats = (_value_range(saliency) if has_saliency else []) + ([*torch.aminmax(perm)] if has_perm else [])
    if has_boxes:
        stats.append(_box_margins(boxes, height, width).amin(0))
    if not stats:
        return
    values = iter(torch.cat([t.double().reshape(-1) for t in stats]).tolist())  # the one copy to the host
    if has_saliency:
        low, high = next(values), next(values)
        if not (low >= 0 and high < math.inf):
            found = "NaN" if math.isnan(low) else f"values in [{low}, {high}]"
            raise ValueError(f"saliency must be finite and >= 0, got {found}")
    if has_perm:
        low, high = int(next(values)), int(next(values))
        if low < 0 or high >= perm.shape[0]:
            raise ValueError(f"perm values must be in [0, {perm.shape[0]}), got values in [{low}, {high}]")
    if has_boxes:
        for broken, margin in zip(("y1 < 0", "x1 < 0", "y2 < y1", "x2 < x1", "y2 > H", "x2 > W"), values):
            if margin < 0:
                bad = int((_box_margins(boxes, height, width) < 0).any(1).nonzero()[0, 0])
                raise ValueError(f"boxes must satisfy 0 <= y1 <= y2 <= H = {height} and 0 <= x1 <= x2 <= W = {width}; "
                                 f"found a box with {broken}: box {bad} = {boxes[bad].tolist()}")


def _value_range(t: Tensor) -> list[Tensor]:
    """``[min, max]`` of a float tensor (NaN when it holds one). On the CPU numpy reduces on one
    thread: torch's reduction wakes a second one, which costs milliseconds on a busy machine."""
    if t.device.type == "cpu" and t.dtype != torch.bfloat16:
        a = t.detach().numpy()
        return [torch.tensor([a.min(), a.max()], dtype=torch.float64)]
    return [*torch.aminmax(t)]


def _box_margins(boxes: Tensor, height: int, width: int) -> Tensor:
    """``LongTensor[B, 6]``: ``y1, x1, y2 - y1, x2 - x1, H - y2, W - x2``, all ``>= 0`` for a box inside."""
    y1, x1, y2, x2 = boxes.unbind(1)
    return torch.stack([y1, x1, y2 - y1, x2 - x1, height - y2, width - x2], 1)


def one_of(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def describe(value) -> str:
    """What a message says it got: a tensor's dtype and shape, else the value's type."""
    return f"{value.dtype} of shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


# ------------------------------------------------------------------------------ rules


def paste_memory_format(images: Tensor) -> torch.memory_format:
    """The layout :func:`paste` writes: channels-last for a channels-last input (that is not
    also plain contiguous), else contiguous (as ``csrc/paste_layout.h``)."""
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def box_sizes(lam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``(box_h, box_w)``, ``LongTensor[B]`` each, of a float ``Tensor[B]`` ``lam`` in ``[0, 1]`` (float64
    for the published rounding): docs/design.md, step 1."""
    side = torch.sqrt(1.0 - lam)
    return (height * side).long(), (width * side).long()


def centred_boxes(cy: Tensor, cx: Tensor, box_h: Tensor, box_w: Tensor, height: int, width: int) -> Tensor:
    """``LongTensor[B, 4]``: the published box ``box_h x box_w`` centred on ``(cy, cx)``, clipped
    (docs/design.md, step 2, ``peak``); all arguments ``LongTensor[B]`` on one device."""
    half_h, half_w = box_h.clamp(0, height) // 2, box_w.clamp(0, width) // 2
    return torch.stack([(cy - half_h).clamp(0, height), (cx - half_w).clamp(0, width),
                        (cy + half_h).clamp(0, height), (cx + half_w).clamp(0, width)], 1)


def area_rule(boxes: Tensor, height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """CutMix's label weight ``1 - box_area / (H * W)`` (computed in float64):
    ``LongTensor[B, 4]`` -> ``Tensor[B]`` of ``dtype``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (1.0 - area.double() / (height * width)).to(dtype)


def saliency_peaks(saliency: Tensor) -> tuple[Tensor, Tensor]:
    """``(py, px)``, ``LongTensor[B]`` each: the most salient pixel of each map of ``Tensor[B, H, W]``,
    the first in row-major order on ties."""
    width = saliency.shape[2]
    peak = _counted(saliency).flatten(1).argmax(1)
    return peak // width, peak % width


def saliency_shares(saliency: Tensor, perm: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` of the label-weight rule (docs/design.md, step 4), float64 ``Tensor[B]`` each (NaN
    where a map sums to 0); ``boxes`` lie inside the maps."""
    sources = _sources(perm)
    total = direct_sums(saliency)
    return (total - direct_sums(saliency, boxes)) / total, direct_sums(saliency[sources], boxes) / total[sources]


def saliency_weights(saliency: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Step 4's ``lam_i`` of :func:`saliency_shares`, float64 ``Tensor[B]``; ``boxes`` lie inside the maps."""
    a, b = saliency_shares(saliency, perm, boxes)
    lam = a / (a + b)
    return torch.where((a + b > 0) & torch.isfinite(lam), lam, area_rule(boxes, *saliency.shape[1:], torch.float64))


def direct_sums(saliency: Tensor, boxes: Optional[Tensor] = None) -> Tensor:
    """float64 ``Tensor[B]``: each map's values as the kernels count them, inside its box (``None``:
    the whole map), summed directly (not as differences of a summed-area table), so an all-zero
    region sums to exactly 0 and a box that holds all of a map's saliency to exactly its total."""
    counted = _counted(saliency)
    if boxes is not None:
        counted = counted * _box_mask(boxes, *saliency.shape[1:])
    return counted.sum((1, 2))


def _counted(saliency: Tensor) -> Tensor:
    """Saliency as the kernels count it, in float64: values that are negative, NaN or infinite are 0."""
    s = saliency.double()
    return torch.where(torch.isfinite(s) & (s > 0), s, torch.zeros((), dtype=s.dtype, device=s.device))


def _clamped_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boxes clamped into the image, as the kernels clamp them: ``0 <= y1 <= y2 <= H``, likewise x."""
    y1, x1 = boxes[:, 0].clamp(0, height), boxes[:, 1].clamp(0, width)
    y2 = torch.maximum(boxes[:, 2].clamp(max=height), y1)
    x2 = torch.maximum(boxes[:, 3].clamp(max=width), x1)
    return torch.stack([y1, x1, y2, x2], 1)


def _sources(perm: Tensor) -> Tensor:
    """The image each image receives from, as the kernels read ``perm``: out-of-range values mean itself."""
    own = torch.arange(perm.shape[0], device=perm.device)
    return torch.where((perm >= 0) & (perm < perm.shape[0]), perm, own)


def _box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """``LongTensor[B, 4]`` -> ``BoolTensor[B, H, W]``, true inside each box."""
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    y1, x1, y2, x2 = (v.view(-1, 1, 1) for v in boxes.unbind(1))
    return (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)


# ------------------------------------------------------------------------- references
# What the kernels compute, written plainly; odd values as the kernels read them (_counted, _clamped_boxes, _sources).


def window_search_reference(saliency: Tensor, box_h: BoxSize, box_w: BoxSize) -> Tensor:
    """Pure-PyTorch :func:`window_search` (a loop over the batch; float64 summed-area tables)."""
    return _run("window_search", (saliency, box_h, box_w), check=False, reference=True)


def peak_boxes_reference(saliency: Tensor, box_h: BoxSize, box_w: BoxSize) -> Tensor:
    """Pure-PyTorch :func:`peak_boxes`."""
    return _run("peak_boxes", (saliency, box_h, box_w), check=False, reference=True)


def paste_reference(images: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Pure-PyTorch :func:`paste` (a masked select over the whole batch)."""
    return _run("paste", (images, perm, boxes), check=False, reference=True)


def label_weights_reference(saliency: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Pure-PyTorch :func:`label_weights` (float64 :func:`direct_sums`)."""
    return _run("label_weights", (saliency, perm, boxes), check=False, reference=True)


def saliency_mix_plus_reference(images: Tensor, saliency: Tensor, perm: Tensor, box_h: BoxSize, box_w: BoxSize,
                                box: str = "window") -> tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch :func:`saliency_mix_plus` (the three unfused references in a row)."""
    return _run("saliency_mix_plus", (images, saliency, perm, box_h, box_w, box), check=False, reference=True)


def _window_search(saliency: Tensor, box_h: Tensor, box_w: Tensor) -> Tensor:
    batch, height, width = saliency.shape
    sat = saliency.new_zeros((batch, height + 1, width + 1), dtype=torch.float64)
    sat[:, 1:, 1:] = _counted(saliency).cumsum(2).cumsum(1)  # rows first, then columns, as the kernels
    boxes = []
    for i, (h, w) in enumerate(zip(box_h.clamp(0, height).tolist(), box_w.clamp(0, width).tolist())):
        t = sat[i]
        sums = t[h:, w:] - t[: height + 1 - h, w:] - t[h:, : width + 1 - w] + t[: height + 1 - h, : width + 1 - w]
        # the first maximum: smallest (y1, x1); a NaN sum (inf - inf of huge values) never wins
        best = int(sums.nan_to_num(nan=float("-inf")).flatten().argmax())
        y1, x1 = divmod(best, width + 1 - w)
        boxes.append([y1, x1, y1 + h, x1 + w])
    return torch.tensor(boxes, dtype=torch.long, device=saliency.device).reshape(batch, 4)


def _peak_boxes(saliency: Tensor, box_h: Tensor, box_w: Tensor) -> Tensor:
    return centred_boxes(*saliency_peaks(saliency), box_h, box_w, *saliency.shape[1:])


def _paste(images: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    height, width = images.shape[2:]
    mask = _box_mask(_clamped_boxes(boxes, height, width), height, width).unsqueeze(1)
    return torch.where(mask, images[_sources(perm)], images).contiguous(memory_format=paste_memory_format(images))


def _label_weights(saliency: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    return saliency_weights(saliency, perm, _clamped_boxes(boxes, *saliency.shape[1:])).float()


def _saliency_mix_plus(images: Tensor, saliency: Tensor, perm: Tensor, box_h: Tensor, box_w: Tensor,
                       box: str) -> tuple[Tensor, Tensor, Tensor]:
    boxes = (_window_search if box == "window" else _peak_boxes)(saliency[_sources(perm)], box_h, box_w)
    return _paste(images, perm, boxes), boxes, _label_weights(saliency, perm, boxes)


_OPS = {  # each op's arguments in order (the first, images or saliency, holds the batch) and its reference
    "window_search": (("saliency", "box_h", "box_w"), _window_search),
    "peak_boxes": (("saliency", "box_h", "box_w"), _peak_boxes),
    "paste": (("images", "perm", "boxes"), _paste),
    "label_weights": (("saliency", "perm", "boxes"), _label_weights),
    "saliency_mix_plus": (("images", "saliency", "perm", "box_h", "box_w", "box"), _saliency_mix_plus),
}


# ---------------------------------------------------------------- fake (meta) kernels
# Output shapes of the compiled ops for torch.compile and meta tensors.

if _extension.has_ops():

    def _check_dim(name: str, t: Tensor, dims: int, shape: str) -> None:
        torch._check(t.dim() == dims, lambda: f"{name} must be a Tensor[{shape}], got {list(t.shape)}")

    @torch.library.register_fake("saliencymixplus::window_search")
    def _window_search_fake(saliency, box_h, box_w):
        _check_dim("saliency", saliency, 3, "B, H, W")
        return saliency.new_empty((saliency.shape[0], 4), dtype=torch.long)

    torch.library.register_fake("saliencymixplus::peak_boxes")(_window_search_fake)

    @torch.library.register_fake("saliencymixplus::paste")
    def _paste_fake(images, perm, boxes):
        _check_dim("images", images, 4, "B, C, H, W")
        return torch.empty_like(images, memory_format=paste_memory_format(images))

    @torch.library.register_fake("saliencymixplus::label_weights")
    def _label_weights_fake(saliency, perm, boxes):
        _check_dim("saliency", saliency, 3, "B, H, W")
        return saliency.new_empty((saliency.shape[0],), dtype=torch.float32)

    @torch.library.register_fake("saliencymixplus::saliency_mix_plus")
    def _saliency_mix_plus_fake(images, saliency, perm, box_h, box_w, box):
        return (_paste_fake(images, perm, None), _window_search_fake(saliency, box_h, box_w),
                _label_weights_fake(saliency, perm, None))
