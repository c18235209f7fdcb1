"""``train.py --saliency refresh``: the saliency cache, refreshed with the model's own saliency.

Two ways, by loader:

* :class:`~.loaders.DeviceLoader` (in-memory sets: demo, CIFAR-100): the maps live on the
  device (``DeviceLoader.saliency``, ``uint8[N, H, W]``). On every step the ``--mix_prob`` coin
  leaves unmixed, the input keeps its gradient from the step's own backward pass, and
  :class:`~saliencymixplus.refresh.SaliencyRefresh` writes its saliency back into those maps,
  through the batch's flips and crop offsets (``DeviceLoader.last_batch``), in place; mixed
  steps read the freshest maps. Under DDP each rank refreshes the images it trains on and the
  ranks exchange their updates once per epoch.
* :class:`~.loaders.TorchLoader` (sets read from files, ``DataLoader`` workers: Oxford-IIIT
  Pet): the workers' random crops are not known to the main process, so every
  ``--refresh-every`` epochs a batched pass computes the gradient saliency of the current
  model over the training split, each image resized to the stored maps' resolution (the frame
  the maps are stored in), on the model's device (each rank its share); the next epoch's
  workers read the new maps.

After every epoch the maps are saved in the run folder as ``saliency-refresh-e{EPOCH}.h5`` (the
cache format, method ``gradient_refresh``, attributes ``epoch`` and ``maps_sha256``); the
checkpoint records which file holds its maps, and ``--resume`` reads them back exactly. With
``--refresh-keep last`` only the files of ``last.pt`` and ``best.pt`` stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import data
from ..cache import SaliencyCache
from ..refresh import IDENTITY, SaliencyRefresh, load_refreshed, maps_digest, save_refreshed
from ..saliency import gradient_saliency
from ..transforms import normalize_batch
from .config import Config, UsageError
from .distributed import Dist, barrier, log
from .loaders import DeviceLoader

__all__ = ["RefreshRun", "build_refresh", "file_name", "CHECKPOINT_KEY"]

#: The checkpoint entry that names the refreshed maps of that checkpoint.
CHECKPOINT_KEY = "saliency_refresh"


def file_name(epoch: int) -> str:
    """The run folder's file of the maps after ``epoch`` epochs."""
    return f"saliency-refresh-e{epoch:04d}.h5"


def build_refresh(cfg: Config, d: Dist, train_loader, out: Path) -> Optional["RefreshRun"]:
    """A :class:`RefreshRun` for ``--saliency refresh``, else ``None``."""
    if cfg.saliency != "refresh" or cfg.saliency_cache is None:
        return None
    return RefreshRun(cfg, d, train_loader, out)


def _dataset_with_cache(loader):
    """The dataset behind a :class:`~.loaders.TorchLoader` that holds the saliency cache."""
    ds = getattr(loader, "loader", loader)
    for _ in range(4):
        ds = getattr(ds, "dataset", None)
        if ds is None:
            break
        if getattr(ds, "cache", None) is not None:
            return ds
    raise UsageError("--saliency refresh: the training loader has no saliency cache to refresh")


class _StoredFrameImages(torch.utils.data.Dataset):
    """Training images resized to the stored maps' resolution: ``(uint8[3, h, w], label, index)``."""

    def __init__(self, raw, resolution: tuple[int, int], indices: range):
        self.raw, self.resolution, self.indices = raw, tuple(resolution), indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        from torchvision.transforms.v2 import functional as TF

        i = self.indices[k]
        img = torch.from_numpy(np.ascontiguousarray(self.raw.image(i))).permute(2, 0, 1)
        if tuple(img.shape[-2:]) != self.resolution:
            img = TF.resize(img, list(self.resolution), antialias=True)
        return img, int(self.raw.labels[i]), i


