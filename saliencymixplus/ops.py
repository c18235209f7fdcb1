"""The mixing ops: window search, peak boxes, paste, label weights and the fused op.

Each op has two faces:

* ``window_search``, ``peak_boxes``, ``paste``, ``label_weights``, ``saliency_mix_plus``: the
  public functions. They call the compiled kernels (``torch.ops.saliencymixplus.*``, CPU
  and CUDA) when the extension is built, and the pure-PyTorch reference otherwise.
* ``*_reference``: slow, obvious pure-PyTorch versions (float64 sums) that define what the
  kernels compute. The tests hold the kernels to them.

Boxes are ``LongTensor[B, 4]`` rows ``(y1, x1, y2, x2)`` with exclusive ends, so box ``i``
covers ``[y1, y2) x [x1, x2)``. Box sizes (``box_h``, ``box_w``) are an ``int`` or an
integer ``Tensor[B]``; they are clamped to ``[0, H]`` and ``[0, W]``, and a 0-size box is
legal (it pastes nothing).

The label weight (docs/design.md, "The algorithm", step 4) of the target label of image ``i`` is::

    a = (sum(s[i]) - sum(s[i] in box)) / sum(s[i])        # target saliency left visible
    b = sum(s[perm[i]] in box) / sum(s[perm[i]])          # source saliency pasted in
    lam_i = a / (a + b)

falling back to the area rule ``1 - box_area / (H * W)`` where a saliency sum or ``a + b``
is 0, or the result is not finite.

**Checks.** Each public op checks shapes, dtypes and devices (free), and with
``check=True`` (the default) also the values users pass by hand: saliency finite and
``>= 0``, ``perm`` in ``[0, B)``, boxes inside the image. That value check reads one small
tensor back to the host, a GPU sync. The mixers pass ``check=False``: the kernels are safe
by construction, so odd values have a defined meaning and nothing is read or written out of
bounds: a saliency value that is negative, NaN or infinite counts as 0, a box is clamped into
the image, a ``perm`` value outside ``[0, B)`` means "the image itself".

**Rules.** The rules the mixers and the benchmarks share live here, once:
:func:`box_sizes` (box size from ``lam``), :func:`centred_boxes` (the published clipped box),
:func:`area_rule` (CutMix's label weight), :func:`saliency_peaks` (the argmax pixel).
"""

from __future__ import annotations

import warnings
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
    """The most salient window of each map.

    Args:
        saliency: ``Tensor[B, H, W]``, float (any precision) or uint8, ``>= 0`` and finite.
        box_h, box_w: window height and width, an ``int`` or an integer ``Tensor[B]``;
            clamped to ``[0, H]`` / ``[0, W]``.
        check: validate the saliency values (one host read; see the module docstring).

    Returns:
        ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)``: for each map, the window of the given
        size fully inside the map whose saliency sum is largest (a summed-area table, so
        O(H*W) per map). Ties go to the smallest ``(y1, x1)``; sums are float64 (the same on
        every device), so windows whose sums differ only by rounding count as different.
    """
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_search_args(saliency, box_h, box_w)
    if check:
        check_values(saliency=saliency)
    if _extension.has_ops():
        return torch.ops.saliencymixplus.window_search(saliency, box_h, box_w)
    return window_search_reference(saliency, box_h, box_w)


def peak_boxes(saliency: Tensor, box_h: BoxSize, box_w: BoxSize, *, check: bool = True) -> Tensor:
    """Boxes centred on the most salient pixel, clipped to the map (the published rule).

    With ``(py, px)`` the argmax pixel (the first in row-major order on ties; see
    :func:`saliency_peaks`) the box is :func:`centred_boxes`: ``y1 = clip(py - h // 2, 0, H)``,
    ``y2 = clip(py + h // 2, 0, H)``, likewise for x, so a box shrinks at the borders and an
    odd size loses one row/column.

    Args:
        saliency: ``Tensor[B, H, W]``, float or uint8, ``>= 0`` and finite.
        box_h, box_w: an ``int`` or an integer ``Tensor[B]``; clamped to ``[0, H]`` / ``[0, W]``.
        check: validate the saliency values (one host read).

    Returns:
        ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)``.
    """
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_search_args(saliency, box_h, box_w)
    if check:
        check_values(saliency=saliency)
    if _extension.has_ops():
        return torch.ops.saliencymixplus.peak_boxes(saliency, box_h, box_w)
    return peak_boxes_reference(saliency, box_h, box_w)


