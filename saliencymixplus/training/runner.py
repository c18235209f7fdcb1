"""One run from start (or ``--resume``) to summary: :func:`run`; and :func:`evaluate_checkpoint`
for the test errors of a saved model.

A checkpoint (``last.pt``) is written atomically after every epoch, so ``--resume`` after an
interruption replays the interrupted epoch exactly and ends with the same weights as an
uninterrupted run (on the same hardware and software). ``--batch_size`` is the *global*
batch, split evenly over the processes; evaluation is sharded and reduced exactly; only
rank 0 writes logs and checkpoints.

Before any training, and in this order, :func:`run` checks what can fail cheaply: that the
output folder (and the saliency cache's folder, when the cache must be built) can be written,
that the ``--resume`` checkpoint is readable and belongs to this run, that no image file is
truncated, and that the saliency cache is undamaged (every byte is hashed: about 1 s for
CIFAR-100) or, when missing, builds it (waiting for another process that builds the same
file). A non-finite training loss stops the run before that epoch's checkpoint is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .. import data
from ..cache import verify_cache
from ..files import OutputPathError, check_output_file, ensure_writable_dir
from ..checkpoint_file import load_checkpoint_model
from ..models import build_model
from ..precompute_command import rebuild_command
from ..rawdata import ImageDecodeError
from .checkpoints import checkpoint_state, read_resume, restore, save_checkpoint
from .config import Config, UsageError
from .distributed import Dist, barrier, log, setup_distributed
from .loaders import build_loaders
from .loop import NonFiniteLossError, build_mixer, check_finite_weights, evaluate, train_one_epoch
from .refresh import CHECKPOINT_KEY, build_refresh
from .reporting import plot_curves, summarize, write_csv, write_summary
from .seeding import seed_everything

__all__ = ["run", "evaluate_checkpoint", "check_outputs", "prepare_data"]


def check_outputs(cfg: Config) -> None:
    """Before any work: ``--out-dir`` is (or can be made) a writable folder, and a saliency
    cache that must be built can be written where it goes.

    Raises:
        OutputPathError: one line saying what and where.
    """
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out-dir {out} is a file, not a folder")
    ensure_writable_dir(out, "--out-dir")
    if not cfg.reads_cache:
        return
    cache = Path(cfg.saliency_cache)
    if cache.is_dir():
        raise OutputPathError(f"--saliency-cache {cache} is a folder; give the .h5 file "
                              f"(e.g. {cache / f'{cfg.dataset}-train-{cfg.saliency_method}.h5'})")
    if not cache.exists():
        try:
            check_output_file(cache, "--saliency-cache")
        except OutputPathError as e:
            how = rebuild_command(cfg.dataset, "train", cfg.saliency_method, "FILE.h5", data_dir=cfg.data_dir)
            raise OutputPathError(f"{e}: the saliency cache {cache} is missing and cannot be built there; "
                                  f"pass --saliency-cache FILE.h5 in a writable folder (built on first use, "
                                  f"or beforehand with: {how})") from None


def prepare_data(cfg: Config, d: Dist) -> None:
    """Rank 0 checks the data before training (other ranks wait): every image file of both
    splits looks whole (:meth:`~saliencymixplus.rawdata.RawSplit.find_bad_images`), and the
    saliency cache is undamaged and matches the training split
    (:func:`~saliencymixplus.cache.verify_cache`), or is built when missing (waiting while
    another process builds it; building decodes every training image). Every bad image found
    is named in one error.

    Raises:
        FileNotFoundError: missing data. ImageDecodeError: image files that cannot be decoded.
        CacheMismatchError / CacheCorruptError: the cache does not match or is damaged.
    """
    if d.main:
        train_raw = data.load_split(cfg.dataset, cfg.data_dir, "train", download=cfg.download)
        test_raw = train_raw if train_raw.in_memory else \
            data.load_split(cfg.dataset, cfg.data_dir, "test", download=cfg.download)
        bad = test_raw.find_bad_images() if test_raw is not train_raw else []
        build = cfg.reads_cache and not Path(cfg.saliency_cache).exists()
        if build:  # building decodes every training image and names those it cannot decode
            bad = _build_cache(cfg, d, bad)
        else:
            bad = train_raw.find_bad_images() + bad
        if bad:
            lists = "annotations/trainval.txt or test.txt" if cfg.dataset == "oxford_pet" else "its file list"
            raise ImageDecodeError.for_files(
                bad, cfg.dataset, f"Replace each with an intact copy, or delete its line from {lists}; "
                                  f"then run the same command again.")
        if cfg.reads_cache and not build:
            verify_cache(cfg.saliency_cache, expect=train_raw)
    barrier(d)


def _build_cache(cfg: Config, d: Dist, bad_test: list) -> list:
    """Build the missing training cache; return ``bad_test`` plus the training images the build
    could not decode (an :class:`ImageDecodeError` with other errors is re-raised)."""
    from ..precompute import build_cache  # OpenCV and worker pools: only when building

    log(d, f"saliency cache {cfg.saliency_cache} not found: building it ({cfg.saliency_method}) ...")
    try:
        build_cache(cfg.dataset, cfg.data_dir, "train", cfg.saliency_method, cfg.saliency_cache,
                    workers=cfg.workers, progress=cfg.progress, log=lambda m: log(d, m))
    except ImageDecodeError as e:
        if not e.bad:
            raise
        return list(e.bad) + bad_test
    return bad_test


def run(cfg: Config) -> dict:
    """Train (or continue) one run and return its summary (``summary.json``'s content).

    With ``--resume`` of a checkpoint that has done ``--epochs`` epochs already, nothing is
    trained or written: the summary is the checkpoint's.

    Raises:
        UsageError (CheckpointError), FileNotFoundError, OutputPathError, ImageDecodeError,
            CacheMismatchError (CacheCorruptError), BusyError: bad flags, a bad ``--resume``
            file, missing data, unwritable outputs, undecodable images, a cache built from
            other data or damaged (all before any training).
        NonFiniteLossError: the training loss became NaN or infinite; raised before that
            epoch's checkpoint is written (``last.pt`` holds the last good epoch, the summary
            says "diverged"); ``e.epochs_done`` is the number of good epochs.
        KeyboardInterrupt: after saving the summary, when interrupted (``last.pt`` holds the
            last completed epoch).
    """
    d = setup_distributed(cfg)
    if cfg.batch_size % d.world:
        raise UsageError(f"--batch_size {cfg.batch_size} must be divisible by the number of "
                         f"processes ({d.world})")
    out = Path(cfg.out_dir)
    if d.main:
        check_outputs(cfg)  # before any work
    seed_everything(cfg.seed)
    if d.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    resumed = read_resume(cfg, d)  # a bad --resume fails before any data work
    if resumed is not None and int(resumed[1]["epoch"]) >= cfg.epochs:
        ck = resumed[1]
        log(d, f"nothing to train: {resumed[0]} has already done all {cfg.epochs} epochs "
               f"(pass --epochs {cfg.epochs + 1} or more to train further)")
        history = list(ck.get("history") or [])
        summary = summarize(cfg, history, ck.get("best"), float(ck.get("wall_time_s", 0.0)), "finished")
        return {**summary, "nothing_to_train": True}
    prepare_data(cfg, d)
    train_loader, test_loader = build_loaders(cfg, d)
    net = build_model(cfg.model, cfg.num_classes, cfg.image_size).to(d.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                     gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(d.device.type) if cfg.amp == "fp16" else None
    refresh = build_refresh(cfg, d, train_loader, out)  # --saliency refresh, else None
    history: list[dict] = []
    best: Optional[dict] = None
    start_epoch, wall_before = 0, 0.0
    if resumed is not None:
        ckpt_path, ck = resumed
        restore(ck, ckpt_path, net, optimizer, scheduler, scaler)
        start_epoch = int(ck["epoch"])
        history, best = list(ck.get("history") or []), ck.get("best")
        wall_before = float(ck.get("wall_time_s", 0.0))
        if refresh is not None:
            refresh.restore(ck, ckpt_path)
        del ck, resumed  # the restored states live in the model, optimizer and refreshed maps now
        log(d, f"resumed from {ckpt_path} after epoch {start_epoch}")

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
        log(d, f"{cfg.dataset}: {cfg.model}, {cfg.mix_aug} p={cfg.mix_prob:g}, {cfg.epochs} epochs, "
               f"batch {cfg.batch_size} on {d.world} x {d.device}, loader {cfg.loader}; out {out}")
    t_start = time.perf_counter()
    status = "finished"
    try:
        for epoch in range(start_epoch, cfg.epochs):
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            tr = train_one_epoch(cfg, d, model, net, train_loader, mixer, optimizer, scaler, epoch, refresh)
            check_finite_weights(net, epoch)  # before anything of this epoch is saved
            if refresh is not None:
                refresh.end_epoch(epoch + 1, net)  # all ranks' maps agree; rank 0 saves them
            te = evaluate(cfg, d, eval_model, test_loader)
            scheduler.step()
            row = {"epoch": epoch + 1, "lr": lr, **tr, **te, "time_s": time.perf_counter() - t0}
            history.append(row)
            is_best = best is None or row["test_top1_err"] <= best["test_top1_err"]
            if is_best:
                best = row
            if d.main:
                ck = checkpoint_state(cfg, net, optimizer, scheduler, scaler, epoch + 1, history, best,
                                      wall_before + time.perf_counter() - t_start)
                if refresh is not None:
                    ck[CHECKPOINT_KEY] = refresh.record(is_best)
                save_checkpoint(out / "last.pt", ck)
                if is_best:
                    save_checkpoint(out / "best.pt", ck)
                if refresh is not None:
                    refresh.prune()
                write_csv(out / "log.csv", history)
                log(d, f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.4g}  loss {row['train_loss']:.4f}  "
                       f"train err {row['train_top1_err']:.2f}  test err {row['test_top1_err']:.2f} / "
                       f"{row['test_top5_err']:.2f}  {row['images_per_s']:.0f} img/s  {row['time_s']:.1f} s")
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except NonFiniteLossError as e:  # stopped before this epoch's checkpoint: last.pt is the last good one
        status = "diverged"
        e.epochs_done = len(history)
        raise
    finally:
        wall = wall_before + time.perf_counter() - t_start
        summary = summarize(cfg, history, best, wall, status)
        if d.main and out.exists():
            write_summary(out / "summary.json", summary)
            if history:
                plot_curves(out / "curves.png", history, f"{cfg.dataset} {cfg.model} {cfg.mix_aug}")
    return summary


def evaluate_checkpoint(path: str | os.PathLike, *, data_dir: Optional[str] = None,
                        device: str = "cpu", limit_test_batches: Optional[int] = None) -> dict[str, float]:
    """Test errors of a checkpoint's weights on its data set's test split (one process)."""
    net, saved = load_checkpoint_model(path, device)
    fields = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in saved.items() if k in fields})
    cfg.milestones = tuple(cfg.milestones)
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    cfg.device, cfg.limit_test_batches, cfg.mix_aug = device, limit_test_batches, "none"
    cfg.saliency_cache = None
    d = Dist(device=torch.device(device))
    _, test = build_loaders(dataclasses.replace(cfg, limit_train_batches=1, batch_size=1), d)
    return evaluate(cfg, d, net, test)
