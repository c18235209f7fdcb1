"""The embedded demo data set (what it holds: README, "Data sets"), generated from a seed in vectorised
numpy with the drawing rules :mod:`saliencymixplus.demo_hard` shares; :func:`load_demo` is its spec's loader.
"""

from __future__ import annotations

import functools

import numpy as np

from .rawdata import generated_split

__all__ = ["GLYPHS", "DEMO_CLASSES", "DEMO_SIZES", "DEMO_SEED", "DEMO_VERSION", "generate_demo", "load_demo"]

DEMO_SIZES = {"train": 5000, "test": 1000}
DEMO_SEED = 0
DEMO_VERSION = 1  # bump when the generator changes (part of the fingerprint)
_SIZE = 32
_LINES = 8


def _shape_table():
    """``[(name, rule)]``: the glyph of each class index; ``rule(u, v)`` is its mask (:func:`_glyph_masks`)."""
    def rho(u, v):
        return np.sqrt(u * u + v * v)

    def box(u, v):
        return np.maximum(np.abs(u), np.abs(v))

    def hbars(v, at, half):  # horizontal bands of half-height ``half`` centred on the ``at`` rows
        return np.min([np.abs(v - a) for a in at], axis=0) <= half

    return [
        ("disk", lambda u, v: rho(u, v) <= 0.9),
        ("square", lambda u, v: box(u, v) <= 0.72),
        ("triangle", lambda u, v: (v <= 0.7) & (np.abs(u) <= 0.95 * (v + 0.9) / 1.6)),
        ("ring", lambda u, v: (rho(u, v) >= 0.5) & (rho(u, v) <= 0.95)),
        ("plus", lambda u, v: ((np.abs(u) <= 0.28) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.28) & (np.abs(u) <= 0.95))),
        ("x", lambda u, v: ((np.abs(u - v) <= 0.36) | (np.abs(u + v) <= 0.36)) & (box(u, v) <= 0.8)),
        ("diamond", lambda u, v: np.abs(u) + np.abs(v) <= 0.95),
        ("hollow_square", lambda u, v: (box(u, v) >= 0.42) & (box(u, v) <= 0.82)),
        ("t", lambda u, v: ((v >= -0.85) & (v <= -0.42) & (np.abs(u) <= 0.85))
                           | ((np.abs(u) <= 0.24) & (v >= -0.85) & (v <= 0.85))),
        ("h", lambda u, v: ((np.abs(u) >= 0.5) & (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85))
                           | ((np.abs(v) <= 0.2) & (np.abs(u) <= 0.85))),
        ("l", lambda u, v: ((u >= -0.8) & (u <= -0.38) & (np.abs(v) <= 0.85)) | ((v >= 0.43) & (v <= 0.85) & (np.abs(u) <= 0.8))),
        ("u", lambda u, v: ((np.abs(u) >= 0.45) & (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85))
                           | ((v >= 0.45) & (v <= 0.85) & (np.abs(u) <= 0.85))),
        ("target", lambda u, v: (rho(u, v) <= 0.3) | ((rho(u, v) >= 0.62) & (rho(u, v) <= 0.95))),
        ("equals", lambda u, v: hbars(v, (-0.45, 0.45), 0.22) & (np.abs(u) <= 0.85)),
        ("bar", lambda u, v: (np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)),
        ("crescent", lambda u, v: (rho(u, v) <= 0.9) & (rho(u - 0.45, v) > 0.7)),
        ("hourglass", lambda u, v: (np.abs(u) <= 0.9 * np.abs(v) + 0.05) & (np.abs(v) <= 0.85)),
        ("four_dots", lambda u, v: rho(np.abs(u) - 0.55, np.abs(v) - 0.55) <= 0.32),
        ("arrow", lambda u, v: ((v <= 0.0) & (v >= -0.9) & (np.abs(u) <= 0.9 * (v + 0.9)))
                               | ((np.abs(u) <= 0.22) & (v >= 0.0) & (v <= 0.9))),
        ("e", lambda u, v: ((u >= -0.8) & (u <= -0.42) & (np.abs(v) <= 0.85))
                           | (hbars(v, (-0.7, 0.0, 0.7), 0.15) & (u >= -0.8) & (u <= 0.8))),
    ]


