"""Data sets: CIFAR-100 and Oxford-IIIT Pet read from tiny real-format folders, the demo set,
and build_dataset with and without a saliency cache."""

import shutil

import numpy as np
import pytest
import torch

from saliencymixplus import data
from saliencymixplus.data import build_dataset, load_split
from saliencymixplus.datasets import DATASETS, SPECS
from saliencymixplus.precompute import build_cache


def test_constants():
    assert DATASETS == ("cifar100", "oxford_pet", "demo", "demo_hard", "imagefolder", "imagenet")
    assert {n: s.num_classes for n, s in SPECS.items()} == {"cifar100": 100, "oxford_pet": 37, "demo": 10,
                                                            "demo_hard": 20, "imagefolder": None, "imagenet": 1000}
    for name, spec in SPECS.items():
        mean, std = spec.mean_std
        assert spec.name == name and len(mean) == len(std) == 3 and all(0 < s < 1 for s in std)
    assert [n for n, s in SPECS.items() if s.generated] == ["demo", "demo_hard"]


# ----------------------------------------------------------------------------- CIFAR-100

@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar100_reads_pickled_folder(cifar_dir, split):
    images, labels = cifar_dir[split]
    for d in (cifar_dir["root"], cifar_dir["root"] / "cifar-100-python"):  # parent or folder itself
        raw = load_split("cifar100", d, split)
        assert (raw.name, raw.split, raw.num_classes, len(raw)) == ("cifar100", split, 100, len(labels))
        assert raw.images.dtype == np.uint8 and raw.images.shape == (len(labels), 32, 32, 3)
        np.testing.assert_array_equal(raw.images, images)  # HWC RGB, as written
        np.testing.assert_array_equal(raw.image(3), images[3])
        assert raw.labels.dtype == np.int64
        np.testing.assert_array_equal(raw.labels, labels)


def test_cifar100_fingerprint_tracks_files_and_labels(cifar_dir):
    a = load_split("cifar100", cifar_dir["root"], "train")
    b = load_split("cifar100", cifar_dir["root"], "train")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    assert a.fingerprint() != load_split("cifar100", cifar_dir["root"], "test").fingerprint()
    b.labels = b.labels.copy()
    b.labels[0] = (b.labels[0] + 1) % 100
    b._fingerprint = None
    assert a.fingerprint() != b.fingerprint()


def test_cifar100_missing_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python") as e:
        load_split("cifar100", tmp_path, "train")
    assert "download" in str(e.value) and "cifar-100-python.tar.gz" in str(e.value)
    with pytest.raises(FileNotFoundError, match="data-dir"):
        load_split("cifar100", None, "train")


