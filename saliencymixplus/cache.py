"""The offline saliency cache: one HDF5 file per data set split.

Format (``format_version`` 1):

* dataset ``saliency``: ``uint8[N, h, w]`` (``0..255`` for saliency ``0..1``) or
  ``float16[N, h, w]`` (values in ``[0, 1]``), chunked one image per chunk, uncompressed;
* attributes ``dataset``, ``split``, ``count`` (= N), ``fingerprint`` (hash of the ordered
  file list and labels, :meth:`RawSplit.fingerprint`), ``method``, ``resolution`` (``[h, w]``),
  ``format_version``; the gradient method adds ``checkpoint`` (a hash of the checkpoint file).

:class:`CacheWriter` writes ``FILE.h5.partial`` block by block (a ``_done`` dataset records
the finished blocks, flushed after each one) and renames it to ``FILE.h5`` only when every
block is written, so ``FILE.h5`` is complete or absent. :class:`SaliencyCache` checks a file
against the split it is paired with and raises :class:`CacheMismatchError` otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

__all__ = [
    "FORMAT_VERSION", "CacheMismatchError", "CacheWriter", "SaliencyCache", "quantize",
    "parse_resolution", "format_resolution", "rebuild_command", "IN_MEMORY_LIMIT",
]

FORMAT_VERSION = 1
DATASET = "saliency"
_DONE = "_done"
IN_MEMORY_LIMIT = 256 * 2**20  # caches up to this size are read into memory (CIFAR: 50 MB)
REQUIRED_ATTRS = ("dataset", "split", "count", "fingerprint", "method", "resolution", "format_version")
DTYPES = {"uint8": np.uint8, "float16": np.float16}


class CacheMismatchError(ValueError):
    """A saliency cache does not match its data set, or is truncated, incomplete or malformed."""


def parse_resolution(text) -> tuple[int, int]:
    """``"HxW"`` (or ``"N"`` for ``NxN``, or a pair) -> ``(H, W)`` positive ints."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        h, w = (int(t) for t in text)
    else:
        parts = str(text).lower().replace("*", "x").split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
            if len(parts) > 2:
                raise ValueError
        except ValueError:
            raise ValueError(f"resolution must look like HxW (e.g. 32x32), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be positive, got {h}x{w}")
    return h, w


def format_resolution(res) -> str:
    return f"{int(res[0])}x{int(res[1])}"


def rebuild_command(dataset, split, method, out, resolution=None, data_dir="DATA_DIR") -> str:
    """The command line that builds this cache."""
    cmd = (f"saliencymixplus-precompute --dataset {dataset} --data-dir {data_dir} --split {split} "
           f"--method {method} --out {out}")
    if resolution is not None:
        cmd += f" --resolution {format_resolution(resolution)}"
    return cmd


