"""The cache never loses data: one builder at a time (two real processes on one ``--out``),
checksummed chunks and a content hash that catch damaged bytes (refused by ``verify_cache``,
rebuilt by ``precompute --resume``, refused by ``train.py`` with exit 2), and old-format or
hand-made files refused with one line instead of a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from saliencymixplus.cache import (CacheCorruptError, CacheMismatchError, CacheWriter, SaliencyCache, cache_lock,
                                   content_hash, verify_cache)
from saliencymixplus.files import BusyError
from saliencymixplus.precompute import build_cache
from saliencymixplus.precompute import main as precompute_main
from saliencymixplus.rawdata import load_split
from saliencymixplus.training import main as train_main

from cli_helpers import exit_code as _call, subprocess_env as _env
from cli_helpers import QUIET, TOOL, TINY_RUN as TINY
from fixtures_data import damage_map as _damage_map

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def raw(cifar_dir):
    return load_split("cifar100", cifar_dir["root"], "train")


@pytest.fixture()
def built(cifar_dir, tmp_path):
    """A finished cache of the tiny CIFAR folder's training split (48 maps, 6 blocks)."""
    return build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "good.h5", workers=0,
                       block_size=8, **QUIET)


def _train(cifar_dir, cache, tmp_path, capsys, *extra) -> tuple[int, str]:
    rc = _call(train_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--saliency-cache", cache,
                            "--out-dir", tmp_path / "run", *TINY, *extra])
    return rc, capsys.readouterr().err


def _assert_one_line_refusal(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


# ----------------------------------------------------------------------------- one builder at a time

def _spawn(args, tmp_path, name, pause_file=None):
    """The precompute tool as a process; with ``pause_file`` it waits after each written block
    while that file exists (tests/precompute_with_hooks.py)."""
    tool = [str(ROOT / "tests" / "precompute_with_hooks.py"), "--pause-file", str(pause_file)] if pause_file \
        else [str(TOOL)]
    with open(tmp_path / f"{name}.out", "w") as fo, open(tmp_path / f"{name}.err", "w") as fe:
        return subprocess.Popen([sys.executable, *tool, *map(str, args)], stdout=fo, stderr=fe, cwd=ROOT,
                                env=_env(), start_new_session=True)


def _wait_for(cond, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_builds_of_one_cache_at_once(cifar_dir, raw, tmp_path):
    """Build A holds OUT's lock (paused after its first block); B with --no-wait stops with exit 2
    and leaves A's file alone; C waits, says so, and reuses A's finished cache."""
    out = tmp_path / "c.h5"
    partial, lock = Path(f"{out}.partial"), Path(f"{out}.lock")
    pause = tmp_path / "pause"
    pause.touch()
    args = ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--split", "train", "--workers", "0",
            "--block-size", "8", "--no-progress", "--out", out]
    procs = []
    try:
        a = _spawn(args, tmp_path, "a", pause_file=pause)
        procs.append(a)
        _wait_for(lambda: partial.exists() or a.poll() is not None, "build A to start")  # it holds the lock
        assert a.poll() is None, (tmp_path / "a.err").read_text()

        b = _spawn([*args, "--no-wait"], tmp_path, "b")
        procs.append(b)
        assert b.wait(timeout=120) == 2
        err_b = (tmp_path / "b.err").read_text()
        assert f"{out} is being built by another process (pid {a.pid}" in err_b and "Traceback" not in err_b
        assert len(err_b.strip().splitlines()) == 1, err_b
        assert partial.exists() and a.poll() is None  # A still running (its file is checked at the end)

        c = _spawn(args, tmp_path, "c")
        procs.append(c)
        _wait_for(lambda: "waiting" in (tmp_path / "c.out").read_text() or c.poll() is not None, "C to wait")
        assert c.poll() is None, (tmp_path / "c.err").read_text()
        pause.unlink()  # let A finish
        assert a.wait(timeout=120) == 0, (tmp_path / "a.err").read_text()
        assert c.wait(timeout=120) == 0, (tmp_path / "c.err").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    out_c = (tmp_path / "c.out").read_text()
    assert f"another process (pid {a.pid}) is building {out}; waiting" in out_c
    assert "built by the other process; reusing it" in out_c
    assert not partial.exists() and not lock.exists()
    got = verify_cache(out, expect=raw).read_all()
    ref = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "ref.h5", workers=0,
                      block_size=8, **QUIET)
    np.testing.assert_array_equal(got, SaliencyCache(ref).read_all())