def test_cifar100_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(FileNotFoundError, match="could not download CIFAR-100.*by hand"):
        load_split("cifar100", tmp_path, "train", download=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        load_split("mnist", None, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_split("demo", None, "val")


# ----------------------------------------------------------------------------- Oxford-IIIT Pet

@pytest.mark.parametrize("split", ["train", "test"])
def test_oxford_pet_reads_folder(pet_dir, split):
    raw = load_split("oxford_pet", pet_dir["data_dir"], split)
    names, labels = pet_dir[split]
    assert (raw.name, raw.num_classes, len(raw)) == ("oxford_pet", 37, len(names))
    np.testing.assert_array_equal(raw.labels, labels)
    assert raw.ids == [f"images/{n}.jpg" for n in names]
    assert not hasattr(raw, "images")
    for i in (0, len(raw) - 1):
        img = raw.image(i)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        np.testing.assert_array_equal(img, pet_dir["images"][names[i]])  # RGB as decoded


def test_oxford_pet_torchvision_layout(tmp_path):
    from fixtures_data import make_pet_folder

    made = make_pet_folder(tmp_path, n_train=4, n_test=2, seed=5, torchvision_layout=True)
    raw = load_split("oxford_pet", tmp_path, "train")  # finds tmp_path/oxford-iiit-pet
    np.testing.assert_array_equal(raw.labels, made["train"][1])
    assert raw.image(0).shape[2] == 3


def test_oxford_pet_annotation_details(tmp_path, pet_dir):
    root = tmp_path / "pet"
    shutil.copytree(pet_dir["root"], root)
    ann = root / "annotations" / "test.txt"
    ann.write_text("#Image CLASS-ID SPECIES BREED ID\n\n" + ann.read_text())
    assert len(load_split("oxford_pet", root, "test")) == len(pet_dir["test"][0])  # comments skipped
    ann.write_text("Abyssinian_1 38 1 1\n")
    with pytest.raises(ValueError, match="1..37"):
        load_split("oxford_pet", root, "test")
    ann.write_text("no_such_image 1 1 1\n")
    with pytest.raises(FileNotFoundError, match="no_such_image.jpg"):
        load_split("oxford_pet", root, "test")


def test_oxford_pet_missing_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="get_oxford_pet.sh") as e:
        load_split("oxford_pet", tmp_path, "train")
    assert "annotations/trainval.txt" in str(e.value)


# ----------------------------------------------------------------------------- demo

def test_demo_is_deterministic_and_well_formed():
    from saliencymixplus.demo import generate_demo

    a, b, c = generate_demo(300, seed=7), generate_demo(300, seed=7), generate_demo(300, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    tr, tr2, te = load_split("demo", None, "train"), load_split("demo", None, "train"), load_split("demo", None, "test")
    assert (len(tr), len(te), tr.num_classes) == (5000, 1000, 10)
    assert tr.fingerprint() == tr2.fingerprint() != te.fingerprint()
    assert tr.images is not tr2.images and tr.images.flags.writeable  # each load its own arrays
    np.testing.assert_array_equal(tr.images, tr2.images)
    assert tr.images.shape == (5000, 32, 32, 3) and tr.images.dtype == np.uint8
    assert tr.masks.shape == (5000, 32, 32) and tr.masks.dtype == np.uint8
    assert set(np.unique(tr.masks)) == {0, 1}
    assert np.bincount(tr.labels, minlength=10).tolist() == [500] * 10
    area = tr.masks.reshape(len(tr), -1).sum(1)
    assert area.min() >= 15 and area.max() <= 0.6 * 32 * 32  # an object, and a background
    assert not np.array_equal(tr.images[:1000], te.images)


def test_demo_background_carries_no_label():
    """The class must come from the object: background statistics do not predict it."""
    tr = load_split("demo", None, "train")
    bg = (1 - tr.masks)[..., None].astype(np.float32)
    mean_bg = (tr.images * bg).sum((1, 2)) / bg.sum((1, 2))  # [N, 3]
    per_class = np.stack([mean_bg[tr.labels == c].mean(0) for c in range(10)])
    assert np.ptp(per_class, axis=0).max() < 8  # within noise of the class means (0..255)
    obj_area = np.stack([tr.masks[tr.labels == c].sum((1, 2)).mean() for c in range(10)])
    assert obj_area.min() > 30


# ----------------------------------------------------------------------------- build_dataset

def test_build_dataset_without_cache(cifar_dir, pet_dir):
    ds = build_dataset("cifar100", cifar_dir["root"], "train", train=True)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == int(cifar_dir["train"][1][0])
    ds = build_dataset("oxford_pet", pet_dir["data_dir"], "train", train=True)
    x, y = ds[1]
    assert x.shape == (3, 224, 224) and isinstance(y, int)
    x, y = build_dataset("oxford_pet", pet_dir["data_dir"], "test", train=False)[0]
    assert x.shape == (3, 224, 224)
    x, y = build_dataset("demo", None, "test", train=False)[5]
    assert x.shape == (3, 32, 32) and 0 <= y < 10


def test_build_dataset_with_cache(cifar_dir, pet_dir, tmp_path):
    out = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "c.h5", workers=0,
                      progress=False, log=lambda *a: None)
    ds = build_dataset("cifar100", cifar_dir["root"], "train", train=False, saliency_cache=str(out))
    x, s, y = ds[2]
    assert x.shape == (3, 32, 32) and s.shape == (32, 32) and s.dtype == torch.uint8  # as stored
    np.testing.assert_array_equal(s.numpy(), ds.cache.stored(2))  # same size, no flip: the stored map
    assert y == int(cifar_dir["train"][1][2])
    out = build_cache("oxford_pet", pet_dir["data_dir"], "train", "spectral_residual", tmp_path / "p.h5",
                      resolution="40x48", workers=0, progress=False, log=lambda *a: None)
    x, s, y = build_dataset("oxford_pet", pet_dir["data_dir"], "train", train=True, saliency_cache=str(out))[0]
    assert x.shape == (3, 224, 224) and s.shape == (224, 224) and s.dtype == torch.uint8
    # A cache paired with the wrong split is refused.
    from saliencymixplus.cache import CacheMismatchError

    with pytest.raises(CacheMismatchError, match="split"):
        build_dataset("oxford_pet", pet_dir["data_dir"], "test", train=False, saliency_cache=str(out))


def test_dataloader_workers_read_an_on_disk_cache(cifar_dir, tmp_path):
    """Each DataLoader worker opens its own HDF5 handle (the cache is not read into memory)."""
    from saliencymixplus.cache import SaliencyCache
    from saliencymixplus.transforms import eval_transform

    out = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "c.h5", workers=0,
                      progress=False, log=lambda *a: None)
    raw = load_split("cifar100", cifar_dir["root"], "train")
    cache = SaliencyCache(out, expect=raw, in_memory=False)
    cache[0]  # open a handle in the parent before forking
    ds = data.SaliencyDataset(raw, eval_transform("cifar100"), cache)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    sal = torch.cat([s for _, s, _ in loader])
    assert sal.dtype == torch.uint8  # the cache's storage travels from the workers
    np.testing.assert_array_equal(sal.numpy(), cache.read_all())


