"""The hard demo set: generated deterministically, what the issue asks of it (20 classes, 48x48,
small objects whose masks are the object, clutter that carries no label), kept in a user
cache folder atomically and checked on reading, and trained by ``train.py --dataset demo_hard``."""

import json
import os

import numpy as np
import pytest

from saliencymixplus import demo_hard
from saliencymixplus.data import load_split
from saliencymixplus.demo import GLYPHS
from saliencymixplus.demo_hard import generate_demo_hard

from cli_helpers import exit_code

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sample():
    return generate_demo_hard(400, seed=11)


@pytest.fixture()
def small_splits(tmp_path, monkeypatch):
    """demo_hard with 240 training and 120 test images, its cache folder in ``tmp_path``."""
    monkeypatch.setattr(demo_hard, "HARD_SIZES", {"train": 240, "test": 120})
    monkeypatch.setenv("SALIENCYMIXPLUS_CACHE_DIR", str(tmp_path / "cache"))
    demo_hard._split_arrays.cache_clear()
    yield tmp_path / "cache"
    demo_hard._split_arrays.cache_clear()


def test_two_generations_are_byte_identical_and_seeds_differ(sample):
    again = generate_demo_hard(400, seed=11)
    for a, b in zip(sample, again):
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype and a.shape == b.shape
    other = generate_demo_hard(400, seed=12)
    assert not np.array_equal(sample[0], other[0])


def test_shapes_classes_and_object_share(sample):
    images, labels, masks = sample
    assert images.shape == (400, 48, 48, 3) and images.dtype == np.uint8
    assert masks.shape == (400, 48, 48) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 1}
    assert len(GLYPHS) == 20 and np.bincount(labels, minlength=20).tolist() == [20] * 20
    share = masks.reshape(400, -1).mean(1)
    # Objects of radius 5..8 px on 48x48: every one there, none over 10 % of the image, about 3 % typical
    # (the demo's glyphs cover 10-40 % of theirs).
    assert share.min() > 0.004 and share.max() < 0.10 and 0.015 < np.median(share) < 0.045
    # Each spans at most 2 radii (+ rounding): a CutMix box of half the image (34x34) often holds all or none of it.
    extent = [max(np.ptp(np.nonzero(m.any(1))[0]), np.ptp(np.nonzero(m.any(0))[0])) + 1 for m in masks]
    assert max(extent) <= 17 and np.median(extent) >= 9


def test_masks_are_the_object(sample):
    """Inside its mask an image is one colour plus pixel noise (sd 8); a ring just outside it is not."""
    import cv2

    images, _, masks = sample
    inside_sd, contrast = [], []
    for img, m in zip(images.astype(np.float32), masks):
        ring = cv2.dilate(m, np.ones((3, 3), np.uint8), iterations=2).astype(bool) & ~m.astype(bool)
        obj = img[m.astype(bool)]
        inside_sd.append(obj.std(0).mean())
        contrast.append(np.abs(obj.mean(0) - img[ring].mean(0)).max())
    inside_sd = np.array(inside_sd)
    assert np.median(inside_sd) < 9 and np.percentile(inside_sd, 95) < 12
    assert np.median(contrast) > 30


def test_clutter_and_fragments_carry_no_label(sample):
    """The class must come from the object: background colour does not predict it, and the
    fragments are drawn whatever the class, so the pixels outside the mask are as busy for each."""
    images, labels, masks = sample
    bg = (1 - masks)[..., None].astype(np.float32)
    mean_bg = (images * bg).sum((1, 2)) / bg.sum((1, 2))
    per_class = np.stack([mean_bg[labels == c].mean(0) for c in range(20)])
    assert np.ptp(per_class, axis=0).max() < 25  # 20 images a class: within sampling noise of 0..255 fields
    busy = np.abs(np.diff(images.astype(np.float32), axis=2)).mean((1, 2, 3))
    per_class_busy = np.array([busy[labels == c].mean() for c in range(20)])
    assert per_class_busy.std() < 0.15 * per_class_busy.mean()


