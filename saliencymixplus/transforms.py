"""Joint image + saliency transforms: the published pipelines, applied to both with the same
random parameters, so that a saliency map stays aligned with its image.

* ``cifar100`` / ``demo`` train: random horizontal flip, to float, normalise; test: to float, normalise.
* ``oxford_pet`` train: resize 256x256, random-resized-crop 224, horizontal flip, normalise;
  test: resize 224x224, normalise.

Built on ``torchvision.transforms.v2``: the image and the saliency map are passed together
(one call, so one draw of the random parameters). The saliency map travels as a one-channel
float ``tv_tensors.Image`` rather than a ``tv_tensors.Mask``, because v2 resizes masks with
nearest-neighbour interpolation; as an image it gets the same bilinear/antialiased resampling
as the picture. It is first resized to the raw image's size (caches store a fixed resolution).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .rawdata import DATASETS, MEAN_STD

__all__ = ["JointTransform", "train_transform", "test_transform", "random_flip_batch", "normalize_batch"]


def _as_image(image) -> tv_tensors.Image:
    """``np.uint8[H, W, 3]`` or ``Tensor[H, W, 3]`` (or ``Tensor[3, H, W]``) -> ``Image[3, H, W]`` uint8."""
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
    return tv_tensors.Image(t)


def _as_saliency(saliency, size) -> tv_tensors.Image:
    """``[h, w]`` float in [0, 1] -> ``Image[1, H, W]`` float32 at the image's size ``(H, W)``."""
    s = torch.as_tensor(np.asarray(saliency) if isinstance(saliency, np.ndarray) else saliency)
    if s.dim() != 2:
        raise ValueError(f"saliency must be [h, w], got {list(s.shape)}")
    s = s.to(torch.float32)[None]
    if tuple(s.shape[-2:]) != tuple(size):
        s = TF.resize(s, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    return tv_tensors.Image(s)


class JointTransform:
    """``(image, saliency or None) -> (Tensor[3, H, W] float32 normalised, Tensor[H, W] float32 in [0, 1] or None)``.

    Args:
        geometric: v2 transforms applied to the uint8 image and the saliency map together.
        mean, std: per-channel normalisation of the image (in [0, 1] units).

    ``image`` is ``np.uint8[H, W, 3]`` RGB (or a uint8 tensor ``[H, W, 3]``/``[3, H, W]``);
    ``saliency`` is ``[h, w]`` float in [0, 1] of any size (resized to ``H x W`` first).
    """

    def __init__(self, geometric, mean, std):
        geometric = list(geometric or [])
        self.geometric = v2.Compose(geometric) if geometric else None
        # A lone horizontal flip (CIFAR/demo) is done directly: same result, a quarter of v2's cost.
        self._flip_p = geometric[0].p if len(geometric) == 1 and type(geometric[0]) is v2.RandomHorizontalFlip \
            else None
        self.mean, self.std = list(mean), list(std)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)  # (x / 255 - mean) / std == x * scale - shift
        self._shift = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1) / std_t

    def __call__(self, image, saliency=None):
        img = _as_image(image)
        sal = None if saliency is None else _as_saliency(saliency, img.shape[-2:])
        if self._flip_p is not None:
            if torch.rand(1).item() < self._flip_p:  # one draw for both
                img = img.flip(-1)
                sal = None if sal is None else sal.flip(-1)
        elif self.geometric is not None:
            if sal is None:
                img = self.geometric(img)
            else:
                img, sal = self.geometric(img, sal)
        x = img.as_subclass(torch.Tensor).to(torch.float32).mul_(self._scale).sub_(self._shift)
        if sal is None:
            return x, None
        return x, sal.as_subclass(torch.Tensor)[0].clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"JointTransform({self.geometric}, mean={self.mean}, std={self.std})"


def _check(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")


def train_transform(name: str) -> JointTransform:
    """The published training pipeline of data set ``name`` (see the module docstring)."""
    _check(name)
    if name == "oxford_pet":
        geo = [v2.Resize((256, 256), antialias=True), v2.RandomResizedCrop(224, antialias=True),
               v2.RandomHorizontalFlip()]
    else:
        geo = [v2.RandomHorizontalFlip()]
    return JointTransform(geo, *MEAN_STD[name])


def test_transform(name: str) -> JointTransform:
    """The published test pipeline of data set ``name`` (Pet: resize to 224x224; others: none)."""
    _check(name)
    geo = [v2.Resize((224, 224), antialias=True)] if name == "oxford_pet" else []
    return JointTransform(geo, *MEAN_STD[name])


test_transform.__test__ = False  # not a pytest test, wherever it is imported


def random_flip_batch(images: torch.Tensor, saliency: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, p: float = 0.5):
    """Flip each image (and its saliency map) horizontally with probability ``p``, batched.

    Args:
        images: ``Tensor[B, C, H, W]`` (any dtype, any device).
        saliency: ``Tensor[B, H, W]`` on the same device, or ``None``.
        generator: draws the ``B`` coin flips (on its own device); ``None`` uses the global RNG.

    Returns:
        ``(images, saliency)`` new tensors of the same shapes (``saliency`` stays ``None``).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be Tensor[B, C, H, W], got {list(images.shape)}")
    b = images.shape[0]
    if saliency is not None and (saliency.dim() != 3 or saliency.shape[0] != b
                                 or saliency.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"saliency must be Tensor[{b}, {images.shape[2]}, {images.shape[3]}], "
                         f"got {list(saliency.shape)}")
    dev = generator.device if generator is not None else images.device
    flip = (torch.rand(b, generator=generator, device=dev) < p).to(images.device)
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if saliency is not None:
        saliency = torch.where(flip[:, None, None], saliency.flip(-1), saliency)
    return images, saliency


def normalize_batch(images: torch.Tensor, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``Tensor[B, 3, H, W]`` uint8 -> float normalised with data set ``name``'s mean and std."""
    _check(name)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be Tensor[B, 3, H, W], got {list(images.shape)}")
    mean, std = (torch.tensor(v, dtype=dtype, device=images.device).view(1, 3, 1, 1) for v in MEAN_STD[name])
    x = images.to(dtype) / 255 if images.dtype == torch.uint8 else images.to(dtype)
    return (x - mean) / std
