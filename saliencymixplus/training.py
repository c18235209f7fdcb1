"""The training loop behind ``train.py``: configuration, loaders, one epoch, evaluation,
checkpoints, logs and DDP.

``train.py`` is only ``sys.exit(main())``. Everything a run needs is in one
:class:`Config`, parsed by :func:`parse_config` from the command line (the published flag
spellings ``--batch_size`` etc. and dashed aliases), with the per-data-set defaults of
:data:`DATASET_DEFAULTS`. :func:`run` trains and returns the summary.

Reproducibility: every epoch reseeds all random streams from ``(seed, epoch, rank)``, and a
checkpoint (``last.pt``) is written atomically after every epoch, so ``--resume`` after an
interruption replays the interrupted epoch exactly and ends with the same weights as an
uninterrupted run (on the same hardware and software).

Distributed: under ``torchrun --nproc_per_node N`` each process drives one device (NCCL on
GPUs, gloo on CPUs); ``--batch_size`` is the *global* batch, split evenly over the
processes; evaluation is sharded and reduced exactly; only rank 0 writes logs and
checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .models import MODELS, build_model
from .rawdata import DATASETS, NUM_CLASSES

__all__ = [
    "DATASET_DEFAULTS", "MIX_AUGS", "Config", "UsageError", "build_parser", "parse_config",
    "run", "main", "evaluate_checkpoint", "load_checkpoint", "DeviceLoader",
]

PROG = "train.py"

# ----------------------------------------------------------------------------- defaults

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
}
COMMON_DEFAULTS: dict[str, Any] = dict(momentum=0.9, nesterov=True, weight_decay=5e-4,
                                       gamma=0.1, mix_prob=0.5, alpha=1.0)

MIX_AUGS = ("none", "cutmix", "saliencymix", "saliencymixplus")
_MIX_ALIASES = {"saliencymix_plus": "saliencymixplus", "saliencymix+": "saliencymixplus",
                "baseline": "none"}
SALIENCY_MIXES = ("saliencymix", "saliencymixplus")
PAPER = dict(box="peak", pairing="half", saliency="online")


class UsageError(ValueError):
    """A bad flag or combination of flags (exit code 2)."""


#: Saliency built on demand when ``--saliency-cache`` is missing (what SaliencyMix used).
DEFAULT_SALIENCY_METHOD = "fine_grained"
SALIENCY_METHODS = ("fine_grained", "spectral_residual")


# ----------------------------------------------------------------------------- config

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
    progress: bool = True
    limit_train_batches: Optional[int] = None
    limit_test_batches: Optional[int] = None
    num_classes: int = 10
    image_size: int = 32

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


def _prob(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already says it or there is none."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
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
    g.add_argument("--seed", type=int, default=0, help="random seed")

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None,
                   help="folder of the data set (default: data for cifar100, dataset for "
                        "oxford_pet, as published; demo needs none)")
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
                        "'auto': device for cifar100/demo, torch otherwise")
    g.add_argument("--limit-train-batches", dest="limit_train_batches", type=_positive_int,
                   default=None, help="at most this many training steps per epoch (smoke tests)")
    g.add_argument("--limit-test-batches", dest="limit_test_batches", type=_positive_int,
                   default=None, help="at most this many test batches per evaluation")

    g = p.add_argument_group("mixing")
    g.add_argument("--saliency", choices=("cache", "online"), default=None,
                   help="'cache': precomputed maps; 'online': gradient saliency of the current "
                        "model each mixed step, as published (default: cache)")
    g.add_argument("--box", choices=("window", "peak"), default=None,
                   help="SaliencyMix+ box: most salient window, or centred on the peak as "
                        "published (default: window)")
    g.add_argument("--pairing", choices=("full", "half"), default=None,
                   help="'full': every image receives a patch; 'half': first half receives "
                        "from the second, only the first half is trained on (default: full)")
    g.add_argument("--lam-mode", "--lam_mode", dest="lam_mode", choices=("batch", "sample"),
                   default="batch", help="one mixing ratio per batch or per sample")
    g.add_argument("--alpha", type=_positive_float, default=1.0, help="Beta(alpha, alpha) of the mix ratio")
    g.add_argument("--label-smoothing", "--label_smoothing", dest="label_smoothing", type=_prob,
                   default=0.0, help="label smoothing of the (soft) targets")
    g.add_argument("--paper", action="store_true",
                   help="the published method: --box peak --pairing half --saliency online "
                        "(explicit flags still win)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--milestones", type=_milestones, default=None,
                   help="epochs at which LR is multiplied by 0.1 (default per data set)")
    g.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=float,
                   default=5e-4, help="SGD weight decay")

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
                   help="continue from CKPT (bare --resume: <out-dir>/last.pt if present)")
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
    for key in ("box", "pairing", "saliency"):
        if getattr(args, key) is None:
            setattr(cfg, key, PAPER[key] if args.paper else {"box": "window", "pairing": "full",
                                                              "saliency": "cache"}[key])
    cfg.amp = None if args.amp in (None, "none") else args.amp
    cfg.milestones = tuple(cfg.milestones)
    cfg.image_size = d["image_size"]
    cfg.num_classes = int(NUM_CLASSES[cfg.dataset])
    if cfg.loader == "auto":
        cfg.loader = d["loader"]
    if cfg.loader == "device" and d["loader"] != "device":
        raise UsageError(f"--loader device needs an in-memory data set (cifar100, demo); "
                         f"{cfg.dataset} is read from files: use --loader torch")
    if cfg.out_dir is None:
        cfg.out_dir = os.path.join(
            "runs", f"{cfg.dataset}_{cfg.model}_{cfg.mix_aug}{cfg.mix_prob:g}_{cfg.epochs}_s{cfg.seed}")
    if cfg.mix_aug not in SALIENCY_MIXES or cfg.saliency == "online":
        cfg.saliency_cache = None  # no cached saliency needed
    elif cfg.saliency_cache is None:
        cfg.saliency_cache = os.path.join(cfg.data_dir or "data",
                                          f"{cfg.dataset}-train-{cfg.saliency_method}.h5")
    return cfg


# ----------------------------------------------------------------------------- distributed

@dataclasses.dataclass
class Dist:
    """Where this process stands: ``world`` processes, this one is ``rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(cfg: Config) -> Dist:
    """Pick the device and, under torchrun (``WORLD_SIZE`` > 1), join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(cfg.device)
        except RuntimeError as e:
            raise UsageError(f"--device {cfg.device!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {cfg.device} but CUDA is not available here; use --device cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank, world, local_rank, dev)


def _barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


# ----------------------------------------------------------------------------- seeding

def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for one (seed, epoch, rank) stream."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729 + 12345) % (2 ** 63)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------- loaders

Batch = tuple[Tensor, Optional[Tensor], Tensor]


def _shard(n: int, d: Dist) -> slice:
    return slice(d.rank, n, d.world)


class DeviceLoader:
    """A whole in-memory data set on one device, batched augmentation there (airbench style).

    Holds ``images`` as ``uint8[N, 3, H, W]`` and optional ``saliency`` as ``uint8[N, H, W]``
    on ``device``. Each epoch draws one permutation (same on every rank, each rank takes its
    ``rank::world`` share), and for training applies, per batch and with masks instead of
    per-sample Python, a random crop with ``pad`` zero pixels of padding and a horizontal
    flip, identically to image and saliency.

    Yields ``(images float32[B, 3, H, W] normalised, saliency float32[B, H, W] in [0, 1] or
    None, labels int64[B])``, all on ``device``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean_std, device: torch.device, *,
                 batch_size: int, train: bool, saliency: Optional[np.ndarray] = None,
                 pad: int = 0, flip: bool = True, dist_: Dist = Dist(), drop_last: bool = True,
                 channels_last: bool = False):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be np.uint8[N, H, W, 3], got {images.dtype}{list(images.shape)}")
        self.device = device
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
        self.saliency = None
        if saliency is not None:
            s = torch.from_numpy(np.ascontiguousarray(saliency))
            H, W = self.images.shape[-2:]
            if s.shape[-2:] != (H, W):  # cache stored at another resolution
                s = F.interpolate(s[:, None].float(), size=(H, W), mode="bilinear",
                                  align_corners=False)[:, 0].round().clamp(0, 255).to(torch.uint8)
            self.saliency = s.to(device)
        mean, std = mean_std
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.batch_size, self.train, self.pad, self.flip = batch_size, train, pad, flip
        self.dist, self.drop_last, self.channels_last = dist_, drop_last, channels_last
        self.seed, self.epoch = 0, 0
        self.limit: Optional[int] = None

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        n = len(range(*_shard(len(self.labels), self.dist).indices(len(self.labels))))
        steps = n // self.batch_size if (self.train and self.drop_last) else math.ceil(n / self.batch_size)
        return min(steps, self.limit) if self.limit else steps

    def _augment(self, x: Tensor, s: Optional[Tensor], g: torch.Generator) -> tuple[Tensor, Optional[Tensor]]:
        B, C, H, W = x.shape
        dev = x.device
        if self.pad:
            p = self.pad
            xp = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=g)
            dx = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=g)
            rows = (dy[:, None] + torch.arange(H, device=dev))  # [B, H]
            cols = (dx[:, None] + torch.arange(W, device=dev))  # [B, W]
            bi = torch.arange(B, device=dev)[:, None, None]
            x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            if s is not None:
                s = F.pad(s, (p, p, p, p))[bi, rows[:, :, None], cols[:, None, :]]
        if self.flip:
            from .transforms import random_flip_batch

            x, s = random_flip_batch(x, s, generator=g)
        return x, s

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        if self.train:
            g_cpu = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))  # same on all ranks
            order = torch.randperm(n, generator=g_cpu)[_shard(n, self.dist)].to(self.device)
            g = torch.Generator(device=self.device)
            g.manual_seed(epoch_seed(self.seed, self.epoch, self.dist.rank + 1))
        else:
            order = torch.arange(n, device=self.device)[_shard(n, self.dist)]
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.images[idx]
            s = self.saliency[idx] if self.saliency is not None else None
            if self.train:
                x, s = self._augment(x, s, g)
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, (s.float() / 255.0 if s is not None else None), self.labels[idx]