def test_splits_are_cached_atomically_and_checked(small_splits):
    folder = small_splits
    tr = load_split("demo_hard", None, "train")
    assert (len(tr), tr.num_classes, tr.images.shape[1:]) == (240, 20, (48, 48, 3))
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["demo_hard-v1-s0-train-n240.npz"]  # no temporary file left behind
    fresh = generate_demo_hard(240, seed=demo_hard.split_seed(demo_hard.HARD_VERSION, 0, "train"))
    demo_hard._split_arrays.cache_clear()
    again = load_split("demo_hard", None, "train")  # read back from the file
    for a, b in zip((again.images, again.labels, again.masks), fresh):
        assert a.tobytes() == b.tobytes()
    assert again.fingerprint() == tr.fingerprint() != load_split("demo_hard", None, "test").fingerprint()
    # A damaged file is not trusted (a flipped byte: the zip's CRC; other pixels under the stored
    # digest: the digest): the split is drawn again and the file rewritten.
    path = folder / files[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    demo_hard._split_arrays.cache_clear()
    healed = load_split("demo_hard", None, "train")
    assert healed.images.tobytes() == fresh[0].tobytes()
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    stored["images"] = stored["images"].copy()
    stored["images"][0, 0, 0, 0] ^= 1
    np.savez(path, **stored)  # a valid file whose pixels are not those of its digest
    assert demo_hard._load_cached(path, 240) is None
    demo_hard._split_arrays.cache_clear()
    assert load_split("demo_hard", None, "train").images.tobytes() == fresh[0].tobytes()
    assert demo_hard._load_cached(path, 240) is not None  # rewritten whole


def test_an_unwritable_cache_folder_only_costs_a_regeneration(small_splits, monkeypatch):
    blocker = small_splits.parent / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SALIENCYMIXPLUS_CACHE_DIR", str(blocker / "sub"))
    assert len(load_split("demo_hard", None, "test")) == 120
    monkeypatch.setenv("SALIENCYMIXPLUS_CACHE_DIR", "")
    assert demo_hard.cache_dir() is None


def test_train_py_dataset_demo_hard_runs(small_splits, tmp_path):
    from saliencymixplus.training import main

    out = tmp_path / "run"
    argv = ["--dataset", "demo_hard", "--epochs", "1", "--limit-train-batches", "2", "--limit-test-batches", "1",
            "--batch_size", "16", "--no-progress", "--workers", "0", "--device", "cpu", "--out-dir", out,
            "--saliency-cache", tmp_path / "demo_hard-train.h5"]
    assert exit_code(main, argv) == 0
    s = json.loads((out / "summary.json").read_text())
    c = s["config"]
    assert s["status"] == "finished" and s["epochs_done"] == 1
    assert (c["dataset"], c["num_classes"], c["image_size"], c["model"], c["loader"]) == \
        ("demo_hard", 20, 48, "resnet_tiny", "device")
    assert (c["epochs"], c["batch_size"]) == (1, 16)
    assert os.path.isfile(tmp_path / "demo_hard-train.h5")  # the saliency cache was built for it


def test_demo_hard_defaults_and_rebuild_command():
    from saliencymixplus.precompute_command import rebuild_command
    from saliencymixplus.training import parse_config

    c = parse_config(["--dataset", "demo_hard"])
    assert (c.num_classes, c.image_size, c.model, c.epochs, c.loader, c.data_dir) == \
        (20, 48, "resnet_tiny", 12, "device", None)
    assert c.saliency_cache == os.path.join("data", "demo_hard-train-fine_grained.h5")
    cmd = rebuild_command("demo_hard", "train", "fine_grained", "x.h5")
    assert "--data-dir" not in cmd and "--dataset demo_hard" in cmd


def test_the_demo_set_is_unchanged_by_the_shared_helpers():
    """The demo set's pixels, labels and masks are pinned (its caches' fingerprints hash them): the
    drawing rules it shares with the hard set must not move them."""
    import hashlib

    from saliencymixplus.demo import generate_demo

    digests = [hashlib.sha256(a.tobytes()).hexdigest()[:16] for a in generate_demo(200, seed=3)]
    assert digests == ["8199734831041029", "0e917c1016d38747", "4cc161d8c7e62f25"]