def paste(images: Tensor, perm: Tensor, boxes: Tensor, *, check: bool = True) -> Tensor:
    """Paste box ``i`` of image ``perm[i]`` into image ``i`` at the same coordinates.

    Args:
        images: ``Tensor[B, C, H, W]`` of any dtype and strides; a dense channels-last input
            gives a channels-last output, anything else a contiguous one.
        perm: integer ``Tensor[B]`` with values in ``[0, B)``: image ``i`` receives from
            image ``perm[i]``.
        boxes: ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)`` with
            ``0 <= y1 <= y2 <= H`` and ``0 <= x1 <= x2 <= W``.
        check: validate ``perm`` and ``boxes`` (one host read).

    Returns:
        A new ``Tensor[B, C, H, W]``: ``out[i] = images[i]`` and
        ``out[i, :, y1:y2, x1:x2] = images[perm[i], :, y1:y2, x1:x2]``.
    """
    perm = _as_long(perm, "perm")
    _check_paste_args(images, perm, boxes)
    if check:
        check_values(perm=perm, boxes=boxes, height=images.shape[2], width=images.shape[3])
    if _extension.has_ops():
        return torch.ops.saliencymixplus.paste(images, perm, boxes)
    return paste_reference(images, perm, boxes)


def label_weights(saliency: Tensor, perm: Tensor, boxes: Tensor, *, check: bool = True) -> Tensor:
    """The saliency-weighted label weight ``lam_i`` of each target label.

    Args:
        saliency: ``Tensor[B, H, W]``, float or uint8, ``>= 0`` and finite.
        perm: integer ``Tensor[B]`` with values in ``[0, B)``.
        boxes: ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)`` inside the map.
        check: validate the saliency, ``perm`` and ``boxes`` (one host read).

    Returns:
        ``FloatTensor[B]``: the weight of label ``y[i]``; ``y[perm[i]]`` gets ``1 - lam_i``.
        See the module docstring for the rule and its area-rule fallback.
    """
    perm = _as_long(perm, "perm")
    _check_label_weights_args(saliency, perm, boxes)
    if check:
        check_values(saliency=saliency, perm=perm, boxes=boxes, height=saliency.shape[1], width=saliency.shape[2])
    if _extension.has_ops():
        return torch.ops.saliencymixplus.label_weights(saliency, perm, boxes)
    return label_weights_reference(saliency, perm, boxes)


