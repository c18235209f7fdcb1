"""One training epoch (with the mixing step) and one evaluation pass.

Every epoch reseeds its random streams from ``(seed, epoch, rank)``, so that a resumed run
replays the interrupted epoch exactly. The per-step totals stay on the device; the only
host syncs are the progress bar's (every ``LOG_EVERY`` steps) and the end of the epoch.

A non-finite loss stops the run (:class:`NonFiniteLossError`) at the first of those syncs that
sees it: the loss total kept on the device is then not finite (NaN and inf propagate through
the sum), so detecting it costs no extra sync.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .. import mix
from ..saliency import gradient_saliency
from .config import SALIENCY_MIXES, Config
from .distributed import Dist, broadcast_buffers
from .reporting import progress
from .seeding import epoch_seed, seed_everything

__all__ = ["Mixer", "build_mixer", "online_saliency", "train_one_epoch", "evaluate", "NonFiniteLossError",
           "check_finite_weights"]

#: What the loop mixes with: ``coin(generator) -> bool`` (is this batch mixed?) and
#: ``mix(images, labels, saliency, generator=, mixed=) -> MixResult``, as the mixers of
#: :mod:`saliencymixplus.mix` have them.
Mixer = mix.CutMix | mix.SaliencyMix | mix.SaliencyMixPlus

LOG_EVERY = 10  # steps between progress-bar updates (each one syncs with the device)


class NonFiniteLossError(RuntimeError):
    """The training loss, or the weights, became NaN or infinite: the run diverged. ``epoch``
    (0-based) is the epoch it happened in."""

    def __init__(self, message: str, epoch: int = -1):
        super().__init__(f"{message}: the run diverged")
        self.epoch = epoch


def _check_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum):
        raise NonFiniteLossError(f"the training loss is {loss_sum} in epoch {epoch + 1} (seen by step {step + 1})",
                                 epoch)


def check_finite_weights(net: nn.Module, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` when a parameter or buffer of ``net`` holds NaN or inf
    after ``epoch`` (the loss of a step is computed before its update, so it can be finite while
    the update was not). One host sync, once per epoch, before the checkpoint that would save
    the weights."""
    with torch.no_grad():
        named = [(k, v) for k, v in net.state_dict().items() if v.is_floating_point()]
        if not named:
            return
        ok = torch.stack([torch.isfinite(v).all() for _, v in named])
        if bool(ok.all()):
            return
        bad = [k for (k, _), good in zip(named, ok.tolist()) if not good]
    raise NonFiniteLossError(f"the weights are not finite after epoch {epoch + 1} ({', '.join(bad[:3])}"
                             f"{', ...' if len(bad) > 3 else ''})", epoch)


def build_mixer(cfg: Config) -> Optional[Mixer]:
    """The mixer of the config (``prob=--mix_prob``), or ``None`` for ``--mix_aug none``. The
    loop asks its :meth:`~saliencymixplus.mix.CutMix.coin` first (so that online saliency is
    computed only for mixed batches), then calls ``mix(..., mixed=True)``."""
    common = dict(alpha=cfg.alpha, prob=cfg.mix_prob, label_smoothing=cfg.label_smoothing, lam_mode=cfg.lam_mode)
    if cfg.mix_aug == "none":
        return None
    if cfg.mix_aug == "cutmix":
        return mix.CutMix(cfg.num_classes, **common)
    if cfg.mix_aug == "saliencymix":
        return mix.SaliencyMix(cfg.num_classes, **common)
    return mix.SaliencyMixPlus(cfg.num_classes, **common, box=cfg.box, pairing=cfg.pairing)


