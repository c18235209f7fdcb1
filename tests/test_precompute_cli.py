"""saliencymixplus-precompute answers every user error with exit status 2 and a message, never a
traceback: an output it cannot write (checked before any work), undecodable images (all named
at once, the finished blocks kept for ``--resume``), a gradient checkpoint that is cut or does
not fit its model; and the rebuild hints of a refused cache have no placeholders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from saliencymixplus.cache import CacheMismatchError, CacheWriter, SaliencyCache, verify_cache
from saliencymixplus.models import build_model
from saliencymixplus.precompute import main as precompute_main
from saliencymixplus.rawdata import ImageDecodeError, load_split, read_rgb

from cli_helpers import exit_code, gradient_image, no_traceback

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- outputs

def test_precompute_out_checked_before_any_work(cifar_dir, tmp_path, capsys, monkeypatch, read_only):
    import saliencymixplus.precompute as pre

    def no_work(*a, **kw):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(pre, "load_split", no_work)
    common = ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--no-progress", "--out"]
    folder = tmp_path / "existing"
    folder.mkdir()
    assert exit_code(precompute_main, [*common, folder]) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"--out {folder} is a folder; give the file to write" in err
    assert list(folder.iterdir()) == []

    (tmp_path / "afile").write_text("x")
    assert exit_code(precompute_main, [*common, tmp_path / "afile" / "c.h5"]) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"cannot create the folder of --out {tmp_path / 'afile'}" in err

    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(ro)
    assert exit_code(precompute_main, [*common, ro / "c.h5"]) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"cannot write in the folder of --out {ro}: Read-only file system" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_precompute_out_in_a_folder_without_write_permission(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert exit_code(precompute_main, ["--dataset", "demo", "--out", ro / "c.h5", "--no-progress"]) == 2
    finally:
        ro.chmod(0o755)
    no_traceback(err := capsys.readouterr().err)
    assert f"cannot write in the folder of --out {ro}: Permission denied" in err


# ----------------------------------------------------------------------------- bad images

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
    assert exit_code(precompute_main, args) == 2
    no_traceback(err := capsys.readouterr().err, lines=None)
    assert "4 images of oxford_pet/train cannot be decoded:" in err
    for path, why in zip(bad, ("truncated or damaged JPEG (no end marker; image file is truncated",
                               "not an image file OpenCV or PIL can decode", "empty file",
                               "not an image file OpenCV or PIL can decode")):
        assert f"  {path}: {why}" in err, (path, err)
    assert "or delete its line from annotations/trainval.txt" in err and "--resume" in err
    assert not out.exists() and Path(f"{out}.partial").exists()  # the 2 good blocks are kept

    for path in bad:  # fixed by hand
        Image.fromarray(gradient_image()).save(path, format="JPEG")
    args[args.index("--workers") + 1] = "0"
    assert exit_code(precompute_main, [*args, "--resume"]) == 0
    assert "2 of 4 blocks already written" in capsys.readouterr().out
    raw = load_split("oxford_pet", data_dir, "train")
    verify_cache(out, expect=raw)


# ----------------------------------------------------------------------------- gradient checkpoints

@pytest.fixture()
def model_checkpoint(tmp_path) -> tuple[Path, dict]:
    """A model-only train.py checkpoint of a CIFAR-100 resnet_tiny: ``(path, its content)``."""
    ck = {"model": build_model("resnet_tiny", 100, 32).state_dict(),
          "config": {"model": "resnet_tiny", "dataset": "cifar100", "num_classes": 100, "image_size": 32}}
    path = tmp_path / "model.pt"
    torch.save(ck, path)
    return path, ck


def test_precompute_refuses_a_cut_gradient_checkpoint_before_writing(model_checkpoint, cifar_dir, tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    data = model_checkpoint[0].read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    out = tmp_path / "g.h5"
    rc = exit_code(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--method", "gradient",
                                     "--checkpoint", cut, "--out", out, "--no-progress"])
    no_traceback(err := capsys.readouterr().err)
    assert rc == 2
    assert f"checkpoint {cut} cannot be read as a train.py checkpoint (RuntimeError: PytorchStreamReader" in err
    assert list(tmp_path.glob("g.h5*")) == []


def test_precompute_refuses_a_checkpoint_whose_weights_do_not_fit(model_checkpoint, cifar_dir, tmp_path, capsys):
    _, ck = model_checkpoint
    bad = tmp_path / "bad.pt"
    torch.save({"model": {k: v.reshape(-1)[:1] for k, v in ck["model"].items()}, "config": ck["config"]}, bad)
    out = tmp_path / "g.h5"
    rc = exit_code(precompute_main, ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--method", "gradient",
                                     "--checkpoint", bad, "--out", out, "--no-progress"])
    no_traceback(err := capsys.readouterr().err)
    assert rc == 2, err
    assert f"checkpoint {bad}: its weights do not fit the model its config names" in err
    assert list(tmp_path.glob("g.h5*")) == []


# ----------------------------------------------------------------------------- rebuild hints

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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_python_drops_still_stops_the_build(tmp_path, monkeypatch, capsys):
    """CPython drops a KeyboardInterrupt raised inside a weakref callback; the cache tool must
    still stop after the block it was writing, keep it, and say how to resume (exit 130)."""
    import signal
    import weakref

    class Gone:
        pass

    write, written = CacheWriter.write, []

    def write_that_meets_ctrl_c(self, start, maps):
        write(self, start, maps)
        written.append(start)
        if len(written) == 1:
            weakref.ref(Gone(), lambda _: os.kill(os.getpid(), signal.SIGINT))

    monkeypatch.setattr(CacheWriter, "write", write_that_meets_ctrl_c)
    out = tmp_path / "c.h5"
    args = ["--dataset", "demo", "--out", out, "--no-progress", "--workers", "0", "--block-size", "500"]
    assert exit_code(precompute_main, args) == 130
    assert f"interrupted: finished blocks are kept in {out}.partial; rerun with --resume" in capsys.readouterr().err
    assert written == [0] and not out.exists()
    monkeypatch.setattr(CacheWriter, "write", write)
    assert exit_code(precompute_main, [*args, "--resume"]) == 0
    assert len(verify_cache(out)) > 500