def saliency_mix_plus(
    images: Tensor,
    saliency: Tensor,
    perm: Tensor,
    box_h: BoxSize,
    box_w: BoxSize,
    box: str = "window",
    *,
    check: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Search, paste and weigh in one op: SaliencyMix+ for a batch.

    The box of image ``i`` is placed on the saliency of its source ``perm[i]`` (the most
    salient window for ``box="window"``, the peak-centred box for ``box="peak"``), the
    source's box is pasted into image ``i`` and ``lam_i`` is the saliency-weighted label weight.

    Args:
        images: ``Tensor[B, C, H, W]`` of any dtype.
        saliency: ``Tensor[B, H, W]``, float or uint8, ``>= 0`` and finite, same H, W as images.
        perm: integer ``Tensor[B]`` with values in ``[0, B)``.
        box_h, box_w: an ``int`` or an integer ``Tensor[B]``; clamped to the image.
        box: ``"window"`` or ``"peak"`` (:data:`BOXES`).
        check: validate the saliency and ``perm`` (one host read).

    Returns:
        ``(mixed Tensor[B, C, H, W], boxes LongTensor[B, 4], lam FloatTensor[B])``, equal to
        ``paste(images, perm, boxes)`` and ``label_weights(saliency, perm, boxes)`` with
        ``boxes = window_search(saliency[perm], box_h, box_w)`` (or ``peak_boxes``).
    """
    _check_box(box)
    perm = _as_long(perm, "perm")
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_saliency_mix_args(images, saliency, perm, box_h, box_w)
    if check:
        check_values(saliency=saliency, perm=perm)
    if _extension.has_ops():
        return torch.ops.saliencymixplus.saliency_mix_plus(images, saliency, perm, box_h, box_w, box)
    return saliency_mix_plus_reference(images, saliency, perm, box_h, box_w, box)


def saliency_mix(images: Tensor, saliency: Tensor, perm: Tensor, box_h: BoxSize, box_w: BoxSize,
                 mode: str = "window", *, check: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Deprecated name of :func:`saliency_mix_plus` (``mode`` is now ``box``); removed in 0.3."""
    warnings.warn("saliencymixplus.ops.saliency_mix is deprecated and will be removed in 0.3: it computes "
                  "SaliencyMix+, so it is now saliency_mix_plus(..., box=...)", DeprecationWarning, stacklevel=2)
    return saliency_mix_plus(images, saliency, perm, box_h, box_w, mode, check=check)


# ------------------------------------------------------------------------------ rules


def paste_memory_format(images: Tensor) -> torch.memory_format:
    """The layout :func:`paste` writes: channels-last for a channels-last input (that is not
    also plain contiguous), else contiguous (as ``csrc/paste_layout.h``)."""
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def box_sizes(lam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The box size of a mixing ratio: ``box_h = int(H * sqrt(1 - lam))``, likewise ``box_w``.

    Args:
        lam: float ``Tensor[B]`` in ``[0, 1]`` (float64 for the published rounding).
        height, width: the image size.

    Returns:
        ``(box_h, box_w)``, ``LongTensor[B]`` each, on ``lam``'s device.
    """
    side = torch.sqrt(1.0 - lam)
    return (height * side).long(), (width * side).long()


def centred_boxes(cy: Tensor, cx: Tensor, box_h: Tensor, box_w: Tensor, height: int, width: int) -> Tensor:
    """The published box: ``box_h x box_w`` centred on ``(cy, cx)`` with half sizes ``size // 2``,
    clipped to the image (so it shrinks at the borders and an odd size loses a row/column).

    Args:
        cy, cx, box_h, box_w: ``LongTensor[B]`` on one device.
        height, width: the image size.

    Returns:
        ``LongTensor[B, 4]`` of ``(y1, x1, y2, x2)``.
    """
    half_h, half_w = box_h.clamp(0, height) // 2, box_w.clamp(0, width) // 2
    return torch.stack([(cy - half_h).clamp(0, height), (cx - half_w).clamp(0, width),
                        (cy + half_h).clamp(0, height), (cx + half_w).clamp(0, width)], 1)


def area_rule(boxes: Tensor, height: int, width: int) -> Tensor:
    """CutMix's label weight ``1 - box_area / (H * W)``: ``LongTensor[B, 4]`` -> ``FloatTensor[B]``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (1.0 - area.double() / (height * width)).float()


def saliency_peaks(saliency: Tensor) -> tuple[Tensor, Tensor]:
    """The most salient pixel of each map, the first in row-major order on ties.

    Args:
        saliency: ``Tensor[B, H, W]`` (values counted as the kernels count them).

    Returns:
        ``(py, px)``, ``LongTensor[B]`` each, on the saliency's device.
    """
    width = saliency.shape[2]
    peak = _counted(saliency).flatten(1).argmax(1)
    return peak // width, peak % width


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
    batch = perm.shape[0]
    own = torch.arange(batch, device=perm.device)
    return torch.where((perm >= 0) & (perm < batch), perm, own)


# ------------------------------------------------------------------ argument conversion


def _as_long(t: Tensor, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dtype != torch.long and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool:
        return t.long()
    return t


def _size_tensors(saliency: Tensor, box_h: BoxSize, box_w: BoxSize) -> tuple[Tensor, Tensor]:
    """Turn ``int`` box sizes into ``LongTensor[B]`` on the saliency's device."""
    if not isinstance(saliency, Tensor):
        raise TypeError(f"saliency must be a Tensor, got {type(saliency).__name__}")
    batch = saliency.shape[0] if saliency.dim() > 0 else 0
    out = []
    for name, size in (("box_h", box_h), ("box_w", box_w)):
        if isinstance(size, bool) or not isinstance(size, (int, Tensor)):
            raise TypeError(f"{name} must be an int or an integer Tensor[B], got {type(size).__name__}")
        if isinstance(size, int):
            size = torch.full((batch,), size, dtype=torch.long, device=saliency.device)
        else:
            size = _as_long(size, name)
        out.append(size)
    return out[0], out[1]


# ---------------------------------------------------- checks of shapes, dtypes, devices


def _check_map(saliency: Tensor, name: str = "saliency") -> None:
    if not isinstance(saliency, Tensor) or saliency.dim() != 3:
        raise ValueError(f"{name} must be a Tensor[B, H, W], got shape {_shape(saliency)}")
    if saliency.dtype not in SALIENCY_DTYPES:
        raise ValueError(f"{name} must be a float32, float64, float16, bfloat16 or uint8 tensor, got {saliency.dtype}")
    if saliency.shape[1] == 0 or saliency.shape[2] == 0:
        raise ValueError(f"{name} must have H > 0 and W > 0, got shape {list(saliency.shape)}")


def _check_sizes(size: Tensor, batch: int, device: torch.device, name: str) -> None:
    if size.dtype != torch.long or size.shape != (batch,):
        raise ValueError(f"{name} must be a LongTensor[{batch}], got {size.dtype} of shape {list(size.shape)}")
    if size.device != device:
        raise ValueError(f"{name} must be on {device} like saliency, got {size.device}")


def _check_perm(perm: Tensor, batch: int, device: torch.device) -> None:
    if perm.dtype != torch.long or perm.shape != (batch,):
        raise ValueError(f"perm must be a LongTensor[{batch}], got {perm.dtype} of shape {list(perm.shape)}")
    if perm.device != device:
        raise ValueError(f"perm must be on {device}, got {perm.device}")


def _check_boxes(boxes: Tensor, batch: int, device: torch.device) -> None:
    if not isinstance(boxes, Tensor) or boxes.dtype != torch.long or boxes.shape != (batch, 4):
        raise ValueError(f"boxes must be a LongTensor[{batch}, 4], got {_describe(boxes)}")
    if boxes.device != device:
        raise ValueError(f"boxes must be on {device}, got {boxes.device}")


def _check_box(box: str) -> None:
    if box not in BOXES:
        raise ValueError(f"box must be one of {BOXES}, got {box!r}")


def _check_images(images: Tensor, saliency: Optional[Tensor] = None) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a Tensor[B, C, H, W], got shape {_shape(images)}")
    if saliency is not None:
        if saliency.device != images.device:
            raise ValueError(f"saliency must be on {images.device} like images, got {saliency.device}")
        if saliency.dim() != 3 or saliency.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"saliency must be a Tensor[B, H, W] = {[images.shape[0], *images.shape[2:]]} "
                             f"to match images {list(images.shape)}, got {list(saliency.shape)}")


def _check_search_args(saliency: Tensor, box_h: Tensor, box_w: Tensor) -> None:
    _check_map(saliency)
    _check_sizes(box_h, saliency.shape[0], saliency.device, "box_h")
    _check_sizes(box_w, saliency.shape[0], saliency.device, "box_w")


def _check_paste_args(images: Tensor, perm: Tensor, boxes: Tensor) -> None:
    _check_images(images)
    _check_perm(perm, images.shape[0], images.device)
    _check_boxes(boxes, images.shape[0], images.device)


def _check_label_weights_args(saliency: Tensor, perm: Tensor, boxes: Tensor) -> None:
    _check_map(saliency)
    _check_perm(perm, saliency.shape[0], saliency.device)
    _check_boxes(boxes, saliency.shape[0], saliency.device)


def _check_saliency_mix_args(images: Tensor, saliency: Tensor, perm: Tensor, box_h: Tensor, box_w: Tensor) -> None:
    _check_images(images)
    _check_map(saliency)
    _check_images(images, saliency)
    _check_perm(perm, images.shape[0], images.device)
    _check_sizes(box_h, images.shape[0], images.device, "box_h")
    _check_sizes(box_w, images.shape[0], images.device, "box_w")


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _describe(value) -> str:
    return f"{value.dtype} of shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


# ------------------------------------------------------------------ checks of values


def check_values(saliency: Optional[Tensor] = None, perm: Optional[Tensor] = None, boxes: Optional[Tensor] = None,
                  height: int = 0, width: int = 0) -> None:
    """Saliency finite and ``>= 0``, ``perm`` in ``[0, B)``, boxes inside ``H x W``: the statistics
    are gathered on the data's device and read back in one copy (a host sync on a GPU)."""
    stats = []
    has_saliency = saliency is not None and saliency.numel() > 0 and saliency.is_floating_point()
    has_perm = perm is not None and perm.numel() > 0
    has_boxes = boxes is not None and boxes.numel() > 0
    if has_saliency:
        stats += list(torch.aminmax(saliency))
    if has_perm:
        stats += list(torch.aminmax(perm))
    if has_boxes:
        y1, x1, y2, x2 = boxes.unbind(1)
        stats.append(torch.stack([y1, x1, y2 - y1, x2 - x1, height - y2, width - x2]).amin(1))
    if not stats:
        return
    values = torch.cat([t.double().reshape(-1) for t in stats]).tolist()
    if has_saliency:
        low, high = values[:2]
        values = values[2:]
        if not (low >= 0 and abs(high) < float("inf")):
            raise ValueError(f"saliency must be finite and >= 0, got values in [{low}, {high}]")
    if has_perm:
        low, high = values[:2]
        values = values[2:]
        if low < 0 or high >= perm.shape[0]:
            raise ValueError(f"perm values must be in [0, {perm.shape[0]}), got values in [{int(low)}, {int(high)}]")
    if has_boxes:
        for broken, margin in zip(("y1 < 0", "x1 < 0", "y2 < y1", "x2 < x1", "y2 > H", "x2 > W"), values):
            if margin < 0:
                y1, x1, y2, x2 = boxes.unbind(1)
                ok = torch.stack([y1, x1, y2 - y1, x2 - x1, height - y2, width - x2], 1) >= 0
                bad = int((~ok.all(1)).nonzero()[0, 0])
                raise ValueError(f"boxes must satisfy 0 <= y1 <= y2 <= H = {height} and 0 <= x1 <= x2 <= W = {width}; "
                                 f"found a box with {broken}: box {bad} = {boxes[bad].tolist()}")


# ------------------------------------------------------------------------- references
# What the kernels compute, written plainly; odd values mean what they mean to the kernels
# (_counted, _clamped_boxes, _sources). Each checks shapes, dtypes and devices, not values.


def _summed_area(saliency: Tensor) -> Tensor:
    """``Tensor[B, H, W]`` -> float64 ``Tensor[B, H+1, W+1]`` with ``sat[:, y, x] = s[:, :y, :x].sum()``
    over the counted values. Rows are summed first, then columns, the order the kernels use.
    """
    batch, height, width = saliency.shape
    sat = saliency.new_zeros((batch, height + 1, width + 1), dtype=torch.float64)
    sat[:, 1:, 1:] = _counted(saliency).cumsum(2).cumsum(1)
    return sat


def _box_sums(sat: Tensor, boxes: Tensor) -> Tensor:
    """Sums of ``boxes`` (``LongTensor[B, 4]``) in ``sat`` (``Tensor[B, H+1, W+1]``) -> float64 ``[B]``."""
    b = torch.arange(sat.shape[0], device=sat.device)
    y1, x1, y2, x2 = boxes.unbind(1)
    return sat[b, y2, x2] - sat[b, y1, x2] - sat[b, y2, x1] + sat[b, y1, x1]


def window_search_reference(saliency: Tensor, box_h: BoxSize, box_w: BoxSize) -> Tensor:
    """Pure-PyTorch :func:`window_search` (a loop over the batch; float64 sums)."""
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_search_args(saliency, box_h, box_w)
    batch, height, width = saliency.shape
    sat = _summed_area(saliency)
    boxes = []
    for i, (h, w) in enumerate(zip(box_h.clamp(0, height).tolist(), box_w.clamp(0, width).tolist())):
        t = sat[i]
        sums = t[h:, w:] - t[: height + 1 - h, w:] - t[h:, : width + 1 - w] + t[: height + 1 - h, : width + 1 - w]
        # the first maximum: smallest (y1, x1); a NaN sum (inf - inf of huge values) never wins
        best = int(sums.nan_to_num(nan=float("-inf")).flatten().argmax())
        y1, x1 = divmod(best, width + 1 - w)
        boxes.append([y1, x1, y1 + h, x1 + w])
    return torch.tensor(boxes, dtype=torch.long, device=saliency.device).reshape(batch, 4)


def peak_boxes_reference(saliency: Tensor, box_h: BoxSize, box_w: BoxSize) -> Tensor:
    """Pure-PyTorch :func:`peak_boxes`."""
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_search_args(saliency, box_h, box_w)
    _, height, width = saliency.shape
    py, px = saliency_peaks(saliency)
    return centred_boxes(py, px, box_h, box_w, height, width)


def _box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """``LongTensor[B, 4]`` -> ``BoolTensor[B, H, W]``, true inside each box."""
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    y1, x1, y2, x2 = (v.view(-1, 1, 1) for v in boxes.unbind(1))
    return (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)


def paste_reference(images: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Pure-PyTorch :func:`paste` (a masked select over the whole batch)."""
    perm = _as_long(perm, "perm")
    _check_paste_args(images, perm, boxes)
    _, _, height, width = images.shape
    mask = _box_mask(_clamped_boxes(boxes, height, width), height, width).unsqueeze(1)
    out = torch.where(mask, images[_sources(perm)], images)
    return out.contiguous(memory_format=paste_memory_format(images))


def label_weights_reference(saliency: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Pure-PyTorch :func:`label_weights` (float64 sums from summed-area tables)."""
    perm = _as_long(perm, "perm")
    _check_label_weights_args(saliency, perm, boxes)
    _, height, width = saliency.shape
    boxes, sources = _clamped_boxes(boxes, height, width), _sources(perm)
    sat = _summed_area(saliency)
    total = sat[:, -1, -1]
    inside_target = _box_sums(sat, boxes)
    inside_source = _box_sums(sat[sources], boxes)
    return _weights_from_sums(total, inside_target, total[sources], inside_source, boxes, height, width)


def _weights_from_sums(total_t: Tensor, in_t: Tensor, total_s: Tensor, in_s: Tensor, boxes: Tensor,
                       height: int, width: int) -> Tensor:
    """The label-weight rule on float64 ``[B]`` sums, with the area-rule fallback -> float32 ``[B]``."""
    a = (total_t - in_t) / total_t
    b = in_s / total_s
    lam = a / (a + b)
    usable = (total_t > 0) & (total_s > 0) & ((a + b) > 0) & torch.isfinite(lam)
    return torch.where(usable, lam.float(), area_rule(boxes, height, width))


def saliency_mix_plus_reference(
    images: Tensor,
    saliency: Tensor,
    perm: Tensor,
    box_h: BoxSize,
    box_w: BoxSize,
    box: str = "window",
) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch :func:`saliency_mix_plus`: the three unfused reference ops in a row."""
    _check_box(box)
    perm = _as_long(perm, "perm")
    box_h, box_w = _size_tensors(saliency, box_h, box_w)
    _check_saliency_mix_args(images, saliency, perm, box_h, box_w)
    find = window_search_reference if box == "window" else peak_boxes_reference
    boxes = find(saliency[_sources(perm)], box_h, box_w)
    return paste_reference(images, perm, boxes), boxes, label_weights_reference(saliency, perm, boxes)


# ---------------------------------------------------------------- fake (meta) kernels
# Output shapes of the compiled ops for torch.compile and meta tensors.

if _extension.has_ops():

    def _batch_of(t: Tensor) -> int:
        torch._check(t.dim() >= 1, lambda: f"expected a batched tensor, got shape {list(t.shape)}")
        return t.shape[0]

    @torch.library.register_fake("saliencymixplus::window_search")
    def _window_search_fake(saliency, box_h, box_w):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency), 4), dtype=torch.long)

    @torch.library.register_fake("saliencymixplus::peak_boxes")
    def _peak_boxes_fake(saliency, box_h, box_w):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency), 4), dtype=torch.long)

    @torch.library.register_fake("saliencymixplus::paste")
    def _paste_fake(images, perm, boxes):
        torch._check(images.dim() == 4, lambda: f"images must be a Tensor[B, C, H, W], got {list(images.shape)}")
        return torch.empty_like(images, memory_format=paste_memory_format(images))

    @torch.library.register_fake("saliencymixplus::label_weights")
    def _label_weights_fake(saliency, perm, boxes):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency),), dtype=torch.float32)

    @torch.library.register_fake("saliencymixplus::saliency_mix_plus")
    def _saliency_mix_plus_fake(images, saliency, perm, box_h, box_w, box):
        torch._check(images.dim() == 4, lambda: f"images must be a Tensor[B, C, H, W], got {list(images.shape)}")
        batch = _batch_of(images)
        return (
            torch.empty_like(images, memory_format=paste_memory_format(images)),
            images.new_empty((batch, 4), dtype=torch.long),
            images.new_empty((batch,), dtype=torch.float32),
        )
