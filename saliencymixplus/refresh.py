"""Stored saliency maps refreshed from the input gradient of the training step's own backward
pass (docs/design.md, "Saliency that learns"), and saved as an ordinary cache.

In a training loop of your own (maps in memory, on the model's device)::

    store = SaliencyRefresh(torch.from_numpy(SaliencyCache(path).read_all()).cuda(),
                            postprocess="top=0.2,power=2")
    for idx, flip, x, y in loader:                 # the batch's rows in the store; which images were flipped
        mixed = mixer.coin()                       # the mixer's prob coin, asked first
        if mixed:
            s = store.maps[idx].float() / 255
            s = torch.where(flip[:, None, None], s.flip(-1), s)  # the maps, flipped as their images
            x, targets = mixer.mix(x, y, s, mixed=True)[:2]
        else:
            x, targets = store.track(x), one_hot(y, num_classes)
        loss = soft_target_cross_entropy(model(x), targets)
        loss.backward()
        if not mixed:                              # flip (and offsets/pad): what the loader applied
            store.update(idx, x.grad, flip=flip)
        ...
    store.synchronize()                            # DDP: once per epoch, before saving
    save_refreshed("refreshed.h5", store.maps, like=SaliencyCache(path).attrs, epoch=epoch)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .cache import CacheMismatchError, CacheWriter, SaliencyCache, quantize
from .files import arrays_sha256
from .saliency import format_postprocess, input_gradient_saliency, parse_postprocess, sharpen

__all__ = ["METHOD", "IDENTITY", "SaliencyRefresh", "to_stored_frame", "maps_digest", "save_refreshed",
           "load_refreshed"]

#: The ``method`` attribute of a cache written by :func:`save_refreshed`.
METHOD = "gradient_refresh"
#: Attributes that tie a cache to its data split (copied from the cache the refresh started from).
IDENTITY = ("dataset", "split", "count", "fingerprint")


def to_stored_frame(maps: Tensor, old: Tensor, *, flip: Optional[Tensor] = None,
                    offsets: Optional[tuple[Tensor, Tensor]] = None, pad: int = 0) -> Tensor:
    """Carry maps seen by the model back into the stored frame: the inverse, as a gather, of the
    loader's padded crop and flip (docs/design.md, "Saliency that learns", Frames).

    Args:
        maps: ``Tensor[B, H, W]``, maps in the frame the model saw.
        old: ``Tensor[B, H, W]``, the same images' stored maps (same dtype as ``maps``).
        flip: ``BoolTensor[B]`` (image ``i`` was flipped), or ``None`` (none was).
        offsets: ``(dy, dx)``, each ``LongTensor[B]`` in ``[0, 2 * pad]``, or ``None`` (no crop).
        pad: the padding of the crop.

    Returns:
        ``Tensor[B, H, W]`` in the stored frame, ``maps``' dtype; pixels outside the window keep ``old``.
    """
    if maps.dim() != 3 or old.shape != maps.shape:
        raise ValueError(f"maps and old must both be Tensor[B, H, W] of one shape, got {list(maps.shape)} "
                         f"and {list(old.shape)}")
    b, h, w = maps.shape
    dev = maps.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    valid = None
    if offsets is not None:
        dy, dx = (o.to(dev).long()[:, None] for o in offsets)
        rows, cols = rows - dy + pad, cols - dx + pad
        valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    if flip is not None:
        cols = torch.where(flip.to(dev)[:, None], w - 1 - cols, cols)
    out = maps[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out if valid is None else torch.where(valid, out, old)


class SaliencyRefresh:
    """A store of saliency maps, refreshed in place with the model's input gradients.

    Args:
        maps: ``uint8[N, H, W]`` (0..255 for saliency 0..1, as the cache stores it), on the
            device where the gradients come from. Updated in place: pass the very tensor your
            loader reads (e.g. ``DeviceLoader.saliency``) and mixed steps see every update.
        postprocess: :func:`~saliencymixplus.saliency.sharpen` applied to each new map before it
            is stored (``"top=0.2,power=2"``, a dict, or ``"none"``).

    Attributes:
        touched: ``uint8[N]``, 1 for the maps updated since the last :meth:`synchronize`.
    """

    def __init__(self, maps: Tensor, *, postprocess=None):
        if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.dtype != torch.uint8:
            raise ValueError(f"maps must be a uint8 Tensor[N, H, W], got "
                             f"{getattr(maps, 'dtype', type(maps).__name__)}{list(getattr(maps, 'shape', []))}")
        self.maps = maps
        self._sharpen = parse_postprocess(postprocess)
        self.touched = torch.zeros(maps.shape[0], dtype=torch.uint8, device=maps.device)

    @staticmethod
    def track(images: Tensor) -> Tensor:
        """``images`` set to keep their gradient (``requires_grad``; ``retain_grad`` if they
        are not a leaf), so that after ``loss.backward()`` ``images.grad`` holds
        ``d loss / d images``. Parameter gradients are unchanged."""
        if images.requires_grad:
            images.retain_grad()
            return images
        return images.requires_grad_(True)

    def update(self, indices: Tensor, grad: Tensor, *, flip: Optional[Tensor] = None,
               offsets: Optional[tuple[Tensor, Tensor]] = None, pad: int = 0) -> None:
        """Write the saliency of one batch's input gradient into the store.

        Args:
            indices: ``LongTensor[B]``, distinct, the batch's rows in :attr:`maps`.
            grad: ``Tensor[B, C, H, W]``, ``d loss / d images`` (any positive scale, e.g. a
                mean loss or a GradScaler's scaled loss). A map whose gradient is not finite
                (an overflowed fp16 step) is left as it was.
            flip, offsets, pad: the augmentation the batch went through, see
                :func:`to_stored_frame`.
        """
        if grad.dim() != 4 or grad.shape[0] != indices.shape[0] or grad.shape[-2:] != self.maps.shape[-2:]:
            raise ValueError(f"grad must be Tensor[{indices.shape[0]}, C, {self.maps.shape[1]}, "
                             f"{self.maps.shape[2]}], got {list(grad.shape)}")
        self.update_maps(indices, input_gradient_saliency(grad), flip=flip, offsets=offsets, pad=pad)

    def update_maps(self, indices: Tensor, saliency: Tensor, *, flip: Optional[Tensor] = None,
                    offsets: Optional[tuple[Tensor, Tensor]] = None, pad: int = 0) -> None:
        """As :meth:`update`, from maps already reduced: ``float[B, H, W]``, each in [0, 1]."""
        if saliency.shape != (indices.shape[0], *self.maps.shape[1:]):
            raise ValueError(f"saliency must be Tensor[{indices.shape[0]}, {self.maps.shape[1]}, "
                             f"{self.maps.shape[2]}], got {list(saliency.shape)}")
        idx = indices.to(self.maps.device).long()
        ok = torch.isfinite(saliency).flatten(1).all(1).to(self.maps.device)
        if self._sharpen:
            saliency = sharpen(saliency, **self._sharpen)
        new = quantize(saliency).to(self.maps.device)
        old = self.maps.index_select(0, idx)
        new = to_stored_frame(new, old, flip=flip, offsets=offsets, pad=pad)
        self.maps.index_copy_(0, idx, torch.where(ok[:, None, None], new, old))
        self.touched.index_fill_(0, idx, 1)

    def synchronize(self, group=None) -> None:
        """Under DDP, give every rank every rank's updates since the last call (each rank
        updates only the images it trains on, so their updates are disjoint); resets
        :attr:`touched`. A no-op without an initialised process group. Collective: every
        rank must call it."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            mine = self.touched.bool()[:, None, None]
            contrib = torch.where(mine, self.maps, torch.zeros((), dtype=torch.uint8, device=self.maps.device))
            count = self.touched.clone()
            dist.all_reduce(contrib, group=group)  # at most one rank contributes each map: the sum is exact
            dist.all_reduce(count, group=group)
            self.maps.copy_(torch.where(count.bool()[:, None, None], contrib, self.maps))
        self.touched.zero_()


