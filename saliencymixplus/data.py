"""Torch data sets of the known data sets (:mod:`saliencymixplus.datasets`):
:func:`build_dataset` loads a split (:func:`~saliencymixplus.rawdata.load_split`) and pairs
it with its published transforms and, optionally, its saliency cache, so that each item is
``(image, saliency, label)`` with the two aligned. See docs/design.md, "Data sets".
"""

from __future__ import annotations

from torch.utils.data import Dataset

from .cache import SaliencyCache
from .datasets import DATASETS, SPECS, SPLITS
from .demo import DEMO_CLASSES, DEMO_SIZES, generate_demo, load_demo
from .rawdata import ArraySplit, FileSplit, RawSplit, load_split
from .transforms import eval_transform, train_transform

__all__ = [
    "DATASETS", "SPECS", "SPLITS", "RawSplit", "ArraySplit", "FileSplit", "load_split",
    "build_dataset", "SaliencyDataset", "DEMO_CLASSES", "DEMO_SIZES", "generate_demo", "load_demo",
]


class SaliencyDataset(Dataset):
    """A raw split with a joint transform and an optional saliency cache.

    Items: ``(image Tensor[3, H, W] float32, saliency Tensor[H, W], label int)`` with a cache,
    ``(image, label)`` without. The saliency keeps the cache's storage type: ``uint8`` (``0..255``
    for ``0..1``; convert it on the device, as :class:`~saliencymixplus.training.loaders.TorchLoader`
    does) for the default caches, ``float32`` in [0, 1] for ``float16`` ones. It is read as stored
    and cut and resized with its image's crop in one step (:func:`~saliencymixplus.transforms.resample_saliency`).
    """

    def __init__(self, raw: RawSplit, transform, cache: SaliencyCache | None = None):
        if cache is not None and len(cache) != len(raw):
            raise ValueError(f"cache has {len(cache)} maps but the split has {len(raw)} images")
        self.raw, self.transform, self.cache = raw, transform, cache

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int):
        label = int(self.raw.labels[i])
        if self.cache is None:
            x, _ = self.transform(self.raw.image(i), None)
            return x, label
        x, s = self.transform(self.raw.image(i), self.cache.raw(i))  # storage dtype: no float copy
        return x, s, label


def build_dataset(name: str, data_dir, split: str, *, train: bool, saliency_cache: str | None = None,
                  download: bool = False) -> Dataset:
    """A torch Dataset of one split with the published transforms.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: the data folder (``None`` for a generated set).
        split: ``"train"`` or ``"test"``.
        train: use the training (random) transform, else the test transform.
        saliency_cache: path of an HDF5 saliency cache built for this split (checked against it).
        download: fetch missing files when online.

    Returns:
        a :class:`SaliencyDataset` yielding ``(image float32[3, H, W] normalised, saliency [H, W]
        (uint8 0..255, or float32 in [0, 1] from a float16 cache), label int)`` with a cache,
        ``(image, label)`` without.
    """
    raw = load_split(name, data_dir, split, download=download)
    cache = SaliencyCache(saliency_cache, expect=raw) if saliency_cache is not None else None
    transform = train_transform(name) if train else eval_transform(name)
    return SaliencyDataset(raw, transform, cache)
