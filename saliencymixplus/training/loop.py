"""One training epoch (with the mixing step), one evaluation pass, and ``--saliency refresh`` as
two strategies, one per loader (:class:`InPlaceRefresh`, :class:`PassRefresh`). The per-step
totals stay on the device; the host syncs only for the progress bar and the NaN check. See
docs/design.md, "Training" and "Saliency that learns".
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .. import mix
from ..cache import SaliencyCache
from ..checkpoint_file import CheckpointFileError
from ..data import SaliencyDataset
from ..interrupts import raise_if_interrupted
from ..refresh import IDENTITY, SaliencyRefresh, load_refreshed, maps_digest, save_refreshed
from ..saliency import gradient_saliency
from ..transforms import Normalize
from .config import SALIENCY_MIXES, Config
from .distributed import Dist, barrier, broadcast_buffers, epoch_seed, log, seed_everything

__all__ = ["Mixer", "build_mixer", "progress", "train_one_epoch", "evaluate", "NonFiniteLossError",
           "InPlaceRefresh", "PassRefresh", "refresh_file", "REFRESH_KEY"]

#: The mixers of :mod:`saliencymixplus.mix` (``coin``, then ``mix``).
Mixer = mix.CutMix | mix.SaliencyMix | mix.SaliencyMixPlus

LOG_EVERY = 10  # steps between progress-bar updates (each one syncs with the device)


class NonFiniteLossError(RuntimeError):
    """The training loss, or the weights, became NaN or infinite: the run diverged."""

    def __init__(self, message: str):
        super().__init__(f"{message}: the run diverged")


def _check_finite(epoch: int, step: int, loss_sum: float, net: Optional[nn.Module] = None) -> None:
    """:class:`NonFiniteLossError` when the loss total seen by ``step`` is NaN or inf, or a parameter
    or buffer of ``net`` is (after the epoch: a step's loss is computed before its update)."""
    if not math.isfinite(loss_sum):
        raise NonFiniteLossError(f"the training loss is {loss_sum} in epoch {epoch + 1} (seen by step {step + 1})")
    if net is None:
        return
    with torch.no_grad():
        named = [(k, v) for k, v in net.state_dict().items() if v.is_floating_point()]
        ok = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist() if named else []
    bad = [k for (k, _), good in zip(named, ok) if not good]
    if bad:
        raise NonFiniteLossError(f"the weights are not finite after epoch {epoch + 1} ({', '.join(bad[:3])}"
                                 f"{', ...' if len(bad) > 3 else ''})")


def build_mixer(cfg: Config) -> Optional[Mixer]:
    """The mixer of the config, or ``None`` for ``--mix_aug none``."""
    common = dict(alpha=cfg.alpha, prob=cfg.mix_prob, label_smoothing=cfg.label_smoothing, lam_mode=cfg.lam_mode)
    if cfg.mix_aug == "none":
        return None
    if cfg.mix_aug == "saliencymixplus":
        return mix.SaliencyMixPlus(cfg.num_classes, **common, box=cfg.box, pairing=cfg.pairing)
    return {"cutmix": mix.CutMix, "saliencymix": mix.SaliencyMix}[cfg.mix_aug](cfg.num_classes, **common)


def progress(cfg: Config, d: Dist, total: int, desc: str):
    """A ``tqdm`` bar on stderr, disabled (``bar.disable``) by ``--no-progress`` and on ranks but 0."""
    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, file=sys.stderr,
                disable=not (cfg.progress and d.main))