def test_lock_names_its_holder_and_survives_a_dead_one(tmp_path, raw):
    out = tmp_path / "c.h5"
    lockfile = Path(f"{out}.lock")
    lockfile.write_text("12345\n")  # left by a build killed with -9: the file is there, the lock is not
    first = cache_lock(out).acquire(wait=False)
    assert lockfile.read_text().strip() == str(os.getpid())
    with pytest.raises(BusyError, match=f"being built by another process \\(pid {os.getpid()}"):
        cache_lock(out).acquire(wait=False)
    with pytest.raises(BusyError):  # a writer takes the lock before it opens the partial file
        CacheWriter(out, dataset="cifar100", split="train", count=len(raw), fingerprint=raw.fingerprint(),
                    method="fine_grained", resolution=(32, 32), block_size=8)
    assert not Path(f"{out}.partial").exists()

    # A waiter blocked on the lock holds it once the holder lets go, and only one holds it.
    waiting, second = threading.Event(), cache_lock(out)
    t = threading.Thread(target=lambda: second.acquire(wait=True, on_wait=lambda pid: waiting.set()))
    t.start()
    assert waiting.wait(30)
    first.release()
    t.join(30)
    assert second.held and lockfile.exists()
    with pytest.raises(BusyError):
        cache_lock(out).acquire(wait=False)
    second.release()
    assert not lockfile.exists()


# ----------------------------------------------------------------------------- damaged bytes