class TorchLoader:
    """A ``DataLoader`` over :func:`saliencymixplus.data.build_dataset`, moved to ``device``.

    Training uses a ``DistributedSampler`` under DDP (else a seeded shuffle); the test split
    is sharded ``rank::world`` without padding so that the reduced errors are exact.
    Yields the same ``(images, saliency or None, labels)`` triples as :class:`DeviceLoader`.
    """

    def __init__(self, dataset, device: torch.device, *, batch_size: int, train: bool,
                 workers: int, dist_: Dist = Dist(), channels_last: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler, Subset

        self.device, self.train, self.dist, self.channels_last = device, train, dist_, channels_last
        self.generator = torch.Generator()
        self.sampler = None
        if train and dist_.enabled:
            self.sampler = DistributedSampler(dataset, num_replicas=dist_.world, rank=dist_.rank,
                                              shuffle=True, drop_last=True)
        elif not train and dist_.enabled:
            dataset = Subset(dataset, range(dist_.rank, len(dataset), dist_.world))
        self.loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=(train and self.sampler is None),
            sampler=self.sampler, num_workers=workers, pin_memory=device.type == "cuda",
            drop_last=train, generator=self.generator, worker_init_fn=_seed_worker,
            persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
        self.limit: Optional[int] = None

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(seed, epoch, self.dist.rank))
        if self.sampler is not None:
            self.sampler.seed = seed
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(self.loader), self.limit) if self.limit else len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for step, batch in enumerate(self.loader):
            if self.limit and step >= self.limit:
                break
            if len(batch) == 3:
                x, s, y = batch
                s = s.to(self.device, non_blocking=True)
            else:
                (x, y), s = batch, None
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, s, y.to(self.device, non_blocking=True)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % (2 ** 32)
    np.random.seed(s)
    random.seed(s)


