"""The precompute tool's spellings (``--resolution``, ``--shard``, the shard files' names, the
command that rebuilds a cache), below the cache reader so that its messages can name the command
without importing the tool (docs/design.md, "The saliency cache")."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from .datasets import SPECS

__all__ = ["PROGRAM", "rebuild_command", "parse_resolution", "format_resolution", "shard_path", "parse_shard",
           "parse_shard_path", "shard_range"]

PROGRAM = "saliencymixplus-precompute"


def parse_resolution(text) -> tuple[int, int]:
    """``"HxW"`` (or ``"N"`` for ``NxN``, or a pair) -> ``(H, W)`` positive ints."""
    parts = text if isinstance(text, (tuple, list)) else str(text).lower().replace("*", "x").split("x")
    try:
        if not 1 <= len(parts) <= 2:
            raise ValueError
        h, w = int(parts[0]), int(parts[-1])
    except (TypeError, ValueError):
        raise ValueError(f"resolution must look like HxW (e.g. 32x32), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be positive, got {h}x{w}")
    return h, w


def format_resolution(res) -> str:
    return f"{int(res[0])}x{int(res[1])}"


def shard_path(out, k: int, n: int) -> Path:
    """The file shard ``k`` of ``n`` of the cache ``out`` is built in: ``DIR/NAME.h5`` ->
    ``DIR/NAME.shard-K-of-N.h5`` (shards count from 0)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{int(k)}-of-{int(n)}{out.suffix}")


_SHARD_NAME = re.compile(r"^(.*)\.shard-(\d+)-of-(\d+)(\.[^.]*)?$")


def parse_shard_path(path) -> tuple[Path, int, int] | None:
    """``(out, k, n)`` for a file named as :func:`shard_path` names shard ``k`` of ``n`` of
    ``out``; ``None`` for any other name."""
    path = Path(path)
    m = _SHARD_NAME.match(path.name)
    if m is None:
        return None
    return path.with_name(m.group(1) + (m.group(4) or "")), int(m.group(2)), int(m.group(3))


def parse_shard(text) -> tuple[int, int]:
    """``"K/N"`` (or a pair) -> ``(K, N)`` with ``0 <= K < N``: shard K of N, counted from 0."""
    try:
        k, n = (int(t) for t in (text if isinstance(text, (tuple, list)) else str(text).split("/")))
    except ValueError:
        raise ValueError(f"shard must look like K/N (e.g. 0/4; shards count from 0), got {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"shard must be K/N with 0 <= K < N (shards count from 0 to N-1), got {k}/{n}")
    return k, n


def shard_range(count: int, block_size: int, k: int, n: int) -> tuple[int, int]:
    """``(start, stop)``: the images of shard ``k`` of ``n`` of a split of ``count`` images,
    whole blocks of ``block_size`` (the K-th of N contiguous runs of blocks, sizes differing by
    at most one block), so that every block holds the images a single-process build gives it."""
    k, n = parse_shard((k, n))
    blocks = -(-int(count) // int(block_size))
    return min(count, k * blocks // n * block_size), min(count, (k + 1) * blocks // n * block_size)


def rebuild_command(dataset, split, method, out, resolution=None, data_dir=None, *, dtype=None, postprocess=None,
                    shard=None, join=None, resume=False) -> str:
    """The command line that builds this cache, paths quoted for a POSIX shell: each argument
    given spelled as its flag (``dtype`` only other than ``uint8``), ``method`` ``None`` leaving the
    tool's default, ``data_dir`` ``None`` a ``DATA_DIR`` placeholder (none for a generated set)."""
    cmd = f"{PROGRAM} --dataset {dataset}"
    if data_dir is not None:
        cmd += f" --data-dir {shlex.quote(str(data_dir))}"
    elif dataset not in SPECS or not SPECS[dataset].generated:
        cmd += " --data-dir DATA_DIR"
    cmd += f" --split {split}"
    if method is not None:
        cmd += f" --method {method}"
        if method == "gradient":
            cmd += " --checkpoint CHECKPOINT"
    cmd += f" --out {shlex.quote(str(out))}"
    if resolution is not None:
        cmd += f" --resolution {format_resolution(resolution)}"
    if dtype is not None and str(dtype) != "uint8":
        cmd += f" --dtype {dtype}"
    if postprocess is not None:
        cmd += f" --postprocess {shlex.quote(str(postprocess))}"
    if shard is not None:
        cmd += f" --shard {int(shard[0])}/{int(shard[1])}"
    if join is not None:
        cmd += f" --join {int(join)}"
    if resume:
        cmd += " --resume"
    return cmd
