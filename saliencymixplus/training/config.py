"""What defines a run: the :class:`Config` (every default once) and the command line derived
from it. See docs/design.md, "Training".
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any, Callable, Optional

from ..datasets import DATASETS, SPECS, get_spec
from ..mix import LAM_MODES, PAIRINGS
from ..models import MODELS
from ..ops import BOXES
from ..saliency import DEFAULT_METHOD, DEFAULT_POSTPROCESS, OPENCV_METHODS, format_postprocess
from ..transforms import Normalize

__all__ = ["PROG", "MIX_AUGS", "SALIENCY_MIXES", "METHOD_DEFAULTS", "PAPER", "MAX_SEED", "UsageError", "Config",
           "CACHE_NAME", "build_parser", "parse_config"]

PROG = "train.py"
MIX_AUGS = ("none", "cutmix", "saliencymix", "saliencymixplus")
_MIX_ALIASES = {"saliencymix_plus": "saliencymixplus", "saliencymix+": "saliencymixplus", "baseline": "none"}
SALIENCY_MIXES = ("saliencymix", "saliencymixplus")
#: SaliencyMix+ as this project runs it, and as published (``--paper``); explicit flags win.
METHOD_DEFAULTS = dict(box="window", pairing="full", saliency="cache")
PAPER = dict(box="peak", pairing="half", saliency="online")
#: ``--seed`` range: what every random stream of a run accepts (torch takes 64-bit seeds).
MAX_SEED = 2 ** 63 - 1
#: The training split's cache in a folder (``--saliency-cache``'s default, in ``--data-dir`` or ``data``).
CACHE_NAME = "{dataset}-train-{method}.h5"


class UsageError(ValueError):
    """A bad flag or combination of flags (exit code 2)."""


@dataclasses.dataclass
class Config:
    """Everything that defines a run; ``to_dict()`` goes into checkpoints and summary.json. A field
    left ``None`` takes its default when the config is made, and settings that cannot run together
    are a :class:`UsageError` then."""

    dataset: str = "demo"
    model: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    mix_prob: float = 0.5
    mix_aug: str = "saliencymixplus"
    seed: int = 0
    data_dir: Optional[str] = None
    download: bool = False
    saliency_cache: Optional[str] = None
    saliency_method: str = DEFAULT_METHOD
    saliency: Optional[str] = None
    box: Optional[str] = None
    pairing: Optional[str] = None
    lam_mode: str = "batch"
    alpha: float = 1.0
    label_smoothing: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: Optional[tuple] = None
    gamma: float = 0.1
    device: str = "auto"
    amp: Optional[str] = None
    channels_last: bool = False
    compile: bool = False
    workers: Optional[int] = None
    loader: str = "auto"
    out_dir: Optional[str] = None
    resume: Optional[str] = None
    paper: bool = False
    refresh_postprocess: str = DEFAULT_POSTPROCESS
    refresh_every: int = 10
    refresh_keep: str = "last"
    progress: bool = True
    limit_train_batches: Optional[int] = None
    limit_test_batches: Optional[int] = None
    train_size: Optional[int] = None
    num_classes: Optional[int] = None
    image_size: Optional[int] = None
    mean: Optional[tuple] = None
    std: Optional[tuple] = None

    def __post_init__(self) -> None:
        spec = get_spec(self.dataset)
        if self.image_size is not None and spec.recipe.crop_pct is None and self.image_size != spec.train.image_size:
            raise UsageError(f"--image-size sets the crop of the ImageNet-style recipe "
                             f"({', '.join(n for n, s in SPECS.items() if s.recipe.crop_pct)}); {self.dataset}'s "
                             f"recipe is fixed at {spec.train.image_size} px, got --image-size {self.image_size}")
        # num_classes stays None for a set whose classes come from the data: the run counts them.
        for key, value in [*dataclasses.asdict(spec.train).items(), ("num_classes", spec.num_classes),
                           ("mean", spec.mean_std[0]), ("std", spec.mean_std[1]),
                           *(PAPER if self.paper else METHOD_DEFAULTS).items()]:
            if getattr(self, key) is None:
                setattr(self, key, value)
        try:  # the parser checks the flags; a Config made in code is checked by the normalisation itself
            Normalize(self.mean, self.std)
        except ValueError as e:
            raise UsageError(f"--mean/--std: {e}") from None
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        self.milestones = tuple(self.milestones)
        self.amp = None if self.amp == "none" else self.amp
        if self.loader == "auto":
            self.loader = spec.train.loader
        elif self.loader == "device" and spec.train.loader != "device":
            raise UsageError(f"--loader device needs an in-memory data set ({', '.join(_sets('loader', 'device'))}); "
                             f"{self.dataset} is read from files: use --loader torch")
        if self.saliency == "refresh" and self.mix_aug not in SALIENCY_MIXES:
            raise UsageError(f"--saliency refresh needs a saliency mixer (--mix_aug {' or '.join(SALIENCY_MIXES)}), "
                             f"got --mix_aug {self.mix_aug}")
        if self.mix_aug not in SALIENCY_MIXES or self.saliency == "online":
            self.saliency_cache = None  # the run reads no cache (refresh starts from one)
        elif self.saliency_cache is None:
            self.saliency_cache = os.path.join(self.data_dir or "data",
                                               CACHE_NAME.format(dataset=self.dataset, method=self.saliency_method))
        if self.out_dir is None:  # not --epochs: a run continued with more epochs stays in its folder
            self.out_dir = os.path.join("runs", f"{self.dataset}_{self.model}_{self.mix_aug}{self.mix_prob:g}_s{self.seed}")

    def train_count(self, split_size: int) -> int:
        """How many images of the training split (of ``split_size``) the run trains on."""
        if self.train_size is None:
            return split_size
        if self.train_size > split_size:
            raise UsageError(f"--train-size must be at most the {self.dataset} training split's {split_size} "
                             f"images, got {self.train_size}")
        return self.train_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("milestones", "mean", "std"):
            d[key] = list(getattr(self, key))
        return d


def _sets(key: str, value) -> list[str]:
    """The data sets whose training default ``key`` is ``value``."""
    return [name for name, s in SPECS.items() if getattr(s.train, key) == value]


def _per_set(key: str) -> str:
    """``default per data set: cifar100=..., ...`` for a training default."""
    return "default per data set: " + ", ".join(f"{name}={getattr(s.train, key)}" for name, s in SPECS.items())


# ----------------------------------------------------------------------------- flag types

def _flag(convert: Callable[[str], Any], rule: str = "", ok: Callable[[Any], bool] | None = None):
    """An argparse ``type``: ``convert(text)``, then the check ``ok(value)`` that ``rule`` states."""
    noun = {int: "an integer", float: "a number"}.get(convert)

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}" if noun else str(e)) from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if ok is not None and not ok(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return v

    return parse


def _epochs_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"expected comma-separated epochs like 75,150,225, got {text!r}") from None


def _mix_aug(text: str) -> str:
    name = _MIX_ALIASES.get(text.lower(), text.lower())
    if name not in MIX_AUGS:
        raise ValueError(f"invalid choice {text!r} (choose from {', '.join(MIX_AUGS)})")
    return name


POSITIVE_INT = _flag(int, "a positive integer", lambda v: v > 0)
NONNEG_INT = _flag(int, ">= 0", lambda v: v >= 0)
POSITIVE_FLOAT = _flag(float, "> 0", lambda v: v > 0)
NONNEG_FLOAT = _flag(float, ">= 0", lambda v: v >= 0)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already says it, there is none, or the flag is a
    switch (``--no-progress`` would read "(default: True)")."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0 \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line; its defaults are :class:`Config`'s. Published spellings
    (``--batch_size``) and dashed aliases (``--batch-size``) are both accepted."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a classifier with CutMix, SaliencyMix or SaliencyMix+ "
                    "(one process, or DDP under torchrun).",
        formatter_class=_HelpFormatter)
    g = p.add_argument_group("published interface")
    g.add_argument("--dataset", "-d", choices=DATASETS, help="data set")
    g.add_argument("--model", "-a", choices=MODELS, help=f"network ({_per_set('model')})")
    g.add_argument("--epochs", type=POSITIVE_INT, help=f"epochs ({_per_set('epochs')})")
    g.add_argument("--batch_size", "--batch-size", type=POSITIVE_INT,
                   help=f"global batch size ({_per_set('batch_size')})")
    g.add_argument("--learning_rate", "--learning-rate", "--lr", type=POSITIVE_FLOAT,
                   help=f"initial LR ({_per_set('learning_rate')})")
    g.add_argument("--mix_prob", "--mix-prob", type=_flag(float, "in [0, 1]", lambda v: 0 <= v <= 1),
                   help="probability that a batch is mixed")
    g.add_argument("--mix_aug", "--mix-aug", type=_flag(_mix_aug),
                   metavar="{" + ",".join(MIX_AUGS) + "}", help="mixing augmentation")
    g.add_argument("--seed", type=_flag(int, "an integer in [0, 2**63 - 1]", lambda v: 0 <= v <= MAX_SEED),
                   help="random seed, 0 .. 2**63 - 1")

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", "--data_dir",
                   help="folder of the data set (default per data set: " + ", ".join(
                       f"{name}={s.train.data_dir}" for name, s in SPECS.items() if s.train.data_dir)
                        + f"; {' and '.join(n for n, s in SPECS.items() if s.generated)} need none; "
                        + ", ".join(f"{n}: {s.data_dir_holds}" for n, s in SPECS.items() if s.folder_tree)
                        + "; val/ is the test split)")
    imagenet_style = {n: s.recipe for n, s in SPECS.items() if s.recipe.crop_pct}
    evaluation = sorted({f"evaluation resizes to size / {r.crop_pct:g} and centre-crops (default {r.crop})"
                         for r in imagenet_style.values()})
    g.add_argument("--image-size", "--image_size", type=POSITIVE_INT,
                   help=f"side of the random-resized crop of the ImageNet-style recipe ({', '.join(imagenet_style)}); "
                        f"{'; '.join(evaluation)}; the other sets' recipes are fixed")
    g.add_argument("--mean", nargs=3, type=_flag(float), metavar=("R", "G", "B"),
                   help="per-channel mean of the normalisation, in [0, 1] units (default: the data set's; "
                        "ImageNet's for folder sets)")
    g.add_argument("--std", nargs=3, type=POSITIVE_FLOAT, metavar=("R", "G", "B"),
                   help="per-channel std of the normalisation, each > 0 (default: the data set's)")
    g.add_argument("--download", action="store_true", help="download a missing data set")
    g.add_argument("--saliency-cache", "--saliency_cache", metavar="FILE",
                   help="HDF5 saliency cache of the training split; built when missing "
                        f"(default: <data-dir or data>/{CACHE_NAME.format(dataset='<dataset>', method='<method>')})")
    g.add_argument("--saliency-method", "--saliency_method", choices=OPENCV_METHODS,
                   help="OpenCV saliency used when the cache must be built")
    g.add_argument("--workers", type=NONNEG_INT, help="DataLoader worker processes (default: cores / processes, at most 8)")
    g.add_argument("--loader", choices=("auto", "torch", "device"),
                   help="'device': whole uint8 set + saliency on the model's device, batched flips there "
                        f"(in-memory sets only); 'torch': DataLoader; 'auto': device for "
                        f"{'/'.join(_sets('loader', 'device'))}, torch otherwise")
    g.add_argument("--limit-train-batches", type=POSITIVE_INT,
                   help="at most this many training steps per epoch (smoke tests)")
    g.add_argument("--limit-test-batches", type=POSITIVE_INT, help="at most this many test batches per evaluation")
    g.add_argument("--train-size", "--train_size", type=POSITIVE_INT,
                   help="train on the first N images of the training split, the same N for every mixer and seed "
                        "(default: all; the saliency cache still covers the whole split)")

    g = p.add_argument_group("mixing")
    g.add_argument("--saliency", choices=("cache", "online", "refresh"),
                   help="'cache': precomputed maps; 'online': gradient saliency of the current model each "
                        "mixed step, as published; 'refresh': the cache, refreshed with the model's input "
                        f"gradient from the unmixed steps' own backward pass (default: {METHOD_DEFAULTS['saliency']})")
    g.add_argument("--box", choices=BOXES,
                   help=f"SaliencyMix+ box: most salient window, or centred on the peak as published "
                        f"(default: {METHOD_DEFAULTS['box']})")
    g.add_argument("--pairing", choices=PAIRINGS,
                   help="'full': every image receives a patch; 'half': first half receives from the second, "
                        f"only the first half is trained on (default: {METHOD_DEFAULTS['pairing']})")
    g.add_argument("--lam-mode", "--lam_mode", choices=LAM_MODES, help="one mixing ratio per batch or per sample")
    g.add_argument("--alpha", type=POSITIVE_FLOAT, help="Beta(alpha, alpha) of the mix ratio")
    g.add_argument("--label-smoothing", "--label_smoothing",
                   type=_flag(float, "in [0, 1) (1 would leave no label)", lambda v: 0 <= v < 1),
                   help="label smoothing of the (soft) targets, in [0, 1)")
    g.add_argument("--paper", action="store_true",
                   help=f"the published method: {' '.join(f'--{k} {v}' for k, v in PAPER.items())} (explicit flags "
                        f"still win)")

    g = p.add_argument_group("--saliency refresh")
    g.add_argument("--refresh-postprocess", "--refresh_postprocess", type=_flag(format_postprocess),
                   help="sharpening of each refreshed map, as the cache tool's --postprocess ('none': raw)")
    g.add_argument("--refresh-every", "--refresh_every", type=POSITIVE_INT,
                   help="--loader torch (sets read from files): a gradient-saliency pass over the training split "
                        "every this many epochs (the device loader refreshes every unmixed step instead)")
    g.add_argument("--refresh-keep", "--refresh_keep", choices=("last", "all"),
                   help="refreshed maps saved in the run folder: those of the last and best checkpoints, or every epoch's")

    g = p.add_argument_group("optimisation")
    g.add_argument("--milestones", type=_flag(_epochs_list, "positive epochs", lambda v: all(e > 0 for e in v)),
                   help=f"epochs at which LR is multiplied by 0.1 ({_per_set('milestones')})")
    g.add_argument("--weight-decay", "--weight_decay", type=NONNEG_FLOAT, help="SGD weight decay (>= 0)")

    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--amp", nargs="?", const="bf16", choices=("bf16", "fp16", "none"),
                   help="autocast precision (bare --amp = bf16); fp16 uses a GradScaler")
    g.add_argument("--channels-last", "--channels_last", action="store_true",
                   help="channels-last memory format for the model and inputs")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")

    g = p.add_argument_group("output")
    g.add_argument("--out-dir", "--out_dir",
                   help="run folder (default: runs/<dataset>_<model>_<mix_aug><mix_prob>_s<seed>)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT (bare --resume: <out-dir>/last.pt if present); the other flags must be "
                        "those of the run it continues, except --epochs (more to train further) and the hardware, "
                        "data-location and output flags")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (one line per epoch only)")
    p.set_defaults(**{f.name: f.default for f in dataclasses.fields(Config)})
    return p


def parse_config(argv: Optional[list[str]] = None) -> Config:
    """The command line's :class:`Config`, every default resolved (argparse exits 2 on a bad flag)."""
    return Config(**vars(build_parser().parse_args(argv)))
