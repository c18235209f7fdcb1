"""The offline saliency cache, one HDF5 file per data set split: its format, the resumable
writer, the checked reader and the join of a cache built in shards, as docs/design.md, "The
saliency cache", describes them."""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from .files import DiskFullError, FileLock, format_bytes, free_bytes, is_disk_full, replace_durably
from .precompute_command import (PROGRAM, format_resolution, parse_resolution, parse_shard_path, rebuild_command,
                                 shard_path)

__all__ = [
    "FORMAT_VERSION", "CacheMismatchError", "CacheCorruptError", "cache_lock", "CacheWriter", "SaliencyCache",
    "quantize", "content_hash", "verify_cache", "IN_MEMORY_LIMIT", "HASH_ATTR", "join_cache", "SHARD_ATTRS",
]

FORMAT_VERSION = 2
DATASET = "saliency"
HASH_ATTR = "content_sha256"
_DONE = "_done"
_STAMPS = "_stamps"  # a partial file's item stamps (CacheWriter item_stamps)
IN_MEMORY_LIMIT = 256 * 2**20  # caches up to this size are read into memory (CIFAR: 50 MB)
#: Attributes of a shard file (built with ``--shard K/N``): ``shard`` K, ``num_shards`` N, the
#: images ``[start, stop)`` of the split it holds (its ``count`` is ``stop - start``) and the
#: split's ``split_count``.
SHARD_ATTRS = ("shard", "num_shards", "start", "stop", "split_count")
_SHARDS = "shards"  # a joined cache's record of its shard files (JSON text)
_TEXT_ATTRS = ("dataset", "split", "fingerprint", "method")
REQUIRED_ATTRS = (*_TEXT_ATTRS, "count", "resolution", "format_version", HASH_ATTR)
# What every shard holds as the cache joined from it does (besides SHARD_ATTRS and count).
_BUILD_ATTRS = (*_TEXT_ATTRS, "resolution", "postprocess", "checkpoint")
DTYPES = {"uint8": np.uint8, "float16": np.float16}
_HASH_BYTES = 16 << 20  # maps read per step when hashing
# Free space a block needs beyond its chunks (chunk index, flags): this much, plus this much per map.
_INDEX_ROOM, _INDEX_ROOM_PER_MAP = 8 << 10, 256


class CacheMismatchError(ValueError):
    """A saliency cache does not match its data set, or is truncated, incomplete or malformed."""


class CacheCorruptError(CacheMismatchError):
    """A saliency cache whose bytes were damaged: a chunk fails its checksum, or the content no
    longer matches the hash written when it was built."""


def cache_lock(out) -> FileLock:
    """The lock a cache builder holds on ``out`` (:class:`~saliencymixplus.files.FileLock`)."""
    return FileLock(out, busy="{target} is being built by another process (pid {pid}; lock {lock}): wait for it "
                              "to finish, or run again without --no-wait to wait for it")