def quantize(maps: np.ndarray, dtype: str = "uint8") -> np.ndarray:
    """Float saliency ``[n, h, w]`` in [0, 1] -> storage dtype (``uint8``: ``round(255 * s)``).
    Values are clipped to [0, 1]; NaN becomes 0."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    m = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(m, 0.0, 1.0, out=m)
    if dtype == "uint8":
        return np.rint(m * 255.0).astype(np.uint8)
    return m.astype(np.float16)


def _decode(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return tuple(int(x) for x in v.tolist())
    if isinstance(v, np.integer):
        return int(v)
    return v


def _read_attrs(f: h5py.File) -> dict:
    return {k: _decode(v) for k, v in f.attrs.items()}


class CacheWriter:
    """Writes a cache to ``out + ".partial"`` in blocks of ``block_size`` images, resumably.

    Args:
        out: final path (``.h5``).
        dataset, split, count, fingerprint, method: identify the data (stored as attributes).
        resolution: ``(h, w)`` of the stored maps.
        dtype: ``"uint8"`` (default) or ``"float16"``.
        block_size: images per written block (the unit of resumption).
        resume: reuse a matching ``.partial`` file's finished blocks; a partial file that does
            not match (or cannot be read) is discarded and :attr:`note` says why.
        extra_attrs: more attributes that must also match to resume (e.g. ``checkpoint``).

    Use as a context manager; :meth:`finalize` renames the file into place.
    """

    def __init__(self, out, *, dataset: str, split: str, count: int, fingerprint: str, method: str,
                 resolution, dtype: str = "uint8", block_size: int = 512, resume: bool = True,
                 extra_attrs: dict | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.out = Path(out)
        self.partial = Path(str(out) + ".partial")
        self.count, self.block_size, self.dtype = int(count), int(block_size), dtype
        self.resolution = parse_resolution(resolution)
        self.num_blocks = -(-self.count // self.block_size)
        self.attrs = {"dataset": dataset, "split": split, "count": self.count, "fingerprint": fingerprint,
                      "method": method, "resolution": self.resolution, "format_version": FORMAT_VERSION,
                      "block_size": self.block_size, **(extra_attrs or {})}
        self.note = ""
        self._f = None
        if resume and self.partial.exists():
            self._f = self._open_partial()
        if self._f is None:
            self._f = self._create()

    # -- opening
    def _open_partial(self):
        try:
            f = h5py.File(self.partial, "r+")
        except OSError as e:
            self.note = f"discarding unreadable partial file {self.partial} ({e})"
            return None
        try:
            have = _read_attrs(f)
            diff = [k for k, v in self.attrs.items() if have.get(k) != _decode(np.asarray(v) if isinstance(v, tuple) else v)]
            ds = f.get(DATASET)
            if ds is None or f.get(_DONE) is None:
                diff.append("datasets")
            elif ds.shape != (self.count, *self.resolution) or ds.dtype != np.dtype(self.dtype) \
                    or f[_DONE].shape != (self.num_blocks,):
                diff.append("shape/dtype")
            if diff:
                f.close()
                self.note = f"discarding partial file {self.partial}: it differs in {', '.join(diff)}"
                return None
            done = int(np.count_nonzero(f[_DONE][...]))
            self.note = f"resuming {self.partial}: {done} of {self.num_blocks} blocks already written"
            return f
        except Exception:
            f.close()
            raise

    def _create(self):
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.partial, "w")
        h, w = self.resolution
        f.create_dataset(DATASET, shape=(self.count, h, w), dtype=self.dtype, chunks=(1, h, w) if self.count else None)
        f.create_dataset(_DONE, shape=(self.num_blocks,), dtype=np.uint8, fillvalue=0)
        for k, v in self.attrs.items():
            f.attrs[k] = np.asarray(v, dtype=np.int64) if k == "resolution" else v
        f.flush()
        return f

    # -- state
    def done_mask(self) -> np.ndarray:
        """``bool[num_blocks]``: blocks already written."""
        return self._f[_DONE][...].astype(bool)

    def pending(self) -> list[tuple[int, int]]:
        """``(start, stop)`` image ranges of the blocks still to write, in order."""
        done = self.done_mask()
        return [(b * self.block_size, min((b + 1) * self.block_size, self.count))
                for b in range(self.num_blocks) if not done[b]]

    def images_done(self) -> int:
        done = self.done_mask()
        return sum(min((b + 1) * self.block_size, self.count) - b * self.block_size
                   for b in np.flatnonzero(done))

    # -- writing
    def write(self, start: int, maps: np.ndarray) -> None:
        """Write one block: ``maps`` ``[n, h, w]``, float in [0, 1] or already the storage dtype;
        ``start`` must be a block boundary and ``n`` the block's length."""
        if start % self.block_size:
            raise ValueError(f"start must be a multiple of block_size={self.block_size}, got {start}")
        stop = min(start + self.block_size, self.count)
        if maps.shape != (stop - start, *self.resolution):
            raise ValueError(f"block at {start} must have shape {[stop - start, *self.resolution]}, "
                             f"got {list(maps.shape)}")
        if maps.dtype != np.dtype(self.dtype):
            maps = quantize(maps, self.dtype)
        self._f[DATASET][start:stop] = maps
        self._f.flush()  # data before the done flag: a kill in between only recomputes this block
        self._f[_DONE][start // self.block_size] = 1
        self._f.flush()

    def finalize(self) -> Path:
        """Check every block is written, then rename ``.partial`` to the final path atomically."""
        missing = int(np.count_nonzero(~self.done_mask()))
        if missing:
            raise RuntimeError(f"{missing} of {self.num_blocks} blocks are not written yet")
        del self._f[_DONE]
        del self._f.attrs["block_size"]
        self._f.close()
        self._f = None
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.partial, self.out)
        return self.out

    def close(self) -> None:
        """Close, keeping the partial file (to resume later)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SaliencyCache:
    """Reads a saliency cache and checks it against the split it is paired with.

    Args:
        path: the ``.h5`` file.
        expect: the :class:`~saliencymixplus.rawdata.RawSplit` it belongs to; its name, split,
            length and fingerprint must match the file's attributes.
        method: if given, the saliency method the file must hold.
        in_memory: read the whole file into memory (default: when it is at most 256 MB).

    ``cache[i]`` is ``np.float32[h, w]`` in [0, 1]. Safe with DataLoader workers: no HDF5
    handle is shared across processes (each process opens its own on first use).

    Raises:
        FileNotFoundError: no file (the message gives the command that builds it).
        CacheMismatchError: wrong data set/split/count/fingerprint/method/version, a truncated
            or incomplete file, or a wrong shape; the message says what differs and how to rebuild.
    """

    def __init__(self, path, *, expect=None, method: str | None = None, in_memory: bool | None = None):
        self.path = Path(path)
        self._file = None
        self._ds = None
        self._pid = None
        self._data = None
        if not self.path.is_file():
            partial = Path(str(self.path) + ".partial")
            if partial.exists():
                raise FileNotFoundError(f"saliency cache {self.path} is incomplete (its build was interrupted, "
                                        f"{partial} exists): rerun the build with --resume")
            how = rebuild_command(expect.name, expect.split, method or "fine_grained", self.path) if expect else \
                "saliencymixplus-precompute --help"
            raise FileNotFoundError(f"no saliency cache at {self.path}; build it with: {how}")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise CacheMismatchError(self._fail(f"is not a readable HDF5 file (truncated or corrupt: {e})", {},
                                                expect, method)) from e
        with f:
            self.attrs = attrs = _read_attrs(f)
            self._check(f, attrs, expect, method)
            self.shape = f[DATASET].shape
            self.dtype = f[DATASET].dtype
        self.resolution = tuple(attrs["resolution"])
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if in_memory is None:
            in_memory = nbytes <= IN_MEMORY_LIMIT
        if in_memory:
            self._data = self.read_all()

    def _fail(self, what: str, attrs: dict, expect, method) -> str:
        ds = expect.name if expect is not None else attrs.get("dataset", "DATASET")
        sp = expect.split if expect is not None else attrs.get("split", "SPLIT")
        me = method or attrs.get("method", "METHOD")
        return (f"saliency cache {self.path} {what}. Rebuild it with: "
                f"{rebuild_command(ds, sp, me, self.path, attrs.get('resolution'))}")

    def _check(self, f, attrs, expect, method) -> None:
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise CacheMismatchError(self._fail(f"lacks the attributes {missing} (not a saliency cache?)",
                                                attrs, expect, method))
        if attrs["format_version"] != FORMAT_VERSION:
            raise CacheMismatchError(self._fail(f"has format_version {attrs['format_version']}, this code reads "
                                                f"{FORMAT_VERSION}", attrs, expect, method))
        if _DONE in f:
            raise CacheMismatchError(self._fail("is incomplete (unfinished build)", attrs, expect, method))
        if DATASET not in f:
            raise CacheMismatchError(self._fail(f"has no '{DATASET}' dataset", attrs, expect, method))
        ds = f[DATASET]
        want = (attrs["count"], *attrs["resolution"])
        if ds.shape != want:
            raise CacheMismatchError(self._fail(f"has '{DATASET}' of shape {list(ds.shape)}, but its attributes "
                                                f"say count x resolution = {list(want)}", attrs, expect, method))
        if ds.dtype not in (np.uint8, np.float16):
            raise CacheMismatchError(self._fail(f"has dtype {ds.dtype}; expected uint8 or float16",
                                                attrs, expect, method))
        diffs = []
        if expect is not None:
            mine = {"dataset": expect.name, "split": expect.split, "count": len(expect),
                    "fingerprint": expect.fingerprint()}
            diffs += [f"{k}: cache has {attrs[k]!r}, data set has {v!r}" for k, v in mine.items() if attrs[k] != v]
        if method is not None and attrs["method"] != method:
            diffs.append(f"method: cache has {attrs['method']!r}, requested {method!r}")
        if diffs:
            raise CacheMismatchError(self._fail("does not match: " + "; ".join(diffs), attrs, expect, method))

    # -- access
    def _handle(self):
        if self._ds is None or self._pid != os.getpid():
            # Per process: never share a handle with a fork. No chunk cache: each map is read once
            # per epoch in random order, so a cache never hits and only adds a copy of each map.
            self._file = h5py.File(self.path, "r", rdcc_nbytes=0)
            self._ds = self._file[DATASET]  # kept: looking it up costs more than reading a map
            self._pid = os.getpid()
        return self._ds

    def __len__(self) -> int:
        return self.shape[0]

    def raw(self, i: int) -> np.ndarray:
        """Map ``i`` in the storage dtype, ``[h, w]``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} maps")
        if self._data is not None:
            return self._data[i]
        try:
            return self._handle()[i]
        except OSError as e:
            raise CacheMismatchError(self._fail(f"cannot be read at map {i} (truncated? {e})", self.attrs,
                                                None, None)) from e

    def __getitem__(self, i: int) -> np.ndarray:
        """Map ``i`` as ``np.float32[h, w]`` in [0, 1]."""
        m = self.raw(i)
        if m.dtype == np.uint8:
            return m.astype(np.float32) * np.float32(1 / 255)
        return m.astype(np.float32)

    def read_all(self) -> np.ndarray:
        """All maps, ``uint8[N, h, w]`` or ``float16[N, h, w]`` (the storage dtype)."""
        if self._data is not None:
            return self._data
        try:
            with h5py.File(self.path, "r") as f:
                return f[DATASET][...]
        except OSError as e:
            raise CacheMismatchError(self._fail(f"cannot be read (truncated? {e})", self.attrs, None, None)) from e

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_ds"], state["_pid"] = None, None, None
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._ds = None, None

    def __repr__(self) -> str:
        a = self.attrs
        return (f"SaliencyCache({str(self.path)!r}, {a['dataset']}/{a['split']}, n={a['count']}, "
                f"{a['method']}, {format_resolution(a['resolution'])} {self.dtype})")
