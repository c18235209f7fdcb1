"""The data sets the library knows, one :class:`DatasetSpec` each, in one table (:data:`SPECS`):
every fact about a set that the rest of the package needs (docs/design.md, "Data sets", says
why a spec names its loader rather than importing it)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["SPLITS", "Recipe", "TrainDefaults", "DatasetSpec", "SPECS", "DATASETS", "GENERATED", "get_spec"]

SPLITS = ("train", "test")

RGB = tuple[float, float, float]
IMAGENET_MEAN_STD: tuple[RGB, RGB] = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _function(ref: str):
    """The function a ``"module:function"`` names, its module imported now."""
    module, _, function = ref.partition(":")
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Recipe:
    """The published augmentation of one data set.

    Attributes:
        resize: ``(h, w)`` every training image is resized to first, or ``None``.
        crop: side of the random-resized crop taken next (torchvision's default scale and
            ratio), or ``None``.
        flip: a random horizontal flip (p = 0.5) last.
        test_resize: ``(h, w)`` test images are resized to, or ``None``.
        crop_pct: the ImageNet-style recipe when set: ``crop`` is only the default side and
            ``train.py``'s ``--image-size`` sets it; test images are resized (shorter side) to
            ``round(size / crop_pct)`` and centre-cropped to ``size``.
    """

    resize: tuple[int, int] | None = None
    crop: int | None = None
    flip: bool = True
    test_resize: tuple[int, int] | None = None
    crop_pct: float | None = None

    @property
    def batchable(self) -> bool:
        """Whether the training augmentation is a flip at most, so that a device loader can
        apply it to whole batches of equally sized images."""
        return self.resize is None and self.crop is None


@dataclass(frozen=True)
class TrainDefaults:
    """What ``train.py`` uses for a data set unless a flag says otherwise.

    Attributes:
        model, epochs, batch_size, learning_rate, milestones: the optimisation recipe
            (SGD, LR x0.1 at each milestone epoch).
        image_size: side of the images the model sees.
        loader: ``"device"`` (the whole uint8 set on the model's device, batched flips; sets
            held in memory with a :attr:`Recipe.batchable` recipe) or ``"torch"`` (DataLoader).
        data_dir: the default ``--data-dir`` (where the published code kept the data), or
            ``None`` for a set that needs none.
    """

    model: str
    epochs: int
    batch_size: int
    learning_rate: float
    milestones: tuple[int, ...]
    image_size: int
    loader: str
    data_dir: str | None


@dataclass(frozen=True)
class DatasetSpec:
    """One data set.

    Attributes:
        name: the name the tools and ``train.py`` take (``--dataset``).
        title: the name people write, for messages.
        num_classes: labels are ``0 .. num_classes - 1``; ``None``: from the data (each tree
            has its own: :meth:`count_classes`, and the loaded split's ``num_classes``).
        mean_std: per-channel ``(mean, std)`` of the training images in [0, 1], RGB.
        recipe: the published augmentation.
        train: ``train.py``'s defaults.
        loader: ``"module:function"`` of ``function(data_dir, split, *, download) -> RawSplit``.
        generated: drawn in memory from a seed: no ``--data-dir``, nothing to download, object
            masks known (``RawSplit.masks``).
        stored_resolution: ``(h, w)`` of the cache's maps when ``--resolution`` is not given;
            ``None``: the images' own size (every image has the same).
        data_dir_holds: what ``--data-dir`` must hold, for messages.
        urls: where the data comes from (archives to download), for messages.
        fetch_command: the script in this repository that downloads it (``DATA_DIR`` as its
            argument), or ``""``.
        file_lists: ``{split: file}`` of the lists that name each split's images, relative to
            the data folder; empty when the set has no such lists.
        class_counter: ``"module:function"`` of ``function(data_dir) -> int``, the number of
            classes of the data at ``data_dir`` (sets whose ``num_classes`` is ``None``).
        folder_tree: the images are files in class folders (no list names them).
    """

    name: str
    title: str
    num_classes: int | None
    mean_std: tuple[RGB, RGB]
    recipe: Recipe
    train: TrainDefaults
    loader: str
    generated: bool = False
    stored_resolution: tuple[int, int] | None = None
    data_dir_holds: str = ""
    urls: tuple[str, ...] = ()
    fetch_command: str = ""
    file_lists: tuple[tuple[str, str], ...] = ()
    class_counter: str = ""
    folder_tree: bool = False

    def count_classes(self, data_dir) -> int:
        """:attr:`num_classes`, or for a set whose classes come from the data, the number
        :attr:`class_counter` finds at ``data_dir`` (without reading images)."""
        if self.num_classes is not None:
            return self.num_classes
        return _function(self.class_counter)(self.check_data_dir(data_dir))

    def load(self, data_dir, split: str, *, download: bool = False):
        """One split (:class:`~saliencymixplus.rawdata.RawSplit`) through :attr:`loader`, which
        trusts ``split`` and, for a set on disk, ``data_dir`` to be checked here."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return _function(self.loader)(self.check_data_dir(data_dir), split, download=download)

    def check_data_dir(self, data_dir):
        """``data_dir``; FileNotFoundError saying what it must hold when a set on disk has none."""
        if data_dir is None and not self.generated:
            raise FileNotFoundError(f"{self.title} needs --data-dir: {self.data_dir_holds}")
        return data_dir

    def unreadable_advice(self, split: str | None = None, *, resume: bool = False) -> str:
        """What to do about image files of ``split`` (``None``: any split) that cannot be
        decoded: the last line of :class:`~saliencymixplus.rawdata.ImageDecodeError`.
        ``resume``: the cache tool keeps its finished maps, so say how to continue them."""
        lists = dict(self.file_lists)
        where = (lists[split] if split else " or ".join(lists.values())) if lists else "the data set's file list"
        fetch = f" ({self.fetch_command} fetches the set again)" if self.fetch_command else ""
        again = "run the same command again" + (" (the finished maps are kept: add --resume to the "
                                                "precompute command)" if resume else "")
        if self.folder_tree:
            return f"Replace each with an intact copy, or move it out of the data folder; then {again}."
        return f"Replace each with an intact copy{fetch}, or delete its line from {where}; then {again}."


#: Every data set, by name (what all sets share, as the SGD recipe, is training.config.Config's).
SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec(
        "cifar100", "CIFAR-100", 100, ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        Recipe(),  # a horizontal flip only, as published
        # Published command: resnet50, 200 epochs, batch 128, lr 0.1.
        TrainDefaults("resnet18", 200, 128, 0.1, (75, 150, 225), 32, "device", "data"),
        "saliencymixplus.rawdata:load_cifar100",
        data_dir_holds="the folder that holds (or will hold) cifar-100-python/",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
    DatasetSpec(
        "oxford_pet", "Oxford-IIIT Pet", 37, IMAGENET_MEAN_STD,  # ImageNet's, as published
        Recipe(resize=(256, 256), crop=224, test_resize=(224, 224)),
        # Published command: resnet50, 300 epochs, batch 64, lr 0.1, 224 px.
        TrainDefaults("resnet50", 300, 64, 0.1, (75, 150, 225), 224, "torch", "dataset"),
        "saliencymixplus.rawdata:load_oxford_pet",
        stored_resolution=(256, 256),  # the size the training recipe resizes to first
        data_dir_holds="the folder with images/ and annotations/",
        urls=("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
              "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz"),
        fetch_command="tools/get_oxford_pet.sh",
        file_lists=(("train", "annotations/trainval.txt"), ("test", "annotations/test.txt"))),
    DatasetSpec(
        "demo", "the demo set", 10, ((0.4999, 0.4986, 0.5016), (0.2270, 0.2272, 0.2279)),
        Recipe(),
        # 32x32, 10 glyph classes: a tiny ResNet that trains on a CPU.
        TrainDefaults("resnet_tiny", 15, 64, 0.05, (10, 13), 32, "device", None),
        "saliencymixplus.demo:load_demo", generated=True),
    DatasetSpec(
        "demo_hard", "the hard demo set", 20, ((0.5004, 0.4993, 0.5004), (0.2158, 0.2159, 0.2164)),
        Recipe(),
        # 48x48, 20 classes of small glyphs among clutter and fragments: the same tiny ResNet
        # (stride-2 stem), a few minutes on 2 CPU cores.
        TrainDefaults("resnet_tiny", 12, 64, 0.05, (8, 11), 48, "device", None),
        "saliencymixplus.demo_hard:load_demo_hard", generated=True),
    DatasetSpec(
        # Any torchvision ImageFolder tree: DIR/train/<class>/*, DIR/val/<class>/* ("test" = val/).
        "imagefolder", "image folder", None, IMAGENET_MEAN_STD,  # ImageNet's unless --mean/--std
        Recipe(crop=224, crop_pct=0.875),  # --image-size (default 224)
        # Pet's published recipe: the folder set trained from scratch at 224 px.
        TrainDefaults("resnet50", 300, 64, 0.1, (75, 150, 225), 224, "torch", None),
        "saliencymixplus.folders:load_imagefolder",
        stored_resolution=(96, 96),  # benchmarks/RESULTS.md, "stored map resolution for large sets"
        data_dir_holds="train/<class>/* and val/<class>/* (torchvision's ImageFolder layout)",
        class_counter="saliencymixplus.folders:count_classes", folder_tree=True),
    DatasetSpec(
        "imagenet", "ImageNet (ILSVRC-2012)", 1000, IMAGENET_MEAN_STD,
        Recipe(crop=224, crop_pct=0.875),
        # The ImageNet recipe of CutMix/SaliencyMix: ResNet-50, 300 epochs, batch 256, lr 0.1.
        TrainDefaults("resnet50", 300, 256, 0.1, (75, 150, 225), 224, "torch", None),
        "saliencymixplus.folders:load_imagenet",
        stored_resolution=(96, 96),  # 11.81 GB for 1,281,167 maps (benchmarks/RESULTS.md)
        data_dir_holds="train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ILSVRC-2012, val sorted into wnid folders)",
        urls=("https://image-net.org",), folder_tree=True),
)}

DATASETS = tuple(SPECS)
GENERATED = tuple(name for name, s in SPECS.items() if s.generated)


def get_spec(name: str, argname: str = "dataset") -> DatasetSpec:
    """The spec of data set ``name``; ValueError naming ``argname`` and the known sets if there is none."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"{argname} must be one of {list(DATASETS)}, got {name!r}") from None
