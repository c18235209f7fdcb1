"""One run from start (or ``--resume``) to summary: :func:`run`; and :func:`evaluate_checkpoint`
for the test errors of a saved model.

A checkpoint (``last.pt``) is written atomically after every epoch, so ``--resume`` after an
interruption replays the interrupted epoch exactly and ends with the same weights as an
uninterrupted run (on the same hardware and software). ``--batch_size`` is the *global*
batch, split evenly over the processes; evaluation is sharded and reduced exactly; only
rank 0 writes logs and checkpoints.
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

from ..models import build_model
from ..saliency import load_checkpoint_model
from .checkpoints import checkpoint_state, resolve_resume, restore, save_checkpoint
from .config import Config, UsageError
from .distributed import Dist, log, setup_distributed
from .loaders import build_loaders
from .loop import build_mixer, evaluate, train_one_epoch
from .refresh import CHECKPOINT_KEY, build_refresh
from .reporting import plot_curves, summarize, write_csv, write_summary
from .seeding import seed_everything

__all__ = ["run", "evaluate_checkpoint"]


def run(cfg: Config) -> dict:
    """Train (or continue) one run and return its summary (``summary.json``'s content).

    Raises:
        UsageError, FileNotFoundError, CacheMismatchError: bad flags, missing data or
            checkpoint, a saliency cache built from other data (before any training).
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

    ckpt_path = resolve_resume(cfg, d)  # a bad --resume fails before any data work
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
    if ckpt_path is not None:
        ck = restore(ckpt_path, cfg, d, net, optimizer, scheduler, scaler)
        start_epoch = int(ck["epoch"])
        history, best = list(ck.get("history", [])), ck.get("best")
        wall_before = float(ck.get("wall_time_s", 0.0))
        if refresh is not None:
            refresh.restore(ck, ckpt_path)
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