def test_damaged_bytes_anywhere_are_refused_or_harmless(built, raw, tmp_path):
    """4 KB of random bytes at 24 places across the file: each damaged copy is refused, or
    (bytes HDF5 does not use) every map and attribute reads back unchanged."""
    good = built.read_bytes()
    ref = SaliencyCache(built, expect=raw)
    want, want_attrs = ref.read_all(), dict(ref.attrs)
    rng = np.random.default_rng(0)
    refused = 0
    for k, pos in enumerate(np.linspace(0, len(good) - 4096, 24).astype(int)):
        bad = bytearray(good)
        bad[pos:pos + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        path = tmp_path / f"bad{k}.h5"
        path.write_bytes(bytes(bad))
        try:
            cache = verify_cache(path, expect=raw)
        except CacheMismatchError as e:
            refused += 1
            assert "Rebuild it with: saliencymixplus-precompute --dataset cifar100" in str(e)
            continue
        with h5py.File(path, "r") as f:  # accepted: then what it holds is exactly what was written
            np.testing.assert_array_equal(f["saliency"][...], want)
        assert cache.attrs == want_attrs
    assert refused >= 20, refused  # nearly every 4 KB of a 60 KB cache is maps or metadata


def test_a_damaged_chunk_fails_its_own_read(built, raw, tmp_path):
    """fletcher32: map 20's chunk damaged -> reading map 20 fails, the other maps still read."""
    path = tmp_path / "c.h5"
    shutil.copy(built, path)
    _damage_map(path, 20)
    cache = SaliencyCache(path, expect=raw, in_memory=False)
    np.testing.assert_array_equal(cache.stored(19), SaliencyCache(built).stored(19))
    with pytest.raises(CacheMismatchError, match="cannot be read at map 20"):
        cache.stored(20)
    with pytest.raises(CacheCorruptError, match="is damaged: maps 0..47 cannot be read"):
        verify_cache(path, expect=raw)


def _write_cache(path, maps: np.ndarray, dtype: str) -> None:
    with CacheWriter(path, dataset="demo", split="train", count=len(maps), fingerprint="f", method="m",
                     resolution=maps.shape[1:], dtype=dtype, block_size=4) as w:
        for a in range(0, len(maps), 4):
            w.write(a, maps[a:a + 4])
        w.finalize()


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_verified_cache_reads_raw_chunks_until_the_file_changes(dtype, tmp_path):
    """After verify_cache, maps are read as their chunks' bytes directly (byte-identical to HDF5's checked
    read); a file changed since (new mtime) is read through the checksums again."""
    maps = np.random.default_rng(3).random((9, 7, 5)).astype(np.float32)
    path = tmp_path / "c.h5"
    _write_cache(path, maps, dtype)
    with h5py.File(path, "r") as f:
        want = f["saliency"][...]
    assert want.dtype == np.dtype(dtype) and want.shape == (9, 7, 5)

    assert SaliencyCache(path, in_memory=False).reads_checked  # not verified yet
    assert not verify_cache(path).reads_checked
    fast = SaliencyCache(path, in_memory=False)
    assert not fast.reads_checked
    got = np.stack([fast.stored(i) for i in range(9)])
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    np.testing.assert_array_equal(fast.stored(-2), want[7])
    np.testing.assert_allclose(fast[4], want[4].astype(np.float32) / (255 if dtype == "uint8" else 1), rtol=1e-6)

    opened = SaliencyCache(path, in_memory=False)  # handle not opened yet
    _damage_map(path, 6, keep_mtime=True)  # same signature: the raw read trusts the verification
    assert fast.stored(6).tobytes() != want[6].tobytes()
    _damage_map(path, 6, keep_mtime=False)  # a new mtime: checked reads again, the damage is caught
    for cache in (opened, SaliencyCache(path, in_memory=False)):
        np.testing.assert_array_equal(cache.stored(5), want[5])
        with pytest.raises(CacheMismatchError, match="cannot be read at map 6"):
            cache.stored(6)
        assert cache.reads_checked


def test_a_file_swapped_in_after_verification_is_read_through_the_checksums(tmp_path):
    """The reader opens its handle after the signature was taken: a file put in place since
    (os.replace, as a rebuild does) is not the one verified, so its damage is still caught."""
    maps = np.random.default_rng(4).random((6, 5, 5)).astype(np.float32)
    path, other = tmp_path / "c.h5", tmp_path / "d.h5"
    _write_cache(path, maps, "uint8")
    shutil.copy(path, other)
    _damage_map(other, 2, keep_mtime=False)
    verify_cache(path)
    fast = SaliencyCache(path, in_memory=False)
    assert not fast.reads_checked  # it would read chunks directly of the file it was opened on
    os.replace(other, path)  # a new inode under the same name, before the first read
    with pytest.raises(CacheMismatchError, match="cannot be read at map 2"):
        fast.stored(2)
    assert fast.reads_checked


def test_content_hash_catches_edits_the_checksums_cannot(built, raw, tmp_path):
    """An edit through HDF5 recomputes the chunk checksums; the content hash still differs."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    shutil.copy(built, a)
    shutil.copy(built, b)
    with h5py.File(a, "r+") as f:
        f["saliency"][3] = 255 - f["saliency"][3]
    with h5py.File(b, "r+") as f:
        f.attrs["postprocess"] = "none"
    for path in (a, b):
        with pytest.raises(CacheCorruptError, match="no longer matches the hash written when it was built"):
            verify_cache(path, expect=raw)
        SaliencyCache(path, expect=raw)  # the structure alone looks fine: only the hash tells


def _damaged_copy(built: Path, path: Path, seed: int) -> Path:
    """``built`` copied to ``path`` with 4 KB of random bytes in the middle of the file."""
    data = bytearray(built.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_precompute_resume_rebuilds_a_damaged_cache(cifar_dir, built, raw, tmp_path, capsys):
    path = _damaged_copy(built, tmp_path / "c.h5", seed=1)
    rc = _call(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--split", "train",
                                 "--workers", "0", "--block-size", "8", "--no-progress", "--out", path, "--resume"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"rebuilding {path}" in out.out and "nothing to do" not in out.out
    np.testing.assert_array_equal(verify_cache(path, expect=raw).read_all(), SaliencyCache(built).read_all())


@pytest.mark.parametrize("saliency", ["cache", "refresh"])  # refresh starts from the cache: checked alike
def test_train_refuses_a_damaged_cache_with_the_rebuild_command(saliency, cifar_dir, built, tmp_path, capsys):
    path = _damaged_copy(built, tmp_path / "c.h5", seed=2)
    rc, err = _train(cifar_dir, path, tmp_path, capsys, "--saliency", saliency)
    _assert_one_line_refusal(rc, err, "saliency cache damaged", f"saliency cache {path}",
                             f"Rebuild it with: saliencymixplus-precompute --dataset cifar100 --data-dir "
                             f"{cifar_dir['root']} --split train --method fine_grained --out {path}")
    assert "METHOD" not in err and "DATA_DIR" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


# ----------------------------------------------------------------------------- old and hand-made files

def _v1_cache(path, raw):
    """A cache as format_version 1 wrote it: no checksums, no content hash."""
    with h5py.File(path, "w") as f:
        f.create_dataset("saliency", data=np.zeros((len(raw), 32, 32), np.uint8), chunks=(1, 32, 32))
        for k, v in dict(dataset="cifar100", split="train", count=len(raw), fingerprint=raw.fingerprint(),
                         method="fine_grained", format_version=1, postprocess="top=0.2,power=2").items():
            f.attrs[k] = v
        f.attrs["resolution"] = np.asarray((32, 32), np.int64)


def test_old_format_is_refused_with_the_rebuild_command(cifar_dir, raw, tmp_path, capsys):
    path = tmp_path / "old.h5"
    _v1_cache(path, raw)
    with pytest.raises(CacheMismatchError, match=r"format_version 1 \(an older build without checksums\), "
                                                 r"this code reads 2"):
        SaliencyCache(path, expect=raw)
    rc, err = _train(cifar_dir, path, tmp_path, capsys)
    _assert_one_line_refusal(rc, err, "format_version 1", f"--data-dir {cifar_dir['root']}", f"--out {path}")


def _group(f):
    del f["saliency"]
    f.create_group("saliency")


def _maps(shape, dtype):
    def edit(f):
        del f["saliency"]
        f.create_dataset("saliency", data=np.zeros(shape, dtype))
    return edit


HAND_MADE = {
    "group": (_group, "has 'saliency' as a Group, not a dataset"),
    "smaller maps": (_maps((48, 16, 16), np.uint8), "has 'saliency' of shape [48, 16, 16], but its attributes say "
                                                    "count x resolution = [48, 32, 32]"),
    "float32 maps": (_maps((48, 32, 32), np.float32), "has dtype float32; expected uint8 or float16"),
    "count of fewer maps": (lambda f: f.attrs.__setitem__("count", 40), "count x resolution = [40, 32, 32]"),
    "newer format": (lambda f: f.attrs.__setitem__("format_version", 99), "has format_version 99, this code reads 2"),
    "no fingerprint": (lambda f: f.attrs.__delitem__("fingerprint"), "lacks the attributes ['fingerprint']"),
    "scalar resolution": (lambda f: f.attrs.__setitem__("resolution", np.int64(32)),
                          "has attribute resolution=32; expected [h, w], two positive integers"),
    "non-UTF-8 attribute": (lambda f: f.attrs.__setitem__("dataset", np.bytes_(b"\xff\xfecifar")),
                            "has attributes that are not UTF-8 text: ['dataset']"),
    "three-value resolution": (lambda f: f.attrs.__setitem__("resolution", np.asarray([32, 32, 3])),
                               "has attribute resolution=(32, 32, 3)"),
    "text count": (lambda f: f.attrs.__setitem__("count", "many"), "has attribute count='many'"),
    "no hash": (lambda f: f.attrs.__delitem__("content_sha256"), "lacks the attributes ['content_sha256']"),
}


@pytest.mark.parametrize("kind", list(HAND_MADE))
def test_hand_made_files_are_refused_in_one_line(kind, cifar_dir, built, raw, tmp_path, capsys):
    edit, reason = HAND_MADE[kind]
    path = tmp_path / "hand.h5"
    shutil.copy(built, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(CacheMismatchError) as e:
        SaliencyCache(path, expect=raw)
    assert reason in str(e.value) and "Rebuild it with: saliencymixplus-precompute --dataset cifar100" in str(e.value)
    str(e.value).encode()  # printable as it is
    if kind in ("group", "scalar resolution", "non-UTF-8 attribute"):  # the three, end to end
        rc, err = _train(cifar_dir, path, tmp_path, capsys)
        _assert_one_line_refusal(rc, err, reason)
        rc = _call(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--split", "train",
                                     "--workers", "0", "--block-size", "8", "--no-progress", "--out", path,
                                     "--resume"])
        out = capsys.readouterr()
        assert rc == 0 and f"rebuilding {path}" in out.out, out.err
        verify_cache(path, expect=raw)


# ----------------------------------------------------------------------------- a full disk

def _precompute_args(cifar_dir, out, *extra) -> list:
    return ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--split", "train", "--workers", "0",
            "--block-size", "8", "--no-progress", "--out", out, *extra]


def _fill_disk_at(monkeypatch, block: int, *, silent: bool) -> None:
    """The ``block``-th write into a ``saliency`` dataset (counting from 1) stores its first half
    of maps only, then fails as HDF5 fails on a full disk (``OSError`` errno 28); ``silent``: it
    returns as if it had written everything, as h5py did when it swallowed that error."""
    setitem = h5py.Dataset.__setitem__
    calls = 0

    def full(self, key, value):
        nonlocal calls
        if self.name != "/saliency" or not isinstance(key, slice):
            return setitem(self, key, value)
        calls += 1
        if calls < block:
            return setitem(self, key, value)
        half = (key.stop - key.start) // 2
        setitem(self, slice(key.start, key.start + half), value[:half])
        if not silent:
            raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: errno = 28, "
                                        "error message = 'No space left on device')")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)


def _done_flags(partial: Path) -> list[int]:
    with h5py.File(partial, "r") as f:
        return f["_done"][...].tolist()


@pytest.mark.parametrize("silent", [False, True], ids=["write error", "write error swallowed"])
def test_a_block_that_does_not_reach_the_disk_stops_the_build_and_is_written_on_resume(
        silent, cifar_dir, built, tmp_path, capsys, monkeypatch):
    """The third block of six loses half its maps: the build stops (exit 2, one line naming the
    file), the two finished blocks are kept, and --resume writes the rest."""
    out = tmp_path / "c.h5"
    _fill_disk_at(monkeypatch, 3, silent=silent)
    rc = _call(precompute_main, _precompute_args(cifar_dir, out))
    err = capsys.readouterr().err
    _assert_one_line_refusal(rc, err, f"{out}.partial", "--resume")
    if not silent:
        assert "no space left on device" in err and "free" in err, err
    assert not out.exists() and _done_flags(Path(f"{out}.partial")) == [1, 1, 0, 0, 0, 0]
    monkeypatch.undo()
    rc = _call(precompute_main, _precompute_args(cifar_dir, out, "--resume"))
    assert rc == 0 and "2 of 6 blocks already written" in capsys.readouterr().out
    np.testing.assert_array_equal(verify_cache(out).read_all(), SaliencyCache(built).read_all())


def test_train_building_its_cache_on_a_full_disk_exits_2_in_one_line(cifar_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "c.h5"
    _fill_disk_at(monkeypatch, 1, silent=False)  # the build's one block (48 maps)
    rc, err = _train(cifar_dir, cache, tmp_path, capsys)
    _assert_one_line_refusal(rc, err, "no space left on device", f"{cache}.partial")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_partial_file_whose_finished_blocks_lack_maps_is_resumed_from_what_is_there(cifar_dir, built, raw,
                                                                                    tmp_path, capsys):
    """The state a full disk left: every block marked written, only two blocks' maps in the file."""
    out = tmp_path / "c.h5"
    maps = SaliencyCache(built).read_all()
    with CacheWriter(out, dataset="cifar100", split="train", count=len(raw), fingerprint=raw.fingerprint(),
                     method="fine_grained", resolution=(32, 32), block_size=8, item_stamps=raw.item_stamps(),
                     extra_attrs={"postprocess": SaliencyCache(built).attrs["postprocess"]}) as w:
        w.write(0, maps[:8])
        w.write(8, maps[8:16])
    with h5py.File(f"{out}.partial", "r+") as f:
        f["_done"][...] = 1
        assert f["saliency"].id.get_num_chunks() == 16
    rc = _call(precompute_main, _precompute_args(cifar_dir, out, "--resume"))
    stdout = capsys.readouterr().out
    assert rc == 0 and "2 of 6 blocks already written" in stdout, stdout
    assert "4 blocks marked written lack maps, from map 16: writing them again" in stdout, stdout
    np.testing.assert_array_equal(verify_cache(out, expect=raw).read_all(), maps)


def test_finalize_refuses_a_block_whose_maps_are_missing(raw, tmp_path):
    maps = np.random.default_rng(5).random((len(raw), 8, 8), dtype=np.float32)
    with CacheWriter(tmp_path / "c.h5", dataset="cifar100", split="train", count=len(raw), fingerprint="f",
                     method="m", resolution=(8, 8), block_size=8) as w:
        for a in range(0, 40, 8):
            w.write(a, maps[a:a + 8])
        w._f["_done"][...] = 1  # the last block marked written, its maps never written
        with pytest.raises(CacheCorruptError, match="map 40 .*never written"):
            w.finalize()
    assert not (tmp_path / "c.h5").exists()


def _without_map(built: Path, path: Path, missing: int) -> Path:
    """``built`` rewritten to ``path`` without map ``missing``'s chunk, its content hash computed
    from the file as a finalize reading the fill value would (so the hash agrees)."""
    with h5py.File(built, "r") as src, h5py.File(path, "w") as f:
        a = src["saliency"]
        ds = f.create_dataset("saliency", shape=a.shape, dtype=a.dtype, chunks=a.chunks, fletcher32=True)
        ds[:missing] = a[:missing]
        ds[missing + 1:] = a[missing + 1:]
        for k, v in src.attrs.items():
            f.attrs[k] = v
        f.attrs["content_sha256"] = content_hash(f)
    return path


def test_verify_cache_refuses_a_finished_cache_with_a_missing_map(cifar_dir, built, raw, tmp_path, capsys):
    path = _without_map(built, tmp_path / "c.h5", 13)
    with pytest.raises(CacheCorruptError, match="map 13 .*never written") as e:
        verify_cache(path, expect=raw)
    assert "Rebuild it with: saliencymixplus-precompute --dataset cifar100" in str(e.value)
    rc, err = _train(cifar_dir, path, tmp_path, capsys)
    _assert_one_line_refusal(rc, err, "saliency cache damaged", "map 13")
    rc = _call(precompute_main, _precompute_args(cifar_dir, path, "--resume"))
    assert rc == 0 and f"rebuilding {path}" in capsys.readouterr().out
    np.testing.assert_array_equal(verify_cache(path, expect=raw).read_all(), SaliencyCache(built).read_all())


@pytest.fixture()
def small_disk(tmp_path):
    """A 96 KB tmpfs (mounting needs root; skipped where it is not permitted); remount it larger
    with ``grow()``."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True,
                           text=True)
    except OSError as e:  # no mount command
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)

    try:
        yield mnt, grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_cache_built_on_a_disk_that_fills_up(cifar_dir, raw, tmp_path, small_disk):
    """A real full disk (48 maps of 64x64, about 200 KB, on 96 KB): the tool stops with exit 2 in
    one line and keeps its finished blocks; with space freed, --resume writes a complete cache."""
    mnt, grow = small_disk
    out = mnt / "c.h5"

    def tool(*extra):
        return subprocess.run([sys.executable, str(TOOL), *map(str, _precompute_args(cifar_dir, out, "--resolution",
                                                                                      "64x64", *extra))],
                              capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=300)

    r = tool()
    _assert_one_line_refusal(r.returncode, r.stderr, "no space left on device", f"{out}.partial", "free")
    done = _done_flags(Path(f"{out}.partial"))
    assert 0 < sum(done) < 6 and done == sorted(done, reverse=True), done
    grow()
    r = tool("--resume")
    assert r.returncode == 0, r.stderr
    assert f"{sum(done)} of 6 blocks already written" in r.stdout, r.stdout
    ref = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "ref.h5", workers=0,
                      block_size=8, resolution=(64, 64), **QUIET)
    np.testing.assert_array_equal(verify_cache(out, expect=raw).read_all(), SaliencyCache(ref).read_all())
