"""Checkpoints of a run (``last.pt`` after every epoch, ``best.pt``), written atomically and
read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..files import atomic_write
from ..checkpoint_file import RESUME_KEYS, CheckpointFileError, describe_load_error, read_checkpoint
from .config import Config, UsageError
from .distributed import Dist, log
from .seeding import rng_state, set_rng_state

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_state", "resolve_resume",
           "read_resume", "restore", "CheckpointError", "RESUME_MAY_DIFFER"]

#: Config keys that may change on ``--resume``: how far to train, where things are and what
#: runs them. Every other key (mix, seed, optimiser, loader, ...) must be the checkpoint's, or
#: the continued run would not be the run it continues (the optimiser and scheduler states
#: would also silently override a new ``--lr`` or ``--milestones``).
RESUME_MAY_DIFFER = ("epochs", "out_dir", "resume", "progress", "workers", "device", "download", "data_dir",
                     "saliency_cache", "compile", "channels_last", "limit_test_batches", "paper")


class CheckpointError(UsageError):
    """A ``--resume`` file that is not a readable ``train.py`` checkpoint of this run (exit 2)."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`~.runner.run` (``weights_only=True``: a file that
    would run code when unpickled is refused).

    Keys: ``model`` (state_dict of the plain module), ``optimizer``, ``scheduler``,
    ``scaler`` (or None), ``epoch`` (epochs completed), ``rng``, ``config`` (dict),
    ``history`` (list of per-epoch rows), ``best`` (the best row or None), ``wall_time_s``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is cut, not a checkpoint, refused by ``weights_only``, or
            lacks the keys above (one line saying which).
    """
    try:
        return read_checkpoint(path, map_location, need=RESUME_KEYS, label="")
    except CheckpointFileError as e:
        raise CheckpointError(str(e)) from None


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
    if not p.is_file():
        raise UsageError(f"--resume {p} is a folder; give the checkpoint file (e.g. {p / 'last.pt'})")
    return p


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def read_resume(cfg: Config, d: Dist) -> Optional[tuple[Path, dict[str, Any]]]:
    """Read and check the ``--resume`` checkpoint before any other work: ``(path, checkpoint)``
    loaded on the CPU, or ``None`` when there is nothing to resume.

    Raises:
        FileNotFoundError: ``--resume CKPT`` does not exist.
        CheckpointError: not a readable checkpoint, or written by a run with other settings
            (every :class:`Config` key but :data:`RESUME_MAY_DIFFER` must match), or it has
            already done more epochs than ``--epochs``.
    """
    p = resolve_resume(cfg, d)
    if p is None:
        return None
    try:
        ck = load_checkpoint(p)
    except CheckpointError as e:
        raise CheckpointError(f"--resume {e}") from None
    old, now = ck["config"], cfg.to_dict()
    diffs = [f"{k}: checkpoint {old[k]!r}, now {now[k]!r}" for k in now
             if k not in RESUME_MAY_DIFFER and k in old and _norm(old[k]) != _norm(now[k])]
    if diffs:
        raise CheckpointError(
            f"--resume {p}: this command differs from the run it would continue ({'; '.join(diffs)}). "
            f"Repeat that run's flags (its config.json lists them) to continue it, or drop --resume "
            f"and choose another --out-dir to start a new run")
    done = int(ck["epoch"])
    if done > cfg.epochs:
        raise CheckpointError(f"--resume {p}: the checkpoint has already done {done} epochs, more than "
                              f"--epochs {cfg.epochs}: pass --epochs {done + 1} or more to train further")
    return p, ck


def restore(ck: dict[str, Any], path: Path, net: nn.Module, optimizer, scheduler, scaler) -> None:
    """Load checkpoint ``ck`` (from :func:`read_resume`) into the model, optimizer, scheduler,
    scaler and the RNGs.

    Raises:
        CheckpointError: the saved states do not fit this model or optimizer.
    """
    try:
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"--resume {path}: its saved states do not fit this run ({describe_load_error(e)})") from None
