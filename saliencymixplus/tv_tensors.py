"""A saliency map as a ``torchvision.transforms.v2`` input: ``pipeline(image, Saliency(map))``,
moved with its image by the kernels registered here; the rules are in docs/design.md, "The
saliency cache" ("Your own v2 pipeline").
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torchvision.ops import roi_align
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2.functional import register_kernel
from torchvision.transforms.v2.functional._geometry import _compute_resized_output_size
from torchvision.tv_tensors import TVTensor

__all__ = ["Saliency"]

_BILINEAR = InterpolationMode.BILINEAR


class Saliency(TVTensor):
    """``Tensor[..., H, W]`` saliency map(s) of one image: ``uint8`` (``0..255`` for ``0..1``) or float.

    Args:
        data: anything :func:`torch.as_tensor` takes, at least 2-D.
        canvas_size: ``(H, W)`` of the image the map covers, when the map is stored at another
            resolution (unchecked: a map passed without it moves as if its image were its size);
            default: the map's own ``(H, W)``.
        dtype, device, requires_grad: as for ``tv_tensors.Mask``.

    ``v2.ToDtype(torch.float32, scale=True)`` converts images only; ``v2.ToDtype({tv_tensors.Image:
    torch.float32, Saliency: torch.float32, "others": None}, scale=True)`` also takes a uint8 map to
    float ``0..1``. A batch of maps collated by a DataLoader is a plain ``Tensor[B, H, W]``.
    """

    canvas_size: tuple[int, int]

    @classmethod
    def _wrap(cls, tensor: torch.Tensor, *, canvas_size) -> "Saliency":
        s = tensor.as_subclass(cls)
        s.canvas_size = canvas_size
        return s

    @classmethod
    def wrap(cls, tensor: torch.Tensor, like: "Saliency", **kwargs: Any) -> "Saliency":
        return cls._wrap(tensor, canvas_size=kwargs.get("canvas_size", like.canvas_size))

    def __new__(cls, data: Any, *, canvas_size=None, dtype: torch.dtype | None = None,
                device: torch.device | str | int | None = None, requires_grad: bool | None = None) -> "Saliency":
        tensor = cls._to_tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        if tensor.dim() < 2 or not (tensor.dtype == torch.uint8 or tensor.is_floating_point()):
            raise ValueError(f"data must be a uint8 or float map [..., H, W], got {tensor.dtype}{list(tensor.shape)}")
        try:
            size = tuple(tensor.shape[-2:]) if canvas_size is None else tuple(map(operator.index, canvas_size))
        except TypeError:
            size = ()
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"canvas_size must be (H, W), two positive integers, got {canvas_size!r}")
        return cls._wrap(tensor, canvas_size=size)

    @classmethod
    def _wrap_output(cls, output, args=(), kwargs=None):
        """``clone``, ``to``, ``detach``, ... keep the type and the ``canvas_size`` of the first Saliency argument."""
        flat, _ = tree_flatten(args + (tuple(kwargs.values()) if kwargs else ()))
        canvas_size = next(x.canvas_size for x in flat if isinstance(x, Saliency))
        if isinstance(output, torch.Tensor) and not isinstance(output, Saliency):
            output = cls._wrap(output, canvas_size=canvas_size)
        elif isinstance(output, (tuple, list)):
            output = type(output)(cls._wrap(part, canvas_size=canvas_size) for part in output)
        return output

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return self._make_repr(canvas_size=self.canvas_size)


def _plain(s: Saliency) -> torch.Tensor:
    """The map as a plain ``Tensor[..., 1, h, w]`` (the image kernels' channel dimension added)."""
    return s.as_subclass(torch.Tensor).unsqueeze(-3)


def _at_canvas(s: Saliency) -> torch.Tensor:
    """``Tensor[..., 1, H, W]`` at ``canvas_size``: resized bilinearly (antialiased) when stored at another size."""
    x = _plain(s)
    if tuple(x.shape[-2:]) != s.canvas_size:
        x = F.resize_image(x, list(s.canvas_size), interpolation=_BILINEAR, antialias=True)
    return x


def _wrap(x: torch.Tensor) -> Saliency:
    """``Tensor[..., 1, H, W]`` -> ``Saliency[..., H, W]`` covering an image of ``(H, W)``."""
    x = x.squeeze(-3)
    return Saliency._wrap(x, canvas_size=tuple(x.shape[-2:]))


def _register_image_kernel(functional, image_kernel) -> None:
    """``functional(Saliency)`` = ``image_kernel`` on the map at its canvas size, bilinear, fill 0."""

    def kernel(s: Saliency, *args, **kwargs):
        if "interpolation" in kwargs:
            kwargs["interpolation"] = _BILINEAR
        if "fill" in kwargs:
            kwargs["fill"] = 0
        out = image_kernel(_at_canvas(s), *args, **kwargs)
        return tuple(map(_wrap, out)) if isinstance(out, tuple) else _wrap(out)  # five_crop, ten_crop: a tuple

    kernel.__name__ = f"_{functional.__name__}_saliency"
    register_kernel(functional, Saliency)(kernel)


for _functional, _image_kernel in [
    (F.crop, F.crop_image),
    (F.center_crop, F.center_crop_image),
    (F.pad, F.pad_image),
    (F.horizontal_flip, F.horizontal_flip_image),
    (F.vertical_flip, F.vertical_flip_image),
    (F.affine, F.affine_image),
    (F.rotate, F.rotate_image),
    (F.perspective, F.perspective_image),
    (F.elastic, F.elastic_image),
    (F.five_crop, F.five_crop_image),
    (F.ten_crop, F.ten_crop_image),
]:
    _register_image_kernel(_functional, _image_kernel)


@register_kernel(F.resize, Saliency)
def _resize_saliency(s: Saliency, size, interpolation=_BILINEAR, max_size=None, antialias=True) -> Saliency:
    """The map, at whatever resolution, resized straight to the size the image gets."""
    out_size = _compute_resized_output_size(s.canvas_size, size=size, max_size=max_size)
    return _wrap(F.resize_image(_plain(s), list(out_size), interpolation=_BILINEAR, antialias=antialias))


def _crop_resample(x: torch.Tensor, box: tuple[float, float, float, float], out_size) -> torch.Tensor:
    """``box`` ``(top, left, bottom, right)`` (pixel edges) of ``x[..., h, w]`` resized to ``out_size`` by
    ``roi_align``, in ``x``'s dtype (integers rounded)."""
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    t, l, b, r = box
    rois = torch.tensor([[0.0, l, t, r, b]], dtype=work, device=x.device)
    out = roi_align(x.reshape(1, -1, h, w).to(work), rois, list(out_size), spatial_scale=1.0, sampling_ratio=-1,
                    aligned=True)
    if not x.is_floating_point():
        out = out.round_().clamp_(0, 255)
    return out.to(x.dtype).reshape(*lead, *out_size)


@register_kernel(F.resized_crop, Saliency)
def _resized_crop_saliency(s: Saliency, top, left, height, width, size, interpolation=_BILINEAR,
                           antialias=True) -> Saliency:
    """Stored at another size and the crop inside the canvas: the crop cut from the stored map in one step."""
    x = s.as_subclass(torch.Tensor)
    (h, w), (H, W) = x.shape[-2:], s.canvas_size
    inside = 0 <= top and 0 <= left and top + height <= H and left + width <= W
    if (h, w) == (H, W) or not inside:
        return _wrap(F.resized_crop_image(_at_canvas(s), top, left, height, width, size, interpolation=_BILINEAR,
                                          antialias=antialias))
    box = (top * h / H, left * w / W, (top + height) * h / H, (left + width) * w / W)
    out_size = _compute_resized_output_size((height, width), size=size)
    return _wrap(_crop_resample(x, box, out_size).unsqueeze(-3))


@register_kernel(F.to_dtype, Saliency)
def _to_dtype_saliency(s: Saliency, dtype: torch.dtype = torch.float32, scale: bool = False) -> Saliency:
    return Saliency._wrap(F.to_dtype_image(s.as_subclass(torch.Tensor), dtype, scale=scale), canvas_size=s.canvas_size)