#: Training augmentation of the device loader: the published CIFAR pipeline (and the demo's,
#: see saliencymixplus.transforms.train_transform) is a horizontal flip only; ``pad`` > 0 adds
#: a random crop with that much zero padding.
DEVICE_AUG = {"cifar100": dict(pad=0, flip=True), "demo": dict(pad=0, flip=True)}


def ensure_cache(cfg: Config, d: Dist) -> Optional[str]:
    """Make sure the training split's saliency cache exists (rank 0 builds it) and matches.

    Returns the cache path, or ``None`` when the run needs no cached saliency.

    Raises:
        CacheMismatchError: the file exists but was built from other data.
    """
    if cfg.saliency_cache is None or cfg.saliency != "cache":
        return None
    path = cfg.saliency_cache
    if d.main and not os.path.exists(path):
        from .precompute import build_cache

        _log(d, f"saliency cache {path} not found: building it ({cfg.saliency_method}) ...")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        build_cache(cfg.dataset, cfg.data_dir, "train", cfg.saliency_method, path,
                    workers=cfg.workers, progress=cfg.progress)
    _barrier(d)
    return path


_DEMO_SPLITS: dict = {}


def _load_split(cfg: Config, split: str, d: Dist):
    """``data.load_split``; the generated demo set is kept per process (run_table, tests)."""
    from . import data

    if cfg.dataset == "demo":
        if split not in _DEMO_SPLITS:
            _DEMO_SPLITS[split] = data.load_split("demo", None, split)
        return _DEMO_SPLITS[split]
    return data.load_split(cfg.dataset, cfg.data_dir, split, download=cfg.download and d.main)


