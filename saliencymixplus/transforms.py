"""Joint image + saliency transforms: a data set's recipe (:class:`~saliencymixplus.datasets.Recipe`)
run on the image with the ``torchvision.transforms.v2`` functionals, and the same steps, composed
into one :class:`Geometry`, applied to its stored map in one resize (:func:`resample_saliency`);
:class:`Normalize`, the one normalisation (per item, device loader). See docs/design.md, "The saliency cache".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision import transforms as T1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .datasets import get_spec
from .ops import check_images

__all__ = ["JointTransform", "Geometry", "Normalize", "resample_saliency", "train_transform", "eval_transform",
           "random_flip_batch"]


class Normalize:
    """uint8 images ``[..., 3, H, W]`` (``0..255``) -> float ``(x / 255 - mean) / std`` per
    channel (``mean``, ``std`` in [0, 1] units: a spec's ``mean_std``), computed as ``x * scale - shift``.
    Float images are taken as in [0, 1]. ``normalize(images, dtype=torch.float32)`` returns a new
    tensor of ``dtype`` on the images' device; the constants are made once per device and dtype.
    """

    def __init__(self, mean, std):
        try:
            self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        except (TypeError, ValueError):
            self.mean = self.std = []
        if len(self.mean) != 3 or len(self.std) != 3 or not all(map(math.isfinite, self.mean + self.std)) \
                or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3 finite numbers each (R G B), std > 0; got {mean!r}, {std!r}")
        std64 = torch.tensor(self.std, dtype=torch.float64).view(3, 1, 1)
        self._scale64 = 1.0 / (255.0 * std64)
        self._shift64 = torch.tensor(self.mean, dtype=torch.float64).view(3, 1, 1) / std64
        self._constants: dict = {}

    def __call__(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if images.dim() < 3 or images.shape[-3] != 3:
            raise ValueError(f"images must be Tensor[..., 3, H, W], got {list(images.shape)}")
        key = (images.device, dtype)
        if key not in self._constants:
            self._constants[key] = (self._scale64.to(images.device, dtype), self._shift64.to(images.device, dtype))
        scale, shift = self._constants[key]
        x = images.to(dtype, copy=True)
        if images.dtype != torch.uint8:
            x.mul_(255)
        return x.mul_(scale).sub_(shift)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


#: The geometric steps :class:`JointTransform` can compose (all axis-aligned).
SUPPORTED_STEPS = (v2.Resize, v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.CenterCrop)

#: Above this many stored pixels per output pixel (in an axis), the map is area-averaged along
#: it, where bilinear sampling would skip pixels (alias); a crop of at most 256 -> 224 (1.14)
#: stays below it: one bilinear resize.
AREA_ABOVE = 1.2
_EPS = 1e-6  # box edges this close to a whole map pixel are on it (float rounding of the fractions)


def _window(lo: float, hi: float, n: int, margin: bool) -> tuple[int, int]:
    """The whole pixels ``[a, b)`` of an axis of ``n`` pixels that ``[lo, hi]`` touches, and one more
    on each side (within the map) if ``margin``."""
    a = min(max(0, math.floor(lo + _EPS) - margin), n - 1)
    return a, max(a + 1, min(n, math.ceil(hi - _EPS) + margin))


def _as_image(image) -> torch.Tensor:
    """The ``image`` of :class:`JointTransform` as a uint8 ``Tensor[3, H, W]``."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif torch.is_tensor(image):
        if image.dim() != 3 or 3 not in (image.shape[0], image.shape[-1]):
            raise ValueError(f"image must be a Tensor[H, W, 3] or [3, H, W], got {list(image.shape)}")
        t = image.permute(2, 0, 1) if image.shape[-1] == 3 else image
    else:
        raise TypeError(f"image must be a numpy array or a tensor, got {type(image).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (raw), got {t.dtype}")
    return t.as_subclass(torch.Tensor)


def _as_map(saliency) -> np.ndarray:
    """The ``saliency`` of :func:`resample_saliency` as numpy ``uint8`` or ``float32`` (no copy when it is one)."""
    m = saliency.detach().cpu().numpy() if torch.is_tensor(saliency) else np.asarray(saliency)
    if m.ndim != 2:
        raise ValueError(f"saliency must be [h, w], got {list(m.shape)}")
    if m.dtype == np.uint8 or m.dtype == np.float32:
        return m
    if m.dtype.kind != "f":
        raise ValueError(f"saliency must be uint8 (0..255) or float in [0, 1], got {m.dtype}")
    return m.astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """Where a transformed image's pixels come from, as one axis-aligned map.

    Attributes:
        box: ``(top, left, bottom, right)`` of the raw image region the output shows, in
            fractions of the raw image's height and width, on pixel *edges* (``0`` is the
            first pixel's outer edge, ``1`` the last one's): the convention of torchvision's
            and OpenCV's resizes, so a full-image resize of any size maps ``[0, 1]`` onto itself.
        size: ``(H, W)`` of the output.
        flip: the output is mirrored left-right (its column 0 shows the box's right edge).
    """

    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    size: tuple[int, int] = (0, 0)
    flip: bool = False

    def crop(self, top: int, left: int, height: int, width: int, frame: tuple[int, int]) -> "Geometry":
        """The geometry after cropping rows ``[top, top + height)`` and columns ``[left, left + width)``
        of the current ``frame`` ``(H, W)`` (this geometry's output, possibly resized since)."""
        t, l, b, r = self.box
        fh, fw = frame
        y0, y1 = t + (b - t) * top / fh, t + (b - t) * (top + height) / fh
        if self.flip:  # current column u (0..1) shows raw x = r - u * (r - l)
            x0, x1 = r - (r - l) * (left + width) / fw, r - (r - l) * left / fw
        else:
            x0, x1 = l + (r - l) * left / fw, l + (r - l) * (left + width) / fw
        return Geometry((y0, x0, y1, x1), (height, width), self.flip)


def resample_saliency(saliency, geometry: Geometry) -> torch.Tensor:
    """Cut ``geometry.box`` out of a stored saliency map and resize it to ``geometry.size``, in one step.

    Args:
        saliency: ``[h, w]`` map covering the whole raw image at any resolution: ``uint8``
            (``0..255`` for ``0..1``, as caches store it) or float in [0, 1]; numpy or tensor.
        geometry: what the image went through (:meth:`JointTransform.apply_image` computes it).

    Returns:
        ``Tensor[H, W]``: ``uint8`` for a uint8 map, else ``float32`` clamped to [0, 1]; a new
        array, never a view of ``saliency``. Output pixel ``(y, x)`` is the map sampled
        bilinearly at raw-image fraction ``(top + (y + 0.5) / H * (bottom - top), ...)`` (the
        pixel-centre convention of torchvision and OpenCV). When the box's edges fall on whole
        map pixels (a map stored at the size the recipe resizes to before cropping) the map is
        cropped, then resized, as torchvision's ``resized_crop`` treats the image: samples repeat
        the crop's edge pixels; otherwise they repeat the map's. Where an axis has more than
        :data:`AREA_ABOVE` map pixels per output pixel, the map is area-averaged along it first.
    """
    m = _as_map(saliency)
    h, w = m.shape
    H, W = geometry.size
    t, l, b, r = geometry.box
    t, b, l, r = t * h, b * h, l * w, r * w  # the box in the map's pixels
    fy, fx = (b - t) / H, (r - l) / W  # map pixels per output pixel
    edges = [round(v) for v in (t, l, b, r)]
    if max(abs(v - e) for v, e in zip((t, l, b, r), edges)) < _EPS:  # whole map pixels: crop, resize
        out = crop = m[edges[0]:edges[2], edges[1]:edges[3]]  # a view
        if fy > AREA_ABOVE:  # exact footprint averages, one axis at a time
            out = cv2.resize(out, (out.shape[1], H), interpolation=cv2.INTER_AREA)
        if fx > AREA_ABOVE:
            out = cv2.resize(out, (W, out.shape[0]), interpolation=cv2.INTER_AREA)
        if out.shape != (H, W):
            out = cv2.resize(out, (W, H), interpolation=cv2.INTER_LINEAR)
        out = cv2.flip(out, 1) if geometry.flip else (crop.copy() if out is crop else out)
    else:
        if fy > AREA_ABOVE or fx > AREA_ABOVE:  # area-average the box and a pixel around it to the output's pitch
            y0, y1 = _window(t, b, h, fy > AREA_ABOVE)
            x0, x1 = _window(l, r, w, fx > AREA_ABOVE)
            ny = max(1, round((y1 - y0) / fy)) if fy > AREA_ABOVE else y1 - y0
            nx = max(1, round((x1 - x0) / fx)) if fx > AREA_ABOVE else x1 - x0
            sy, sx = ny / (y1 - y0), nx / (x1 - x0)
            m = cv2.resize(m[y0:y1, x0:x1], (nx, ny), interpolation=cv2.INTER_AREA)
            t, b, l, r = (t - y0) * sy, (b - y0) * sy, (l - x0) * sx, (r - x0) * sx
            fy, fx = (b - t) / H, (r - l) / W
        # output pixel centre x + 0.5 sits at l + (x + 0.5) * fx in the map: pixel index l + (x + 0.5) * fx - 0.5
        cx, cy = l + 0.5 * fx - 0.5, t + 0.5 * fy - 0.5
        ax = fx
        if geometry.flip:  # output column x shows what column W - 1 - x would
            ax, cx = -fx, cx + fx * (W - 1)
        mat = np.array([[ax, 0.0, cx], [0.0, fy, cy]])
        out = cv2.warpAffine(m, mat, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
    out = torch.from_numpy(out)
    return out if out.dtype == torch.uint8 else out.clamp_(0.0, 1.0)


class JointTransform:
    """``(image, saliency or None) -> (Tensor[3, H, W] float32 normalised, Tensor[H, W] or None)``.

    Args:
        geometric: v2 transforms from :data:`SUPPORTED_STEPS` (a ``CenterCrop`` no larger than
            the image), applied in order to the image; the map gets their composition in one
            resize (:func:`resample_saliency`, whose ``saliency`` and return this one's are).
        mean, std: per-channel normalisation of the image (in [0, 1] units, :class:`Normalize`).

    ``image`` is ``np.uint8[H, W, 3]`` RGB (or a uint8 tensor ``[H, W, 3]``/``[3, H, W]``).
    """

    def __init__(self, geometric, mean, std):
        self.steps = list(geometric or [])
        for t in self.steps:
            if type(t) not in SUPPORTED_STEPS:
                raise TypeError(f"geometric steps must be among {[c.__name__ for c in SUPPORTED_STEPS]}, "
                                f"got {type(t).__name__}")
        self.normalize = Normalize(mean, std)

    def apply_image(self, image) -> tuple[torch.Tensor, Geometry]:
        """Run the steps on ``image`` -> ``(uint8 Tensor[3, H, W], its Geometry)``: one draw of the
        random parameters (global torch RNG, in the order of ``torchvision.transforms.v2``)."""
        img = _as_image(image)
        geo = Geometry(size=tuple(img.shape[-2:]))
        for t in self.steps:
            if type(t) is v2.RandomHorizontalFlip:
                if torch.rand(1) < t.p:
                    img = TF.horizontal_flip(img)
                    geo = Geometry(geo.box, geo.size, not geo.flip)
            elif type(t) is v2.CenterCrop:
                (H, W), (ch, cw) = img.shape[-2:], t.size
                if ch > H or cw > W:
                    raise ValueError(f"CenterCrop({ch}, {cw}) needs an image at least that large, got {H}x{W}")
                top, left = int(round((H - ch) / 2.0)), int(round((W - cw) / 2.0))  # torchvision's rounding
                geo = geo.crop(top, left, ch, cw, (H, W))
                img = img[..., top:top + ch, left:left + cw]
            elif type(t) is v2.RandomResizedCrop:
                i, j, h, w = T1.RandomResizedCrop.get_params(img, t.scale, t.ratio)
                geo = geo.crop(i, j, h, w, tuple(img.shape[-2:]))
                img = TF.resized_crop(img, i, j, h, w, t.size, interpolation=t.interpolation,
                                      antialias=t.antialias)
            else:  # Resize: the box stays, the frame changes
                img = TF.resize(img, t.size, interpolation=t.interpolation, max_size=t.max_size,
                                antialias=t.antialias)
            geo = Geometry(geo.box, tuple(img.shape[-2:]), geo.flip)
        return img, geo

    def __call__(self, image, saliency=None):
        img, geo = self.apply_image(image)
        return self.normalize(img), (None if saliency is None else resample_saliency(saliency, geo))

    def __repr__(self) -> str:
        return f"JointTransform({self.steps}, {self.normalize})"


def _sized(spec, image_size: int | None) -> int | None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return (image_size or spec.recipe.crop) if spec.recipe.crop_pct else None


def train_transform(name: str, image_size: int | None = None, mean_std=None) -> JointTransform:
    """The training pipeline of data set ``name``: its spec's :class:`~saliencymixplus.datasets.Recipe`.

    ``image_size``: the crop side of an ImageNet-style recipe (``crop_pct``; default its ``crop``);
    fixed recipes ignore it. ``mean_std``: ``(mean, std)`` instead of the spec's."""
    spec = get_spec(name, "name")
    r = spec.recipe
    crop = _sized(spec, image_size) or r.crop
    geo = ([v2.Resize(r.resize, antialias=True)] if r.resize else []) \
        + ([v2.RandomResizedCrop(crop, antialias=True)] if crop else []) \
        + ([v2.RandomHorizontalFlip()] if r.flip else [])
    return JointTransform(geo, *(mean_std or spec.mean_std))


def eval_transform(name: str, image_size: int | None = None, mean_std=None) -> JointTransform:
    """The evaluation pipeline of data set ``name`` (its recipe's ``test_resize`` or ``crop_pct``);
    ``image_size`` and ``mean_std`` as in :func:`train_transform`."""
    spec = get_spec(name, "name")
    size = _sized(spec, image_size)
    if size:
        steps = [v2.Resize(round(size / spec.recipe.crop_pct), antialias=True), v2.CenterCrop(size)]
    else:
        steps = [v2.Resize(spec.recipe.test_resize, antialias=True)] if spec.recipe.test_resize else []
    return JointTransform(steps, *(mean_std or spec.mean_std))


def random_flip_batch(images: torch.Tensor, saliency: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, p: float = 0.5, *, return_flips: bool = False):
    """Flip each image ``Tensor[B, C, H, W]`` (any dtype and device) and its saliency map
    ``Tensor[B, H, W]`` (or ``None``) horizontally with probability ``p``: new tensors ``(images,
    saliency)``, and the ``bool[B]`` flips third when ``return_flips``. ``generator`` (``None``: the
    global RNG) draws the flips on its own device. The batch is checked as a mixer's (:func:`ops.check_images`)."""
    check_images(images, saliency)
    dev = generator.device if generator is not None else images.device
    flip = (torch.rand(images.shape[0], generator=generator, device=dev) < p).to(images.device)
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if saliency is not None:
        saliency = torch.where(flip[:, None, None], saliency.flip(-1), saliency)
    return (images, saliency, flip) if return_flips else (images, saliency)