def online_saliency(net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Gradient saliency ``float32[B, H, W]`` of ``net`` (unwrapped, not DDP) on ``images``
    ``float32[B, C, H, W]``, leaving the parameters' ``.grad`` and the BatchNorm statistics
    untouched."""
    return gradient_saliency(net, images, labels)


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
    """Error in %, rounded to 4 decimals (``100 * (n - correct) / n``)."""
    return round(100.0 * (n - correct) / n, 4)


def _reduce(d: Dist, tot: Tensor, n: int) -> tuple[float, float, float, float]:
    """Sum ``(loss * n, top-1 hits, top-5 hits)`` and the image count ``n`` over ranks;
    the count is at least 1."""
    tot = torch.cat([tot, tot.new_tensor([float(n)])])
    if d.enabled:
        dist.all_reduce(tot)
    loss_sum, c1, c5, n_all = tot.tolist()
    return loss_sum, c1, c5, max(n_all, 1.0)


def train_one_epoch(cfg: Config, d: Dist, model: nn.Module, net: nn.Module, loader, mixer: Optional[Mixer],
                    optimizer: torch.optim.Optimizer, scaler, epoch: int, refresh=None) -> dict[str, float]:
    """One pass over ``loader``. ``model`` is what is trained (maybe DDP/compiled), ``net``
    the plain module (for online saliency); ``refresh``: a :class:`~.refresh.RefreshRun`
    (``--saliency refresh``) or ``None``. Returns the epoch's train loss, top-1/top-5
    error (%, of the trained images against their own labels, as published), images/s.

    Raises:
        NonFiniteLossError: the loss was NaN or infinite; checked where the loop reads its totals
            anyway (the progress bar every ``LOG_EVERY`` steps in one process; on a CPU, where a
            read costs nothing, every ``LOG_EVERY`` steps regardless) and at the end of the epoch,
            on the totals reduced over ranks (so every rank stops together)."""
    model.train()
    coin = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0) + 1)  # same on all ranks
    mix_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, d.rank) + 2)
    seed_everything(epoch_seed(cfg.seed, epoch, d.rank))
    loader.set_epoch(cfg.seed, epoch)
    dev = d.device
    online = cfg.saliency == "online" and cfg.mix_aug in SALIENCY_MIXES
    tot = torch.zeros(3, dtype=torch.float64, device=dev)  # loss * n, top-1 hits, top-5 hits
    seen = 0
    bar = progress(cfg, d, len(loader), f"epoch {epoch + 1}/{cfg.epochs}")
    t0 = time.perf_counter()
    for step, (x, s, y) in enumerate(loader):
        mixed = mixer is not None and mixer.coin(coin)
        if mixed:
            if online:
                s = online_saliency(net, x, y)
            r = mixer.mix(x, y, s, generator=mix_gen, mixed=True)
            x, targets, y = r.images, r.targets, r.labels  # B // 2 of them with half-batch pairing
        else:
            targets = mix.one_hot(y, cfg.num_classes, cfg.label_smoothing)
            if refresh is not None:  # --saliency refresh: keep this unmixed step's input gradient
                x = refresh.track(x)
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
        if refresh is not None and not mixed:
            refresh.write_back(x)  # ... and write its saliency back into the stored maps
        with torch.no_grad():
            n = x.shape[0]
            c1, c5 = _topk_correct(logits.detach(), y)
            tot += torch.stack([loss.detach().double() * n, c1.double(), c5.double()])
            seen += n
        if (bar is not None or (dev.type == "cpu" and not d.enabled)) and \
                (step % LOG_EVERY == LOG_EVERY - 1 or step == len(loader) - 1):
            loss_sum, hits, _ = tot.tolist()
            if not d.enabled and not math.isfinite(loss_sum):  # under DDP: the reduced check below,
                if bar is not None:                               # so that every rank stops together
                    bar.close()
                _check_finite(loss_sum, epoch, step)
            if bar is None:
                continue
            el = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", err=f"{100 - 100 * hits / seen:.1f}",
                            img_s=f"{seen * d.world / max(el, 1e-9):.0f}", refresh=False)
            bar.update(step + 1 - bar.n)
    if bar is not None:
        bar.close()
    loss_sum, c1, c5, n = _reduce(d, tot, seen)
    _check_finite(loss_sum, epoch, len(loader) - 1)
    elapsed = time.perf_counter() - t0
    return {"train_loss": loss_sum / n, "train_top1_err": _err(c1, n), "train_top5_err": _err(c5, n),
            "images_per_s": n / max(elapsed, 1e-9), "train_time_s": elapsed}


@torch.no_grad()
def evaluate(cfg: Config, d: Dist, model: nn.Module, loader) -> dict[str, float]:
    """Top-1/top-5 error (%) and mean cross-entropy on ``loader``, reduced exactly over ranks.

    Every rank first takes rank 0's buffers (BatchNorm running statistics, which DDP lets
    drift apart during training), so that the result is exactly that of rank 0's model, the
    one the checkpoint holds, evaluated on the whole split."""
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
    loss_sum, c1, c5, n = _reduce(d, tot, seen)
    model.train()
    return {"test_loss": loss_sum / n, "test_top1_err": _err(c1, n), "test_top5_err": _err(c5, n)}
