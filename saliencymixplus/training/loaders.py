"""Loaders that yield device tensors ``(images, saliency or None, labels)``: :class:`DeviceLoader`
for in-memory sets, :class:`TorchLoader` for sets read from files; :func:`build_loaders` picks
one. The training split's saliency cache must exist. See docs/design.md, "Training".
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..cache import SaliencyCache, quantize
from ..data import SaliencyDataset
from ..datasets import SPLITS, get_spec
from ..rawdata import RawSplit, default_workers
from ..transforms import Normalize, eval_transform, random_flip_batch, train_transform
from .config import Config, UsageError
from .distributed import Dist, epoch_seed, seed_worker

__all__ = ["Batch", "BatchPlacement", "DeviceLoader", "TorchLoader", "build_loaders", "split_loader"]

#: ``(images float32[B, 3, H, W] normalised, saliency float32[B, H, W] in [0, 1] or None,
#: labels int64[B])``, all on the loader's device.
Batch = tuple[Tensor, Optional[Tensor], Tensor]


class BatchPlacement(NamedTuple):
    """Where a :class:`DeviceLoader` batch's images came from: ``indices`` (``LongTensor[B]``), their
    rows in the data set and in the stored maps, and ``flip``, ``offsets`` and ``pad`` as
    :func:`saliencymixplus.refresh.to_stored_frame` takes them to carry maps back into that frame.
    """

    indices: Tensor
    flip: Optional[Tensor]
    offsets: Optional[tuple[Tensor, Tensor]]
    pad: int


class DeviceLoader:
    """A whole in-memory data set on one device, augmented there in batches (airbench style).

    Holds ``images`` as ``uint8[N, 3, H, W]`` and optional ``saliency`` as ``uint8[N, H, W]`` on
    ``device``. Each epoch draws one permutation (each rank takes its ``rank::world`` share); for
    training, whole batches only, each with a random crop with ``pad`` zero pixels of padding and a
    horizontal flip, identically to image and saliency.

    Args:
        images: ``np.uint8[N, H, W, 3]`` RGB.
        labels: ``[N]`` integer class indices.
        mean_std: ``(mean, std)`` of the normalisation (:class:`~saliencymixplus.transforms.Normalize`).
        saliency: ``np.uint8[N, h, w]`` (resized bilinearly to ``H x W`` when it differs).
        size: draw from the first ``size`` images only (all ``N`` are held, so rows stay those of
            the stored maps); ``None``: all.

    Yields :data:`Batch` triples.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean_std, device: torch.device, *,
                 batch_size: int, train: bool, saliency: Optional[np.ndarray] = None,
                 pad: int = 0, flip: bool = True, dist_: Dist = Dist(), channels_last: bool = False,
                 size: Optional[int] = None):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be np.uint8[N, H, W, 3], got {images.dtype}{list(images.shape)}")
        self.device = device
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
        self.size = len(self.labels) if size is None else size
        self.saliency = None
        if saliency is not None:
            s = torch.from_numpy(np.ascontiguousarray(saliency))
            H, W = self.images.shape[-2:]
            if s.shape[-2:] != (H, W):  # cache stored at another resolution
                s = F.interpolate(s[:, None].float(), size=(H, W), mode="bilinear",
                                  align_corners=False)[:, 0].round().clamp(0, 255).to(torch.uint8)
            self.saliency = s.to(device)
        self.normalize = Normalize(*mean_std)
        self.batch_size, self.train, self.pad, self.flip = batch_size, train, pad, flip
        self.dist, self.channels_last = dist_, channels_last
        self.seed, self.epoch = 0, 0
        self.limit: Optional[int] = None
        self.last_batch: Optional[BatchPlacement] = None

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        n = len(range(self.dist.rank, self.size, self.dist.world))
        steps = n // self.batch_size if self.train else math.ceil(n / self.batch_size)
        return min(steps, self.limit) if self.limit else steps

    def _augment(self, x: Tensor, s: Optional[Tensor], g: torch.Generator) -> tuple[Tensor, Optional[Tensor]]:
        """Random padded crop and flip of ``x`` uint8[B, 3, H, W] and ``s`` uint8[B, H, W] alike."""
        B, C, H, W = x.shape
        dev = x.device
        dy = dx = flip = None
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
            x, s, flip = random_flip_batch(x, s, generator=g, return_flips=True)
        self.last_batch = self.last_batch._replace(flip=flip, offsets=None if dy is None else (dy, dx), pad=self.pad)
        return x, s

    def __iter__(self) -> Iterator[Batch]:
        n = self.size
        shard = slice(self.dist.rank, n, self.dist.world)
        if self.train:
            g_cpu = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))  # same on all ranks
            order = torch.randperm(n, generator=g_cpu)[shard].to(self.device)
            g = torch.Generator(device=self.device)
            g.manual_seed(epoch_seed(self.seed, self.epoch, self.dist.rank + 1))
        else:
            order = torch.arange(n, device=self.device)[shard]
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            self.last_batch = BatchPlacement(idx, None, None, 0)
            x = self.images[idx]
            s = self.saliency[idx] if self.saliency is not None else None
            if self.train:
                x, s = self._augment(x, s, g)
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, (s.float() / 255.0 if s is not None else None), self.labels[idx]