def maps_digest(maps) -> str:
    """A short SHA-256 of ``uint8[N, H, W]`` maps (numpy or tensor): equal maps, equal digest."""
    return arrays_sha256(np.asarray(maps.detach().cpu() if isinstance(maps, Tensor) else maps, dtype=np.uint8),
                         digits=16, with_layout=False)


def save_refreshed(path, maps, *, like: dict, epoch: int, postprocess=None, extra_attrs: Optional[dict] = None) -> Path:
    """Write ``maps`` (``uint8[N, H, W]``, tensor or numpy) as a saliency cache of method :data:`METHOD`
    at ``path``, atomically, and return the path. ``like`` holds the attributes of the cache the maps
    started from (its ``dataset``, ``split``, ``count`` and ``fingerprint`` are copied, so the file pairs
    with the same split); ``epoch`` (epochs of training the maps have seen), ``postprocess`` (the
    sharpening of refreshed maps), ``maps_sha256`` (:func:`maps_digest`) and ``extra_attrs`` are stored
    as attributes."""
    a = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if a.dtype != np.uint8 or a.ndim != 3:
        raise ValueError(f"maps must be uint8[N, H, W], got {a.dtype}{list(a.shape)}")
    missing = [k for k in IDENTITY if k not in like]
    if missing:
        raise ValueError(f"like must hold the attributes {list(IDENTITY)} of the source cache, lacks {missing}")
    if int(like["count"]) != len(a):
        raise ValueError(f"maps hold {len(a)} maps but the source cache has count {like['count']}")
    attrs = {"epoch": int(epoch), "postprocess": format_postprocess(postprocess), "maps_sha256": maps_digest(a),
             **(extra_attrs or {})}
    with CacheWriter(path, dataset=like["dataset"], split=like["split"], count=len(a),
                     fingerprint=like["fingerprint"], method=METHOD, resolution=a.shape[1:], dtype="uint8",
                     block_size=max(len(a), 1), resume=False, extra_attrs=attrs) as w:
        if len(a):
            w.write(0, a)
        return w.finalize()


