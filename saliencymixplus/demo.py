"""The embedded demo data set: 10 glyph classes on cluttered backgrounds, generated from a seed.

Each 32x32 RGB image holds one filled glyph (disk, square, triangle, ring, plus, X, diamond,
hollow square, T, H) of a random colour, at a random place, scale (12..22 px across) and small
rotation, over a smooth random colour field crossed by random line segments. The background
is drawn independently of the class, so the label is recognisable only from the object; the
ground-truth object mask of every image is kept (``masks``, 1 = object) for the label-noise
benchmark. Generation is vectorised numpy: 6,000 images take well under a second.

This module only draws the arrays (numpy alone); :func:`saliencymixplus.rawdata.load_demo`
makes them a split.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["DEMO_CLASSES", "DEMO_SIZES", "DEMO_SEED", "DEMO_VERSION", "generate_demo", "demo_split_arrays"]

DEMO_CLASSES = ("disk", "square", "triangle", "ring", "plus", "x", "diamond", "hollow_square", "t", "h")
DEMO_SIZES = {"train": 5000, "test": 1000}
DEMO_SEED = 0
DEMO_VERSION = 1  # bump when the generator changes (part of the fingerprint)
_SIZE = 32
_LINES = 8


def _glyph_masks(cls: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks ``bool[n, H, W]`` of glyph ``cls[n]`` at object coordinates ``u, v`` (``[n, H, W]``,
    the glyph spans about [-1, 1]; ``v`` points down)."""
    au, av = np.abs(u), np.abs(v)
    rho = np.sqrt(u * u + v * v)
    box = np.maximum(au, av)
    shapes = [
        rho <= 0.9,                                                        # disk
        box <= 0.72,                                                       # square
        (v <= 0.7) & (au <= 0.95 * (v + 0.9) / 1.6),                       # triangle
        (rho >= 0.5) & (rho <= 0.95),                                      # ring
        ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95)),     # plus
        ((np.abs(u - v) <= 0.36) | (np.abs(u + v) <= 0.36)) & (box <= 0.8),  # x
        au + av <= 0.95,                                                   # diamond
        (box >= 0.42) & (box <= 0.82),                                     # hollow square
        ((v >= -0.85) & (v <= -0.42) & (au <= 0.85)) | ((au <= 0.24) & (v >= -0.85) & (v <= 0.85)),  # T
        ((au >= 0.5) & (au <= 0.85) & (av <= 0.85)) | ((av <= 0.2) & (au <= 0.85)),  # H
    ]
    out = np.zeros(u.shape, dtype=bool)
    for c, m in enumerate(shapes):
        sel = cls == c
        out[sel] = m[sel]
    return out


def _render(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8[n, 32, 32, 3]`` and masks ``uint8[n, 32, 32]`` for ``labels[n]``."""
    n, S = len(labels), _SIZE
    coords = np.arange(S, dtype=np.float32) + 0.5
    # Smooth background: a random 4x4 colour field, bilinearly upsampled.
    grid = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    w = np.clip(1 - np.abs(coords[:, None] / S * 3 - np.arange(4)[None, :]), 0, 1).astype(np.float32)
    img = np.einsum("yi,nijc,xj->nyxc", w, grid, w, optimize=True)
    # Clutter: random line segments of random colours and widths.
    p0 = rng.uniform(-4, S + 4, (n, _LINES, 2)).astype(np.float32)
    p1 = p0 + rng.normal(0, 10, (n, _LINES, 2)).astype(np.float32)
    width = rng.uniform(0.5, 1.1, (n, _LINES)).astype(np.float32)
    col = rng.uniform(0, 255, (n, _LINES, 3)).astype(np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    d = p1 - p0
    for k in range(_LINES):
        px, py = xx[None] - p0[:, k, 0, None, None], yy[None] - p0[:, k, 1, None, None]
        dx, dy = d[:, k, 0, None, None], d[:, k, 1, None, None]
        t = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.hypot(px - t * dx, py - t * dy)
        on = dist <= width[:, k, None, None]
        img = np.where(on[..., None], col[:, k, None, None, :], img)
    # The object.
    r = rng.uniform(6, 11, n).astype(np.float32)
    cx = rng.uniform(0.7 * r, S - 0.7 * r).astype(np.float32)
    cy = rng.uniform(0.7 * r, S - 0.7 * r).astype(np.float32)
    th = rng.uniform(-0.3, 0.3, n).astype(np.float32)
    c, s = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    u = (c * dx + s * dy) / r[:, None, None]
    v = (-s * dx + c * dy) / r[:, None, None]
    mask = _glyph_masks(labels, u, v)
    obj = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    ix = np.clip(cx.astype(int), 0, S - 1)
    iy = np.clip(cy.astype(int), 0, S - 1)
    bg_lum = img[np.arange(n), iy, ix] @ lum
    low = np.abs(obj @ lum - bg_lum) < 70  # keep the glyph visible against its surroundings
    obj[low] = np.where((bg_lum[low] > 127)[:, None], obj[low] * 0.3, 255 - (255 - obj[low]) * 0.3)
    img = np.where(mask[..., None], obj[:, None, None, :], img)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def generate_demo(n: int, seed: int = DEMO_SEED, *, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` demo images deterministically from ``seed``.

    Returns:
        images ``np.uint8[n, 32, 32, 3]`` (RGB), labels ``np.int64[n]`` (balanced, shuffled,
        in ``[0, 10)``), masks ``np.uint8[n, 32, 32]`` (1 = object pixel).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(DEMO_CLASSES)).astype(np.int64)
    images = np.empty((n, _SIZE, _SIZE, 3), np.uint8)
    masks = np.empty((n, _SIZE, _SIZE), np.uint8)
    for a in range(0, n, chunk):
        images[a:a + chunk], masks[a:a + chunk] = _render(rng, labels[a:a + chunk])
    return images, labels, masks


@functools.lru_cache(maxsize=4)
def demo_split_arrays(split: str, seed: int = DEMO_SEED):
    """``(images, labels, masks)`` of a split, generated once per process and read-only
    (:func:`saliencymixplus.rawdata.load_demo` copies them)."""
    stream = [DEMO_VERSION, seed, 0 if split == "train" else 1]
    arrays = generate_demo(DEMO_SIZES[split], seed=int(np.random.SeedSequence(stream).generate_state(1)[0]))
    for a in arrays:
        a.flags.writeable = False
    return arrays
