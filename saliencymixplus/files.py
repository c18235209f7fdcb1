"""Files written safely: atomic writes, one writer at a time, output paths checked before work,
a full disk named in one line, content hashes; every module that writes a file uses these
(docs/design.md, "The saliency cache", Writing, and "Training")."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["OutputPathError", "BusyError", "DiskFullError", "FileLock", "atomic_write", "replace_durably",
           "ensure_writable_dir", "check_writable_dir", "check_output_file", "is_disk_full", "free_bytes",
           "format_bytes", "file_sha256", "arrays_sha256"]


class OutputPathError(ValueError):
    """An output path that cannot be written: a folder where a file is expected, a folder that
    cannot be created, or one that is not writable (read-only mount, permissions). The checks
    below raise it with one line that says what (their ``what``) and where."""


class BusyError(RuntimeError):
    """Another process holds the lock of a file being built or a run folder being written."""


class DiskFullError(OSError):
    """A write stopped because its file system is full (``errno`` ``ENOSPC``, ``filename`` the
    file). ``str(e)`` is the whole one-line message: which file, the space it needed and the
    space free, and what was kept."""

    def __init__(self, message: str, filename):
        super().__init__(errno.ENOSPC, message, str(filename))

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says that a file system is full or over quota: by its ``errno``, or in its
    text (HDF5 errors, which h5py raises as ``OSError`` or ``RuntimeError``)."""
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        t in str(e) for t in ("No space left on device", "Disk quota exceeded"))


def free_bytes(path) -> int | None:
    """Bytes free to this user on the file system of the folder of ``path``; ``None`` when it
    cannot be told."""
    try:
        return shutil.disk_usage(Path(path).absolute().parent).free
    except OSError:
        return None


def format_bytes(n) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units); ``None`` -> ``"an unknown amount"``."""
    if n is None:
        return "an unknown amount"
    units = ("B", "kB", "MB", "GB", "TB")
    k = 0
    while abs(n) >= 1000 and k < len(units) - 1:
        n, k = n / 1000, k + 1
    return f"{n:.0f} B" if k == 0 else f"{n:.1f} {units[k]}"


# ----------------------------------------------------------------------------- output paths

def ensure_writable_dir(folder, what: str) -> Path:
    """Create ``folder`` (and its parents) if missing and check that a file can be written in it
    (:func:`check_writable_dir`)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create {what} {folder}: {e.strerror or e}") from None
    check_writable_dir(folder, what)
    return folder


def check_writable_dir(folder, what: str) -> None:
    """Creating nothing, check that files can be written in ``folder``, or, where it does not exist
    yet, in its nearest existing parent (by writing and removing a small temporary file: this also
    catches read-only mounts)."""
    folder = probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot create {what} {folder}: {os.strerror(errno.ENOTDIR)}")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputPathError(f"cannot {'write in' if probe == folder else 'create'} {what} {folder}: "
                              f"{e.strerror or e}") from None


def check_output_file(path) -> Path:
    """Check, before any work, that the file ``path`` (the tools' ``--out``) can be written: it is
    not a folder and its folder exists (created if missing) and is writable."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"--out {p} is a folder; give the file to write, e.g. {p / (p.name or 'cache') }.h5")
    ensure_writable_dir(p.parent, "the folder of --out")
    return p


# ----------------------------------------------------------------------------- atomic writes

def _fsync(path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src, dst) -> None:
    """fsync the file ``src``, rename it to ``dst`` and fsync their folder: a reader sees the old
    ``dst`` or the whole new one, also after a crash."""
    _fsync(src)
    os.replace(src, dst)
    with contextlib.suppress(OSError):  # some file systems cannot open or fsync a folder; the rename is still atomic
        _fsync(Path(dst).parent, getattr(os, "O_DIRECTORY", 0))


def atomic_write(path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (with its suffix: some writers choose the
    format by it), then :func:`replace_durably` it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        replace_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- one writer at a time

class FileLock:
    """An exclusive advisory lock (``fcntl.flock``), held while ``target`` is written and released
    when the holder releases it or dies (even by SIGKILL), so a stale lock file never blocks anyone.
    The holder writes its pid into the file (for messages) and removes it on release; a waiter then
    holding the removed file retries with the new one, so two processes never both hold it.
    ``busy`` is the message of :class:`BusyError` when another process holds it and we do not
    wait, with ``{target}``, ``{pid}`` and ``{lock}`` filled in.
    """

    def __init__(self, target, *, busy: str, lock_path=None):
        self.out = Path(target)
        self.path = Path(lock_path) if lock_path is not None else Path(str(target) + ".lock")
        self.busy = busy
        self._fd: Optional[int] = None
        self.waited = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """The pid written in the lock file (``"?"`` when unknown)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def acquire(self, *, wait: bool = True, on_wait: Optional[Callable[[str], None]] = None) -> "FileLock":
        """Take the lock. When another process holds it: with ``wait``, call ``on_wait(pid)`` once
        and block until it is free; without, raise :class:`BusyError`.

        Raises:
            BusyError: busy and ``wait`` is false.
            OutputPathError: the lock file cannot be created (folder not writable).
        """
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputPathError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    pid = self.holder()
                    if not wait:
                        raise BusyError(self.busy.format(target=self.out, pid=pid, lock=self.path)) from None
                    if not self.waited and on_wait is not None:
                        on_wait(pid)
                    self.waited = True
                    fcntl.flock(fd, fcntl.LOCK_EX)
                # The holder we waited for removes the file on release: hold the current one.
                try:
                    current = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    current = False
                if not current:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self

    def release(self) -> None:
        """Remove the lock file and release the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: waiters notice and retry
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------- content hashes

def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MB steps: its first 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def arrays_sha256(*arrays, digits: int = 64, with_layout: bool = True) -> str:
    """The SHA-256 of numpy arrays (or CPU tensors): each array's dtype and shape (unless
    ``with_layout`` is false) and its bytes in C order, as ``digits`` hex digits."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
        if with_layout:
            h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:digits]