class RefreshRun:
    """The refreshed maps of one run: updates (:meth:`track`, :meth:`write_back`,
    :meth:`end_epoch`), the per-epoch files (:meth:`record`, :meth:`prune`) and ``--resume``
    (:meth:`restore`). Every rank holds one; only rank 0 writes files."""

    def __init__(self, cfg: Config, d: Dist, train_loader, out: Path):
        self.cfg, self.d, self.loader, self.out = cfg, d, train_loader, Path(out)
        src = SaliencyCache(cfg.saliency_cache, in_memory=False)  # already checked against the split
        self.like = {k: src.attrs[k] for k in IDENTITY}
        self.source = {"source": Path(cfg.saliency_cache).name, "source_method": str(src.attrs["method"])}
        self.in_step = isinstance(train_loader, DeviceLoader)
        if self.in_step:
            if train_loader.saliency is None:
                raise UsageError("--saliency refresh: the device loader holds no saliency maps")
            self.store = SaliencyRefresh(train_loader.saliency, postprocess=cfg.refresh_postprocess)
        else:
            self.dataset = _dataset_with_cache(train_loader)
            self.resolution = tuple(int(v) for v in src.attrs["resolution"])
            self.store = None
        self.current: Optional[dict] = None  # the file of the latest saved maps (record)
        self.best_file: Optional[str] = None

    # -- the training step (device loader)
    def track(self, x: Tensor) -> Tensor:
        """``x`` set to keep its input gradient (device loader), else ``x`` unchanged."""
        return self.store.track(x) if self.in_step else x

    def write_back(self, x: Tensor) -> None:
        """After ``backward()``: the saliency of ``x.grad`` into the maps of the batch the
        loader yielded last (device loader; a no-op otherwise)."""
        if self.in_step and x.grad is not None:
            p = self.loader.last_batch
            self.store.update(p.indices, x.grad, flip=p.flip, offsets=p.offsets, pad=p.pad)

    # -- the end of an epoch
    def end_epoch(self, epoch: int, net: nn.Module) -> None:
        """After training epoch ``epoch`` (1-based): exchange the ranks' updates, or run the
        ``--refresh-every`` pass; rank 0 saves the maps. Collective: every rank calls it."""
        if self.in_step:
            self.store.synchronize()
            maps = self.store.maps
        elif epoch % self.cfg.refresh_every == 0:
            maps = self._pass(net)
        else:
            return
        name, host = file_name(epoch), maps.cpu().numpy()
        if self.d.main:
            save_refreshed(self.out / name, host, like=self.like, epoch=epoch,
                           postprocess=self.cfg.refresh_postprocess,
                           extra_attrs={**self.source, "model": self.cfg.model, "seed": self.cfg.seed})
        self.current = {"file": name, "epoch": epoch, "maps_sha256": maps_digest(host)}
        if not self.in_step:
            barrier(self.d)
            self._use_file(self.out / name)

    def _pass(self, net: nn.Module) -> Tensor:
        """Gradient saliency of ``net`` over the training split at the stored resolution,
        ``uint8[N, h, w]`` on the device, the same on every rank."""
        cfg, d = self.cfg, self.d
        raw = data.load_split(cfg.dataset, cfg.data_dir, "train")
        n = len(raw)
        maps = torch.zeros((n, *self.resolution), dtype=torch.uint8, device=d.device)
        store = SaliencyRefresh(maps, postprocess=cfg.refresh_postprocess)
        ds = _StoredFrameImages(raw, self.resolution, range(d.rank, n, d.world))
        workers = getattr(getattr(self.loader, "loader", None), "num_workers", 0)
        dl = torch.utils.data.DataLoader(ds, batch_size=max(1, cfg.batch_size // d.world), num_workers=workers,
                                         pin_memory=d.device.type == "cuda")
        from .reporting import progress

        bar = progress(cfg, d, len(dl), "refresh saliency")
        for img, y, idx in dl:
            x = normalize_batch(img.to(d.device, non_blocking=True), cfg.dataset)
            store.update_maps(idx.to(d.device), gradient_saliency(net, x, y.to(d.device)))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        store.synchronize()
        return maps

    def _use_file(self, path: Path) -> None:
        """Point the training set at the maps in ``path`` (torch loader; its next workers read them)."""
        self.dataset.cache = SaliencyCache(path)

    # -- checkpoints and files
    def record(self, is_best: bool) -> Optional[dict[str, Any]]:
        """The checkpoint's :data:`CHECKPOINT_KEY` entry: which file holds its maps."""
        if self.current is None:
            return None
        if is_best:
            self.best_file = self.current["file"]
        return {**self.current, "best_file": self.best_file}

    def prune(self) -> None:
        """``--refresh-keep last``: delete the run folder's refreshed maps that neither the last
        nor the best checkpoint names (rank 0, after both are saved)."""
        if self.cfg.refresh_keep == "all" or not self.d.main or self.current is None:
            return
        keep = {self.current["file"], self.best_file}
        for p in self.out.glob("saliency-refresh-e*.h5"):
            if p.name not in keep:
                p.unlink(missing_ok=True)

    def restore(self, ck: dict, ckpt_path: Path) -> None:
        """``--resume``: load the maps the checkpoint names (from the checkpoint's folder),
        exactly, into the loader. A checkpoint without refreshed maps leaves the cache's.

        Raises:
            UsageError: the file is missing or is not the one the checkpoint names.
        """
        rec = ck.get(CHECKPOINT_KEY)
        if not rec:
            log(self.d, f"--resume: {ckpt_path} holds no refreshed saliency; refreshing from {self.source['source']}")
            return
        path = Path(ckpt_path).parent / rec["file"]
        try:
            maps = load_refreshed(path, like=self.like, epoch=rec["epoch"], digest=rec["maps_sha256"])
        except FileNotFoundError:
            raise UsageError(f"--resume {ckpt_path}: its refreshed saliency {path} is missing "
                             f"(deleted? --refresh-keep all keeps every epoch's)") from None
        except ValueError as e:
            raise UsageError(f"--resume {ckpt_path}: {str(e).splitlines()[0]}") from None
        if self.in_step:
            if tuple(maps.shape) != tuple(self.store.maps.shape):
                raise UsageError(f"--resume {ckpt_path}: {path} holds maps {list(maps.shape)}, the loader "
                                 f"{list(self.store.maps.shape)}")
            self.store.maps.copy_(torch.from_numpy(maps))
        else:
            self._use_file(path)
        self.current, self.best_file = {k: rec[k] for k in ("file", "epoch", "maps_sha256")}, rec.get("best_file")
        log(self.d, f"--resume: refreshed saliency of epoch {rec['epoch']} from {path}")