def build_loaders(cfg: Config, d: Dist):
    """``(train_loader, test_loader)`` for the config; both yield device tensors."""
    from . import data

    local_batch = cfg.batch_size // d.world
    mean_std = data.MEAN_STD[cfg.dataset]
    train_raw = _load_split(cfg, "train", d)  # missing data fails here, before any cache work
    cache = ensure_cache(cfg, d)
    workers = cfg.workers
    if workers is None:
        try:
            from .rawdata import default_workers
            cores = default_workers()
        except ImportError:
            cores = os.cpu_count() or 1
        workers = max(0, min(8, cores // d.world - 1))
    if cfg.loader == "device":
        test_raw = _load_split(cfg, "test", d)
        sal = None
        if cache is not None:
            from .cache import SaliencyCache
            sal = np.asarray(SaliencyCache(cache, expect=train_raw).read_all())
            if sal.dtype != np.uint8:  # float caches: to the uint8 the loader keeps
                sal = np.clip(np.rint(sal.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        train = DeviceLoader(train_raw.images, train_raw.labels, mean_std, d.device,
                             batch_size=local_batch, train=True, saliency=sal, dist_=d,
                             channels_last=cfg.channels_last, **DEVICE_AUG[cfg.dataset])
        test = DeviceLoader(test_raw.images, test_raw.labels, mean_std, d.device,
                            batch_size=max(local_batch, 256), train=False, dist_=d,
                            channels_last=cfg.channels_last)
    else:
        train_ds = data.build_dataset(cfg.dataset, cfg.data_dir, "train", train=True,
                                      saliency_cache=cache, download=cfg.download and d.main)
        test_ds = data.build_dataset(cfg.dataset, cfg.data_dir, "test", train=False)
        train = TorchLoader(train_ds, d.device, batch_size=local_batch, train=True,
                            workers=workers, dist_=d, channels_last=cfg.channels_last)
        test = TorchLoader(test_ds, d.device, batch_size=local_batch, train=False,
                           workers=workers, dist_=d, channels_last=cfg.channels_last)
    train.limit, test.limit = cfg.limit_train_batches, cfg.limit_test_batches
    if len(train) == 0:
        raise UsageError(f"--batch_size {cfg.batch_size} is larger than the training split "
                         f"({d.world} process(es)): no full batch to train on")
    return train, test


# ----------------------------------------------------------------------------- mixing

MixFn = Callable[[Tensor, Tensor, Optional[Tensor], torch.Generator], tuple[Tensor, Tensor]]


def build_mixer(cfg: Config) -> Optional[MixFn]:
    """The mixing callable ``(images, labels, saliency, generator) -> (images, soft targets)``,
    or ``None`` for ``--mix_aug none``. ``generator`` is a CPU ``torch.Generator`` for all of
    the mixer's draws. The mixers are built with ``prob=1``: the per-batch ``--mix_prob``
    coin is tossed by the loop (so online saliency is computed only for mixed batches)."""
    from . import mix

    common = dict(alpha=cfg.alpha, prob=1.0, label_smoothing=cfg.label_smoothing, lam_mode=cfg.lam_mode)
    if cfg.mix_aug == "none":
        return None
    if cfg.mix_aug == "cutmix":
        m = mix.CutMix(cfg.num_classes, **common)
        return lambda x, y, s, g: m(x, y, generator=g)
    if cfg.mix_aug == "saliencymix":
        m = mix.SaliencyMix(cfg.num_classes, **common)
    else:
        m = mix.SaliencyMixPlus(cfg.num_classes, **common, box=cfg.box, pairing=cfg.pairing)
    return lambda x, y, s, g: m(x, y, s, generator=g)


def online_saliency(net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Gradient saliency ``float32[B, H, W]`` of ``net`` (unwrapped, not DDP) on ``images``,
    leaving the parameters' ``.grad`` and the BatchNorm statistics untouched."""
    from . import saliency

    return saliency.gradient_saliency(net, images, labels)


# ----------------------------------------------------------------------------- steps

def _autocast(cfg: Config, device: torch.device):
    if cfg.amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _topk_correct(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return hit[:, 0].sum(), hit.any(1).sum()


def train_one_epoch(cfg: Config, d: Dist, model: nn.Module, net: nn.Module, loader, mixer: Optional[MixFn],
                    optimizer: torch.optim.Optimizer, scaler, epoch: int) -> dict[str, float]:
    """One pass over ``loader``. ``model`` is what is trained (maybe DDP/compiled), ``net``
    the plain module (for online saliency). Returns the epoch's train loss, top-1/top-5
    error (%, of the trained images against their own labels, as published), images/s."""
    from .mix import one_hot, soft_target_cross_entropy

    model.train()
    coin = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0) + 1)  # same on all ranks
    mix_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, d.rank) + 2)
    seed_everything(epoch_seed(cfg.seed, epoch, d.rank))
    loader.set_epoch(cfg.seed, epoch)
    dev = d.device
    tot = torch.zeros(4, dtype=torch.float64, device=dev)  # loss*n, top1 hits, top5 hits, n
    bar = _progress(cfg, d, len(loader), f"epoch {epoch + 1}/{cfg.epochs}")
    t0 = time.perf_counter()
    log_every = 10
    for step, (x, s, y) in enumerate(loader):
        mixed = mixer is not None and torch.rand((), generator=coin).item() < cfg.mix_prob
        if mixed:
            if cfg.saliency == "online" and cfg.mix_aug in SALIENCY_MIXES:
                s = online_saliency(net, x, y)
            x, targets = mixer(x, y, s, mix_gen)
            y = y[: x.shape[0]]
        else:
            targets = one_hot(y, cfg.num_classes, cfg.label_smoothing)
        with _autocast(cfg, dev):
            logits = model(x)
        loss = soft_target_cross_entropy(logits.float(), targets.to(dev))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            n = x.shape[0]
            c1, c5 = _topk_correct(logits.detach(), y)
            tot += torch.stack([loss.detach().double() * n, c1.double(), c5.double(),
                                torch.tensor(float(n), dtype=torch.float64, device=dev)])
        if bar is not None and (step % log_every == log_every - 1 or step == len(loader) - 1):
            v = tot.tolist()
            el = time.perf_counter() - t0
            bar.set_postfix(loss=f"{v[0] / v[3]:.3f}", err=f"{100 - 100 * v[1] / v[3]:.1f}",
                            img_s=f"{v[3] * d.world / max(el, 1e-9):.0f}", refresh=False)
            bar.update(step + 1 - bar.n)
    if bar is not None:
        bar.close()
    if d.enabled:
        dist.all_reduce(tot)
    elapsed = time.perf_counter() - t0
    loss_sum, c1, c5, n = tot.tolist()
    n = max(n, 1.0)
    return {"train_loss": loss_sum / n, "train_top1_err": _err(c1, n), "train_top5_err": _err(c5, n),
            "images_per_s": n / max(elapsed, 1e-9), "train_time_s": elapsed}


@torch.no_grad()
def evaluate(cfg: Config, d: Dist, model: nn.Module, loader) -> dict[str, float]:
    """Top-1/top-5 error (%) and mean cross-entropy on ``loader``, reduced exactly over ranks."""
    model.eval()
    tot = torch.zeros(4, dtype=torch.float64, device=d.device)
    for x, _, y in loader:
        with _autocast(cfg, d.device):
            logits = model(x)
        c1, c5 = _topk_correct(logits, y)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        tot += torch.stack([loss.double(), c1.double(), c5.double(),
                            torch.tensor(float(len(y)), dtype=torch.float64, device=d.device)])
    if d.enabled:
        dist.all_reduce(tot)
    loss_sum, c1, c5, n = tot.tolist()
    n = max(n, 1.0)
    model.train()
    return {"test_loss": loss_sum / n, "test_top1_err": _err(c1, n), "test_top5_err": _err(c5, n)}


def _err(correct: float, n: float) -> float:
    """Error in %, rounded to 4 decimals (``100 * (n - correct) / n``)."""
    return round(100.0 * (n - correct) / n, 4)


def _progress(cfg: Config, d: Dist, total: int, desc: str):
    if not (cfg.progress and d.main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, file=sys.stderr)


def _log(d: Dist, msg: str) -> None:
    if d.main:
        print(msg, flush=True)


# ----------------------------------------------------------------------------- checkpoints

def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`run` (``weights_only=True``).

    Keys: ``model`` (state_dict of the plain module), ``optimizer``, ``scheduler``,
    ``scaler`` (or None), ``epoch`` (epochs completed), ``rng``, ``config`` (dict),
    ``history`` (list of per-epoch rows), ``best`` (the best row or None).
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def _resolve_resume(cfg: Config, d: Dist) -> Optional[Path]:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        p = Path(cfg.out_dir) / "last.pt"
        if not p.exists():
            _log(d, f"--resume: no checkpoint at {p}; starting from scratch")
            return None
        return p
    p = Path(cfg.resume)
    if not p.exists():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint")
    return p


# ----------------------------------------------------------------------------- outputs

CSV_FIELDS = ("epoch", "lr", "train_loss", "train_top1_err", "train_top5_err",
              "test_top1_err", "test_top5_err", "images_per_s", "time_s")


def _write_csv(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})
    os.replace(tmp, path)


def _plot(path: Path, history: list[dict], title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], label="train loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    for key, lab in (("train_top1_err", "train top-1"), ("test_top1_err", "test top-1"),
                     ("test_top5_err", "test top-5")):
        a2.plot(ep, [r[key] for r in history], label=lab)
    a2.set_xlabel("epoch"), a2.set_ylabel("error (%)"), a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _summary(cfg: Config, history: list[dict], best: Optional[dict], wall: float, status: str) -> dict:
    last = history[-1] if history else None
    pick = lambda r, k: (r[k] if r else None)
    return {
        "status": status,
        "epochs_done": len(history),
        "best_top1_err": pick(best, "test_top1_err"), "best_top5_err": pick(best, "test_top5_err"),
        "best_epoch": pick(best, "epoch"),
        "last_top1_err": pick(last, "test_top1_err"), "last_top5_err": pick(last, "test_top5_err"),
        "last_epoch": pick(last, "epoch"),
        "images_per_s": pick(last, "images_per_s"),
        "wall_time_s": wall,
        "config": cfg.to_dict(),
    }


