"""Checkpoints of a run (``last.pt`` after every epoch, ``best.pt``), written atomically and
read with ``weights_only=True``; plus :func:`atomic_write`, which every output file uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .config import Config, UsageError
from .distributed import Dist, log
from .seeding import rng_state, set_rng_state

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "checkpoint_state", "resolve_resume", "restore"]

#: Config keys that must match for ``--resume`` (they fix the model's shape and the data).
RESUME_KEYS = ("dataset", "model", "num_classes", "image_size")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``, so
    that a reader never sees a half-written file. ``tmp`` keeps ``path``'s suffix."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`~.runner.run` (``weights_only=True``).

    Keys: ``model`` (state_dict of the plain module), ``optimizer``, ``scheduler``,
    ``scaler`` (or None), ``epoch`` (epochs completed), ``rng``, ``config`` (dict),
    ``history`` (list of per-epoch rows), ``best`` (the best row or None), ``wall_time_s``.
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_state(cfg: Config, net: nn.Module, optimizer, scheduler, scaler, epoch: int,
                     history: list[dict], best: Optional[dict], wall_time_s: float) -> dict[str, Any]:
    """What :func:`load_checkpoint` returns, after ``epoch`` completed epochs."""
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "rng": rng_state(), "config": cfg.to_dict(),
            "history": history, "best": best, "wall_time_s": wall_time_s}


def resolve_resume(cfg: Config, d: Dist) -> Optional[Path]:
    """The checkpoint ``--resume`` names, or ``None`` (no flag, or bare ``--resume`` and no
    ``<out-dir>/last.pt`` yet).

    Raises:
        FileNotFoundError: ``--resume CKPT`` and ``CKPT`` does not exist.
    """
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        p = Path(cfg.out_dir) / "last.pt"
        if not p.exists():
            log(d, f"--resume: no checkpoint at {p}; starting from scratch")
            return None
        return p
    p = Path(cfg.resume)
    if not p.exists():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint")
    return p


def restore(path: Path, cfg: Config, d: Dist, net: nn.Module, optimizer, scheduler, scaler) -> dict[str, Any]:
    """Load ``path`` into the model, optimizer, scheduler, scaler and the RNGs; return the
    checkpoint (for its ``epoch``, ``history``, ``best`` and ``wall_time_s``).

    Raises:
        UsageError: the checkpoint was written for another data set or model.
    """
    ck = load_checkpoint(path, map_location=d.device)
    old = ck.get("config", {})
    for key in RESUME_KEYS:
        if key in old and old[key] != getattr(cfg, key):
            raise UsageError(f"--resume {path}: checkpoint has {key}={old[key]!r}, "
                             f"this run {key}={getattr(cfg, key)!r}")
    net.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    return ck