def load_refreshed(path, *, like: Optional[dict] = None, epoch: Optional[int] = None,
                   digest: Optional[str] = None) -> np.ndarray:
    """The maps (``np.uint8[N, H, W]``) of a cache written by :func:`save_refreshed`, whose ``dataset``,
    ``split``, ``count`` and ``fingerprint`` must equal ``like``'s, ``epoch`` attribute ``epoch``, and
    maps (as read) hash to ``digest``, each where given; else :class:`CacheMismatchError` saying what differs."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"refreshed saliency {path} does not exist")
    cache = SaliencyCache(path, method=METHOD, in_memory=True)
    maps = cache.read_all()
    diffs = []
    if like is not None:
        diffs += [f"{k}: file has {cache.attrs[k]!r}, expected {like[k]!r}" for k in IDENTITY
                  if cache.attrs[k] != like[k]]
    if epoch is not None and cache.attrs.get("epoch") != int(epoch):
        diffs.append(f"epoch: file has {cache.attrs.get('epoch')!r}, expected {int(epoch)}")
    if maps.dtype != np.uint8:
        diffs.append(f"dtype: file has {maps.dtype}, expected uint8")
    elif digest is not None and maps_digest(maps) != digest:
        diffs.append(f"maps_sha256: the maps hash to {maps_digest(maps)}, expected {digest}")
    if diffs:
        raise CacheMismatchError(f"refreshed saliency {path} does not match: " + "; ".join(diffs))
    return maps
