"""Data sets as they are on disk: :class:`RawSplit` (one split's images as stored, its labels,
its fingerprint), the CIFAR-100 and Oxford-IIIT Pet readers, image decoding with errors that
name every bad file, Pet trimaps. What each set is lives in :mod:`saliencymixplus.datasets`;
the rules (fingerprint, annotation lists) in docs/design.md, "Data sets"."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
from pathlib import Path

import cv2
import numpy as np

from .datasets import get_spec

__all__ = ["RawSplit", "ArraySplit", "FileSplit", "DataFileError", "ImageDecodeError", "load_split", "load_cifar100",
           "load_oxford_pet", "generated_split", "read_rgb", "read_pet_trimap", "trimap_object_mask", "default_workers"]


class RawSplit:
    """One split of a data set, its images as stored.

    Attributes:
        name: data set name (a key of :data:`~saliencymixplus.datasets.SPECS`).
        split: ``"train"`` or ``"test"``.
        labels: ``np.int64[N]`` class indices in ``[0, num_classes)``.
        num_classes: number of classes.
        ids: list of N strings naming each image (file names); the fingerprint hashes them.
        data_dir: the folder it was loaded from, as given to :func:`load_split` (``None`` for
            a generated set); messages use it to print commands that work as written.
    """

    in_memory = False

    def __init__(self, name: str, split: str, labels: np.ndarray, ids: list[str], *, data_dir: str | None = None):
        self.name, self.split, self.data_dir = name, split, data_dir
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.num_classes = get_spec(name, "name").num_classes
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
        """``(file, reason)`` of every image file :func:`_image_file_problem` finds; ``[]`` in memory."""
        return []

    def _content(self, i: int):
        """Bytes that identify image ``i``'s content (docs/design.md, "Data sets")."""
        raise NotImplementedError

    def item_stamps(self) -> np.ndarray:
        """``np.uint64[N]``: a hash per image of its id, label and content (:meth:`fingerprint`
        image by image), so that a resumed cache build recomputes only the changed blocks."""
        out = np.empty(len(self), np.uint64)
        for i in range(len(self)):
            h = hashlib.blake2b(f"{self.ids[i]}\0{int(self.labels[i])}\0".encode(), digest_size=8)
            h.update(self._content(i))
            out[i] = int.from_bytes(h.digest(), "little")
        return out

    def fingerprint(self) -> str:
        """16 hex digits of a SHA-256 of the split, as docs/design.md "Data sets" states; computed once."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.name}\0{self.split}\0{len(self)}\0".encode())
            h.update("\n".join(self.ids).encode())
            h.update(self.labels.astype("<i8").tobytes())
            for i in range(len(self)):
                h.update(self._content(i))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.split!r}, n={len(self)})"


class ArraySplit(RawSplit):
    """A split held in memory: ``images`` is ``np.uint8[N, H, W, 3]`` (RGB)."""

    in_memory = True

    def __init__(self, name, split, images: np.ndarray, labels, ids, masks: np.ndarray | None = None, **kw):
        super().__init__(name, split, labels, ids, **kw)
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

    def _content(self, i: int):
        return np.ascontiguousarray(self.images[i]).data


class FileSplit(RawSplit):
    """A split of image files decoded on demand.

    Attributes:
        paths: ``paths[i]`` is the file of image ``i``; ``ids`` are the paths relative to ``root``
            (the folder of the images: a folder tree's split folder, ``DIR/train`` or ``DIR/val``).
        classes: a folder tree's class folder names, sorted (``num_classes`` is their number);
            ``None`` for a set whose classes its spec gives.
        empty_classes: names of the class folders of this split that hold no image.
    """

    def __init__(self, name, split, paths: list[Path], labels, root: Path, *, classes: list[str] | None = None,
                 empty_classes: list[str] = (), **kw):
        ids = [str(Path(p).relative_to(root)) for p in paths]
        super().__init__(name, split, labels, ids, **kw)
        self.paths = [str(p) for p in paths]
        self.classes, self.empty_classes = (None if classes is None else list(classes)), list(empty_classes)
        if classes is not None:
            self.num_classes = len(self.classes)

    def image(self, i: int) -> np.ndarray:
        return read_rgb(self.paths[i])

    def find_bad_images(self) -> list[tuple[str, str]]:
        return [(p, why) for p in self.paths if (why := _image_file_problem(p)) is not None]

    def _content(self, i: int) -> bytes:
        st = os.stat(self.paths[i])
        return f"{st.st_size} {st.st_mtime_ns}\n".encode()


# ----------------------------------------------------------------------------- image files

class DataFileError(ValueError):
    """A data set's file whose content is not what its format says (a bad line in a list, an
    array of the wrong shape, text that is not UTF-8); the message names the file (and line).
    ``train.py`` and the cache tool report it in one line and exit with status 2."""


class ImageDecodeError(OSError, DataFileError):
    """Image files that cannot be decoded, or only in part (truncated). ``bad`` lists
    ``(file, reason)``; the message names every file and says what to do."""

    def __init__(self, message: str, bad=()):
        super().__init__(message)
        self.bad = list(bad)

    def __str__(self) -> str:  # OSError's would prefix an errno
        return str(self.args[0]) if self.args else ""

    @classmethod
    def for_files(cls, bad, dataset: str, split: str | None = None, *, resume: bool = False) -> "ImageDecodeError":
        """One error for all of ``bad`` (``(file, reason)`` pairs) of ``dataset`` (``split``:
        ``None`` for any): a header line, one line per file, and what to do on the last line
        (:meth:`~saliencymixplus.datasets.DatasetSpec.unreadable_advice` of ``split`` and ``resume``)."""
        bad = list(bad)
        n = len(bad)
        where = f"{dataset}/{split}" if split else dataset
        head = f"{n} image{'s' if n != 1 else ''} of {where} cannot be decoded:"
        todo = get_spec(dataset).unreadable_advice(split, resume=resume)
        return cls("\n".join([head, *(f"  {p}: {why}" for p, why in bad), todo]), bad)


_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_OTHER_IMAGE_STARTS = (b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")  # + RIFF....WEBP


def _image_file_problem(path) -> str | None:
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
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is not None or (error := _pil_rgb(path)[1]) is None:
            return None
        return f"not an image file OpenCV or PIL can decode (starts with {head[:8]!r}; {error})"
    if whole or (error := _pil_rgb(path)[1]) is None:
        return None
    return f"truncated or damaged {kind} (no end marker; {error})"


def _pil_rgb(path) -> tuple[np.ndarray | None, str | None]:
    """PIL's strict decode of the whole file: ``(np.uint8[H, W, 3] RGB, None)``, or ``(None, its
    error in one line)``."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), None
    except Exception as e:  # noqa: BLE001 - PIL raises many types; the reason is what counts
        text = str(e).strip()
        return None, (text.splitlines()[0] if text else type(e).__name__)


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file to ``np.uint8[H, W, 3]`` RGB (grey, CMYK, alpha and palette images
    included; a PNG or GIF under a ``.jpg`` name too), or raise :class:`ImageDecodeError` naming it."""
    why = _image_file_problem(path)
    if why is None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            return np.ascontiguousarray(bgr[:, :, ::-1])
        rgb, error = _pil_rgb(path)  # a few Pet files are GIF/PNG under a .jpg name
        if rgb is not None:
            return rgb
        why = f"not an image file OpenCV or PIL can decode ({error})"
    raise ImageDecodeError(f"cannot decode image {path}: {why}", [(str(path), why)])


# ----------------------------------------------------------------------------- CIFAR-100

def _find_root(name: str, data_dir, find, download: bool, torchvision_set: str, *, by_hand: str, missing: str,
               **set_kwargs) -> Path:
    """``find(data_dir)``, after torchvision's ``torchvision_set(data_dir, download=True, **set_kwargs)``
    when nothing is there and ``download``; FileNotFoundError ending in ``by_hand`` (the download
    failed) or ``missing`` (nothing found)."""
    root = find(data_dir)
    if root is None and download:
        try:
            sets = importlib.import_module("torchvision.datasets")
            getattr(sets, torchvision_set)(str(data_dir), download=True, **set_kwargs)
        except Exception as e:  # noqa: BLE001 - offline: say what to do
            raise FileNotFoundError(f"could not download {get_spec(name).title} into {data_dir} "
                                    f"({type(e).__name__}: {e}). {by_hand}") from e
        root = find(data_dir)
    if root is None:
        raise FileNotFoundError(missing)
    return root


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
    url = get_spec("cifar100").urls[0]
    untar = f"tar xzf cifar-100-python.tar.gz -C {data_dir}"
    root = _find_root("cifar100", data_dir, _cifar_root, download, "CIFAR100", train=True,
                      by_hand=f"Download {url} by hand and extract it there ({untar})",
                      missing=f"CIFAR-100 not found: expected {Path(data_dir) / 'cifar-100-python'}/"
                              f"{{train,test,meta}} (the pickled python version). Pass download=True "
                              f"(--download) when online, or fetch {url} and run: {untar}")
    with open(root / split, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(f"{root / split}: 'data' must be uint8[N, 3072], got {data.dtype}{list(data.shape)}")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    names = entry.get("filenames")
    ids = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None \
        else [f"{split}/{i}" for i in range(len(labels))]
    return ArraySplit("cifar100", split, images, labels, ids, data_dir=str(data_dir))


# ----------------------------------------------------------------------------- Oxford-IIIT Pet

def _pet_root(data_dir) -> Path | None:
    """The folder holding ``images/`` and ``annotations/``: ``data_dir`` itself or its
    ``oxford-iiit-pet/`` (torchvision's layout) or ``oxford_pet/`` subfolder."""
    d = Path(data_dir)
    for cand in (d, d / "oxford-iiit-pet", d / "oxford_pet"):
        if (cand / "annotations" / "trainval.txt").is_file() and (cand / "images").is_dir():
            return cand
    return None


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark skipped); DataFileError naming the line if not."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 text (byte {data[e.start:e.start + 1]!r}); "
                            f"save the list as UTF-8") from None


