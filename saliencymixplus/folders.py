"""Image folder trees as data sets: torchvision's ``ImageFolder`` layout (``--dataset imagefolder``)
and the ILSVRC-2012 folders (``--dataset imagenet``), read in the order of
``torchvision.datasets.ImageFolder(DIR/train, allow_empty=True)``'s ``samples``, so that a cache
built here pairs with such a data set item for item. No torch. The layout's rules are in
docs/design.md, "Data sets", and README's table.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .datasets import get_spec
from .rawdata import DataFileError, FileSplit

__all__ = ["IMG_EXTENSIONS", "FOLDERS", "find_classes", "count_classes", "load_imagefolder", "load_imagenet"]

#: File extensions read as images, compared in lower case: torchvision's
#: ``torchvision.datasets.folder.IMG_EXTENSIONS``.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: The folder of each split under ``DIR``.
FOLDERS = {"train": "train", "test": "val"}

IMAGENET_HOWTO = (
    "ImageNet (ILSVRC-2012) is not downloaded by this tool: register at https://image-net.org, download "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, extract the training archive into DIR/train/<wnid>/ "
    "(one tar per class) and the validation images into DIR/val/, then sort DIR/val/ into <wnid> folders "
    "(e.g. with the well-known valprep.sh, run inside DIR/val/)")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def find_classes(folder) -> list[str]:
    """The sorted names of the sub-folders of ``folder`` (symbolic links to folders included),
    as torchvision's ``find_classes``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _scan(root: Path, classes: list[str]) -> tuple[list[str], list[int], list[str]]:
    """``(paths, labels, empty classes)`` under ``root/<class>/``, in torchvision's order."""
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for k, cls in enumerate(classes):
        folder = root / cls
        n0 = len(paths)
        if folder.is_dir():
            for where, _, names in sorted(os.walk(folder, followlinks=True)):
                for name in sorted(names):
                    if _is_image(name):
                        paths.append(os.path.join(where, name))
                        labels.append(k)
        if len(paths) == n0:
            empty.append(cls)
    return paths, labels, empty


def _split_root(data_dir, split: str, title: str, howto: str) -> Path:
    """``DIR/train`` or ``DIR/val`` (for ``"test"``); FileNotFoundError ending in ``howto`` when missing."""
    root = Path(data_dir) / FOLDERS[split]
    if not root.is_dir():
        raise FileNotFoundError(f"{title}: no folder {root} (the {split!r} split is DIR/{FOLDERS[split]}/<class>/*, "
                                f"classes are its sorted folder names). {howto}")
    return root


def _train_classes(title: str, data_dir, howto: str) -> tuple[Path, list[str]]:
    """``(DIR/train, its class folder names)``; FileNotFoundError when there is none."""
    train_root = _split_root(data_dir, "train", title, howto)
    classes = find_classes(train_root)
    if not classes:
        raise FileNotFoundError(f"{title}: {train_root} holds no class folder; expected {train_root}/<class>/<images>")
    return train_root, classes


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _load_tree(name: str, data_dir, split: str, howto: str) -> FileSplit:
    """One split of a tree, its classes those of ``DIR/train`` (as many as the spec's ``num_classes``, if set)."""
    spec = get_spec(name)
    title = spec.title
    root = _split_root(data_dir, split, title, howto)
    train_root, classes = _train_classes(title, data_dir, howto)
    if spec.num_classes is not None and len(classes) != spec.num_classes:
        raise DataFileError(f"{title}: {train_root} holds {len(classes)} class folders, expected {spec.num_classes} "
                            f"(one per class). {howto}")
    if root != train_root:
        extra = sorted(set(find_classes(root)) - set(classes))
        if extra:
            raise DataFileError(f"{title}: {root} has class folders that {train_root} has not ({_listed(extra)}); "
                                f"the classes are {train_root}'s folders, so every class of {root} needs one there")
        if extra := [e.name for e in os.scandir(root) if e.is_file() and _is_image(e.name)][:3]:
            raise DataFileError(f"{title}: {root} holds images outside class folders (e.g. {', '.join(extra)}): sort "
                                f"them into {root}/<class>/ folders. {howto}")
    paths, labels, empty = _scan(root, classes)
    if not paths:
        raise FileNotFoundError(f"{title}: no image under {root}/<class>/ (extensions: {', '.join(IMG_EXTENSIONS)}, "
                                f"any case)")
    if empty:
        warnings.warn(f"{title}/{split}: {len(empty)} class folder{'s' if len(empty) != 1 else ''} of {root} "
                      f"hold{'s' if len(empty) == 1 else ''} no image ({_listed(empty)}); kept as classes with no "
                      f"{split} images", stacklevel=3)
    return FileSplit(name, split, paths, np.asarray(labels, np.int64), root, classes=classes, empty_classes=empty,
                     data_dir=str(data_dir))


FOLDER_HOWTO = ("Arrange the images as torchvision's ImageFolder: DIR/train/<class>/* and DIR/val/<class>/* "
                f"(extensions {', '.join(IMG_EXTENSIONS)}, any case; sub-folders count as their class)")


def load_imagefolder(data_dir, split: str, *, download: bool = False) -> FileSplit:
    """A torchvision ``ImageFolder`` tree (``"train"``: ``DIR/train``, ``"test"``: ``DIR/val``)."""
    if download:
        raise FileNotFoundError("--download: an image folder tree is your own; there is nothing to download")
    return _load_tree("imagefolder", data_dir, split, FOLDER_HOWTO)


def count_classes(data_dir) -> int:
    """The number of classes of the tree at ``data_dir`` (folders in ``DIR/train``), without
    reading the images."""
    return len(_train_classes(get_spec("imagefolder").title, data_dir, FOLDER_HOWTO)[1])


def load_imagenet(data_dir, split: str, *, download: bool = False) -> FileSplit:
    """ILSVRC-2012 as torchvision and timm users keep it: ``DIR/train/<wnid>/*.JPEG`` and
    ``DIR/val/<wnid>/*.JPEG`` (``"test"`` reads ``val/``), one wnid folder per class."""
    if download:
        raise FileNotFoundError(f"--download: {IMAGENET_HOWTO}")
    return _load_tree("imagenet", data_dir, split, IMAGENET_HOWTO)

