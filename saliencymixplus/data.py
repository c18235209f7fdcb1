"""Torch data sets: :func:`build_dataset` (a known set's split with its recipe and, optionally,
its saliency cache) and :class:`WithSaliency` (any map-style data set in a cache's order, with
that cache, for your own loops). See docs/design.md, "Data sets".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .cache import SaliencyCache
from .datasets import SPECS
from .rawdata import FileSplit, RawSplit, load_split
from .transforms import eval_transform, train_transform

__all__ = ["load_split", "build_dataset", "SaliencyDataset", "WithSaliency"]


class SaliencyDataset(Dataset):
    """A split with a joint transform and an optional saliency cache.

    Items: ``(image Tensor[3, H, W] float32, saliency Tensor[H, W], label int)`` with a cache,
    ``(image, label)`` without. The saliency keeps the cache's storage type: ``uint8`` (``0..255``
    for ``0..1``; convert it on the device) for the default caches, ``float32`` in [0, 1] for
    ``float16`` ones (:func:`~saliencymixplus.transforms.resample_saliency`).
    """

    def __init__(self, raw: RawSplit, transform, cache: SaliencyCache | None = None):
        if cache is not None and len(cache) != len(raw):
            raise ValueError(f"cache {cache.path} has {len(cache)} maps but the data set has "
                             f"{len(raw)} items: pair a data set with the cache built from it")
        self.dataset, self.transform, self.cache = raw, transform, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, i: int):
        return self.dataset.image(i), int(self.dataset.labels[i])

    def __getitem__(self, i: int):
        image, label = self._item(i)
        saliency = None if self.cache is None else self.cache.stored(i)  # storage dtype: no float copy
        if self.transform is not None:
            image, saliency = self.transform(image, saliency)
        return (image, label) if self.cache is None else (image, saliency, label)


def build_dataset(name: str, data_dir, split: str, *, train: bool, saliency_cache: str | None = None,
                  download: bool = False, image_size: int | None = None, mean_std=None) -> Dataset:
    """A :class:`SaliencyDataset` of one split (:func:`load_split`) with the training (``train``) or
    the evaluation transform of its recipe (``image_size``, ``mean_std``:
    :func:`~saliencymixplus.transforms.train_transform`) and the saliency cache at ``saliency_cache``,
    checked against the split."""
    raw = load_split(name, data_dir, split, download=download)
    cache = SaliencyCache(saliency_cache, expect=raw) if saliency_cache is not None else None
    make = train_transform if train else eval_transform
    return SaliencyDataset(raw, make(name, image_size, mean_std), cache)


def _folder_split_of(dataset, attrs: dict):
    """A torchvision ``DatasetFolder`` as the :class:`FileSplit` the cache (``attrs``) names, so
    that fingerprints compare; ``None`` if either is not of a folder set."""
    from .folders import FOLDERS

    samples, root, classes = (getattr(dataset, k, None) for k in ("samples", "root", "classes"))
    spec = SPECS.get(attrs.get("dataset"))
    if samples is None or root is None or classes is None or spec is None or not spec.folder_tree:
        return None
    paths = [p for p, _ in samples]
    labels = np.asarray([y for _, y in samples], np.int64)
    in_tree = Path(root).name == FOLDERS.get(attrs["split"])  # DIR/train or DIR/val: messages name DIR
    return FileSplit(spec.name, attrs["split"], paths, labels, root, classes=classes,
                     data_dir=str(Path(root).parent) if in_tree else None)


class WithSaliency(SaliencyDataset):
    """Any map-style data set paired, item by item, with the saliency cache of the same images
    in the same order: items are ``(image, saliency, label)``.

    Args:
        dataset: a :class:`RawSplit` (:func:`load_split`), a torchvision ``ImageFolder``
            (``allow_empty=True`` orders its samples as the cache tool does; give it no
            transform: pass the transform here), or any data set whose ``dataset[i]`` is
            ``(image, label)`` in the order the cache was built.
        cache: the ``.h5`` path or a :class:`~saliencymixplus.cache.SaliencyCache`.
        transform: ``transform(image, saliency) -> (image, saliency)`` applying the same geometry
            to both: :func:`~saliencymixplus.transforms.train_transform` /
            :func:`~saliencymixplus.transforms.eval_transform`, a
            :class:`~saliencymixplus.transforms.JointTransform`, or a torchvision v2 pipeline
            called with a ``Saliency`` tv_tensor; ``None``: the image as ``dataset`` gives it
            (a PIL image as ``np.uint8[H, W, 3]`` RGB) and the map as stored (``uint8[h, w]``,
            ``0..255`` for ``0..1``, covering the whole image at the cache's resolution).

    Checked when made: the cache has one map per item (else ValueError); and, where the data
    set can say what it holds (a :class:`RawSplit`'s fingerprint; a torchvision ``DatasetFolder``
    of a folder set's cache: the files' names, classes, sizes and modification times), that it
    was built from these images (else CacheMismatchError, saying what differs).
    """

    def __init__(self, dataset, cache, transform=None):
        if not isinstance(cache, SaliencyCache):
            cache = SaliencyCache(cache, in_memory=False)
        super().__init__(dataset, transform, cache)
        raw = dataset if isinstance(dataset, RawSplit) else _folder_split_of(dataset, cache.attrs)
        identity = (cache.attrs.get("dataset"), cache.attrs.get("split"), cache.attrs.get("fingerprint"))
        if raw is not None and identity != (raw.name, raw.split, raw.fingerprint()):
            SaliencyCache(cache.path, expect=raw, in_memory=False)  # raises CacheMismatchError, saying what differs

    def _item(self, i: int):
        if isinstance(self.dataset, RawSplit):
            return super()._item(i)
        image, label = self.dataset[i]
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            image = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return image, label
