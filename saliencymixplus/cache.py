"""The offline saliency cache: one HDF5 file per data set split.

Format (``format_version`` 2):

* dataset ``saliency``: ``uint8[N, h, w]`` (``0..255`` for saliency ``0..1``) or
  ``float16[N, h, w]`` (values in ``[0, 1]``), chunked one image per chunk, uncompressed, each
  chunk checksummed (HDF5's fletcher32 filter: a damaged chunk fails to read);
* attributes ``dataset``, ``split``, ``count`` (= N), ``fingerprint`` (hash of the ordered
  file list and labels, :meth:`RawSplit.fingerprint`), ``method``, ``resolution`` (``[h, w]``),
  ``format_version``; the gradient method adds ``checkpoint`` (a hash of the checkpoint file);
* attribute ``content_sha256``, written last: a SHA-256 of the other attributes and of every
  map (:func:`content_hash`). :func:`verify_cache` recomputes it; ``train.py`` does so on every
  start (it reads the whole file once: about 1 s for a CIFAR-100 cache, 54 MB in 50,000 chunks).

Version 1 files (no checksums, no hash) are refused with the command that rebuilds them.

:class:`CacheWriter` writes ``FILE.h5.partial`` block by block (a ``_done`` dataset records
the finished blocks, flushed after each one) and, when every block is written, adds the content
hash, fsyncs the file and renames it to ``FILE.h5`` (``os.replace``), so ``FILE.h5`` is complete
or absent. Only one writer at a time: each holds :func:`cache_lock`, an advisory lock
(``fcntl.flock``) on ``FILE.h5.lock`` taken *before* the partial file is opened; a second
builder waits for it or stops with :class:`~saliencymixplus.files.BusyError`. :class:`SaliencyCache` checks a
file against the split it is paired with and raises :class:`CacheMismatchError` otherwise.

Reading one map at a time (caches too large for memory) goes through HDF5's checksum filter,
about 0.2 ms a map. Once :func:`verify_cache` has checked every byte of a file in a process,
caches that process opens on the same unchanged file (same inode, size and mtime) read each
map as its chunk's raw bytes instead (about 0.04 ms): ``train.py`` verifies on every start.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from .files import FileLock, fsync_path
from .precompute_command import rebuild_command

__all__ = [
    "FORMAT_VERSION", "CacheMismatchError", "CacheCorruptError", "cache_lock", "CacheWriter", "SaliencyCache",
    "quantize", "parse_resolution", "format_resolution", "content_hash", "verify_cache", "IN_MEMORY_LIMIT", "HASH_ATTR",
]

FORMAT_VERSION = 2
DATASET = "saliency"
HASH_ATTR = "content_sha256"
_DONE = "_done"
IN_MEMORY_LIMIT = 256 * 2**20  # caches up to this size are read into memory (CIFAR: 50 MB)
REQUIRED_ATTRS = ("dataset", "split", "count", "fingerprint", "method", "resolution", "format_version", HASH_ATTR)
_TEXT_ATTRS = ("dataset", "split", "fingerprint", "method")
DTYPES = {"uint8": np.uint8, "float16": np.float16}
_HASH_BYTES = 16 << 20  # maps read per step when hashing


class CacheMismatchError(ValueError):
    """A saliency cache does not match its data set, or is truncated, incomplete or malformed."""


class CacheCorruptError(CacheMismatchError):
    """A saliency cache whose bytes were damaged: a chunk fails its checksum, or the content no
    longer matches the hash written when it was built."""


def cache_lock(out) -> FileLock:
    """The lock a cache builder holds on ``out`` (:class:`~saliencymixplus.files.FileLock`)."""
    return FileLock(out, busy="{target} is being built by another process (pid {pid}; lock {lock}): wait for it "
                              "to finish, or run again without --no-wait to wait for it")


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


class _BadText(str):
    """An attribute that is not valid UTF-8 text (kept printable; :meth:`SaliencyCache._check` refuses it)."""


def _decode(v):
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return _BadText(v.decode("utf-8", "backslashreplace"))
    if isinstance(v, str):
        try:
            v.encode()
        except UnicodeEncodeError:  # h5py gives undecodable UTF-8 as lone surrogates
            return _BadText(v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        return v
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "iu":
            return tuple(int(x) for x in v.reshape(-1).tolist()) if v.ndim == 1 else v
        return v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _read_attrs(f: h5py.File) -> dict:
    return {k: _decode(v) for k, v in f.attrs.items()}


def _is_resolution(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)


def content_hash(f: h5py.File) -> str:
    """Hex SHA-256 of an open cache: its attributes (all but :data:`HASH_ATTR`, as canonical
    JSON), the dtype and shape of ``saliency`` and its bytes in C order, read in steps of 16 MB
    (so that a damaged chunk fails here, with HDF5's checksum error).

    Raises:
        OSError: a chunk cannot be read (checksum failure, truncation); the message gives the
            range of maps.
    """
    ds = f[DATASET]
    h = hashlib.sha256(b"saliencymixplus cache\0")
    attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in _read_attrs(f).items() if k != HASH_ATTR}
    h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    h.update(f"\0{ds.dtype.str}{list(ds.shape)}\0".encode())
    n = ds.shape[0] if ds.ndim else 0
    step = max(1, _HASH_BYTES // max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize))
    for a in range(0, n, step):
        b = min(n, a + step)
        try:
            block = ds[a:b]
        except OSError as e:
            raise OSError(f"maps {a}..{b - 1} cannot be read ({e})") from e
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()


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
        lock: a held :func:`cache_lock` of ``out`` (the caller releases it); by default the
            writer takes its own without waiting (:class:`~saliencymixplus.files.BusyError` when another process
            writes ``out``) and releases it when closed or finalized.

    Use as a context manager; :meth:`finalize` writes the content hash and renames the file
    into place.
    """

    def __init__(self, out, *, dataset: str, split: str, count: int, fingerprint: str, method: str,
                 resolution, dtype: str = "uint8", block_size: int = 512, resume: bool = True,
                 extra_attrs: dict | None = None, lock: FileLock | None = None):
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
        self._own_lock = None
        if lock is None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            lock = self._own_lock = cache_lock(out).acquire(wait=False)
        elif not lock.held or lock.out != self.out:
            raise ValueError(f"lock must be a held cache_lock of {self.out}")
        try:  # the lock is held: the partial file is ours to open (and truncate)
            if resume and self.partial.exists():
                self._f = self._open_partial()
            if self._f is None:
                self._f = self._create()
        except BaseException:
            self._release_lock()
            raise

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
            ds, done = f.get(DATASET), f.get(_DONE)
            if not isinstance(ds, h5py.Dataset) or not isinstance(done, h5py.Dataset):
                diff.append("datasets")
            elif ds.shape != (self.count, *self.resolution) or ds.dtype != np.dtype(self.dtype) \
                    or done.shape != (self.num_blocks,) or (self.count and ds.fletcher32 is not True):
                diff.append("shape/dtype")
            if diff:
                f.close()
                self.note = f"discarding partial file {self.partial}: it differs in {', '.join(diff)}"
                return None
            n_done = int(np.count_nonzero(done[...]))
        except Exception as e:  # noqa: BLE001 - a damaged or hand-made partial file: start afresh
            f.close()
            self.note = f"discarding unreadable partial file {self.partial} ({e})"
            return None
        self.note = f"resuming {self.partial}: {n_done} of {self.num_blocks} blocks already written"
        return f

    def _create(self):
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.partial, "w")
        h, w = self.resolution
        if self.count:
            f.create_dataset(DATASET, shape=(self.count, h, w), dtype=self.dtype, chunks=(1, h, w), fletcher32=True)
        else:
            f.create_dataset(DATASET, shape=(0, h, w), dtype=self.dtype)
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
        """Check every block is written, write the content hash (read back from the file, so
        that it vouches for what is on disk), fsync, and rename ``.partial`` to the final path
        atomically; then release the writer's own lock."""
        missing = int(np.count_nonzero(~self.done_mask()))
        if missing:
            raise RuntimeError(f"{missing} of {self.num_blocks} blocks are not written yet")
        del self._f[_DONE]
        del self._f.attrs["block_size"]
        self._f.flush()
        self._f.attrs[HASH_ATTR] = content_hash(self._f)  # written last
        self._f.close()
        self._f = None
        fsync_path(self.partial)
        os.replace(self.partial, self.out)
        fsync_path(self.out.parent if str(self.out.parent) else Path("."), directory=True)
        self._release_lock()
        return self.out

    def _release_lock(self) -> None:
        if self._own_lock is not None:
            self._own_lock.release()
            self._own_lock = None

    def close(self) -> None:
        """Close, keeping the partial file (to resume later), and release the writer's own lock."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def verify_cache(path, *, expect=None, method: str | None = None) -> "SaliencyCache":
    """Check a finished cache completely: the checks of :class:`SaliencyCache` (attributes,
    shape, the split ``expect`` and ``method`` when given), then every chunk's checksum and the
    content hash, by reading the whole file once (a CIFAR-100 cache, 54 MB: about 1 s).

    Returns:
        the checked cache, opened with ``in_memory=False`` (``.attrs``, ``.dtype``, ``.resolution``).

    Raises:
        FileNotFoundError: no such file.
        CacheMismatchError: see :class:`SaliencyCache`.
        CacheCorruptError: a chunk fails its checksum or the content hash differs; the message
            gives the command that rebuilds the cache.
    """
    cache = SaliencyCache(path, expect=expect, method=method, in_memory=False)
    try:
        with h5py.File(cache.path, "r") as f:
            got = content_hash(f)
    except OSError as e:
        raise CacheCorruptError(cache._fail(f"is damaged: {e}", cache.attrs, expect, method)) from None
    if got != cache.attrs[HASH_ATTR]:
        raise CacheCorruptError(cache._fail(
            f"is damaged: its content no longer matches the hash written when it was built "
            f"({HASH_ATTR} {str(cache.attrs[HASH_ATTR])[:16]}..., content {got[:16]}...)", cache.attrs, expect, method))
    if cache._signature is not None and _file_signature(cache.path) == cache._signature:
        _VERIFIED[cache._signature[0]] = cache._signature  # unchanged while it was hashed
        cache._direct = _direct_reads_possible(cache.path)
    return cache


# Files whose every byte verify_cache checked in this process: resolved path -> signature.
_VERIFIED: dict[str, tuple] = {}


def _file_signature(path: Path) -> tuple | None:
    """``(resolved path, device, inode, size, mtime_ns)``: a file rewritten or touched since has another."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _direct_reads_possible(path: Path) -> bool:
    """Whether the maps are stored as :class:`CacheWriter` writes them: one chunk per map whose
    only filter is the fletcher32 checksum (so a chunk's bytes are the map and 4 checksum bytes)."""
    with h5py.File(path, "r") as f:
        ds = f[DATASET]
        if ds.shape[0] == 0 or ds.chunks != (1, *ds.shape[1:]):
            return False
        plist = ds.id.get_create_plist()
        return plist.get_nfilters() == 1 and plist.get_filter(0)[0] == h5py.h5z.FILTER_FLETCHER32


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
            (Opening checks the structure only; :func:`verify_cache` also checks every byte.)
    """

    def __init__(self, path, *, expect=None, method: str | None = None, in_memory: bool | None = None):
        self.path = Path(path)
        self._file = None
        self._ds = None
        self._pid = None
        self._data = None
        self._signature = _file_signature(self.path)
        self._direct = False
        if not self.path.is_file():
            partial = Path(str(self.path) + ".partial")
            if partial.exists():
                raise FileNotFoundError(f"saliency cache {self.path} is incomplete (its build was interrupted, "
                                        f"{partial} exists): rerun the build with --resume")
            how = rebuild_command(expect.name, expect.split, method, self.path,
                                  data_dir=getattr(expect, "data_dir", None)) if expect else \
                "saliencymixplus-precompute --help"
            raise FileNotFoundError(f"no saliency cache at {self.path}; build it with: {how}")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise CacheCorruptError(self._fail(f"is not a readable HDF5 file (truncated or corrupt: {e})", {},
                                               expect, method)) from e
        with f:
            try:
                self.attrs = attrs = _read_attrs(f)
            except Exception as e:  # noqa: BLE001 - hand-made or damaged attributes
                raise CacheCorruptError(self._fail(f"has attributes that cannot be read ({type(e).__name__}: {e})",
                                                   {}, expect, method)) from None
            self._check(f, attrs, expect, method)
            self.shape = f[DATASET].shape
            self.dtype = f[DATASET].dtype
        self.resolution = tuple(attrs["resolution"])
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if in_memory is None:
            in_memory = nbytes <= IN_MEMORY_LIMIT
        if in_memory:
            self._data = self.read_all()
        elif self._signature is not None and _VERIFIED.get(self._signature[0]) == self._signature:
            self._direct = _direct_reads_possible(self.path)

    def _fail(self, what: str, attrs: dict, expect, method) -> str:
        def text(k, default):
            v = attrs.get(k)
            return v if isinstance(v, str) and not isinstance(v, _BadText) and v else default

        ds = expect.name if expect is not None else text("dataset", "DATASET")
        sp = expect.split if expect is not None else text("split", "SPLIT")
        me = method or text("method", None)
        res = attrs.get("resolution")
        res = res if _is_resolution(res) else None
        data_dir = getattr(expect, "data_dir", None)
        return (f"saliency cache {self.path} {what}. Rebuild it with: "
                f"{rebuild_command(ds, sp, me, self.path, res, data_dir=data_dir)}")

    def _check(self, f, attrs, expect, method) -> None:
        fail = lambda what: CacheMismatchError(self._fail(what, attrs, expect, method))  # noqa: E731
        version = attrs.get("format_version")
        if version is not None and version != FORMAT_VERSION:
            old = " (an older build without checksums)" if version == 1 else ""
            raise fail(f"has format_version {version!r}{old}, this code reads {FORMAT_VERSION}")
        if _DONE in f:
            raise fail("is incomplete (unfinished build)")
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise fail(f"lacks the attributes {missing} (not a saliency cache?)")
        bad = [k for k in (*_TEXT_ATTRS, HASH_ATTR) if not isinstance(attrs[k], str) or isinstance(attrs[k], _BadText)]
        if bad:
            raise fail(f"has attributes that are not UTF-8 text: {bad}")
        if not isinstance(attrs["count"], int) or attrs["count"] < 0:
            raise fail(f"has attribute count={attrs['count']!r}; expected an integer >= 0")
        if not _is_resolution(attrs["resolution"]):
            raise fail(f"has attribute resolution={attrs['resolution']!r}; expected [h, w], two positive integers")
        ds = f.get(DATASET)
        if not isinstance(ds, h5py.Dataset):
            raise fail(f"has no '{DATASET}' dataset" if ds is None else
                       f"has '{DATASET}' as a {type(ds).__name__}, not a dataset")
        want = (attrs["count"], *attrs["resolution"])
        if ds.shape != want:
            raise fail(f"has '{DATASET}' of shape {list(ds.shape or ())}, but its attributes "
                       f"say count x resolution = {list(want)}")
        if ds.dtype not in (np.uint8, np.float16):
            raise fail(f"has dtype {ds.dtype}; expected uint8 or float16")
        diffs = []
        if expect is not None:
            mine = {"dataset": expect.name, "split": expect.split, "count": len(expect),
                    "fingerprint": expect.fingerprint()}
            diffs += [f"{k}: cache has {attrs[k]!r}, data set has {v!r}" for k, v in mine.items() if attrs[k] != v]
        if method is not None and attrs["method"] != method:
            diffs.append(f"method: cache has {attrs['method']!r}, requested {method!r}")
        if diffs:
            raise fail("does not match: " + "; ".join(diffs))

    # -- access
    def _handle(self):
        if self._ds is None or self._pid != os.getpid():
            # Per process: never share a handle with a fork. No chunk cache: each map is read once
            # per epoch in random order, so a cache never hits and only adds a copy of each map.
            self._file = h5py.File(self.path, "r", rdcc_nbytes=0)
            if self._direct:  # the file opened must be the one verified, unchanged since
                st = os.fstat(self._file.id.get_vfd_handle())
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._signature[1:]:
                    self._direct = False  # back to checked reads
            self._ds = self._file[DATASET]  # kept: looking it up costs more than reading a map
            self._pid = os.getpid()
        return self._ds

    @property
    def reads_checked(self) -> bool:
        """Whether each read map passes HDF5's per-chunk checksum. ``False`` once
        :func:`verify_cache` has checked every byte of this unchanged file in this process
        (or the cache is in memory): then a map is read as its chunk's raw bytes, about 4x faster."""
        return self._data is None and not self._direct

    def __len__(self) -> int:
        return self.shape[0]

    def raw(self, i: int) -> np.ndarray:
        """Map ``i`` in the storage dtype, ``[h, w]`` (read-only when read as a raw chunk)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} maps")
        if self._data is not None:
            return self._data[i]
        try:
            ds = self._handle()
            if self._direct:
                i = i % len(self)
                mask, chunk = ds.id.read_direct_chunk((i, 0, 0))
                n = self.resolution[0] * self.resolution[1]
                if mask == 0 and len(chunk) == n * self.dtype.itemsize + 4:  # the map, then its checksum
                    return np.frombuffer(chunk, self.dtype, count=n).reshape(self.resolution)
            return ds[i]
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