def result_table(summary: dict) -> str:
    """A one-row Markdown table of a run's result."""
    c = summary["config"]
    f = lambda v, fmt=".2f": "-" if v is None else format(v, fmt)
    return "\n".join([
        "| data set | model | mix | epochs | best top-1 err | best top-5 err | last top-1 err "
        "| last top-5 err | images/s | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {c['dataset']} | {c['model']} | {c['mix_aug']} (p={c['mix_prob']:g}) | "
        f"{summary['epochs_done']} | {f(summary['best_top1_err'])} | {f(summary['best_top5_err'])} | "
        f"{f(summary['last_top1_err'])} | {f(summary['last_top5_err'])} | "
        f"{f(summary['images_per_s'], '.0f')} | "
        f"{summary['wall_time_s']:.1f} s |",
    ])


# ----------------------------------------------------------------------------- run

def run(cfg: Config) -> dict:
    """Train (or continue) one run and return its summary (``summary.json``'s content).

    Raises:
        KeyboardInterrupt: after saving the summary, when interrupted (``last.pt`` holds the
            last completed epoch).
    """
    d = setup_distributed(cfg)
    if cfg.batch_size % d.world:
        raise UsageError(f"--batch_size {cfg.batch_size} must be divisible by the number of "
                         f"processes ({d.world})")
    out = Path(cfg.out_dir)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if d.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    ckpt_path = _resolve_resume(cfg, d)  # a bad --resume fails before any data work
    train_loader, test_loader = build_loaders(cfg, d)
    net = build_model(cfg.model, cfg.num_classes, cfg.image_size).to(d.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                     gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(d.device.type) if cfg.amp == "fp16" else None
    history: list[dict] = []
    best: Optional[dict] = None
    start_epoch, wall_before = 0, 0.0

    if ckpt_path is not None:
        ck = load_checkpoint(ckpt_path, map_location=d.device)
        old = ck.get("config", {})
        for key in ("dataset", "model", "num_classes", "image_size"):
            if key in old and old[key] != getattr(cfg, key):
                raise UsageError(f"--resume {ckpt_path}: checkpoint has {key}={old[key]!r}, "
                                 f"this run {key}={getattr(cfg, key)!r}")
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        start_epoch = int(ck["epoch"])
        history, best = list(ck.get("history", [])), ck.get("best")
        wall_before = float(ck.get("wall_time_s", 0.0))
        _log(d, f"resumed from {ckpt_path} after epoch {start_epoch}")

    model: nn.Module = net
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    # Evaluation runs the module itself on each rank's shard (no DDP hooks needed).
    eval_model = model if not d.enabled else (torch.compile(net) if cfg.compile else net)
    mixer = build_mixer(cfg)

    if d.main:
        with open(out / "config.json", "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
        _log(d, f"{cfg.dataset}: {cfg.model}, {cfg.mix_aug} p={cfg.mix_prob:g}, {cfg.epochs} epochs, "
                f"batch {cfg.batch_size} on {d.world} x {d.device}, loader {cfg.loader}; out {out}")
    t_start = time.perf_counter()
    status = "finished"
    try:
        for epoch in range(start_epoch, cfg.epochs):
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            tr = train_one_epoch(cfg, d, model, net, train_loader, mixer, optimizer, scaler, epoch)
            te = evaluate(cfg, d, eval_model, test_loader)
            scheduler.step()
            row = {"epoch": epoch + 1, "lr": lr, **tr, **te, "time_s": time.perf_counter() - t0}
            history.append(row)
            is_best = best is None or row["test_top1_err"] <= best["test_top1_err"]
            if is_best:
                best = row
            if d.main:
                ck = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict() if scaler is not None else None,
                      "epoch": epoch + 1, "rng": rng_state(), "config": cfg.to_dict(),
                      "history": history, "best": best,
                      "wall_time_s": wall_before + time.perf_counter() - t_start}
                _atomic_save(ck, out / "last.pt")
                if is_best:
                    _atomic_save(ck, out / "best.pt")
                _write_csv(out / "log.csv", history)
                _log(d, f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.4g}  loss {row['train_loss']:.4f}  "
                        f"train err {row['train_top1_err']:.2f}  test err {row['test_top1_err']:.2f} / "
                        f"{row['test_top5_err']:.2f}  {row['images_per_s']:.0f} img/s  {row['time_s']:.1f} s")
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        wall = wall_before + time.perf_counter() - t_start
        summary = _summary(cfg, history, best, wall, status)
        if d.main and out.exists():
            with open(out / ".summary.json.tmp", "w") as f:
                json.dump(summary, f, indent=2)
            os.replace(out / ".summary.json.tmp", out / "summary.json")
            if history:
                _plot(out / "curves.png", history, f"{cfg.dataset} {cfg.model} {cfg.mix_aug}")
    return summary


