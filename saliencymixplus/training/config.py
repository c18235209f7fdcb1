"""What defines a run: the :class:`Config`, the command line that fills it and the recipe
of each data set (:data:`DATASET_DEFAULTS`).

The published flag spellings (``--batch_size``) and dashed aliases (``--batch-size``) are
both accepted; a flag given on the command line wins over the data set's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from typing import Any, Optional

from ..mix import LAM_MODES, PAIRINGS
from ..models import MODELS
from ..ops import BOXES
from ..rawdata import DATASETS, NUM_CLASSES
from ..refresh import DEFAULT_POSTPROCESS as DEFAULT_REFRESH_POSTPROCESS
from ..saliency import DEFAULT_METHOD, OPENCV_METHODS, format_postprocess

__all__ = [
    "PROG", "DATASET_DEFAULTS", "MIX_AUGS", "SALIENCY_MIXES", "METHOD_DEFAULTS", "PAPER",
    "DEFAULT_SALIENCY_METHOD", "SALIENCY_METHODS", "UsageError", "Config", "build_parser",
    "parse_config",
]

PROG = "train.py"

#: The recipe per data set; a flag given on the command line wins. ``data_dir`` is where the
#: published code kept the data (``data/cifar-100-python``, ``dataset/{images,annotations}``),
#: so that the published commands run as written.
#: Published recipe (all sets): SGD, momentum 0.9, Nesterov, weight decay 5e-4,
#: LR x0.1 at epochs 75/150/225, mix_prob 0.5, Beta(1, 1).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Published CIFAR-100 command: resnet50, 200 epochs, batch 128, lr 0.1.
    "cifar100": dict(model="resnet18", epochs=200, batch_size=128, learning_rate=0.1,
                     milestones=(75, 150, 225), image_size=32, loader="device", data_dir="data"),
    # Published Oxford-IIIT Pet command: resnet50, 300 epochs, batch 64, lr 0.1, 224 px.
    "oxford_pet": dict(model="resnet50", epochs=300, batch_size=64, learning_rate=0.1,
                       milestones=(75, 150, 225), image_size=224, loader="torch", data_dir="dataset"),
    # The embedded demo set (32x32, 10 classes): a tiny ResNet that trains on a CPU.
    "demo": dict(model="resnet_tiny", epochs=15, batch_size=64, learning_rate=0.05,
                 milestones=(10, 13), image_size=32, loader="device", data_dir=None),
    # The hard demo set (48x48, 20 classes of small glyphs among clutter and fragments): the
    # same tiny ResNet (stride-2 stem), a few minutes on 2 CPU cores.
    "demo_hard": dict(model="resnet_tiny", epochs=12, batch_size=64, learning_rate=0.05,
                      milestones=(8, 11), image_size=48, loader="device", data_dir=None),
}

MIX_AUGS = ("none", "cutmix", "saliencymix", "saliencymixplus")
_MIX_ALIASES = {"saliencymix_plus": "saliencymixplus", "saliencymix+": "saliencymixplus",
                "baseline": "none"}
SALIENCY_MIXES = ("saliencymix", "saliencymixplus")
#: SaliencyMix+ as this project runs it, and as published (``--paper``); explicit flags win.
METHOD_DEFAULTS = dict(box="window", pairing="full", saliency="cache")
PAPER = dict(box="peak", pairing="half", saliency="online")


class UsageError(ValueError):
    """A bad flag or combination of flags (exit code 2)."""


#: Saliency built on demand when ``--saliency-cache`` is missing.
DEFAULT_SALIENCY_METHOD = DEFAULT_METHOD
SALIENCY_METHODS = OPENCV_METHODS


@dataclasses.dataclass
class Config:
    """Everything that defines a run. ``to_dict()`` goes into checkpoints and summary.json."""

    dataset: str = "demo"
    model: str = "resnet_tiny"
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 0.05
    mix_prob: float = 0.5
    mix_aug: str = "saliencymixplus"
    seed: int = 0
    data_dir: Optional[str] = None
    download: bool = False
    saliency_cache: Optional[str] = None
    saliency_method: str = DEFAULT_SALIENCY_METHOD
    saliency: str = "cache"
    box: str = "window"
    pairing: str = "full"
    lam_mode: str = "batch"
    alpha: float = 1.0
    label_smoothing: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: tuple = (75, 150, 225)
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
    refresh_postprocess: str = DEFAULT_REFRESH_POSTPROCESS
    refresh_every: int = 10
    refresh_keep: str = "last"
    progress: bool = True
    limit_train_batches: Optional[int] = None
    limit_test_batches: Optional[int] = None
    num_classes: int = 10
    image_size: int = 32

    @property
    def reads_cache(self) -> bool:
        """Whether the run reads the training split's saliency cache (``--saliency cache``, and
        ``--saliency refresh``, which starts from it)."""
        return self.saliency_cache is not None and self.saliency in ("cache", "refresh")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def _milestones(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 75,150,225, got {text!r}")
    if any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"milestones must be positive epochs, got {text!r}")
    return vals


def _mix_aug(text: str) -> str:
    name = _MIX_ALIASES.get(text.lower(), text.lower())
    if name not in MIX_AUGS:
        raise argparse.ArgumentTypeError(
            f"invalid choice {text!r} (choose from {', '.join(MIX_AUGS)})")
    return name


#: ``--seed`` range: what every random stream of a run accepts (torch takes 64-bit seeds).
MAX_SEED = 2 ** 63 - 1


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _prob(text: str) -> float:
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def _smoothing(text: str) -> float:
    v = _float(text)
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (1 would leave no label), got {text}")
    return v


def _positive_int(text: str) -> int:
    v = _int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _nonneg_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _seed(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63 - 1], got {text}")
    return v


def _postprocess(text: str) -> str:
    try:
        return format_postprocess(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _positive_float(text: str) -> float:
    v = _float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _nonneg_float(text: str) -> float:
    v = _float(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already says it, there is none, or the flag is a
    switch (``--no-progress`` would read "(default: True)")."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0 \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line. Published spellings (``--batch_size``) and dashed aliases
    (``--batch-size``) are both accepted."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a classifier with CutMix, SaliencyMix or SaliencyMix+ "
                    "(one process, or DDP under torchrun).",
        formatter_class=_HelpFormatter)
    g = p.add_argument_group("published interface")
    g.add_argument("--dataset", "-d", default="demo", choices=DATASETS,
                   help="data set")
    g.add_argument("--model", "-a", default=None, choices=MODELS,
                   help="network (default per data set: %s)"
                        % ", ".join(f"{k}={v['model']}" for k, v in DATASET_DEFAULTS.items()))
    g.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default per data set)")
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=_positive_int,
                   default=None, help="global batch size (default per data set)")
    g.add_argument("--learning_rate", "--learning-rate", "--lr", dest="learning_rate",
                   type=_positive_float, default=None, help="initial LR (default per data set)")
    g.add_argument("--mix_prob", "--mix-prob", dest="mix_prob", type=_prob, default=0.5,
                   help="probability that a batch is mixed")
    g.add_argument("--mix_aug", "--mix-aug", dest="mix_aug", type=_mix_aug,
                   default="saliencymixplus", metavar="{" + ",".join(MIX_AUGS) + "}",
                   help="mixing augmentation")
    g.add_argument("--seed", type=_seed, default=0, help="random seed, 0 .. 2**63 - 1")

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="folder of the data set (default: data for cifar100, dataset for "
                        "oxford_pet, as published; demo and demo_hard need none)")
    g.add_argument("--download", action="store_true", help="download cifar100/oxford_pet if missing")
    g.add_argument("--saliency-cache", "--saliency_cache", dest="saliency_cache", metavar="FILE",
                   default=None, help="HDF5 saliency cache of the training split; built when "
                   "missing (default: <data-dir or data>/<dataset>-train-<method>.h5)")
    g.add_argument("--saliency-method", "--saliency_method", dest="saliency_method",
                   choices=SALIENCY_METHODS, default=DEFAULT_SALIENCY_METHOD,
                   help="OpenCV saliency used when the cache must be built")
    g.add_argument("--workers", type=_nonneg_int, default=None,
                   help="DataLoader worker processes (default: cores / processes, at most 8)")
    g.add_argument("--loader", choices=("auto", "torch", "device"), default="auto",
                   help="'device': whole uint8 set + saliency on the model's device, batched "
                        "flips there (in-memory sets only); 'torch': DataLoader; "
                        "'auto': device for cifar100/demo/demo_hard, torch otherwise")
    g.add_argument("--limit-train-batches", dest="limit_train_batches", type=_positive_int,
                   default=None, help="at most this many training steps per epoch (smoke tests)")
    g.add_argument("--limit-test-batches", dest="limit_test_batches", type=_positive_int,
                   default=None, help="at most this many test batches per evaluation")

    g = p.add_argument_group("mixing")
    g.add_argument("--saliency", choices=("cache", "online", "refresh"), default=None,
                   help="'cache': precomputed maps; 'online': gradient saliency of the current "
                        "model each mixed step, as published; 'refresh': the cache, refreshed with "
                        "the model's input gradient from the unmixed steps' own backward pass "
                        "(default: cache)")
    g.add_argument("--box", choices=BOXES, default=None,
                   help="SaliencyMix+ box: most salient window, or centred on the peak as "
                        "published (default: window)")
    g.add_argument("--pairing", choices=PAIRINGS, default=None,
                   help="'full': every image receives a patch; 'half': first half receives "
                        "from the second, only the first half is trained on (default: full)")
    g.add_argument("--lam-mode", "--lam_mode", dest="lam_mode", choices=LAM_MODES,
                   default="batch", help="one mixing ratio per batch or per sample")
    g.add_argument("--alpha", type=_positive_float, default=1.0, help="Beta(alpha, alpha) of the mix ratio")
    g.add_argument("--label-smoothing", "--label_smoothing", dest="label_smoothing", type=_smoothing,
                   default=0.0, help="label smoothing of the (soft) targets, in [0, 1)")
    g.add_argument("--paper", action="store_true",
                   help="the published method: --box peak --pairing half --saliency online "
                        "(explicit flags still win)")

    g = p.add_argument_group("--saliency refresh")
    g.add_argument("--refresh-postprocess", "--refresh_postprocess", dest="refresh_postprocess",
                   type=_postprocess, default=DEFAULT_REFRESH_POSTPROCESS,
                   help="sharpening of each refreshed map, as the cache tool's --postprocess ('none': raw)")
    g.add_argument("--refresh-every", "--refresh_every", dest="refresh_every", type=_positive_int, default=10,
                   help="--loader torch (sets read from files): a gradient-saliency pass over the "
                        "training split every this many epochs (the device loader refreshes every "
                        "unmixed step instead)")
    g.add_argument("--refresh-keep", "--refresh_keep", dest="refresh_keep", choices=("last", "all"),
                   default="last", help="refreshed maps saved in the run folder: those of the last "
                   "and best checkpoints, or every epoch's")

    g = p.add_argument_group("optimisation")
    g.add_argument("--milestones", type=_milestones, default=None,
                   help="epochs at which LR is multiplied by 0.1 (default per data set)")
    g.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=_nonneg_float,
                   default=5e-4, help="SGD weight decay (>= 0)")

    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto",
                   help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--amp", nargs="?", const="bf16", default=None, choices=("bf16", "fp16", "none"),
                   help="autocast precision (bare --amp = bf16); fp16 uses a GradScaler")
    g.add_argument("--channels-last", "--channels_last", dest="channels_last", action="store_true",
                   help="channels-last memory format for the model and inputs")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")

    g = p.add_argument_group("output")
    g.add_argument("--out-dir", "--out_dir", dest="out_dir", default=None,
                   help="run folder (default: runs/<dataset>_<model>_<mix_aug><mix_prob>_<epochs>_s<seed>)")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue from CKPT (bare --resume: <out-dir>/last.pt if present); the other "
                        "flags must be those of the run it continues, except --epochs (more to train "
                        "further) and the hardware, data-location and output flags")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (one line per epoch only)")
    return p


def parse_config(argv: Optional[list[str]] = None) -> Config:
    """Parse the command line into a :class:`Config` with all defaults resolved.

    Raises:
        SystemExit(2): bad flags (argparse).
        UsageError: a bad combination (e.g. ``--loader device`` with ``oxford_pet``).
    """
    args = build_parser().parse_args(argv)
    d = DATASET_DEFAULTS[args.dataset]
    cfg = Config()
    for f in dataclasses.fields(Config):
        if hasattr(args, f.name):
            setattr(cfg, f.name, getattr(args, f.name))
    for key in ("model", "epochs", "batch_size", "learning_rate", "milestones", "data_dir"):
        if getattr(args, key) is None:
            setattr(cfg, key, d[key])
    for key, default in (PAPER if args.paper else METHOD_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(cfg, key, default)
    cfg.amp = None if args.amp in (None, "none") else args.amp
    cfg.milestones = tuple(cfg.milestones)
    cfg.image_size = d["image_size"]
    cfg.num_classes = int(NUM_CLASSES[cfg.dataset])
    if cfg.loader == "auto":
        cfg.loader = d["loader"]
    if cfg.loader == "device" and d["loader"] != "device":
        raise UsageError(f"--loader device needs an in-memory data set (cifar100, demo, demo_hard); "
                         f"{cfg.dataset} is read from files: use --loader torch")
    if cfg.out_dir is None:
        cfg.out_dir = os.path.join(
            "runs", f"{cfg.dataset}_{cfg.model}_{cfg.mix_aug}{cfg.mix_prob:g}_{cfg.epochs}_s{cfg.seed}")
    if cfg.saliency == "refresh" and cfg.mix_aug not in SALIENCY_MIXES:
        raise UsageError(f"--saliency refresh needs a saliency mixer (--mix_aug {' or '.join(SALIENCY_MIXES)}), "
                         f"got --mix_aug {cfg.mix_aug}")
    if cfg.mix_aug not in SALIENCY_MIXES or cfg.saliency == "online":
        cfg.saliency_cache = None  # no cached saliency needed
    elif cfg.saliency_cache is None:
        cfg.saliency_cache = os.path.join(cfg.data_dir or "data",
                                          f"{cfg.dataset}-train-{cfg.saliency_method}.h5")
    return cfg