class TorchLoader:
    """A ``DataLoader`` over a :class:`saliencymixplus.data.SaliencyDataset` yielding :data:`Batch` triples
    on ``device`` (saliency travels from the workers as uint8). Training uses a ``DistributedSampler``
    under DDP; the test split is sharded ``rank::world`` without padding, so reduced errors are exact.
    """

    def __init__(self, dataset, device: torch.device, *, batch_size: int, train: bool,
                 workers: int, dist_: Dist = Dist(), channels_last: bool = False, size: Optional[int] = None):
        #: The whole split's data set (with its cache), whatever ``size`` and sharding take of it.
        self.dataset = dataset
        if size is not None and size < len(dataset):
            dataset = Subset(dataset, range(size))
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
            drop_last=train, generator=self.generator, worker_init_fn=seed_worker,
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
        for batch in itertools.islice(self.loader, len(self)):
            if len(batch) == 3:
                x, s, y = batch
                s = s.to(self.device, non_blocking=True)
                if s.dtype == torch.uint8:  # the cache's storage: a quarter of the bytes until here
                    s = s.float().div_(255.0)
            else:
                (x, y), s = batch, None
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, s, y.to(self.device, non_blocking=True)


def build_loaders(cfg: Config, d: Dist, splits: Optional[tuple[RawSplit, RawSplit]] = None
                  ) -> tuple[DeviceLoader | TorchLoader, DeviceLoader | TorchLoader]:
    """``(train_loader, test_loader)`` over ``splits`` (``(train, test)`` as rank 0 has loaded them),
    else the splits loaded here."""
    spec = get_spec(cfg.dataset)
    train_raw, test_raw = splits or [spec.load(cfg.data_dir, s, download=cfg.download and d.main) for s in SPLITS]
    size = cfg.train_count(len(train_raw))
    cache = SaliencyCache(cfg.saliency_cache, expect=train_raw) if cfg.saliency_cache is not None else None
    train = split_loader(cfg, d, train_raw, train=True, cache=cache, size=size)
    if len(train) == 0:
        raise UsageError(f"--batch_size {cfg.batch_size} is larger than the {size} training images "
                         f"({d.world} process(es)): no full batch to train on")
    return train, split_loader(cfg, d, test_raw, train=False)


def split_loader(cfg: Config, d: Dist, raw: RawSplit, *, train: bool, cache: Optional[SaliencyCache] = None,
                 size: Optional[int] = None) -> DeviceLoader | TorchLoader:
    """The loader of one split for ``--loader``: training (its first ``size`` images, with ``cache``'s
    maps) or test, each limited by its ``--limit-*-batches``."""
    local_batch = cfg.batch_size // d.world
    common = dict(train=train, size=size, dist_=d, channels_last=cfg.channels_last)
    if cfg.loader == "device":
        sal = None if cache is None else cache.read_all()
        if sal is not None and sal.dtype != np.uint8:  # float caches: to the uint8 the loader keeps
            sal = quantize(sal, "uint8")
        loader = DeviceLoader(raw.images, raw.labels, (cfg.mean, cfg.std), d.device, saliency=sal,
                              batch_size=local_batch if train else max(local_batch, 256),
                              flip=get_spec(cfg.dataset).recipe.flip, **common)
    else:
        workers = cfg.workers if cfg.workers is not None else max(0, min(8, default_workers() // d.world - 1))
        transform = (train_transform if train else eval_transform)(cfg.dataset, cfg.image_size, (cfg.mean, cfg.std))
        loader = TorchLoader(SaliencyDataset(raw, transform, cache), d.device, batch_size=local_batch,
                             workers=workers, **common)
    loader.limit = cfg.limit_train_batches if train else cfg.limit_test_batches
    return loader
