"""Where this process stands under ``torchrun`` (rank, world size, device: NCCL on GPUs, gloo on
CPUs; a plain ``python train.py`` never touches ``torch.distributed``) and its random streams,
reseeded every epoch from ``(seed, epoch, rank)``. See docs/design.md, "Training".
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import Config, UsageError

__all__ = ["Dist", "setup_distributed", "barrier", "broadcast_buffers", "log", "epoch_seed", "seed_everything",
           "seed_worker", "rng_state", "set_rng_state"]


@dataclasses.dataclass
class Dist:
    """Where this process stands: ``world`` processes, this one is ``rank``."""

    rank: int = 0
    world: int = 1
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
    return Dist(rank, world, dev)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_buffers(d: Dist, module: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics), in place: each rank
    updates them from its own shard, and the checkpoint holds rank 0's (docs/design.md, "Training")."""
    if not d.enabled:
        return
    works = [dist.broadcast(b, 0, async_op=True) for b in module.buffers()]
    for w in works:
        w.wait()


def log(d: Dist, msg: str) -> None:
    if d.main:
        print(msg, flush=True)


# ----------------------------------------------------------------------------- random streams

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
