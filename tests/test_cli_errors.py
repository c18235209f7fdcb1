"""train.py, saliencymixplus-precompute and tools/visualize_mix.py answer every user error with
an exit status and a message, never a traceback: unwritable outputs (checked before any work),
undecodable images (all named at once), a diverging run (stopped, last good checkpoint kept),
values the parser used to let through, bad ``--resume`` files and flags, and the smaller cases
of issue #10 (rebuild hints, help text, one-epoch curves)."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fixtures_data import make_pet_folder, tiny_net
from saliencymixplus.cache import CacheMismatchError, CacheWriter, SaliencyCache, verify_cache
from saliencymixplus.precompute import main as precompute_main
from saliencymixplus.rawdata import ImageDecodeError, load_split, read_rgb
from saliencymixplus.training import build_parser, load_checkpoint, parse_config
from saliencymixplus.training import main as train_main
from saliencymixplus.training import runner

from cli_helpers import exit_code as _call

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--limit-train-batches", "3", "--limit-test-batches", "1", "--batch_size", "16", "--no-progress",
        "--workers", "0", "--model", "resnet_tiny"]


def _cifar(cifar_dir, tmp_path, *extra):
    return ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--saliency-cache", tmp_path / "cache.h5",
            "--out-dir", tmp_path / "run", *TINY, *extra]


def _no_traceback(err: str, lines: int | None = 1) -> None:
    assert "Traceback" not in err, err
    if lines is not None:
        assert len(err.strip().splitlines()) == lines, err


@pytest.fixture()
def read_only(monkeypatch):
    """``read_only(folder)``: writing a file in ``folder`` fails with EROFS, as on a read-only
    mount (works as root too, where permission bits do not stop a write)."""
    real = tempfile.mkstemp
    folders = []

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and any(Path(dir).resolve() == f for f in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda folder: folders.append(Path(folder).resolve())


# ----------------------------------------------------------------------------- 3. filesystem errors

def test_precompute_out_checked_before_any_work(cifar_dir, tmp_path, capsys, monkeypatch, read_only):
    import saliencymixplus.precompute as pre

    def no_work(*a, **kw):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(pre, "load_split", no_work)
    common = ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--no-progress", "--out"]
    folder = tmp_path / "existing"
    folder.mkdir()
    assert _call(precompute_main, [*common, folder]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"--out {folder} is a folder; give the file to write" in err
    assert list(folder.iterdir()) == []

    (tmp_path / "afile").write_text("x")
    assert _call(precompute_main, [*common, tmp_path / "afile" / "c.h5"]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"cannot create the folder of --out {tmp_path / 'afile'}" in err

    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(ro)
    assert _call(precompute_main, [*common, ro / "c.h5"]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"cannot write in the folder of --out {ro}: Read-only file system" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_precompute_out_in_a_folder_without_write_permission(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _call(precompute_main, ["--dataset", "demo", "--out", ro / "c.h5", "--no-progress"]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"cannot write in the folder of --out {ro}: Permission denied" in err


def test_train_outputs_checked_before_any_work(cifar_dir, tmp_path, capsys, monkeypatch, read_only):
    def no_work(*a, **kw):
        raise AssertionError("data work started before the outputs were checked")

    monkeypatch.setattr(runner, "prepare_data", no_work)
    (tmp_path / "afile").write_text("x")
    args = _cifar(cifar_dir, tmp_path)
    args[args.index("--out-dir") + 1] = tmp_path / "afile" / "run"
    assert _call(train_main, args) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"cannot create --out-dir {tmp_path / 'afile' / 'run'}: Not a directory" in err

    ro = tmp_path / "ro_run"
    ro.mkdir()
    read_only(ro)
    args[args.index("--out-dir") + 1] = ro
    assert _call(train_main, args) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"cannot write in --out-dir {ro}: Read-only file system" in err


def test_train_default_cache_folder_on_a_read_only_mount(cifar_dir, tmp_path, capsys, read_only):
    """No --saliency-cache: the default is <data-dir>/cifar100-train-fine_grained.h5, and the data
    folder is read-only."""
    data = tmp_path / "data"
    shutil.copytree(cifar_dir["root"], data)
    read_only(data)
    rc = _call(train_main, ["--dataset", "cifar100", "--data-dir", data, "--out-dir", tmp_path / "run", *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err)
    cache = data / "cifar100-train-fine_grained.h5"
    assert f"cannot write in the folder of --saliency-cache {data}: Read-only file system" in err
    assert f"the saliency cache {cache} is missing and cannot be built there" in err
    assert f"saliencymixplus-precompute --dataset cifar100 --data-dir {data} --split train" in err
    assert not cache.exists() and not (tmp_path / "run" / "last.pt").exists()


def test_saliency_cache_naming_a_folder(cifar_dir, tmp_path, capsys):
    args = _cifar(cifar_dir, tmp_path)
    (tmp_path / "cache.h5").mkdir()
    assert _call(train_main, args) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert f"--saliency-cache {tmp_path / 'cache.h5'} is a folder" in err


# ----------------------------------------------------------------------------- 4. bad images

def _image(h=40, w=30) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 6, xx * 8, (yy + xx) * 3], -1).astype(np.uint8)


@pytest.fixture()
def odd_pet(tmp_path):
    """A Pet folder whose training images are 4 bad files and 4 odd but good ones; one test
    image is truncated. Returns ``(data_dir, bad train files, bad test files, good odd files)``."""
    pet = make_pet_folder(tmp_path / "pet", n_train=8, n_test=4, seed=3)
    img_dir = pet["root"] / "images"
    train = [img_dir / f"{n}.jpg" for n in pet["train"][0]]
    test = [img_dir / f"{n}.jpg" for n in pet["test"][0]]
    rng = np.random.default_rng(0)
    data = train[0].read_bytes()
    train[0].write_bytes(data[: len(data) // 2])                      # truncated JPEG
    train[1].write_text("<html>404 Not Found</html>")                 # a web page saved as .jpg
    train[2].write_bytes(b"")                                         # empty
    train[3].write_bytes(b"\xff\xd8" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() + b"\xff\xd9")
    img = _image()                                                    # both ends intact, middle garbage
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])).save(train[4], format="PNG")
    Image.fromarray(img).convert("L").save(train[5], format="JPEG", quality=95)
    Image.fromarray(img).convert("CMYK").save(train[6], format="JPEG", quality=95)
    Image.fromarray(img).convert("P").save(train[7], format="GIF")
    data = test[1].read_bytes()
    test[1].write_bytes(data[: len(data) - 300])
    return pet["data_dir"], train[:4], [test[1]], train[4:]


def test_odd_but_good_images_decode_and_bad_ones_are_named(odd_pet):
    _, bad_train, bad_test, good = odd_pet
    for path in good:  # PNG (RGBA) and GIF under .jpg, grayscale and CMYK JPEG
        with Image.open(path) as im:
            want = np.asarray(im.convert("RGB"))
        got = read_rgb(str(path))
        assert got.dtype == np.uint8 and got.shape == (40, 30, 3)
        assert np.abs(got.astype(int) - want).max() <= 2, path
    for path in bad_train + bad_test:
        with pytest.raises(ImageDecodeError, match=f"cannot decode image {path}"):
            read_rgb(str(path))


def test_precompute_names_every_bad_image_then_resumes(odd_pet, tmp_path, capsys):
    data_dir, bad, _, _ = odd_pet
    out = tmp_path / "pet.h5"
    args = ["--dataset", "oxford_pet", "--data-dir", data_dir, "--split", "train", "--workers", "2",
            "--block-size", "2", "--resolution", "16x16", "--no-progress", "--out", out]
    assert _call(precompute_main, args) == 2
    err = capsys.readouterr().err
    _no_traceback(err, lines=None)
    assert "4 images of oxford_pet/train cannot be decoded:" in err
    for path, why in zip(bad, ("truncated or damaged JPEG (no end marker; image file is truncated",
                               "not an image file OpenCV or PIL can decode", "empty file",
                               "not an image file OpenCV or PIL can decode")):
        assert f"  {path}: {why}" in err, (path, err)
    assert "or delete its line from annotations/trainval.txt" in err and "--resume" in err
    assert not out.exists() and Path(f"{out}.partial").exists()  # the 2 good blocks are kept

    for path in bad:  # fixed by hand
        Image.fromarray(_image()).save(path, format="JPEG")
    args[args.index("--workers") + 1] = "0"
    assert _call(precompute_main, [*args, "--resume"]) == 0
    assert "2 of 4 blocks already written" in capsys.readouterr().out
    raw = load_split("oxford_pet", data_dir, "train")
    verify_cache(out, expect=raw)


def test_train_names_every_bad_image_of_both_splits(odd_pet, tmp_path, capsys):
    data_dir, bad_train, bad_test, _ = odd_pet
    rc = _call(train_main, ["--dataset", "oxford_pet", "--data-dir", data_dir, "--saliency-cache",
                            tmp_path / "pet.h5", "--out-dir", tmp_path / "run", "--epochs", "1", "--batch_size", "2",
                            "--no-progress", "--workers", "0", "--model", "resnet_tiny"])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err, lines=None)
    assert "train.py: error: 5 images of oxford_pet cannot be decoded:" in err
    for path in bad_train + bad_test:
        assert f"  {path}: " in err, (path, err)
    assert err.strip().splitlines()[-1].startswith("Replace each with an intact copy")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_image_failing_in_a_loader_worker_is_one_line(tmp_path, capsys):
    """A test image whose ends look whole but whose data is garbage passes the quick scan; it
    fails in a DataLoader worker process, and the user still gets its name in one line."""
    pet = make_pet_folder(tmp_path / "pet", n_train=4, n_test=2, seed=4)
    bad = pet["root"] / "images" / f"{pet['test'][0][1]}.jpg"
    bad.write_bytes(b"\xff\xd8" + np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
                    + b"\xff\xd9")
    rc = _call(train_main, ["--dataset", "oxford_pet", "--data-dir", pet["data_dir"], "--mix_aug", "cutmix",
                            "--out-dir", tmp_path / "run", "--epochs", "1", "--batch_size", "2", "--no-progress",
                            "--workers", "1", "--model", "resnet_tiny", "--limit-train-batches", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err)
    assert f"train.py: error: cannot decode image {bad}: not an image file OpenCV or PIL can decode" in err


# ----------------------------------------------------------------------------- 5. a diverging run

class NaNAfter(nn.Module):
    """``tiny_net`` whose training-mode output turns NaN after ``after`` forward calls."""

    def __init__(self, num_classes: int, after: int):
        super().__init__()
        self.net, self.after, self.calls = tiny_net(num_classes), after, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(cifar_dir, tmp_path, capsys, monkeypatch):
    made = []
    monkeypatch.setattr(runner, "build_model", lambda name, k, size: made.append(NaNAfter(k, after=3)) or made[-1])
    rc = _call(train_main, [*_cifar(cifar_dir, tmp_path, "--epochs", "3", "--mix_aug", "none")])
    err = capsys.readouterr().err
    assert rc == 1, err
    _no_traceback(err)
    assert "the training loss is nan in epoch 2" in err and "the run diverged" in err
    assert f"{tmp_path / 'run'}/last.pt holds epoch 1, the last good one" in err
    run = tmp_path / "run"
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["epoch"] == 1 and best["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert len(list(csv.DictReader(open(run / "log.csv")))) == 1
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "diverged" and s["epochs_done"] == 1


def test_non_finite_loss_stops_mid_epoch(cifar_dir, tmp_path, capsys, monkeypatch):
    """NaN from the first step: seen at the check after step 10 (LOG_EVERY), not at the end of
    the 48-step epoch."""
    made = []
    monkeypatch.setattr(runner, "build_model", lambda name, k, size: made.append(NaNAfter(k, after=0)) or made[-1])
    args = _cifar(cifar_dir, tmp_path, "--epochs", "1", "--mix_aug", "none", "--batch_size", "1")
    args.remove("--limit-train-batches")
    args.remove("3")
    assert _call(train_main, args) == 1
    err = capsys.readouterr().err
    assert "the training loss is nan in epoch 1 (seen by step 10)" in err and "no checkpoint was written" in err
    assert made[0].calls == 10
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_learning_rate_1e6_exits_non_zero(cifar_dir, tmp_path, capsys):
    rc = _call(train_main, _cifar(cifar_dir, tmp_path, "--epochs", "2", "--lr", "1e6"))
    err = capsys.readouterr().err
    assert rc == 1, err
    _no_traceback(err)
    assert "the run diverged" in err and "Lower --learning_rate (now 1e+06)" in err
    for name in ("last.pt", "best.pt"):  # whatever was kept has finite weights
        if (tmp_path / "run" / name).exists():
            ck = load_checkpoint(tmp_path / "run" / name)
            assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- 6. values and files

@pytest.mark.parametrize("argv, message", [
    (["--weight-decay", "-1"], "argument --weight-decay/--weight_decay: must be >= 0, got -1"),
    (["--label-smoothing", "1"], "must be in [0, 1) (1 would leave no label), got 1"),
    (["--seed", "99999999999999999999"], "argument --seed: must be an integer in [0, 2**63 - 1]"),
    (["--seed", "-3"], "must be an integer in [0, 2**63 - 1], got -3"),
    (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
    (["--lr", "nan"], "must be a finite number, got nan"),
    (["--alpha", "inf"], "must be a finite number, got inf"),
    (["--epochs", "1.5"], "argument --epochs: expected an integer, got '1.5'"),
])
def test_values_rejected_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_largest_seed_runs_through_every_stream():
    from saliencymixplus.training.seeding import epoch_seed, seed_everything

    cfg = parse_config(["--seed", str(2 ** 63 - 1)])
    seed_everything(cfg.seed)
    torch.Generator().manual_seed(epoch_seed(cfg.seed, 199, 7) + 2)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar_dir):
    """A 2-epoch run on the tiny CIFAR folder: ``(argv, run dir)``."""
    tmp = tmp_path_factory.mktemp("finished")
    argv = _cifar(cifar_dir, tmp, "--epochs", "2")
    assert _call(train_main, argv) == 0
    return argv, tmp / "run"


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("kind", ["cut", "text", "pickle", "model-only", "folder"])
def test_bad_resume_files(kind, finished_run, tmp_path, capsys):
    argv, run = finished_run
    path = tmp_path / "ck.pt"
    if kind == "cut":
        data = (run / "last.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
        why = "cannot be read as a train.py checkpoint (RuntimeError: PytorchStreamReader failed"
    elif kind == "text":
        path.write_text("epoch,loss\n1,2.3\n")
        why = "cannot be read as a train.py checkpoint ("
    elif kind == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": _Evil()}, f, protocol=2)
        why = "refused: it holds objects other than tensors and plain data"
    elif kind == "model-only":
        torch.save({"model": load_checkpoint(run / "last.pt")["model"]}, path)
        why = "is not a train.py checkpoint (lacks ['optimizer', 'scheduler', 'epoch', 'rng', 'config']"
    else:
        path.mkdir()
        why = "is a folder; give the checkpoint file"
    out = tmp_path / "resumed"
    args = list(argv)
    args[args.index("--out-dir") + 1] = out
    rc = _call(train_main, [*args, "--resume", path])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err)
    assert f"--resume {path}" in err and why in err, err
    assert not (ROOT / "PWNED").exists() and not Path("PWNED").exists()
    assert not (out / "last.pt").exists()


def test_precompute_refuses_a_cut_gradient_checkpoint_before_writing(finished_run, cifar_dir, tmp_path, capsys):
    _, run = finished_run
    cut = tmp_path / "cut.pt"
    data = (run / "last.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    out = tmp_path / "g.h5"
    rc = _call(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--method", "gradient",
                                 "--checkpoint", cut, "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    _no_traceback(err)
    assert f"checkpoint {cut} cannot be read as a train.py checkpoint (RuntimeError: PytorchStreamReader" in err
    assert list(tmp_path.glob("g.h5*")) == []


def test_precompute_refuses_a_checkpoint_whose_weights_do_not_fit(finished_run, cifar_dir, tmp_path, capsys):
    _, run = finished_run
    ck = load_checkpoint(run / "last.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"model": {k: v.reshape(-1)[:1] for k, v in ck["model"].items()}, "config": ck["config"]}, bad)
    out = tmp_path / "g.h5"
    rc = _call(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--method", "gradient",
                                 "--checkpoint", bad, "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err)
    assert f"checkpoint {bad}: its weights do not fit the model its config names" in err
    assert list(tmp_path.glob("g.h5*")) == []


@pytest.mark.parametrize("flags, diff", [
    (["--mix_aug", "cutmix"], "mix_aug: checkpoint 'saliencymixplus', now 'cutmix'"),
    (["--seed", "5"], "seed: checkpoint 0, now 5"),
    (["--lr", "0.2"], "learning_rate: checkpoint 0.1, now 0.2"),
])
def test_resume_with_other_settings_is_refused(flags, diff, finished_run, capsys):
    argv, run = finished_run
    before = (run / "last.pt").read_bytes()
    rc = _call(train_main, [*argv, "--epochs", "3", "--resume", *flags])
    err = capsys.readouterr().err
    assert rc == 2, err
    _no_traceback(err)
    assert "this command differs from the run it would continue" in err and diff in err
    assert (run / "last.pt").read_bytes() == before


def test_resume_with_no_more_epochs_writes_nothing(finished_run, capsys):
    argv, run = finished_run
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    rc = _call(train_main, [*argv, "--epochs", "1", "--resume"])
    err = capsys.readouterr().err
    assert rc == 2
    _no_traceback(err)
    assert "has already done 2 epochs, more than --epochs 1: pass --epochs 3 or more" in err
    rc = _call(train_main, [*argv, "--resume"])  # the same --epochs 2: nothing left to do
    out = capsys.readouterr().out
    assert rc == 0
    assert "nothing to train" in out and "nothing was trained or written" in out and "outputs in" not in out
    assert "| cifar100 | resnet_tiny" in out
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files


# ----------------------------------------------------------------------------- 7. smaller

def test_rebuild_hints_have_no_placeholders(cifar_dir, tmp_path):
    demo = load_split("demo", None, "train")
    path = tmp_path / "demo.h5"
    with CacheWriter(path, dataset="demo", split="train", count=3, fingerprint="0", method="spectral_residual",
                     resolution=(32, 32), block_size=3, resume=False) as w:
        w.write(0, np.zeros((3, 32, 32), np.float32))
        w.finalize()
    with pytest.raises(CacheMismatchError) as e:
        SaliencyCache(path, expect=demo)
    assert e.value.args[0].endswith("Rebuild it with: saliencymixplus-precompute --dataset demo --split train "
                                    f"--method spectral_residual --out {path} --resolution 32x32")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    raw = load_split("cifar100", cifar_dir["root"], "train")
    with pytest.raises(CacheMismatchError) as e:
        SaliencyCache(junk, expect=raw)
    assert e.value.args[0].endswith(f"Rebuild it with: saliencymixplus-precompute --dataset cifar100 "
                                    f"--data-dir {cifar_dir['root']} --split train --out {junk}")
    with pytest.raises(FileNotFoundError) as e:
        SaliencyCache(tmp_path / "none.h5", expect=demo)
    assert "METHOD" not in str(e.value) and "DATA_DIR" not in str(e.value)


def test_help_shows_no_default_for_switches():
    text = build_parser().format_help()
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "--no-progress         no progress bar (one line per epoch only)\n" in text
    assert "(default: 0)" in text  # --seed's default is shown (0 is not "no default")


def test_one_epoch_curves_are_drawn(tmp_path, monkeypatch):
    """A line through one point draws nothing: every curve must carry markers."""
    import matplotlib.pyplot as plt

    from saliencymixplus.training.reporting import plot_curves

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    row = {"epoch": 1, "train_loss": 2.0, "train_top1_err": 80.0, "test_top1_err": 70.0, "test_top5_err": 30.0}
    plot_curves(tmp_path / "c.png", [row], "one epoch")
    assert (tmp_path / "c.png").stat().st_size > 1000 and len(figs) == 1
    lines = [ln for ax in figs[0].axes for ln in ax.get_lines()]
    assert len(lines) == 4  # train loss; train top-1, test top-1, test top-5
    for ln in lines:
        assert len(ln.get_xdata()) == 1 and ln.get_marker() not in (None, "", "None", " ") and ln.get_markersize() >= 3


def test_visualize_mix_bad_arguments_exit_2(capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import visualize_mix

    for argv, msg in ((["--dataset", "foo"], "argument --dataset: invalid choice: 'foo'"),
                      (["--dataset", "cifar100"], "--data-dir is required for --dataset cifar100"),
                      (["--dataset", "cifar100", "--data-dir", "/nonexistent"], "CIFAR-100 not found"),
                      (["--start", "4999"], "is past the end of demo/train (5000 images)")):
        assert _call(visualize_mix.main, argv) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
