"""The hard demo set (``demo_hard``): 20 small glyph classes among clutter and distractor
fragments, generated from a seed.

It exists to separate the mixers. Each 48x48 RGB image holds one glyph of one of 20 classes
(:data:`~saliencymixplus.demo.GLYPHS`: the demo's ten and ten more) of a random colour, with a
radius of 5..8 px (10-16 px across), so that it covers about 1-6 % of the image (the demo's
glyphs cover 10-40 % of theirs): a CutMix box then often holds all or none of it, and the area
rule gives the wrong label weight. The background is a smooth random colour field crossed by
12 random line segments, and every image carries 2 *distractor fragments*: a part (one side
of a random cut) of a glyph of a random class, any rotation,
radius 4..7 px, in a colour chosen to stand out just as the object's does. Clutter and
fragments are drawn independently of the class, so only the whole object tells it; they also
draw OpenCV's saliency away from the object. The object mask of every image is kept
(``masks``, 1 = object; fragments are 0) for the label-noise benchmark.

The generator shares its drawing rules with :mod:`saliencymixplus.demo` (background field,
segments, glyph shapes, colour contrast, noise). Drawing the 8,000 images takes about 9 s of
numpy on a 2-core machine (39 s when it is busy), so the first process stores each split (with
its SHA-256) in a user cache folder (:func:`cache_dir`) and later ones read it back in about
2 s; nothing is ever downloaded. :func:`load_demo_hard` makes a split of it (the loader of
the ``demo_hard`` spec in :mod:`saliencymixplus.datasets`). See docs/design.md, "Data sets".
"""

from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from pathlib import Path

import numpy as np

from .demo import (GLYPHS, _draw_segments, _finish, _glyph_masks, _object_frame, _smooth_field, _visible_colours,
                   generate_arrays, split_seed)
from .files import arrays_sha256, atomic_write
from .rawdata import generated_split

__all__ = ["HARD_CLASSES", "HARD_SIZES", "HARD_SEED", "HARD_VERSION", "HARD_IMAGE_SIZE", "generate_demo_hard",
           "demo_hard_split_arrays", "load_demo_hard"]

HARD_CLASSES = GLYPHS
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
        u, v = _object_frame(S, cx, cy, r, th)
        frag = _glyph_masks(cls, u, v) & (u > cut[:, None, None])
        col = _visible_colours(rng, img, cx, cy)
        img = np.where(frag[..., None], col[:, None, None, :], img)
    r = rng.uniform(*OBJECT_RADIUS, n).astype(np.float32)
    cx = rng.uniform(r, S - r).astype(np.float32)
    cy = rng.uniform(r, S - r).astype(np.float32)
    th = rng.uniform(-0.3, 0.3, n).astype(np.float32)
    mask = _glyph_masks(labels, *_object_frame(S, cx, cy, r, th))
    obj = _visible_colours(rng, img, cx, cy)
    img = np.where(mask[..., None], obj[:, None, None, :], img)
    return _finish(rng, img, 8.0), mask.astype(np.uint8)


def generate_demo_hard(n: int, seed: int = HARD_SEED, *, chunk: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` hard demo images deterministically from ``seed``.

    Returns:
        images ``np.uint8[n, 48, 48, 3]`` (RGB), labels ``np.int64[n]`` (balanced, shuffled,
        in ``[0, 20)``), masks ``np.uint8[n, 48, 48]`` (1 = object pixel, fragments 0).
    """
    return generate_arrays(_render_hard, n, seed, len(HARD_CLASSES), HARD_IMAGE_SIZE, chunk=chunk)


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
    path = None
    folder = cache_dir()
    if folder is not None:
        path = folder / f"demo_hard-v{HARD_VERSION}-s{seed}-{split}-n{n}.npz"
        arrays = _load_cached(path, n)
        if arrays is not None:
            return _read_only(arrays)
    arrays = generate_demo_hard(n, seed=split_seed(HARD_VERSION, seed, split))
    if path is not None:
        _store(path, arrays)
    return _read_only(arrays)


def _read_only(arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


def demo_hard_split_arrays(split: str, seed: int = HARD_SEED):
    """``(images, labels, masks)`` of a split, read-only (:func:`load_demo_hard` copies them).

    Generated once per process from ``seed`` (``"train"`` and ``"test"`` from independent
    streams); the first process also stores them in :func:`cache_dir` (about 130 MB for the
    training split), and later ones read them back from there after checking their SHA-256, so
    a training run does not spend its first seconds drawing the set again.
    """
    if split not in HARD_SIZES:
        raise ValueError(f"split must be one of {list(HARD_SIZES)}, got {split!r}")
    return _split_arrays(split, seed, HARD_SIZES[split])


def load_demo_hard(data_dir, split: str, *, download: bool = False, seed: int = HARD_SEED):
    """The hard demo split ``"train"`` (6,000 images) or ``"test"`` (2,000), 48x48, 20 classes,
    as an :class:`~saliencymixplus.rawdata.ArraySplit` with ``masks``; each call returns fresh
    copies. ``data_dir`` and ``download`` are not used."""
    return generated_split("demo_hard", split, demo_hard_split_arrays(split, seed), HARD_VERSION, seed)