def _autocast(cfg: Config, device: torch.device):
    if cfg.amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _topk_correct(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 and top-5 hits (0-d int64 tensors) of ``logits[B, K]`` against ``labels[B]``."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return hit[:, 0].sum(), hit.any(1).sum()


def _err(correct: float, n: float) -> float:
    return round(100.0 * (n - correct) / n, 4)


def _reduce(d: Dist, tot: Tensor, n: int) -> tuple[float, float, float, float]:
    """Sum ``(loss * n, top-1 hits, top-5 hits)`` and the image count ``n`` (at least 1) over ranks."""
    tot = torch.cat([tot, tot.new_tensor([float(n)])])
    if d.enabled:
        dist.all_reduce(tot)
    loss_sum, c1, c5, n_all = tot.tolist()
    return loss_sum, c1, c5, max(n_all, 1.0)


def train_one_epoch(cfg: Config, d: Dist, model: nn.Module, net: nn.Module, loader, mixer: Optional[Mixer],
                    optimizer: torch.optim.Optimizer, scaler, epoch: int, refresh=None) -> dict[str, float]:
    """One pass over ``loader``. ``model`` is what is trained (maybe DDP/compiled), ``net`` the plain
    module; ``refresh`` the ``--saliency refresh`` strategy or ``None``. Returns the epoch's train
    loss, top-1/top-5 error (%, of the trained images against their own labels, as published) and
    images/s. The loss is checked (:class:`NonFiniteLossError`) where the totals are read anyway
    (the progress bar, or every ``LOG_EVERY`` steps on a CPU) and on the totals reduced over ranks."""
    model.train()
    coin = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0) + 1)  # same on all ranks
    mix_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, d.rank) + 2)
    seed_everything(epoch_seed(cfg.seed, epoch, d.rank))
    loader.set_epoch(cfg.seed, epoch)
    dev = d.device
    online = cfg.saliency == "online" and cfg.mix_aug in SALIENCY_MIXES
    store = None if refresh is None else refresh.store
    tot = torch.zeros(3, dtype=torch.float64, device=dev)  # loss * n, top-1 hits, top-5 hits
    seen = 0
    t0 = time.perf_counter()
    with progress(cfg, d, len(loader), f"epoch {epoch + 1}/{cfg.epochs}") as bar:
        for step, (x, s, y) in enumerate(loader):
            mixed = mixer is not None and mixer.coin(coin)
            if mixed:
                if online:
                    s = gradient_saliency(net, x, y)
                r = mixer.mix(x, y, s, generator=mix_gen, mixed=True)
                x, targets, y = r.images, r.targets, r.labels  # B // 2 of them with half-batch pairing
            else:
                targets = mix.one_hot(y, cfg.num_classes, cfg.label_smoothing)
                if store is not None:  # --saliency refresh in place: keep this unmixed step's input gradient
                    x = store.track(x)
            with _autocast(cfg, dev):
                logits = model(x)
            loss = mix.soft_target_cross_entropy(logits.float(), targets.to(dev))
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if store is not None and not mixed and x.grad is not None:
                p = loader.last_batch  # ... and write its saliency back into the stored maps
                store.update(p.indices, x.grad, flip=p.flip, offsets=p.offsets, pad=p.pad)
            raise_if_interrupted()
            with torch.no_grad():
                n = x.shape[0]
                c1, c5 = _topk_correct(logits.detach(), y)
                tot += torch.stack([loss.detach().double() * n, c1.double(), c5.double()])
                seen += n
            if (not bar.disable or (dev.type == "cpu" and not d.enabled)) and \
                    (step % LOG_EVERY == LOG_EVERY - 1 or step == len(loader) - 1):
                loss_sum, hits, _ = tot.tolist()
                if not d.enabled:  # under DDP: the reduced check below, so that every rank stops together
                    _check_finite(epoch, step, loss_sum)
                if bar.disable:
                    continue
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", err=f"{100 - 100 * hits / seen:.1f}",
                                img_s=f"{seen * d.world / max(el, 1e-9):.0f}", refresh=False)
                bar.update(step + 1 - bar.n)
    loss_sum, c1, c5, n = _reduce(d, tot, seen)
    _check_finite(epoch, len(loader) - 1, loss_sum, net)
    elapsed = time.perf_counter() - t0
    return {"train_loss": loss_sum / n, "train_top1_err": _err(c1, n), "train_top5_err": _err(c5, n),
            "images_per_s": n / max(elapsed, 1e-9), "train_time_s": elapsed}


