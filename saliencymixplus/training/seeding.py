"""Random streams of a run: one seed per ``(seed, epoch, rank)``, and the RNG state that a
checkpoint carries so that ``--resume`` replays the interrupted epoch exactly."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

__all__ = ["epoch_seed", "seed_everything", "seed_worker", "rng_state", "set_rng_state"]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed for one (seed, epoch, rank) stream."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729 + 12345) % (2 ** 63)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: seed NumPy and Python from the worker's torch seed."""
    s = torch.initial_seed() % (2 ** 32)
    np.random.seed(s)
    random.seed(s)


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