_SHAPES = _shape_table()
#: Names of all glyph classes (the demo set uses the first 10, ``demo_hard`` all 20).
GLYPHS = tuple(name for name, _ in _SHAPES)
DEMO_CLASSES = GLYPHS[:10]


def _glyph_masks(cls: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks ``bool[n, H, W]`` of glyph ``cls[n]`` (an index into :data:`GLYPHS`) at object
    coordinates ``u, v`` (``[n, H, W]``, the glyph spans about [-1, 1]; ``v`` points down)."""
    out = np.zeros(u.shape, dtype=bool)
    for c in np.unique(cls):
        sel = cls == c
        out[sel] = _SHAPES[int(c)][1](u[sel], v[sel])
    return out


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coords float32[S], yy, xx float32[S, S])``: pixel centres of an ``S x S`` image."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return coords, yy, xx


def _smooth_field(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Background ``float32[n, S, S, 3]``: a random ``cells x cells`` colour field, bilinearly upsampled."""
    coords = _pixel_grid(size)[0]
    grid = rng.uniform(0, 255, (n, cells, cells, 3)).astype(np.float32)
    w = np.clip(1 - np.abs(coords[:, None] / size * (cells - 1) - np.arange(cells)[None, :]), 0, 1).astype(np.float32)
    return np.einsum("yi,nijc,xj->nyxc", w, grid, w, optimize=True)


def _draw_segments(rng: np.random.Generator, img: np.ndarray, count: int, spread: float,
                   width: tuple[float, float]) -> np.ndarray:
    """Clutter: ``count`` random line segments per image (start anywhere within 4 px of the image,
    normally distributed extent ``spread`` px, half-width uniform in ``width``), random colours."""
    n, size = img.shape[0], img.shape[1]
    _, yy, xx = _pixel_grid(size)
    p0 = rng.uniform(-4, size + 4, (n, count, 2)).astype(np.float32)
    p1 = p0 + rng.normal(0, spread, (n, count, 2)).astype(np.float32)
    half = rng.uniform(*width, (n, count)).astype(np.float32)
    col = rng.uniform(0, 255, (n, count, 3)).astype(np.float32)
    d = p1 - p0
    img = np.array(img, dtype=np.float32)  # painted in place below
    for k in range(count):  # distance of each pixel to segment k, in place (same values as the plain formula)
        px, py = xx[None] - p0[:, k, 0, None, None], yy[None] - p0[:, k, 1, None, None]
        dx, dy = d[:, k, 0, None, None], d[:, k, 1, None, None]
        t = px * dx
        t += py * dy
        t /= np.maximum(dx * dx + dy * dy, 1e-6)
        np.clip(t, 0, 1, out=t)
        px -= t * dx
        py -= t * dy
        on = np.hypot(px, py, out=px) <= half[:, k, None, None]
        np.copyto(img, col[:, k, None, None, :], where=on[..., None])
    return img


def _object_frame(size: int, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, th: np.ndarray):
    """Object coordinates ``(u, v)`` ``float32[n, S, S]`` of a glyph centred at ``(cx, cy)``,
    radius ``r`` px, rotated by ``th`` radians."""
    _, yy, xx = _pixel_grid(size)
    c, s = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    return (c * dx + s * dy) / r[:, None, None], (-s * dx + c * dy) / r[:, None, None]


_LUM = np.array([0.299, 0.587, 0.114], np.float32)


def _paint_glyphs(rng: np.random.Generator, img: np.ndarray, cls: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                  r: np.ndarray, th: np.ndarray, cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint glyph ``cls[n]`` (:func:`_object_frame`; with ``cut``, only its side ``u > cut``) into ``img``
    in a random colour, pushed darker or lighter where its luminance is within 70 of the background's at
    ``(cx, cy)`` so that it stays visible: ``(img float32[n, S, S, 3], mask bool[n, S, S])``."""
    n, size = img.shape[0], img.shape[1]
    u, v = _object_frame(size, cx, cy, r, th)
    mask = _glyph_masks(cls, u, v)
    if cut is not None:
        mask &= u > cut[:, None, None]
    obj = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    ix = np.clip(cx.astype(int), 0, size - 1)
    iy = np.clip(cy.astype(int), 0, size - 1)
    bg_lum = img[np.arange(n), iy, ix] @ _LUM
    low = np.abs(obj @ _LUM - bg_lum) < 70
    obj[low] = np.where((bg_lum[low] > 127)[:, None], obj[low] * 0.3, 255 - (255 - obj[low]) * 0.3)
    return np.where(mask[..., None], obj[:, None, None, :], img), mask


def _paint_object(rng: np.random.Generator, img: np.ndarray, labels: np.ndarray, radius: tuple[float, float],
                  margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint glyph ``labels[n]`` into ``img`` in a visible colour (radius uniform in ``radius`` px, centre
    ``margin`` radii or more inside, a small rotation), add pixel noise (standard deviation 8) and round:
    images ``uint8[n, S, S, 3]`` and object masks ``uint8[n, S, S]``."""
    n, size = len(labels), img.shape[1]
    r = rng.uniform(*radius, n).astype(np.float32)
    cx = rng.uniform(margin * r, size - margin * r).astype(np.float32)
    cy = rng.uniform(margin * r, size - margin * r).astype(np.float32)
    th = rng.uniform(-0.3, 0.3, n).astype(np.float32)
    img, mask = _paint_glyphs(rng, img, labels, cx, cy, r, th)
    img += rng.normal(0, 8.0, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _render(rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8[n, 32, 32, 3]`` and masks ``uint8[n, 32, 32]`` for ``labels[n]``."""
    n, S = len(labels), _SIZE
    img = _smooth_field(rng, n, S, 4)
    img = _draw_segments(rng, img, _LINES, 10.0, (0.5, 1.1))
    return _paint_object(rng, img, labels, (6.0, 11.0), 0.7)


def generate_arrays(render, n: int, seed: int, num_classes: int, size: int, *, chunk: int = 1000):
    """``(images uint8[n, S, S, 3] RGB, labels int64[n], masks uint8[n, S, S] (1 = object pixel))``
    drawn by ``render(rng, labels)`` chunk by chunk from one ``seed``; labels balanced over
    ``num_classes`` and shuffled."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for a in range(0, n, chunk):
        images[a:a + chunk], masks[a:a + chunk] = render(rng, labels[a:a + chunk])
    return images, labels, masks


def split_seed(version: int, seed: int, split: str) -> int:
    """The generator seed of one split: independent streams of ``seed`` for train and test."""
    stream = [version, seed, 0 if split == "train" else 1]
    return int(np.random.SeedSequence(stream).generate_state(1)[0])


def generate_demo(n: int, seed: int = DEMO_SEED, *, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`generate_arrays` of ``n`` demo images (32x32, 10 classes) from ``seed``."""
    return generate_arrays(_render, n, seed, len(DEMO_CLASSES), _SIZE, chunk=chunk)


@functools.lru_cache(maxsize=4)
def _split_arrays(split: str, seed: int = DEMO_SEED):
    """``(images, labels, masks)`` of a split, generated once per process, :func:`read_only`."""
    return read_only(generate_demo(DEMO_SIZES[split], seed=split_seed(DEMO_VERSION, seed, split)))


def read_only(arrays):
    """``arrays`` made read-only (a generated split is kept once per process; loaders copy it)."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


def load_demo(data_dir, split: str, *, download: bool = False, seed: int = DEMO_SEED):
    """The demo split (:data:`DEMO_SIZES`) as an :class:`~saliencymixplus.rawdata.ArraySplit` with
    ``masks`` (fresh copies); ``data_dir`` and ``download`` are the spec loader's, not used."""
    return generated_split("demo", split, _split_arrays(split, seed), DEMO_VERSION, seed)
