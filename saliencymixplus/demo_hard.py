"""The hard demo set ``demo_hard`` (what it holds: README, "Data sets"), drawn with :mod:`saliencymixplus.demo`'s
rules; drawing takes seconds, so the first process keeps each split with its SHA-256 in :func:`cache_dir`.
:func:`load_demo_hard` is its spec's loader.
"""

from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from .demo import (GLYPHS, _draw_segments, _paint_glyphs, _paint_object, _smooth_field, generate_arrays, read_only,
                   split_seed)
from .files import arrays_sha256, atomic_write
from .rawdata import generated_split

__all__ = ["HARD_SIZES", "HARD_SEED", "HARD_VERSION", "HARD_IMAGE_SIZE", "generate_demo_hard", "load_demo_hard"]

HARD_SIZES = {"train": 6000, "test": 2000}
HARD_SEED = 0
HARD_VERSION = 1  # bump when the generator changes (part of the fingerprint)
HARD_IMAGE_SIZE = 48
#: Object radius range in pixels (the glyph spans about 2 radii).
OBJECT_RADIUS = (5.0, 8.0)
_CELLS = 6
_LINES = 12
_FRAGMENTS = 2
_FRAGMENT_RADIUS = (4.0, 7.0)


def _render_hard(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8[n, 48, 48, 3]`` and object masks ``uint8[n, 48, 48]`` for ``labels[n]``."""
    n, S = len(labels), HARD_IMAGE_SIZE
    img = _smooth_field(rng, n, S, _CELLS)
    img = _draw_segments(rng, img, _LINES, 16.0, (0.5, 1.3))
    for _ in range(_FRAGMENTS):
        cls = rng.integers(0, len(GLYPHS), n)
        r = rng.uniform(*_FRAGMENT_RADIUS, n).astype(np.float32)
        cx = rng.uniform(0, S, n).astype(np.float32)
        cy = rng.uniform(0, S, n).astype(np.float32)
        th = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
        cut = rng.uniform(-0.3, 0.3, n).astype(np.float32)  # keep the side u > cut: about half a glyph
        img, _ = _paint_glyphs(rng, img, cls, cx, cy, r, th, cut)
    return _paint_object(rng, img, labels, OBJECT_RADIUS, 1.0)


def generate_demo_hard(n: int, seed: int = HARD_SEED, *, chunk: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~saliencymixplus.demo.generate_arrays` of ``n`` hard demo images (48x48, 20 classes;
    fragments 0 in the masks) from ``seed``."""
    return generate_arrays(_render_hard, n, seed, len(GLYPHS), HARD_IMAGE_SIZE, chunk=chunk)


def cache_dir() -> Path | None:
    """Where generated splits are kept between processes: ``$SALIENCYMIXPLUS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/saliencymixplus`` (``~/.cache/saliencymixplus``); ``None`` (regenerate in
    every process) when ``SALIENCYMIXPLUS_CACHE_DIR`` is set to the empty string."""
    d = os.environ.get("SALIENCYMIXPLUS_CACHE_DIR")
    if d is not None:
        return Path(d) if d else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saliencymixplus"


def _load_cached(path: Path, n: int):
    """The arrays stored at ``path`` when they are whole and exactly what the generator wrote
    (their SHA-256 matches the one stored beside them), else ``None``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = (z["images"], z["labels"], z["masks"])
            digest = str(z["sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    S = HARD_IMAGE_SIZE
    shapes = ((n, S, S, 3), (n,), (n, S, S))
    if any(a.shape != s for a, s in zip(arrays, shapes)) or arrays_sha256(*arrays) != digest:
        return None
    return arrays


def _store(path: Path, arrays) -> None:
    """Write ``arrays`` and their digest to ``path`` atomically; a folder that cannot be written
    only costs the next process a regeneration."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, images=arrays[0], labels=arrays[1], masks=arrays[2], sha256=np.array(arrays_sha256(*arrays)))

    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)


@functools.lru_cache(maxsize=4)
def _split_arrays(split: str, seed: int, n: int):
    """``(images, labels, masks)`` of a split, :func:`~saliencymixplus.demo.read_only`: from
    :func:`cache_dir` when stored there whole, else generated (and stored)."""
    path = None
    folder = cache_dir()
    if folder is not None:
        path = folder / f"demo_hard-v{HARD_VERSION}-s{seed}-{split}-n{n}.npz"
        arrays = _load_cached(path, n)
        if arrays is not None:
            return read_only(arrays)
    arrays = generate_demo_hard(n, seed=split_seed(HARD_VERSION, seed, split))
    if path is not None:
        _store(path, arrays)
    return read_only(arrays)


def load_demo_hard(data_dir, split: str, *, download: bool = False, seed: int = HARD_SEED):
    """The hard demo split (:data:`HARD_SIZES`), as :func:`~saliencymixplus.demo.load_demo`."""
    return generated_split("demo_hard", split, _split_arrays(split, seed, HARD_SIZES[split]), HARD_VERSION, seed)
