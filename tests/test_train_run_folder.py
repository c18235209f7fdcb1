"""A run folder holds one run: locked while a run writes it, never overwritten by another run,
found again by ``--resume`` with more epochs; a ``--resume`` refuses a checkpoint that is not
valid or a saliency cache other than the one the run trained on; what went wrong (Ctrl-C while
the cache is built, a full disk, an output that is a folder, a mistyped ``--data-dir``) is
said in one line, naming the right file, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from saliencymixplus.cache import CacheWriter, SaliencyCache, cache_lock
from saliencymixplus.checkpoint_file import read_checkpoint
from saliencymixplus.training import main

from cli_helpers import exit_code, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--limit-train-batches", "2", "--limit-test-batches", "1", "--batch_size", "16", "--no-progress",
        "--workers", "0"]


def call(argv) -> int:
    return exit_code(main, argv)


def demo(cache, *extra) -> list:
    return ["--dataset", "demo", "--saliency-cache", cache, *TINY, *extra]


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def cache_like(path: Path, source, method: str, fill: int) -> Path:
    """A valid cache of the demo training split (the source cache's identity) whose every map
    is ``fill``: another content, and so another content hash, than ``source``'s."""
    attrs = SaliencyCache(source).attrs
    n, (h, w) = int(attrs["count"]), tuple(int(v) for v in attrs["resolution"])
    with CacheWriter(path, dataset=attrs["dataset"], split=attrs["split"], count=n, fingerprint=attrs["fingerprint"],
                     method=method, resolution=(h, w), block_size=n, resume=False) as writer:
        writer.write(0, np.full((n, h, w), fill, np.uint8))
        return writer.finalize()


# ----------------------------------------------------------------------------- one run per folder

def test_a_second_run_into_a_folder_in_use_exits_2_naming_the_folder_and_the_pid(tmp_path, demo_cache, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, demo(demo_cache, "--epochs", "1000")),
                              "--out-dir", str(run)], env=subprocess_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "config.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-3000:]
        rc = call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run])
        err = capsys.readouterr().err
        assert rc == 2, err
        one_line(err)
        assert f"--out-dir {run} is in use by another train.py (pid {first.pid})" in err
    finally:
        first.kill()
        first.communicate(timeout=60)


def test_a_finished_or_foreign_run_is_not_overwritten(tmp_path, demo_cache, capsys):
    run = tmp_path / "run"
    assert call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run]) == 0
    before = files_of(run)
    capsys.readouterr()

    assert call([*demo(demo_cache, "--epochs", "1", "--lr", "0.2", "--weight_decay", "0"), "--out-dir", run]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"--out-dir {run} already holds a finished run of 1 epoch with other settings" in err
    assert "learning_rate: 0.05 there, 0.2 now; weight_decay: 0.0005 there, 0.0 now" in err
    assert "pick another --out-dir" in err

    assert call([*demo(demo_cache, "--epochs", "2"), "--out-dir", run]) == 2  # its own settings, no --resume
    err = one_line(capsys.readouterr().err)
    assert f"--out-dir {run} already holds a finished run of 1 epoch of these settings" in err
    assert "add --resume to continue it" in err and "pick another --out-dir" in err
    assert files_of(run) == before  # nothing of the first run was touched

    assert call([*demo(demo_cache, "--epochs", "2", "--resume"), "--out-dir", run]) == 0  # as the message says
    assert read_checkpoint(run / "last.pt")["epoch"] == 2


def test_resume_with_more_epochs_continues_in_the_default_folder(tmp_path, demo_cache, capsys, monkeypatch):
    """The default folder's name does not hold --epochs, which may change on --resume."""
    monkeypatch.chdir(tmp_path)
    assert call(demo(demo_cache, "--epochs", "1")) == 0
    capsys.readouterr()
    assert call(demo(demo_cache, "--epochs", "2", "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, folders
    ck = read_checkpoint(folders[0] / "last.pt")
    assert ck["epoch"] == 2 and [r["epoch"] for r in ck["history"]] == [1, 2]


# ----------------------------------------------------------------------------- what --resume accepts

def test_resume_on_another_cache_is_refused(tmp_path, demo_cache, capsys):
    run = tmp_path / "run"
    assert call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run]) == 0
    other = cache_like(tmp_path / "other.h5", demo_cache, "fine_grained", fill=7)
    want = str(SaliencyCache(demo_cache).attrs["content_sha256"])[:16]
    got = str(SaliencyCache(other).attrs["content_sha256"])[:16]
    last = (run / "last.pt").read_bytes()
    capsys.readouterr()
    rc = call(["--dataset", "demo", "--saliency-cache", other, *TINY, "--epochs", "2", "--resume", "--out-dir", run])
    err = one_line(capsys.readouterr().err)
    assert rc == 2, err
    assert f"--resume {run / 'last.pt'}: the run trained on a saliency cache with content_sha256 {want}" in err
    assert f"--saliency-cache {other} has {got}" in err
    assert (run / "last.pt").read_bytes() == last
    assert read_checkpoint(run / "last.pt")["saliency_cache_sha256"].startswith(want)


def test_the_method_the_cache_says_is_recorded(tmp_path, demo_cache, capsys):
    """A spectral_residual cache used with the default --saliency-method (fine_grained)."""
    sr = cache_like(tmp_path / "sr.h5", demo_cache, "spectral_residual", fill=9)
    run = tmp_path / "run"
    assert call(["--dataset", "demo", "--saliency-cache", sr, *TINY, "--epochs", "1", "--out-dir", run]) == 0, \
        capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["config"]["saliency_method"] == "spectral_residual"
    assert json.loads((run / "config.json").read_text())["saliency_method"] == "spectral_residual"
    assert read_checkpoint(run / "last.pt")["config"]["saliency_method"] == "spectral_residual"
    # The run resumes with the command that started it (the method flag is not what identifies the cache).
    assert call(["--dataset", "demo", "--saliency-cache", sr, *TINY, "--epochs", "2", "--resume",
                 "--out-dir", run]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("epoch, history, why", [
    (-5, 0, "its epoch is -5"),
    ("1", 1, "its epoch is '1', expected the number of epochs it has done (an integer >= 0)"),
    (1, 3, "its epoch is 1 but its history has 3 epochs"),
])
def test_a_checkpoint_with_an_invalid_epoch_is_refused(epoch, history, why, tmp_path, demo_cache, capsys):
    run = tmp_path / "run"
    assert call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run]) == 0
    ck = read_checkpoint(run / "last.pt")
    ck["epoch"], ck["history"] = epoch, ck["history"] * history
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    capsys.readouterr()
    rc = call([*demo(demo_cache, "--epochs", "3"), "--out-dir", tmp_path / "again", "--resume", bad])
    err = one_line(capsys.readouterr().err)
    assert rc == 2, err
    assert f"--resume {bad}: {why}" in err
    assert not (tmp_path / "again" / "last.pt").exists()


