"""Helpers that write tiny data sets in the real on-disk formats (used by the data tests).

* :func:`make_cifar100_folder`: ``ROOT/cifar-100-python/{train,test,meta}`` pickled as the
  published archive is (``data`` uint8[N, 3072] channel-planar, ``fine_labels``, ``filenames``).
* :func:`make_pet_folder`: ``ROOT/images/*.jpg`` of varied sizes and
  ``ROOT/annotations/{trainval,test}.txt`` (``name class species breed``), optionally under
  ``ROOT/oxford-iiit-pet/`` as torchvision lays it out.
* :func:`write_pet_trimaps`: ``annotations/trimaps/<name>.png`` for such a folder (1 pet,
  2 background, 3 border), as the published annotations hold them.
* :func:`damage_map`: a saliency cache with one map's bytes changed in place.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

PET_BREEDS = ["Abyssinian", "american_bulldog", "Bengal", "beagle", "Birman"]  # class ids 1..5


def smooth_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``uint8[n, h, w, 3]`` images with structure (a blob on a gradient), so saliency is not flat."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        r = rng.uniform(0.1, 0.3) * min(h, w)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * xx[..., None] / w)
        col = rng.uniform(0, 255, 3)
        img = base * (1 - blob[..., None]) + col * blob[..., None] + rng.normal(0, 6, (h, w, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_cifar100_folder(root, n_train: int = 48, n_test: int = 24, seed: int = 0, images=None) -> dict:
    """Write ``root/cifar-100-python``; returns ``{"root", "train": (images, labels), "test": ...}``
    with images ``uint8[N, 32, 32, 3]`` RGB and labels ``int64[N]``. ``images`` overrides the
    training images (e.g. a large generated array for timing)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    result = {"root": Path(root)}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = images if (split == "train" and images is not None) else smooth_images(rng, n, 32, 32)
        n = len(imgs)
        labels = rng.integers(0, 100, n).astype(np.int64)
        entry = {
            "filenames": [f"img_{split}_{i:05d}.png" for i in range(n)],
            "batch_label": f"{split} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": imgs.transpose(0, 3, 1, 2).reshape(n, -1),
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        result[split] = (imgs, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f, protocol=2)
    return result


def make_pet_folder(root, n_train: int = 10, n_test: int = 6, seed: int = 0, torchvision_layout: bool = False) -> dict:
    """Write a tiny Oxford-IIIT Pet folder (JPEGs of varied sizes + annotation lists).

    Returns ``{"root": the folder holding images/ and annotations/, "data_dir": what to pass
    as data_dir, "train": (names, labels), "test": (names, labels), "images": {name: RGB array}}``
    (the arrays are the JPEGs as decoded back from disk).
    """
    import cv2

    rng = np.random.default_rng(seed)
    data_dir = Path(root)
    base = data_dir / "oxford-iiit-pet" if torchvision_layout else data_dir
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    result = {"root": base, "data_dir": data_dir, "images": {}}
    k = 0
    for split, n, fname in (("train", n_train, "trainval.txt"), ("test", n_test, "test.txt")):
        names, labels, lines = [], [], []
        for _ in range(n):
            cls = int(rng.integers(0, len(PET_BREEDS)))
            k += 1
            name = f"{PET_BREEDS[cls]}_{k}"
            h, w = int(rng.integers(40, 72)), int(rng.integers(40, 72))
            img = smooth_images(rng, 1, h, w)[0]
            path = base / "images" / f"{name}.jpg"
            cv2.imwrite(str(path), img[:, :, ::-1])
            result["images"][name] = cv2.imread(str(path))[:, :, ::-1].copy()
            species = 1 if PET_BREEDS[cls][0].isupper() else 2
            lines.append(f"{name} {cls + 1} {species} {cls + 1}")
            names.append(name)
            labels.append(cls)
        (base / "annotations" / fname).write_text("\n".join(lines) + "\n")
        result[split] = (names, np.asarray(labels, np.int64))
    return result


def write_pet_trimaps(pet: dict, seed: int = 0) -> dict:
    """Write a trimap PNG for every image of a :func:`make_pet_folder` folder: an ellipse of
    pet (1) at a random place, a 2-pixel border (3) around it, background (2) elsewhere.
    Returns ``{name: np.uint8[H, W] trimap}``."""
    import cv2

    rng = np.random.default_rng(seed)
    folder = Path(pet["root"]) / "annotations" / "trimaps"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, img in pet["images"].items():
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        t = np.full((h, w), 2, np.uint8)
        t[d <= 1 + 2 / min(ry, rx)] = 3
        t[d <= 1] = 1
        cv2.imwrite(str(folder / f"{name}.png"), t)
        out[name] = t
    return out


def tiny_net(num_classes: int = 5):
    """A small seeded classifier ``Tensor[N, 3, H, W] -> Tensor[N, num_classes]`` with BatchNorm."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))


def install_fake_models(monkeypatch) -> list:
    """Stand in for ``saliencymixplus.models.build_model(name, num_classes, image_size)`` with
    :func:`tiny_net`; returns the list of calls made."""
    import sys
    import types

    import saliencymixplus

    mod = types.ModuleType("saliencymixplus.models")
    calls = []

    def build_model(name, num_classes, image_size):
        calls.append((name, num_classes, image_size))
        return tiny_net(num_classes)

    mod.build_model = build_model
    monkeypatch.setitem(sys.modules, "saliencymixplus.models", mod)
    monkeypatch.setattr(saliencymixplus, "models", mod, raising=False)
    return calls


class Batches:
    """The loader interface ``train_one_epoch`` needs (``set_epoch``, ``len``, iteration) over a
    fixed list of ``(images, saliency or None, labels)`` batches."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, seed, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def damage_map(path, i: int, keep_mtime: bool = False) -> None:
    """Change 8 bytes of map ``i``'s chunk of the cache ``path`` in place (its checksum then
    fails); ``keep_mtime`` restores the file's modification time."""
    import h5py

    st = os.stat(path)
    with h5py.File(path, "r") as f:
        info = f["saliency"].id.get_chunk_info_by_coord((i, 0, 0))
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 2)
        old = f.read(8)
        f.seek(info.byte_offset + 2)
        f.write(bytes((b + 1) % 256 for b in old))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