def quantize(maps, dtype: str = "uint8"):
    """Saliency ``maps`` in [0, 1] -> the storage dtype: ``uint8`` ``round(255 * s)`` (ties to
    even) or ``float16``. Values are clipped to [0, 1]; NaN becomes 0, +inf 1. A numpy array (or
    anything ``np.asarray`` takes) gives a numpy array; a tensor, a tensor on its device (no sync)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if hasattr(maps, "nan_to_num") and not isinstance(maps, np.ndarray):  # a torch tensor
        m = maps.float().nan_to_num(nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
        return (m * 255.0).round().byte() if dtype == "uint8" else m.half()
    m = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(m, 0.0, 1.0, out=m)
    if dtype == "uint8":
        return np.rint(m * 255.0).astype(np.uint8)
    return m.astype(np.float16)


class _BadText(str):
    """An attribute that is not valid UTF-8 text (kept printable; :meth:`SaliencyCache._check` refuses it)."""


def _decode(v):
    if isinstance(v, str):
        v = v.encode("utf-8", "surrogateescape")  # h5py gives undecodable UTF-8 as lone surrogates
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return _BadText(v.decode("utf-8", "backslashreplace"))
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim == 1:
        return tuple(int(x) for x in v.tolist())
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def _read_attrs(f: h5py.File) -> dict:
    return {k: _decode(v) for k, v in f.attrs.items()}


def _is_resolution(v) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)


def _text(v) -> str | None:
    return v if isinstance(v, str) and not isinstance(v, _BadText) else None


def _write_attrs(f: h5py.File, attrs: dict) -> None:
    for k, v in attrs.items():
        if v is not None:
            f.attrs[k] = np.asarray(v, dtype=np.int64) if k == "resolution" else v


def content_hash(f: h5py.File) -> str:
    """Hex SHA-256 of an open cache: its attributes (all but :data:`HASH_ATTR`, as canonical
    JSON), the dtype and shape of ``saliency`` and its bytes in C order, read in steps of 16 MB
    (a chunk that cannot be read, failing its checksum or truncated, raises ``OSError`` with the
    range of maps)."""
    h = _hash_header(f)
    _hash_maps(f[DATASET], h)
    return h.hexdigest()


def _hash_header(f: h5py.File):
    """The SHA-256 of :func:`content_hash` fed with everything but the maps."""
    ds = f[DATASET]
    h = hashlib.sha256(b"saliencymixplus cache\0")
    attrs = {k: v for k, v in _read_attrs(f).items() if k != HASH_ATTR}  # tuples are JSON lists
    h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    h.update(f"\0{ds.dtype.str}{list(ds.shape)}\0".encode())
    return h


def _hash_maps(ds: h5py.Dataset, *hashes) -> None:
    """Feed the bytes of every map of ``ds`` in C order to each of ``hashes``, 16 MB a step."""
    n = ds.shape[0] if ds.ndim else 0
    step = max(1, _HASH_BYTES // max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize))
    for a in range(0, n, step):
        b = min(n, a + step)
        try:
            block = np.ascontiguousarray(ds[a:b]).tobytes()
        except OSError as e:
            raise OSError(f"maps {a}..{b - 1} cannot be read ({e})") from e
        for h in hashes:
            h.update(block)


def _missing_maps(ds: h5py.Dataset) -> list[int]:
    """Indices of the maps of a ``saliency`` dataset that lack a chunk in the file: never
    written, so HDF5 would read them as the fill value (zeros) without a checksum error."""
    if ds.chunks is None or not ds.shape[0]:
        return []
    grid = tuple(-(-s // c) for s, c in zip(ds.shape, ds.chunks))
    have = np.zeros(grid, bool)
    try:
        if ds.id.get_num_chunks() == have.size:
            return []
        ds.id.chunk_iter(lambda info: have.__setitem__(tuple(o // c for o, c in zip(info.chunk_offset, ds.chunks)),
                                                       True))
    except RuntimeError as e:
        raise OSError(f"its chunk index cannot be read ({e})") from e
    rows = np.flatnonzero(~have.reshape(grid[0], -1).all(axis=1))
    c = ds.chunks[0]
    return [i for r in rows.tolist() for i in range(r * c, min((r + 1) * c, ds.shape[0]))]


def _unwritten(ds: h5py.Dataset, start: int, maps: np.ndarray) -> int | None:
    """The first map of ``maps`` (written at ``start``) whose chunk is not in the file or does
    not hold its bytes, read back as stored (the map, then its checksum); ``None`` if all are."""
    for k, m in enumerate(maps):
        try:
            mask, chunk = ds.id.read_direct_chunk((start + k, 0, 0))
        except (RuntimeError, OSError, ValueError):  # no chunk stored for this map
            return start + k
        if mask or chunk[:m.nbytes] != m.tobytes():
            return start + k
    return None


class CacheWriter:
    """Writes the cache ``out`` to ``out + ".partial"`` in blocks of ``block_size`` images (the
    unit of resumption); ``dataset`` to ``resolution`` are stored as attributes, ``dtype`` is the maps'.

    Args:
        resume: reuse a matching ``.partial`` file's finished blocks; a partial file that does
            not match (or cannot be read) is discarded and :attr:`note` says why.
        extra_attrs: more attributes that must also match to resume (e.g. ``checkpoint``).
        item_stamps: ``uint64[count]``, one hash per item of what identifies it
            (:meth:`~saliencymixplus.rawdata.RawSplit.item_stamps`); with them a partial file is
            resumed although its ``fingerprint`` differs, and the blocks holding items whose
            stamp changed are computed again.
        lock: a held :func:`cache_lock` of ``out`` (the caller releases it); by default the
            writer takes its own without waiting (:class:`~saliencymixplus.files.BusyError` when another process
            writes ``out``).

    Use as a context manager.
    """

    def __init__(self, out, *, dataset: str, split: str, count: int, fingerprint: str, method: str,
                 resolution, dtype: str = "uint8", block_size: int = 512, resume: bool = True,
                 extra_attrs: dict | None = None, lock: FileLock | None = None, item_stamps=None):
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
        self.stamps = None if item_stamps is None else np.asarray(item_stamps, np.uint64)
        if self.stamps is not None and self.stamps.shape != (self.count,):
            raise ValueError(f"item_stamps must be uint64[{self.count}], got shape {list(self.stamps.shape)}")
        self.note = ""
        self._f = None
        self._done = np.zeros(self.num_blocks, bool)  # blocks written: read from a resumed file, then kept here
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

    # -- opening (no chunk cache: a write reaches the file at once, so that an error such as a
    # full disk is raised by the write that met it, not swallowed when HDF5 evicts a chunk later)
    def _open_partial(self):
        f = None
        try:
            f = h5py.File(self.partial, "r+", rdcc_nbytes=0)
            have = _read_attrs(f)
            diff = [k for k, v in self.attrs.items() if not (k == "fingerprint" and self.stamps is not None)
                    and have.get(k) != v]
            ds, done, stamps = f.get(DATASET), f.get(_DONE), f.get(_STAMPS)
            if self.stamps is not None and not (isinstance(stamps, h5py.Dataset) and stamps.shape == (self.count,)):
                diff.append("item stamps")
            if not isinstance(ds, h5py.Dataset) or not isinstance(done, h5py.Dataset):
                diff.append("datasets")
            elif ds.shape != (self.count, *self.resolution) or ds.dtype != np.dtype(self.dtype) \
                    or done.shape != (self.num_blocks,) or (self.count and (ds.fletcher32 is not True
                                                                            or ds.chunks != (1, *self.resolution))):
                diff.append("shape/dtype")
            if diff:
                f.close()
                self.note = f"discarding partial file {self.partial}: it differs in {', '.join(diff)}"
                return None
            marked = done[...].astype(bool)
            written = set(np.flatnonzero(marked).tolist())
            blocks = lambda items: sorted({int(i) // self.block_size for i in items} & written)  # noqa: E731
            missing = _missing_maps(ds)
            lost = blocks(missing)  # marked written, but maps never reached the file (a full disk)
            changed = [] if self.stamps is None else \
                [b for b in blocks(np.flatnonzero(stamps[...] != self.stamps)) if b not in lost]  # items changed since
            marked[lost + changed] = False  # written again
            if self.stamps is not None:
                stamps[...] = self.stamps
                f.attrs["fingerprint"] = self.attrs["fingerprint"]
            if lost or self.stamps is not None:
                done[...] = marked.astype(np.uint8)
                f.flush()
        except Exception as e:  # noqa: BLE001 - unreadable, damaged or hand-made: start afresh
            if f is not None:
                f.close()
            self.note = f"discarding unreadable partial file {self.partial} ({e})"
            return None
        self._done = marked
        self.note = f"resuming {self.partial}: {int(marked.sum())} of {self.num_blocks} blocks already written"
        if changed:
            self.note += f"; {len(changed)} written block(s) hold images changed since: computing them again"
        if lost:
            first = min(i for i in missing if i // self.block_size in lost)
            self.note += f" ({len(lost)} blocks marked written lack maps, from map {first}: writing them again)"
        return f

    def _create(self):
        f = None
        try:
            f = h5py.File(self.partial, "w", rdcc_nbytes=0)
            h, w = self.resolution
            f.create_dataset(DATASET, shape=(self.count, h, w), dtype=self.dtype,
                             chunks=(1, h, w) if self.count else None, fletcher32=self.count > 0)
            f.create_dataset(_DONE, shape=(self.num_blocks,), dtype=np.uint8, fillvalue=0)
            if self.stamps is not None:
                f.create_dataset(_STAMPS, data=self.stamps)
            _write_attrs(f, self.attrs)
            f.flush()
        except BaseException as e:
            if f is not None:
                with contextlib.suppress(Exception):  # closing after a failed write may fail again
                    f.close()
            if is_disk_full(e):
                raise self._disk_full(f"the {self.count} maps need about {self._bytes(self.count)}") from None
            raise
        return f

    # -- state
    def pending(self) -> list[tuple[int, int]]:
        """``(start, stop)`` image ranges of the blocks still to write, in order."""
        return [(b * self.block_size, min((b + 1) * self.block_size, self.count))
                for b in range(self.num_blocks) if not self._done[b]]

    def images_done(self) -> int:
        return self.count - sum(b - a for a, b in self.pending())

    # -- writing
    def _bytes(self, n: int) -> str:
        """What ``n`` maps take in the file (each chunk: the map and its 4-byte checksum)."""
        h, w = self.resolution
        return format_bytes(n * (h * w * np.dtype(self.dtype).itemsize + 4))

    def _kept(self, first: str = "free some space, then ") -> str:
        return (f"{int(self._done.sum())} of {self.num_blocks} blocks are written and kept in {self.partial}: "
                f"{first}run the same command again ({PROGRAM}: with --resume)")

    def _disk_full(self, need: str) -> DiskFullError:
        return DiskFullError(f"no space left on device writing {self.partial}: {need}, "
                             f"{format_bytes(free_bytes(self.partial))} free there. {self._kept()}", self.partial)

    def write(self, start: int, maps: np.ndarray) -> None:
        """Write one block: ``maps`` ``[n, h, w]``, float in [0, 1] or already the storage dtype;
        ``start`` must be a block boundary and ``n`` the block's length."""
        if start % self.block_size:
            raise ValueError(f"start must be a multiple of block_size={self.block_size}, got {start}")
        stop = min(start + self.block_size, self.count)
        if maps.shape != (stop - start, *self.resolution):
            raise ValueError(f"block at {start} must have shape {[stop - start, *self.resolution]}, "
                             f"got {list(maps.shape)}")
        maps = np.ascontiguousarray(maps if maps.dtype == np.dtype(self.dtype) else quantize(maps, self.dtype))
        n_left = self.count - self.images_done()
        left = f"the {n_left} maps still to write need about {self._bytes(n_left)}"
        # Stop before a block that cannot fit (its maps, and room for the chunk index): HDF5
        # leaves a file it could not finish flushing unreadable, losing the finished blocks.
        free = free_bytes(self.partial)
        if free is not None and free < maps.nbytes + len(maps) * (4 + _INDEX_ROOM_PER_MAP) + _INDEX_ROOM:
            raise self._disk_full(left)
        try:
            self._f[DATASET][start:stop] = maps
            self._f.flush()  # maps before the done flag: a kill in between only recomputes this block
            lost = _unwritten(self._f[DATASET], start, maps)
            if lost is None:
                self._f[_DONE][start // self.block_size] = 1
                self._f.flush()
        except (OSError, RuntimeError) as e:
            if is_disk_full(e):
                raise self._disk_full(left) from None
            raise
        if lost is not None:
            raise CacheCorruptError(f"saliency cache {self.partial}: map {lost} did not reach the file although HDF5 "
                                    f"reported no error ({format_bytes(free_bytes(self.partial))} free there). "
                                    f"{self._kept('')}")
        self._done[start // self.block_size] = True

    def finalize(self) -> Path:
        """Check every block is written and every map is in the file, write the content hash
        (read back from the file) and move the file into place; then release the writer's own lock."""
        self._done = self._f[_DONE][...].astype(bool)  # the file's record
        missing = int(np.count_nonzero(~self._done))
        if missing:
            raise RuntimeError(f"{missing} of {self.num_blocks} blocks are not written yet")
        lost = _missing_maps(self._f[DATASET])
        if lost:
            for i in lost:
                self._done[i // self.block_size] = False
            self._f[_DONE][...] = self._done.astype(np.uint8)
            self._f.flush()
            raise CacheCorruptError(f"saliency cache {self.partial}: map {lost[0]} ({len(lost)} maps in all) was never "
                                    f"written to the file although its block was marked written. {self._kept('')}")
        try:
            del self._f.attrs["block_size"]
            self._f.attrs[HASH_ATTR] = content_hash(self._f)
            if _STAMPS in self._f:
                del self._f[_STAMPS]
            del self._f[_DONE]  # last: until here the file is a resumable partial one
            self._f.close()
            self._f = None
            replace_durably(self.partial, self.out)
        except (OSError, RuntimeError) as e:
            if is_disk_full(e):
                raise self._disk_full("writing its content hash needs a few kB") from None
            raise
        self._release_lock()
        return self.out

    def _release_lock(self) -> None:
        if self._own_lock is not None:
            self._own_lock.release()
            self._own_lock = None

    def close(self) -> None:
        """Close, keeping the partial file (to resume later), and release the writer's own lock."""
        if self._f is not None:
            with contextlib.suppress(Exception):  # each finished block was flushed when it was written
                self._f.close()
            self._f = None
        self._release_lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def verify_cache(path, *, expect=None, method: str | None = None) -> "SaliencyCache":
    """Check a finished cache completely: the checks of :class:`SaliencyCache` (raised as it
    raises them), then every map's chunk, every chunk's checksum and the content hash, by reading
    the whole file once; :class:`CacheCorruptError` names the first damage and the command that
    rebuilds the cache. Returns the checked cache, opened with ``in_memory=False``."""
    cache = SaliencyCache(path, expect=expect, method=method, in_memory=False)
    fail = lambda what: cache._fail(what, CacheCorruptError)  # noqa: E731
    if cache._parts is None:
        _verify_file(cache.path, fail)
    else:
        with h5py.File(cache.path, "r") as f:
            h = _hash_header(f)
        cache._shards.verify(cache._parts, h)
        _check_hash(cache.attrs[HASH_ATTR], h.hexdigest(), "joined", fail)
    for c in cache._parts or [cache]:
        if c._signature is not None and _file_signature(c.path) == c._signature:  # unchanged while it was hashed
            c._direct = _VERIFIED[c._signature] = _direct_reads_possible(c.path)
    return cache


def _verify_file(path, fail: Callable[[str], Exception], *also) -> None:
    """Read every map of the cache file ``path`` once, feeding them to the hashes ``also`` too:
    each map must have its chunk and pass its checksum, and the content match its content hash;
    raise ``fail(what)`` for the first damage found."""
    try:
        with h5py.File(path, "r") as f:
            ds = f[DATASET]
            lost = _missing_maps(ds)
            if lost:
                raise fail(f"is damaged: map {lost[0]} was never written to it ({len(lost)} of {ds.shape[0]} maps "
                           f"missing, which would read as 0)")
            mine = _hash_header(f)
            _hash_maps(ds, mine, *also)
            want = _decode(f.attrs.get(HASH_ATTR))
    except OSError as e:
        raise fail(f"is damaged: {e}") from None
    _check_hash(want, mine.hexdigest(), "built", fail)


def _check_hash(want, got: str, when: str, fail: Callable[[str], Exception]) -> None:
    if got != want:
        raise fail(f"is damaged: its content no longer matches the hash written when it was {when} "
                   f"({HASH_ATTR} {str(want)[:16]}..., content {got[:16]}...)")


# Files whose every byte verify_cache checked in this process: signature -> whether their chunks
# can be read directly (_direct_reads_possible).
_VERIFIED: dict[tuple, bool] = {}


def _file_signature(path: Path, fd: int | None = None) -> tuple | None:
    """``(resolved path, device, inode, size, mtime_ns)`` of ``path`` (or of its open file ``fd``): a
    file rewritten or touched since has another."""
    try:
        st = os.stat(path) if fd is None else os.fstat(fd)
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
        expect: the :class:`~saliencymixplus.rawdata.RawSplit` it belongs to; its name, split,
            length and fingerprint must match the file's attributes.
        method: if given, the saliency method the file must hold.
        in_memory: read the whole file into memory (default: when it is at most 256 MB).

    Safe with DataLoader workers: no HDF5 handle is shared across processes (each process opens
    its own on first use). A missing file raises ``FileNotFoundError``, a file that does not match
    or is malformed :class:`CacheMismatchError`, each with the command that builds it; opening
    checks the structure only, :func:`verify_cache` also checks every byte.
    """

    def __init__(self, path, *, expect=None, method: str | None = None, in_memory: bool | None = None,
                 data_dir=None):
        self.path = Path(path)
        self._data_dir = data_dir if data_dir is not None else getattr(expect, "data_dir", None)
        # What the caller asked for, spelled first in a rebuild command (not the split itself: a
        # reader is pickled into each DataLoader worker).
        self._asked = {k: v for k, v in (("dataset", getattr(expect, "name", None)),
                                         ("split", getattr(expect, "split", None)), ("method", method)) if v}
        self._parts = None  # a joined cache: a reader per shard file
        self._file = None
        self._ds = None
        self._pid = None
        self._data = None
        self._signature = _file_signature(self.path)
        if not self.path.is_file():
            partial = Path(str(self.path) + ".partial")
            if partial.exists():
                raise FileNotFoundError(f"saliency cache {self.path} is incomplete (its build was interrupted, "
                                        f"{partial} exists): rerun the build with --resume")
            how = _command(self._asked, self.path, self._data_dir) if expect else f"{PROGRAM} --help"
            raise FileNotFoundError(f"no saliency cache at {self.path}; build it with: {how}")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise self._fail(f"is not a readable HDF5 file (truncated or corrupt: {e})", CacheCorruptError) from e
        with f:
            try:
                self.attrs = attrs = _read_attrs(f)
            except Exception as e:  # noqa: BLE001 - hand-made or damaged attributes
                raise self._fail(f"has attributes that cannot be read ({type(e).__name__}: {e})",
                                 CacheCorruptError) from None
            self._check(f, attrs, expect, method)
            self.shape = f[DATASET].shape
            self.dtype = f[DATASET].dtype
        self.resolution = tuple(attrs["resolution"])
        if _SHARDS in attrs:
            self._open_shards(attrs)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if in_memory is None:
            in_memory = nbytes <= IN_MEMORY_LIMIT
        if in_memory:
            self._data = self.read_all()
        self._direct = not in_memory and _VERIFIED.get(self._signature, False)

    def _fail(self, what: str, kind: type = CacheMismatchError) -> CacheMismatchError:
        """``kind("saliency cache PATH WHAT. Rebuild it with: COMMAND")``."""
        attrs = {**getattr(self, "attrs", {}), **self._asked}
        dtype = str(self.dtype) if hasattr(self, "dtype") else None
        named = parse_shard_path(self.path)
        if named is not None:  # a shard file: the command that builds this shard
            cmd = _command(attrs, named[0], self._data_dir, dtype, shard=named[1:])
        elif _SHARDS in attrs and isinstance(attrs.get("num_shards"), int):  # a joined file: join again
            cmd = _command(attrs, self.path, self._data_dir, dtype, join=attrs["num_shards"])
        else:
            cmd = _command(attrs, self.path, self._data_dir)
        return kind(f"saliency cache {self.path} {what}. Rebuild it with: {cmd}")

    def _open_shards(self, attrs) -> None:
        """Open a reader per shard file of a joined cache and check each against the record
        the join wrote (present, finished, the same data and settings, the same content hash)."""
        try:
            entries = json.loads(attrs[_SHARDS])
            files = [str(e["file"]) for e in entries]
            spans = [(int(e["start"]), int(e["stop"])) for e in entries]
            hashes = [str(e[HASH_ATTR]) for e in entries]
        except (ValueError, TypeError, KeyError) as e:
            raise self._fail(f"has a '{_SHARDS}' attribute that cannot be read ({type(e).__name__}: {e})") from None
        n = len(files)
        bounds = [0] + [b for _, b in spans]
        if not n or attrs.get("num_shards") != n or [a for a, _ in spans] != bounds[:-1] \
                or bounds[-1] != attrs["count"] or any(Path(f).name != f for f in files):
            raise self._fail(f"has a '{_SHARDS}' record that does not cover its {attrs['count']} maps in order")
        self._shards = _Shards(self.path, n, attrs, self.dtype, self._data_dir)
        self._parts = []
        for k, (name, span, want) in enumerate(zip(files, spans, hashes)):
            part = self._shards.open(k, self.path.parent / name, span)
            if part.attrs[HASH_ATTR] != want:
                raise self._shards.error(k, f"holds another build than the one joined ({HASH_ATTR} "
                                            f"{part.attrs[HASH_ATTR][:16]}..., joined {want[:16]}...)", fix="join")
            self._parts.append(part)
        self._live = [p for p, (a, b) in zip(self._parts, spans) if b > a]
        self._starts = [a for a, b in spans if b > a]

    def _check(self, f, attrs, expect, method) -> None:
        version = attrs.get("format_version")
        if version is not None and version != FORMAT_VERSION:
            old = " (an older build without checksums)" if version == 1 else ""
            raise self._fail(f"has format_version {version!r}{old}, this code reads {FORMAT_VERSION}")
        if _DONE in f:
            raise self._fail("is incomplete (unfinished build)")
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise self._fail(f"lacks the attributes {missing} (not a saliency cache?)")
        bad = [k for k in (*_TEXT_ATTRS, HASH_ATTR) if _text(attrs[k]) is None]
        if bad:
            raise self._fail(f"has attributes that are not UTF-8 text: {bad}")
        for k, ok, expected in (("count", isinstance(attrs["count"], int) and attrs["count"] >= 0, "an integer >= 0"),
                                ("resolution", _is_resolution(attrs["resolution"]), "[h, w], two positive integers")):
            if not ok:
                raise self._fail(f"has attribute {k}={attrs[k]!r}; expected {expected}")
        ds = f.get(DATASET)
        if not isinstance(ds, h5py.Dataset):
            raise self._fail(f"has no '{DATASET}' dataset" if ds is None else
                             f"has '{DATASET}' as a {type(ds).__name__}, not a dataset")
        want = (attrs["count"], *attrs["resolution"])
        if ds.shape != want:
            raise self._fail(f"has '{DATASET}' of shape {list(ds.shape or ())}, but its attributes "
                             f"say count x resolution = {list(want)}")
        if ds.dtype not in DTYPES.values():
            raise self._fail(f"has dtype {ds.dtype}; expected {' or '.join(DTYPES)}")
        diffs = []
        if expect is not None:
            mine = {"dataset": expect.name, "split": expect.split, "count": len(expect),
                    "fingerprint": expect.fingerprint()}
            diffs += [f"{k}: cache has {attrs[k]!r}, data set has {v!r}" for k, v in mine.items() if attrs[k] != v]
        if method is not None and attrs["method"] != method:
            diffs.append(f"method: cache has {attrs['method']!r}, requested {method!r}")
        if diffs:
            raise self._fail("does not match: " + "; ".join(diffs))

    # -- access
    def _handle(self):
        if self._ds is None or self._pid != os.getpid():
            # Per process: never share a handle with a fork. No chunk cache: each map is read once
            # per epoch in random order, so a cache never hits and only adds a copy of each map.
            self._file = h5py.File(self.path, "r", rdcc_nbytes=0)
            if self._direct and _file_signature(self.path, self._file.id.get_vfd_handle()) != self._signature:
                self._direct = False  # the file opened is not the one verified: back to checked reads
            self._ds = self._file[DATASET]  # kept: looking it up costs more than reading a map
            self._pid = os.getpid()
        return self._ds

    @property
    def reads_checked(self) -> bool:
        """Whether each read map passes HDF5's per-chunk checksum: ``False`` in memory and for a
        file :func:`verify_cache` checked (docs/design.md); a joined cache asks its shard files."""
        if self._parts is not None:
            return self._data is None and any(p.reads_checked for p in self._live)
        return self._data is None and not self._direct

    def __len__(self) -> int:
        return self.shape[0]

    def stored(self, i: int) -> np.ndarray:
        """Map ``i`` in the storage dtype, ``[h, w]`` (read-only when its chunk is read directly)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a cache of {len(self)} maps")
        i %= len(self)
        if self._data is not None:
            return self._data[i]
        if self._parts is not None:  # read from its shard file (HDF5 cannot read a virtual dataset's chunks)
            k = bisect.bisect_right(self._starts, i) - 1
            return self._live[k].stored(i - self._starts[k])
        try:
            ds = self._handle()
            if self._direct:
                mask, chunk = ds.id.read_direct_chunk((i, 0, 0))
                n = self.resolution[0] * self.resolution[1]
                if mask == 0 and len(chunk) == n * self.dtype.itemsize + 4:  # the map, then its checksum
                    return np.frombuffer(chunk, self.dtype, count=n).reshape(self.resolution)
            return ds[i]
        except OSError as e:
            raise self._fail(f"cannot be read at map {i} (truncated? {e})") from e

    def __getitem__(self, i: int) -> np.ndarray:
        """Map ``i`` as ``np.float32[h, w]`` in [0, 1]."""
        m = self.stored(i)
        if m.dtype == np.uint8:
            return m.astype(np.float32) * np.float32(1 / 255)
        return m.astype(np.float32)

    def read_all(self) -> np.ndarray:
        """All maps, ``uint8[N, h, w]`` or ``float16[N, h, w]`` (the storage dtype)."""
        if self._data is not None:
            return self._data
        if self._parts is not None:
            return np.concatenate([p.read_all() for p in self._parts])
        try:
            with h5py.File(self.path, "r") as f:
                return f[DATASET][...]
        except OSError as e:
            raise self._fail(f"cannot be read (truncated? {e})") from e

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_ds"], state["_pid"] = None, None, None
        return state

    def close(self) -> None:
        for part in self._parts or ():
            part.close()
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._ds = None, None

    def __repr__(self) -> str:
        a = self.attrs
        return (f"SaliencyCache({str(self.path)!r}, {a['dataset']}/{a['split']}, n={a['count']}, "
                f"{a['method']}, {format_resolution(a['resolution'])} {self.dtype})")


def _command(attrs: dict, out, data_dir, dtype=None, *, shard=None, join=None) -> str:
    """The command that builds the cache ``out`` of ``attrs`` again: shard ``(k, n)`` of it (with
    ``--resume``), the join of its ``join`` shards, or the whole cache. A shard's or a join's
    command also spells ``dtype`` and ``postprocess``, which the other shards were built with."""
    text = lambda k: _text(attrs.get(k)) or None  # noqa: E731
    res = attrs.get("resolution")
    sharded = shard is not None or join is not None
    return rebuild_command(text("dataset") or "DATASET", text("split") or "SPLIT", text("method"), out,
                           res if _is_resolution(res) else None, data_dir, dtype=dtype if sharded else None,
                           postprocess=text("postprocess") if sharded else None, shard=shard, join=join,
                           resume=shard is not None)


class _Shards:
    """The ``n`` shard files of the cache ``out`` (with ``attrs`` and ``dtype``): each opened and
    checked, and the errors that name a shard and the one command that mends it."""

    def __init__(self, out: Path, n: int, attrs: dict, dtype, data_dir):
        self.out, self.n, self.attrs, self.dtype, self.data_dir = out, n, attrs, np.dtype(dtype), data_dir

    def error(self, k: int, what: str, kind: type = CacheMismatchError, fix: str = "shard") -> CacheMismatchError:
        """``kind("saliency cache OUT: shard K of N (FILE) WHAT; ...")`` with the command that
        mends it: the shard's build (``fix="shard"``) or the join (``fix="join"``)."""
        how = "join the shards again" if fix == "join" else "rebuild the shard"
        cmd = _command(self.attrs, self.out, self.data_dir, self.dtype,
                       **({"join": self.n} if fix == "join" else {"shard": (k, self.n)}))
        return kind(f"saliency cache {self.out}: shard {k} of {self.n} ({shard_path(self.out, k, self.n)}) {what}; "
                    f"{how} with: {cmd}")

    def open(self, k: int, path: Path, span=None, joined: str = "the joined cache") -> "SaliencyCache":
        """Shard file ``path``, checked to be shard ``k`` over images ``span`` (default: the range
        it says it holds) of this cache: present, finished, built from the same data with the same
        settings (compared with ``joined``, in the message)."""
        if not path.is_file():
            unfinished = Path(str(path) + ".partial").exists()
            raise self.error(k, "is unfinished (its build was interrupted)" if unfinished else "is missing")
        try:
            part = SaliencyCache(path, in_memory=False, data_dir=self.data_dir)
        except CacheMismatchError as e:
            raise type(e)(f"saliency cache {self.out}: shard {k} of {self.n}: {e}") from None
        if span is None:
            a = part.attrs.get("start")
            span = (a, a + len(part)) if isinstance(a, int) else (None, None)
        want = {**dict(zip(SHARD_ATTRS, (k, self.n, *span, self.attrs["count"]))),
                **{key: self.attrs.get(key) for key in _BUILD_ATTRS}}
        diffs = [f"{key}: shard has {part.attrs.get(key)!r}, joined cache has {v!r}"
                 for key, v in want.items() if part.attrs.get(key) != v]
        if part.dtype != self.dtype:
            diffs.append(f"dtype: shard has {part.dtype}, joined cache has {self.dtype}")
        if diffs:
            raise self.error(k, f"does not match {joined} ({'; '.join(diffs)})")
        return part

    def verify(self, parts: list, joined_hash) -> None:
        """Check every byte of each shard file (:func:`_verify_file`), feeding the maps to
        ``joined_hash`` too; raise :class:`CacheCorruptError` for the first damaged shard."""
        for k, part in enumerate(parts):
            _verify_file(part.path, lambda what, k=k: self.error(k, what, CacheCorruptError), joined_hash)


def join_cache(out, num_shards: int, *, attrs: dict, dtype: str = "uint8", data_dir=None,
               lock: FileLock | None = None) -> Path:
    """Join the shard files ``shard_path(out, k, num_shards)``, ``k = 0 .. num_shards - 1``, into
    the cache ``out``, an HDF5 virtual dataset over them (docs/design.md, "The saliency cache",
    Shards), written as ``out.partial`` and renamed when complete.

    ``attrs`` holds the split's ``count`` and what every shard must have been built with
    (``_BUILD_ATTRS``; ``checkpoint`` for gradient saliency only); ``data_dir`` is named in the
    commands the errors print; ``lock``, a held :func:`cache_lock` of ``out``, is otherwise taken
    here without waiting. One :class:`CacheMismatchError` names every shard missing, unfinished
    or built otherwise, a line each with the command that builds it.
    """
    out, n = Path(out), int(num_shards)
    attrs = {**attrs, "resolution": tuple(int(x) for x in attrs["resolution"])}
    shards = _Shards(out, n, attrs, dtype, data_dir)
    problems, parts = [], []
    for k in range(n):
        try:
            parts.append(shards.open(k, shard_path(out, k, n), joined="the cache to join"))
        except CacheMismatchError as e:
            problems.append(str(e))
    if not problems:
        spans = [(p.attrs["start"], p.attrs["stop"]) for p in parts]
        holes = [f"shard {k} starts at {a}, not {b}" for k, ((a, _), b) in
                 enumerate(zip(spans, [0] + [stop for _, stop in spans])) if a != b]
        if spans[-1][1] != attrs["count"]:
            holes.append(f"shard {n - 1} stops at {spans[-1][1]}, not at the split's {attrs['count']}")
        if holes:  # built with another --block-size: each shard's range depends on it
            problems.append(f"saliency cache {out}: the shards do not cover the split in order ({'; '.join(holes)}): "
                            f"build every shard with the same --block-size")
    if problems:
        raise CacheMismatchError("\n".join(problems))
    partial = Path(str(out) + ".partial")
    h, w = attrs["resolution"]
    count = int(attrs["count"])
    with contextlib.nullcontext() if lock is not None else cache_lock(out).acquire(wait=False):  # released on exit
        try:
            layout = h5py.VirtualLayout(shape=(count, h, w), dtype=np.dtype(dtype))
            for part, (a, b) in zip(parts, spans):
                if b > a:
                    layout[a:b] = h5py.VirtualSource(part.path.name, DATASET, shape=(b - a, h, w))
            record = [{"file": p.path.name, "start": a, "stop": b, HASH_ATTR: p.attrs[HASH_ATTR]}
                      for p, (a, b) in zip(parts, spans)]
            with h5py.File(partial, "w") as f:
                f.create_virtual_dataset(DATASET, layout, fillvalue=0)
                _write_attrs(f, {**{k: attrs.get(k) for k in ("count", *_BUILD_ATTRS)},
                                 "format_version": FORMAT_VERSION, "num_shards": n, _SHARDS: json.dumps(record)})
                digest = _hash_header(f)
                shards.verify(parts, digest)
                f.attrs[HASH_ATTR] = digest.hexdigest()
            replace_durably(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            for p in parts:
                p.close()
    return out