# ----------------------------------------------------------------------------- messages that name the right thing

def test_ctrl_c_while_the_cache_is_built_says_to_run_the_same_command_again(tmp_path):
    cache = tmp_path / "new.h5"
    cmd = [sys.executable, str(ROOT / "train.py"), *map(str, demo(cache, "--epochs", "1")), "--out-dir",
           str(tmp_path / "run")]
    # Give the child the default SIGINT disposition, as a terminal would (see test_train.py).
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # The demo set's build takes under a second, so a Ctrl-C sent after "building it" can come too
    # late. The test holds the cache's lock: the child's build waits for it, and Ctrl-C meets that
    # wait every time.
    with cache_lock(cache).acquire():
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "building it" in lines[0] and "waiting for it" in lines[1], lines + [proc.communicate()[1][-3000:]]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "last.pt" not in err, err
    assert f"interrupted while building the saliency cache {cache}" in err
    assert "run the same command again: the build continues from its finished blocks" in err
    # As it says: the same command finishes the cache and trains.
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert cache.is_file() and (tmp_path / "run" / "last.pt").is_file()


def test_an_output_that_is_a_folder_is_refused_before_training(tmp_path, demo_cache, capsys):
    run = tmp_path / "run"
    (run / "last.pt").mkdir(parents=True)
    rc = call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run])
    err = one_line(capsys.readouterr().err)
    assert rc == 2, err
    assert f"{run / 'last.pt'} is a folder" in err and ".tmp" not in err
    assert not (run / "log.csv").exists()  # refused before a whole epoch was trained


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """``folder`` as a tmpfs of ``size``, or skip where this process cannot mount one."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, demo_cache, capsys):
    with small_disk(tmp_path / "disk", "48k") as disk:
        run = disk / "run"
        rc = call([*demo(demo_cache, "--epochs", "1"), "--out-dir", run])
        err = capsys.readouterr().err
    assert rc == 1, err
    one_line(err)
    assert f"No space left on device: {run / 'last.pt'}" in err, err


def test_a_mistyped_data_dir_leaves_nothing_behind(tmp_path, capsys):
    typo, run = tmp_path / "dta", tmp_path / "run"
    rc = call(["--dataset", "cifar100", "--data-dir", typo, "--out-dir", run, *TINY])
    err = one_line(capsys.readouterr().err)
    assert rc == 2 and "CIFAR-100 not found" in err, err
    assert sorted(tmp_path.iterdir()) == []  # neither the data folder (the default cache's) nor the run folder


class _Gone:
    pass


def ctrl_c_that_python_drops() -> None:
    """Ctrl-C while a weakref callback runs: CPython drops the ``KeyboardInterrupt`` raised there
    ("Exception ignored in ..."), as it once did in a real run."""
    import weakref

    weakref.ref(_Gone(), lambda _: os.kill(os.getpid(), signal.SIGINT))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_python_drops_still_stops_the_run(tmp_path, demo_cache, monkeypatch, capsys):
    from saliencymixplus import mix

    loss, steps = mix.soft_target_cross_entropy, []

    def loss_that_meets_ctrl_c(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            ctrl_c_that_python_drops()
        return loss(*args, **kwargs)

    monkeypatch.setattr(mix, "soft_target_cross_entropy", loss_that_meets_ctrl_c)
    run = tmp_path / "run"
    rc = call(demo(demo_cache, "--epochs", "3", "--out-dir", run))
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "interrupted before the first epoch ended, so nothing was saved" in err
    assert len(steps) == 2 and not (run / "last.pt").exists()  # stopped at the step it came in


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_python_drops_while_the_cache_is_built_stops_the_run(tmp_path, monkeypatch, capsys):
    from saliencymixplus import precompute

    build = precompute.build_cache

    def build_that_meets_ctrl_c(*args, **kwargs):
        out = build(*args, **kwargs)
        ctrl_c_that_python_drops()
        return out

    monkeypatch.setattr(precompute, "build_cache", build_that_meets_ctrl_c)
    cache, run = tmp_path / "new.h5", tmp_path / "run"
    rc = call(demo(cache, "--out-dir", run))
    err = capsys.readouterr().err
    assert rc == 130, err
    assert f"interrupted while building the saliency cache {cache}; run the same command again" in err
    assert not (run / "log.csv").exists()