def load_oxford_pet(data_dir, split: str, *, download: bool = False) -> FileSplit:
    """Oxford-IIIT Pet: ``images/*.jpg`` and the spec's ``file_lists`` (``annotations/{trainval,test}.txt``).

    Each list line is ``<image name> <class id 1..K> <species> <breed id>`` (K: the spec's
    ``num_classes``); ``#`` lines are skipped.
    """
    spec, d = get_spec("oxford_pet"), Path(data_dir)
    get = f"{spec.fetch_command} {data_dir}"
    root = _find_root("oxford_pet", data_dir, _pet_root, download, "OxfordIIITPet", split="trainval",
                      by_hand=f"Run {get} when online",
                      missing=f"Oxford-IIIT Pet not found: expected {d}/images/*.jpg and {d}/annotations/"
                              f"trainval.txt, test.txt (or the same under {d / 'oxford-iiit-pet'}). Get them "
                              f"with: {get} (downloads {' and '.join(spec.urls)}), or pass download=True "
                              f"(--download) when online")
    ann = root / dict(spec.file_lists)[split]
    if not ann.is_file():
        raise FileNotFoundError(f"Oxford-IIIT Pet: missing {ann}; rerun {get}")
    k = spec.num_classes
    paths, labels = [], []
    for lineno, line in enumerate(_text_lines(ann), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            name, cls = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise DataFileError(f"{ann}:{lineno}: expected '<name> <class 1..{k}> ...', got {line!r}") from None
        if not 1 <= cls <= k:
            raise DataFileError(f"{ann}:{lineno}: class id must be in 1..{k}, got {cls}")
        p = root / "images" / f"{name}.jpg"
        if not p.is_file():
            raise FileNotFoundError(f"{ann}:{lineno}: image {p} is missing")
        paths.append(p)
        labels.append(cls - 1)
    if not paths:
        raise DataFileError(f"{ann} lists no images")
    return FileSplit("oxford_pet", split, paths, np.asarray(labels, np.int64), root, data_dir=str(data_dir))


#: Values of an Oxford-IIIT Pet trimap (``annotations/trimaps/<name>.png``): 1 pet, 2 background,
#: 3 the unclassified border around the pet.
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3


def read_pet_trimap(raw: "FileSplit", i: int) -> np.ndarray:
    """The trimap of Pet image ``i`` (``annotations/trimaps/<name>.png``) as ``np.uint8[H, W]``
    (values 1, 2, 3; same size as the image)."""
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
    """One split of data set ``name`` (:meth:`~saliencymixplus.datasets.DatasetSpec.load`): an
    :class:`ArraySplit` for a set held in memory (a generated set's also has ``.masks``
    ``np.uint8[N, H, W]``), else a :class:`FileSplit`."""
    return get_spec(name, "name").load(data_dir, split, download=download)


def generated_split(name: str, split: str, arrays, version: int, seed: int) -> ArraySplit:
    """A split of a generated set from its ``(images, labels, masks)`` (copied: generators keep
    theirs read-only, once per process); ids ``<name>-v<version>-s<seed>-<split>-<i>``."""
    images, labels, masks = (a.copy() for a in arrays)
    ids = [f"{name}-v{version}-s{seed}-{split}-{i}" for i in range(len(labels))]
    return ArraySplit(name, split, images, labels, ids, masks=masks)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