@torch.no_grad()
def evaluate(cfg: Config, d: Dist, model: nn.Module, loader) -> dict[str, float]:
    """Top-1/top-5 error (%) and mean cross-entropy on ``loader`` of rank 0's model (the checkpoint's:
    :func:`~.distributed.broadcast_buffers`), reduced exactly over ranks."""
    broadcast_buffers(d, model)
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64, device=d.device)  # loss sum, top-1 hits, top-5 hits
    seen = 0
    for x, _, y in loader:
        with _autocast(cfg, d.device):
            logits = model(x)
        c1, c5 = _topk_correct(logits, y)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        tot += torch.stack([loss.double(), c1.double(), c5.double()])
        seen += len(y)
        raise_if_interrupted()
    loss_sum, c1, c5, n = _reduce(d, tot, seen)
    return {"test_loss": loss_sum / n, "test_top1_err": _err(c1, n), "test_top5_err": _err(c5, n)}


# ----------------------------------------------------------------------------- --saliency refresh

#: The checkpoint entry that names the refreshed maps of that checkpoint.
REFRESH_KEY = "saliency_refresh"


def refresh_file(epoch: int) -> str:
    """The run folder's file of the maps after ``epoch`` epochs."""
    return f"saliency-refresh-e{epoch:04d}.h5"


class _Refresh:
    """What both strategies share: the per-epoch files in the run folder and ``--resume``. Every
    rank holds one; only rank 0 writes files. A strategy adds ``end_epoch(epoch, net)``, called by
    every rank after training epoch ``epoch`` (1-based), and ``_use(maps, path)``, which trains on
    the maps (``uint8[N, h, w]``) read from the refreshed file ``path``."""

    #: The maps that every unmixed step of :func:`train_one_epoch` refreshes in place, or ``None``.
    store: Optional[SaliencyRefresh] = None

    def __init__(self, cfg: Config, d: Dist, train_loader, out: Path):
        self.cfg, self.d, self.loader, self.out = cfg, d, train_loader, Path(out)
        src = SaliencyCache(cfg.saliency_cache, in_memory=False)  # already checked against the split
        self.like = {k: src.attrs[k] for k in IDENTITY}
        self.resolution = tuple(int(v) for v in src.attrs["resolution"])
        self.source = {"source": Path(cfg.saliency_cache).name, "source_method": str(src.attrs["method"])}
        self.current: Optional[dict] = None  # the file of the latest saved maps
        self.best_file: Optional[str] = None

    def _save(self, epoch: int, maps: Tensor) -> Path:
        """Rank 0 writes ``maps`` (``uint8[N, h, w]``, the same on every rank) as the epoch's file."""
        name, host = refresh_file(epoch), maps.cpu().numpy()
        if self.d.main:
            save_refreshed(self.out / name, host, like=self.like, epoch=epoch,
                           postprocess=self.cfg.refresh_postprocess,
                           extra_attrs={**self.source, "model": self.cfg.model, "seed": self.cfg.seed})
        self.current = {"file": name, "epoch": epoch, "maps_sha256": maps_digest(host)}
        return self.out / name

    def record(self, is_best: bool) -> Optional[dict[str, Any]]:
        """The checkpoint's :data:`REFRESH_KEY` entry: which file holds its maps."""
        if self.current is None:
            return None
        if is_best:
            self.best_file = self.current["file"]
        return {**self.current, "best_file": self.best_file}

    def prune(self) -> None:
        """``--refresh-keep last``: delete the refreshed maps neither checkpoint names (rank 0)."""
        if self.cfg.refresh_keep == "all" or not self.d.main or self.current is None:
            return
        keep = {self.current["file"], self.best_file}
        for p in self.out.glob("saliency-refresh-e*.h5"):
            if p.name not in keep:
                p.unlink(missing_ok=True)

    def restore(self, ck: dict, ckpt_path: Path) -> None:
        """``--resume``: train on the maps the checkpoint names (from its folder), if any; a missing
        or other file is a :class:`CheckpointFileError`."""
        rec = ck.get(REFRESH_KEY)
        if not rec:
            log(self.d, f"--resume: {ckpt_path} holds no refreshed saliency; refreshing from {self.source['source']}")
            return
        path = Path(ckpt_path).parent / rec["file"]
        try:
            maps = load_refreshed(path, like=self.like, epoch=rec["epoch"], digest=rec["maps_sha256"])
        except FileNotFoundError:
            raise CheckpointFileError(f"--resume {ckpt_path}: its refreshed saliency {path} is missing "
                                      f"(deleted? --refresh-keep all keeps every epoch's)") from None
        except ValueError as e:
            raise CheckpointFileError(f"--resume {ckpt_path}: {str(e).splitlines()[0]}") from None
        self._use(maps, path)
        self.current, self.best_file = {k: rec[k] for k in ("file", "epoch", "maps_sha256")}, rec.get("best_file")
        log(self.d, f"--resume: refreshed saliency of epoch {rec['epoch']} from {path}")


