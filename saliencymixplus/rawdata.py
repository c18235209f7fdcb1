"""Raw data sets as they are on disk: CIFAR-100, Oxford-IIIT Pet and the two generated demo sets.

A :class:`RawSplit` gives the raw uint8 RGB images (``np.uint8[H, W, 3]``), the integer
labels (``np.int64[N]``) and a fingerprint that identifies the ordered file list and the
labels (the saliency cache stores it and refuses a cache built from other data).

This module needs only numpy and OpenCV (no torch), so that the saliency precompute workers
start fast; :mod:`saliencymixplus.data` re-exports it and adds the torch datasets.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from .demo import DEMO_SEED, DEMO_SIZES, DEMO_VERSION, demo_split_arrays
from .demo_hard import HARD_SEED, HARD_SIZES, HARD_VERSION, demo_hard_split_arrays

__all__ = [
    "DATASETS", "NUM_CLASSES", "MEAN_STD", "SPLITS", "RawSplit", "ArraySplit", "FileSplit",
    "load_split", "load_cifar100", "load_oxford_pet", "find_oxford_pet_root", "read_rgb",
    "ImageDecodeError", "image_file_problem", "DemoSplit", "load_demo", "load_demo_hard", "GENERATED",
    "read_pet_trimap", "trimap_object_mask",
]

DATASETS = ("cifar100", "oxford_pet", "demo", "demo_hard")
#: Data sets generated in memory from a seed: no --data-dir, nothing to download, object masks known.
GENERATED = ("demo", "demo_hard")
SPLITS = ("train", "test")
NUM_CLASSES: dict[str, int] = {"cifar100": 100, "oxford_pet": 37, "demo": 10, "demo_hard": 20}
# Per-channel (mean, std) of the training images in [0, 1], RGB.
MEAN_STD: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "oxford_pet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet, as published
    "demo": ((0.4999, 0.4986, 0.5016), (0.2270, 0.2272, 0.2279)),
    "demo_hard": ((0.5004, 0.4993, 0.5004), (0.2158, 0.2159, 0.2164)),
}

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
PET_URLS = ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz")


def _check_choice(argname: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{argname} must be one of {list(choices)}, got {value!r}")


class RawSplit:
    """One split of a data set, raw.

    Attributes:
        name: data set name (one of :data:`DATASETS`).
        split: ``"train"`` or ``"test"``.
        labels: ``np.int64[N]`` class indices in ``[0, num_classes)``.
        num_classes: number of classes.
        ids: list of N strings naming each image (file names); the fingerprint hashes them.
        data_dir: the folder it was loaded from, as given to :func:`load_split` (``None`` for
            the generated demo set); messages use it to print commands that work as written.
    """

    in_memory = False
    data_dir: str | None = None

    def __init__(self, name: str, split: str, labels: np.ndarray, ids: list[str]):
        self.name = name
        self.split = split
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.num_classes = NUM_CLASSES[name]
        self.ids = list(ids)
        if len(self.ids) != len(self.labels):
            raise ValueError(f"{name}/{split}: {len(self.ids)} ids but {len(self.labels)} labels")
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``np.uint8[H, W, 3]``, RGB, as stored on disk."""
        raise NotImplementedError

    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` when all images share one size (in-memory sets), else ``None``."""
        return None

    def find_bad_images(self) -> list[tuple[str, str]]:
        """``(file, reason)`` of every image file that is unreadable, empty or truncated, found
        by a quick look at each file's first and last bytes (see :func:`image_file_problem`);
        ``[]`` for in-memory sets."""
        return []

    def _fingerprint_extra(self, h) -> None:
        """Subclasses may hash more (e.g. generated pixels)."""

    def fingerprint(self) -> str:
        """A hex SHA-256 of the data set name, split, ordered ids and labels (16 hex digits)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.name}\0{self.split}\0{len(self)}\0".encode())
            h.update("\n".join(self.ids).encode())
            h.update(self.labels.astype("<i8").tobytes())
            self._fingerprint_extra(h)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.split!r}, n={len(self)})"


class ArraySplit(RawSplit):
    """A split held in memory: ``images`` is ``np.uint8[N, H, W, 3]`` (RGB)."""

    in_memory = True

    def __init__(self, name, split, images: np.ndarray, labels, ids, masks: np.ndarray | None = None):
        super().__init__(name, split, labels, ids)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be np.uint8[N, H, W, 3], got {images.dtype}{list(images.shape)}")
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.images = images
        if masks is not None:
            self.masks = masks

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def image_size(self):
        return tuple(self.images.shape[1:3])


class FileSplit(RawSplit):
    """A split of image files decoded on demand; ``paths[i]`` is the file of image ``i``."""

    def __init__(self, name, split, paths: list[Path], labels, root: Path):
        ids = [str(Path(p).relative_to(root)) for p in paths]
        super().__init__(name, split, labels, ids)
        self.paths = [str(p) for p in paths]

    def image(self, i: int) -> np.ndarray:
        return read_rgb(self.paths[i])

    def find_bad_images(self) -> list[tuple[str, str]]:
        bad = []
        for p in self.paths:
            why = image_file_problem(p)
            if why is not None:
                bad.append((p, why))
        return bad


# ----------------------------------------------------------------------------- image files

class ImageDecodeError(OSError, ValueError):
    """Image files that cannot be decoded, or only in part (truncated). ``bad`` lists
    ``(file, reason)``; the message names every file and says what to do."""

    def __init__(self, message: str, bad=()):
        super().__init__(message)
        self.bad = list(bad)

    def __str__(self) -> str:  # OSError's would prefix an errno
        return str(self.args[0]) if self.args else ""

    @classmethod
    def for_files(cls, bad, where: str = "", todo: str = "") -> "ImageDecodeError":
        """One error for all of ``bad`` (``(file, reason)`` pairs): a header line, one line per
        file, and ``todo`` (what to do) on the last line."""
        bad = list(bad)
        n = len(bad)
        head = f"{n} image{'s' if n != 1 else ''}{' of ' + where if where else ''} cannot be decoded:"
        todo = todo or ("Replace each with an intact copy, or remove it from the data set's file list, "
                        "then run the same command again.")
        return cls("\n".join([head, *(f"  {p}: {why}" for p, why in bad), todo]), bad)


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_OTHER_IMAGE_STARTS = (b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")  # + RIFF....WEBP


def image_file_problem(path) -> str | None:
    """Why ``path`` cannot be decoded whole, or ``None`` when it looks intact.

    Cheap for the usual files: reads the first 12 and last 8 bytes. A JPEG must end with its
    end-of-image marker and a PNG with its ``IEND`` chunk; when one does not (truncated, or
    bytes appended after the image), PIL decodes it strictly (``LOAD_TRUNCATED_IMAGES`` off) to
    decide: OpenCV would decode a truncated JPEG into grey rows, with a warning that names no
    file. GIF, BMP, TIFF and WebP files pass (judged when decoded, :func:`read_rgb`); a file
    with no image signature at all is decoded here, by OpenCV and then PIL, and is a problem
    when neither can.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(max(0, size - 8))
            tail = f.read(8)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "empty file"
    if head.startswith(_JPEG_START):
        kind, whole = "JPEG", tail.endswith(_JPEG_END)
    elif head.startswith(_PNG_START):
        kind, whole = "PNG", tail.endswith(_PNG_END)
    elif head.startswith(_OTHER_IMAGE_STARTS) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    else:
        return _undecodable(path, head)
    if whole:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types; the reason is what counts
        return f"truncated or damaged {kind} (no end marker; {_one_line(e)})"
    return None


def _undecodable(path, head: bytes) -> str | None:
    """``None`` when OpenCV or PIL decodes the file, else why not."""
    import cv2

    if cv2.imread(str(path), cv2.IMREAD_COLOR) is not None:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
        return None
    except Exception as e:  # noqa: BLE001
        return f"not an image file OpenCV or PIL can decode (starts with {head[:8]!r}; {_one_line(e)})"


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to ``np.uint8[H, W, 3]`` RGB (grey, CMYK, alpha and palette images
    included; a PNG or GIF under a ``.jpg`` name too).

    Raises:
        ImageDecodeError: the file cannot be read or decoded, or is truncated (the message names it).
    """
    import cv2

    why = image_file_problem(path)
    if why is not None:
        raise ImageDecodeError(f"cannot decode image {path}: {why}", [(str(path), why)])
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:  # a few Pet files are GIF/PNG under a .jpg name: let PIL try
        try:
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        except Exception as e:  # noqa: BLE001 - say which file
            why = f"not an image file OpenCV or PIL can decode ({_one_line(e)})"
            raise ImageDecodeError(f"cannot decode image {path}: {why}", [(str(path), why)]) from e
    return np.ascontiguousarray(bgr[:, :, ::-1])


# ----------------------------------------------------------------------------- CIFAR-100

def _cifar_root(data_dir) -> Path | None:
    d = Path(data_dir)
    for cand in (d / "cifar-100-python", d):
        if (cand / "train").is_file() and (cand / "test").is_file():
            return cand
    return None


def load_cifar100(data_dir, split: str, *, download: bool = False) -> ArraySplit:
    """CIFAR-100 from the standard ``cifar-100-python`` folder (pickled ``train``/``test``/``meta``).

    ``data_dir`` may be the folder itself or its parent. With ``download=True`` and no files
    there, torchvision downloads and checks the archive into ``data_dir``.
    """
    _check_choice("split", split, SPLITS)
    if data_dir is None:
        raise FileNotFoundError("cifar100 needs --data-dir: the folder that holds (or will hold) cifar-100-python/")
    root = _cifar_root(data_dir)
    if root is None and download:
        try:
            from torchvision.datasets import CIFAR100

            CIFAR100(str(data_dir), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - offline: say what to do
            raise FileNotFoundError(
                f"could not download CIFAR-100 into {data_dir} ({type(e).__name__}: {e}). "
                f"Download {CIFAR100_URL} by hand and extract it there "
                f"(tar xzf cifar-100-python.tar.gz -C {data_dir})") from e
        root = _cifar_root(data_dir)
    if root is None:
        raise FileNotFoundError(
            f"CIFAR-100 not found: expected {Path(data_dir) / 'cifar-100-python'}/{{train,test,meta}} "
            f"(the pickled python version). Pass download=True (--download) when online, or fetch "
            f"{CIFAR100_URL} and run: tar xzf cifar-100-python.tar.gz -C {data_dir}")
    with open(root / split, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{root / split}: 'data' must be uint8[N, 3072], got {data.dtype}{list(data.shape)}")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    names = entry.get("filenames")
    ids = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None \
        else [f"{split}/{i}" for i in range(len(labels))]
    out = ArraySplit("cifar100", split, images, labels, ids)
    out.data_dir = str(data_dir)
    return out


# ----------------------------------------------------------------------------- Oxford-IIIT Pet

def find_oxford_pet_root(data_dir) -> Path | None:
    """The folder holding ``images/`` and ``annotations/``: ``data_dir`` itself or its
    ``oxford-iiit-pet/`` (torchvision's layout) or ``oxford_pet/`` subfolder."""
    d = Path(data_dir)
    for cand in (d, d / "oxford-iiit-pet", d / "oxford_pet"):
        if (cand / "annotations" / "trainval.txt").is_file() and (cand / "images").is_dir():
            return cand
    return None


def load_oxford_pet(data_dir, split: str, *, download: bool = False) -> FileSplit:
    """Oxford-IIIT Pet: ``images/*.jpg`` and ``annotations/{trainval,test}.txt`` (37 breeds).

    ``split="train"`` reads ``trainval.txt``. Each annotation line is
    ``<image name> <class id 1..37> <species> <breed id>``; ``#`` lines are skipped.
    """
    _check_choice("split", split, SPLITS)
    if data_dir is None:
        raise FileNotFoundError("oxford_pet needs --data-dir: the folder with images/ and annotations/")
    root = find_oxford_pet_root(data_dir)
    if root is None and download:
        try:
            from torchvision.datasets import OxfordIIITPet

            OxfordIIITPet(str(data_dir), split="trainval", download=True)
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f"could not download Oxford-IIIT Pet into {data_dir} ({type(e).__name__}: {e}). "
                f"Run tools/get_oxford_pet.sh {data_dir} when online") from e
        root = find_oxford_pet_root(data_dir)
    if root is None:
        raise FileNotFoundError(
            f"Oxford-IIIT Pet not found: expected {Path(data_dir)}/images/*.jpg and "
            f"{Path(data_dir)}/annotations/trainval.txt, test.txt (or the same under "
            f"{Path(data_dir) / 'oxford-iiit-pet'}). Get them with: tools/get_oxford_pet.sh {data_dir} "
            f"(downloads {PET_URLS[0]} and {PET_URLS[1]}), or pass download=True (--download) when online")
    ann = root / "annotations" / ("trainval.txt" if split == "train" else "test.txt")
    if not ann.is_file():
        raise FileNotFoundError(f"Oxford-IIIT Pet: missing {ann}; rerun tools/get_oxford_pet.sh {data_dir}")
    paths, labels = [], []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            name, cls = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise ValueError(f"{ann}:{lineno}: expected '<name> <class 1..37> ...', got {line!r}") from None
        if not 1 <= cls <= 37:
            raise ValueError(f"{ann}:{lineno}: class id must be in 1..37, got {cls}")
        p = root / "images" / f"{name}.jpg"
        if not p.is_file():
            raise FileNotFoundError(f"{ann}:{lineno}: image {p} is missing")
        paths.append(p)
        labels.append(cls - 1)
    if not paths:
        raise ValueError(f"{ann} lists no images")
    out = FileSplit("oxford_pet", split, paths, np.asarray(labels, np.int64), root)
    out.data_dir = str(data_dir)
    return out


#: Values of an Oxford-IIIT Pet trimap (``annotations/trimaps/<name>.png``): 1 pet, 2 background,
#: 3 the unclassified border around the pet.
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3


def read_pet_trimap(raw: "FileSplit", i: int) -> np.ndarray:
    """The trimap of Pet image ``i`` as ``np.uint8[H, W]`` (values 1, 2, 3; same size as the image).

    Raises:
        FileNotFoundError: ``annotations/trimaps/<name>.png`` is missing (the message names it).
        ValueError: it is not a single-channel image of the image's size with values in {1, 2, 3}.
    """
    import cv2

    image = Path(raw.paths[i])
    path = image.parent.parent / "annotations" / "trimaps" / f"{image.stem}.png"
    if not path.is_file():
        raise FileNotFoundError(f"trimap {path} of image {image} is missing (annotations.tar.gz holds the trimaps)")
    t = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if t is None or t.ndim != 2:
        raise ValueError(f"trimap {path} must be a single-channel PNG, got "
                         f"{'nothing decodable' if t is None else f'shape {list(t.shape)}'}")
    bad = np.setdiff1d(np.unique(t), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER])
    if bad.size:
        raise ValueError(f"trimap {path} must hold only 1 (pet), 2 (background), 3 (border), got {bad.tolist()}")
    return t.astype(np.uint8)


def trimap_object_mask(trimap: np.ndarray) -> np.ndarray:
    """A trimap as an object mask ``float32[H, W]``: 1 on the pet, 0.5 on the border, 0 on the background."""
    t = np.asarray(trimap)
    return np.where(t == TRIMAP_PET, 1.0, np.where(t == TRIMAP_BORDER, 0.5, 0.0)).astype(np.float32)


# ----------------------------------------------------------------------------- any

def load_split(name: str, data_dir, split: str, *, download: bool = False) -> RawSplit:
    """Load one split of a data set.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: folder of the data (may be ``None`` for ``demo``, which is generated).
        split: ``"train"`` or ``"test"``.
        download: fetch missing files (cifar100, oxford_pet) when online.

    Returns:
        a :class:`RawSplit`; ``cifar100`` and ``demo`` are :class:`ArraySplit` (``.images``
        ``np.uint8[N, 32, 32, 3]``), ``demo`` also has ``.masks`` ``np.uint8[N, 32, 32]``.

    Raises:
        FileNotFoundError: the files are missing (the message says where and how to get them).
    """
    _check_choice("name", name, DATASETS)
    _check_choice("split", split, SPLITS)
    if name == "cifar100":
        return load_cifar100(data_dir, split, download=download)
    if name == "oxford_pet":
        return load_oxford_pet(data_dir, split, download=download)
    if name == "demo_hard":
        return load_demo_hard(split, data_dir=data_dir)
    return load_demo(split, data_dir=data_dir)


class DemoSplit(ArraySplit):
    """A generated split (``demo``, ``demo_hard``): ``images`` ``uint8[N, S, S, 3]``, ``labels``,
    ``masks`` ``uint8[N, S, S]`` (1 = object)."""

    def _fingerprint_extra(self, h) -> None:
        h.update(self.images.tobytes())  # generated data: hash the pixels too (~15 MB, ~10 ms)


def _generated(name: str, split: str, arrays, version: int, seed: int) -> DemoSplit:
    images, labels, masks = (a.copy() for a in arrays)  # generated once per process, copied per load
    ids = [f"{name}-v{version}-s{seed}-{split}-{i}" for i in range(len(labels))]
    return DemoSplit(name, split, images, labels, ids, masks=masks)


def load_demo(split: str, data_dir=None, *, seed: int = DEMO_SEED) -> DemoSplit:
    """The demo split ``"train"`` (5,000 images) or ``"test"`` (1,000), generated in memory.

    ``data_dir`` is accepted for a uniform interface and not used (generation takes < 1 s).
    The train and test splits are drawn from independent streams of ``seed``; each split is
    generated once per process and each call returns fresh copies.
    """
    if split not in DEMO_SIZES:
        raise ValueError(f"split must be one of {list(DEMO_SIZES)}, got {split!r}")
    return _generated("demo", split, demo_split_arrays(split, seed), DEMO_VERSION, seed)


def load_demo_hard(split: str, data_dir=None, *, seed: int = HARD_SEED) -> DemoSplit:
    """The hard demo split (:mod:`saliencymixplus.demo_hard`): ``"train"`` (6,000 images) or
    ``"test"`` (2,000), 48x48, 20 classes, generated from ``seed`` (independent streams per
    split). ``data_dir`` is not used. Each call returns fresh copies.
    """
    if split not in HARD_SIZES:
        raise ValueError(f"split must be one of {list(HARD_SIZES)}, got {split!r}")
    return _generated("demo_hard", split, demo_hard_split_arrays(split, seed), HARD_VERSION, seed)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