def test_an_on_disk_cache_opens_its_file_once_per_process(cifar_dir, tmp_path, monkeypatch):
    """Reading maps one by one looks the HDF5 file and dataset up once, not per map."""
    import h5py

    from saliencymixplus import cache as cache_mod

    out = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "c.h5", workers=0,
                      progress=False, log=lambda *a: None)
    reader = cache_mod.SaliencyCache(out, in_memory=False)
    opened = []

    class CountingFile(h5py.File):
        def __init__(self, *a, **k):
            opened.append(a[0])
            super().__init__(*a, **k)

        def __getitem__(self, name):
            opened.append(name)
            return super().__getitem__(name)

    monkeypatch.setattr(cache_mod.h5py, "File", CountingFile)
    maps = [reader.stored(i) for i in range(len(reader))]
    assert opened == [reader.path, "saliency"], opened  # one file, one dataset look-up
    np.testing.assert_array_equal(np.stack(maps), reader.read_all())
    reader.close()


def _ramp_cache(raw, out, res, dtype, axis):
    """A cache whose map of every image is its own coordinate along ``axis`` (fraction of the image
    at each stored pixel's centre), written with the cache's writer."""
    from saliencymixplus.cache import CacheWriter

    n = res[axis]
    ramp = ((np.arange(n) + 0.5) / n).astype(np.float32)
    one = np.broadcast_to(ramp[:, None] if axis == 0 else ramp[None, :], res)
    with CacheWriter(out, dataset=raw.name, split=raw.split, count=len(raw), fingerprint=raw.fingerprint(),
                     method="fine_grained", resolution=res, dtype=dtype, block_size=len(raw)) as w:
        w.write(0, np.broadcast_to(one, (len(raw), *res)).copy())
        return w.finalize()


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_pet_items_carry_the_map_of_their_own_crop(pet_dir, tmp_path, dtype):
    """build_dataset + the cache reader + the transform, end to end on a Pet-format folder: each
    item's map holds, at every output pixel, the raw-image coordinate of that pixel's centre as
    torchvision draws the crop and flip (within the storage's rounding); uint8 caches give uint8
    maps, float16 caches float32; the DataLoader's workers and TorchLoader turn them into float32
    in [0, 1] on the device."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from saliencymixplus.training.loaders import TorchLoader

    raw = load_split("oxford_pet", pet_dir["data_dir"], "train")
    for axis, res in ((0, (61, 37)), (1, (256, 256))):
        out = _ramp_cache(raw, tmp_path / f"ramp{axis}-{dtype}.h5", res, dtype, axis)
        ds = build_dataset("oxford_pet", pet_dir["data_dir"], "train", train=True, saliency_cache=str(out))
        # uint8: rounded when stored and again when resized (plus OpenCV's fixed-point weights);
        # float16: rounded once, to 11 bits
        step = 1.5 / 255 if dtype == "uint8" else 2.0 ** -11
        for i in range(len(raw)):
            torch.manual_seed(i)
            x, s, y = ds[i]
            assert s.dtype == (torch.uint8 if dtype == "uint8" else torch.float32) and s.shape == (224, 224)
            s = s.double() / 255 if dtype == "uint8" else s.double()
            torch.manual_seed(i)  # the draw the Pet pipeline makes: a crop of the 256x256 frame, then a flip
            p = v2.RandomResizedCrop(224).make_params([tv_tensors.Image(torch.zeros(3, 256, 256))])
            flip = bool(torch.rand(1) < 0.5)
            lo = (p["top"] if axis == 0 else p["left"]) / 256
            hi = lo + (p["height"] if axis == 0 else p["width"]) / 256
            want = lo + (np.arange(224) + 0.5) / 224 * (hi - lo)
            got = (s[:, 0] if axis == 0 else s[0]).numpy()
            if axis == 1 and flip:
                want = want[::-1]
            z = int(np.ceil(0.5 / res[axis] / ((hi - lo) / 224))) + 1  # half a stored pixel at the edges is clamped
            assert np.abs(got - want)[z:-z].max() <= step, (i, axis)
    loader = TorchLoader(ds, torch.device("cpu"), batch_size=4, train=True, workers=1)
    loader.set_epoch(0, 0)
    _, s, _ = next(iter(loader))
    assert s.dtype == torch.float32 and s.shape == (4, 224, 224) and 0 <= s.min() and s.max() <= 1


def test_bench_loader_quick_prints_both_tables(tmp_path):
    """benchmarks/bench_loader.py runs end to end in --quick mode (it asserts nothing about speed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_loader.py"), "--quick"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    for header in ("| variant | images/s, median |", "| step (per item, one thread) | median ms |"):
        assert header in p.stdout, p.stdout
    for row in ("| no cache |", "| cache (in memory) |", "| cache (HDF5, per item) |",
                "| map: cut and resize (`resample_saliency`) |"):
        assert row in p.stdout, p.stdout


# ----------------------------------------------------------------------------- what a cache's identity covers

def _pet_cache(pet_dir, tmp_path):
    """A copy of the Pet-format folder and a cache of its training split."""
    root = tmp_path / "pet"
    shutil.copytree(pet_dir["root"], root)
    out = build_cache("oxford_pet", root, "train", "spectral_residual", tmp_path / "p.h5", resolution="16x16",
                      workers=0, progress=False, log=lambda *a: None)
    return root, out


def _refused(root, out) -> str:
    from saliencymixplus.cache import CacheMismatchError

    with pytest.raises(CacheMismatchError, match="fingerprint: cache has") as e:
        build_dataset("oxford_pet", root, "train", train=True, saliency_cache=str(out))
    return str(e.value)


def test_an_image_replaced_under_its_name_makes_its_cache_stale(pet_dir, tmp_path):
    import cv2

    root, out = _pet_cache(pet_dir, tmp_path)
    build_dataset("oxford_pet", root, "train", train=True, saliency_cache=str(out))  # matches as built
    path = root / "images" / f"{pet_dir['train'][0][0]}.jpg"
    cv2.imwrite(str(path), np.full((50, 60, 3), 200, np.uint8))  # another picture, same name
    _refused(root, out)


def test_an_image_rewritten_with_its_size_kept_makes_its_cache_stale(pet_dir, tmp_path):
    """Same name, same size, other bytes: the file's modification time tells."""
    import os

    root, out = _pet_cache(pet_dir, tmp_path)
    path = root / "images" / f"{pet_dir['train'][0][0]}.jpg"
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later write, whatever the clock
    assert path.stat().st_size == before.st_size
    _refused(root, out)


def test_cifar_pixels_changed_under_the_same_names_make_the_cache_stale(cifar_dir, tmp_path):
    import pickle

    from saliencymixplus.cache import CacheMismatchError, SaliencyCache

    root = tmp_path / "cifar"
    shutil.copytree(cifar_dir["root"], root)
    out = build_cache("cifar100", root, "train", "fine_grained", tmp_path / "c.h5", workers=0, progress=False,
                      log=lambda *a: None)
    path = root / "cifar-100-python" / "train"
    entry = pickle.loads(path.read_bytes(), encoding="latin1")
    entry["data"] = entry["data"].copy()
    entry["data"][0] = 255 - entry["data"][0]  # image 0 changes; names and labels stay
    path.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(CacheMismatchError, match="fingerprint: cache has"):
        SaliencyCache(out, expect=load_split("cifar100", root, "train"))


def test_fingerprint_hashes_names_labels_and_pixels_of_a_split_in_memory():
    """The fingerprint of a split held in memory, derived by hand: SHA-256 of name, split, count,
    ids, labels (int64 little-endian) and the pixels, first 16 hex digits."""
    import hashlib

    tr = load_split("demo", None, "test")
    h = hashlib.sha256(f"demo\0test\0{len(tr)}\0".encode() + "\n".join(tr.ids).encode()
                       + tr.labels.astype("<i8").tobytes() + tr.images.tobytes())
    assert tr.fingerprint() == h.hexdigest()[:16]


# ----------------------------------------------------------------------------- bad Pet lists, in one line

BAD_LINES = {
    "class 0": b"Abyssinian_1 0 1 1\n",
    "class 999": b"Abyssinian_1 999 1 1\n",
    "malformed": b"Abyssinian_1\n",
    "not UTF-8": b"Abyssinian_1 1 1 1\n\xff\xfe\xfa 2 1 2\n",
}


@pytest.fixture()
def pet_copy(pet_dir, tmp_path):
    root = tmp_path / "pet"
    shutil.copytree(pet_dir["root"], root)
    return root


@pytest.mark.parametrize("what", list(BAD_LINES))
def test_a_bad_pet_list_line_is_one_line_from_both_tools(what, pet_copy, tmp_path, capsys):
    from cli_helpers import exit_code

    from saliencymixplus.precompute import main as precompute_main
    from saliencymixplus.rawdata import DataFileError
    from saliencymixplus.training import main as train_main

    ann = pet_copy / "annotations" / "trainval.txt"
    ann.write_bytes(BAD_LINES[what])
    with pytest.raises(DataFileError, match=f"{ann}:[12]: "):
        load_split("oxford_pet", pet_copy, "train")
    capsys.readouterr()
    for main, argv in ((train_main, ["--mix_aug", "cutmix", "--out-dir", tmp_path / "run", "--no-progress",
                                     "--workers", "0"]),
                       (precompute_main, ["--out", tmp_path / "p.h5", "--no-progress", "--workers", "0"])):
        rc = exit_code(main, ["--dataset", "oxford_pet", "--data-dir", pet_copy, *argv])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"{ann}:" in err, err


def test_a_pet_list_with_a_byte_order_mark_reads_its_first_name(pet_dir, pet_copy):
    ann = pet_copy / "annotations" / "trainval.txt"
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes())  # as Windows editors save UTF-8
    raw = load_split("oxford_pet", pet_copy, "train")
    assert raw.ids == [f"images/{n}.jpg" for n in pet_dir["train"][0]]