class InPlaceRefresh(_Refresh):
    """The device loader's strategy: its maps (``uint8[N, H, W]`` on the device) take the saliency
    of every unmixed step's input gradient, in place, through the batch's flips and crop."""

    def __init__(self, cfg: Config, d: Dist, train_loader, out: Path):
        super().__init__(cfg, d, train_loader, out)
        self.store = SaliencyRefresh(train_loader.saliency, postprocess=cfg.refresh_postprocess)

    def end_epoch(self, epoch: int, net: nn.Module) -> None:
        self.store.synchronize()
        self._save(epoch, self.store.maps)

    def _use(self, maps: np.ndarray, path: Path) -> None:
        if tuple(maps.shape) != tuple(self.store.maps.shape):
            raise CheckpointFileError(f"--resume: {path} holds maps {list(maps.shape)}, the loader "
                                      f"{list(self.store.maps.shape)}")
        self.store.maps.copy_(torch.from_numpy(maps))


def _in_stored_frame(image: np.ndarray, saliency, resolution: tuple[int, int]):
    """:class:`~saliencymixplus.data.SaliencyDataset`'s transform for the refresh pass: the image as
    ``uint8[3, h, w]`` at the stored maps' ``resolution``."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if tuple(img.shape[-2:]) != resolution:
        img = TF.resize(img, list(resolution), antialias=True)
    return img, saliency


class PassRefresh(_Refresh):
    """The ``DataLoader``'s strategy: every ``--refresh-every`` epochs a batched pass computes the
    gradient saliency over the training split in the stored frame; the next epoch reads the file."""

    def end_epoch(self, epoch: int, net: nn.Module) -> None:
        if epoch % self.cfg.refresh_every:
            return
        path = self._save(epoch, self._pass(net))
        barrier(self.d)
        self._use(None, path)

    def _use(self, maps: Optional[np.ndarray], path: Path) -> None:
        self.loader.dataset.cache = SaliencyCache(path)

    def _pass(self, net: nn.Module) -> Tensor:
        """Gradient saliency of ``net`` over the training split at the stored resolution,
        ``uint8[N, h, w]`` on the device, the same on every rank."""
        cfg, d = self.cfg, self.d
        raw = self.loader.dataset.dataset  # the split the loader reads
        n = len(raw)
        maps = torch.zeros((n, *self.resolution), dtype=torch.uint8, device=d.device)
        store = SaliencyRefresh(maps, postprocess=cfg.refresh_postprocess)
        rows = range(d.rank, n, d.world)
        batch = max(1, cfg.batch_size // d.world)
        ds = Subset(SaliencyDataset(raw, functools.partial(_in_stored_frame, resolution=self.resolution)), rows)
        dl = DataLoader(ds, batch_size=batch, num_workers=self.loader.loader.num_workers,
                        pin_memory=d.device.type == "cuda")
        normalize = Normalize(cfg.mean, cfg.std)
        with progress(cfg, d, len(dl), "refresh saliency") as bar:
            for (img, y), idx in zip(dl, torch.tensor(rows).split(batch)):
                x = normalize(img.to(d.device, non_blocking=True))
                store.update_maps(idx.to(d.device), gradient_saliency(net, x, y.to(d.device)))
                bar.update(1)
        store.synchronize()
        return maps