def evaluate_checkpoint(path: str | os.PathLike, *, data_dir: Optional[str] = None,
                        device: str = "cpu", limit_test_batches: Optional[int] = None) -> dict[str, float]:
    """Test errors of a checkpoint's weights on its data set's test split (one process)."""
    ck = load_checkpoint(path)
    cfg = Config(**{k: v for k, v in ck["config"].items() if k in {f.name for f in dataclasses.fields(Config)}})
    cfg.milestones = tuple(cfg.milestones)
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    cfg.device, cfg.limit_test_batches, cfg.mix_aug = device, limit_test_batches, "none"
    cfg.saliency_cache = None
    d = Dist(device=torch.device(device))
    _, test = build_loaders(dataclasses.replace(cfg, limit_train_batches=1, batch_size=1), d)
    test.limit = limit_test_batches
    net = build_model(cfg.model, cfg.num_classes, cfg.image_size).to(d.device)
    net.load_state_dict(ck["model"])
    return evaluate(cfg, d, net, test)


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point: 0 on success, 2 on a usage/data error, 130 on Ctrl-C."""
    try:
        cfg = parse_config(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from .cache import CacheMismatchError

    d_main = int(os.environ.get("RANK", "0")) == 0
    try:
        summary = run(cfg)
    except (UsageError, FileNotFoundError, CacheMismatchError) as e:
        what = "saliency cache mismatch" if isinstance(e, CacheMismatchError) else "error"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, CacheMismatchError):
            msg += f" (delete it to rebuild, or pass another --saliency-cache)"
        print(f"{PROG}: {what}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if d_main:
            print(f"\n{PROG}: interrupted; {cfg.out_dir}/last.pt holds the last completed epoch. "
                  f"Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if d_main:
        print(result_table(summary))
        print(f"outputs in {cfg.out_dir}: log.csv, summary.json, curves.png, last.pt, best.pt")
    return 0
