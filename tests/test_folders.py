"""Folder data sets (issue 22 points 1, 2, 5): torchvision ImageFolder trees (``--dataset
imagefolder``) and ILSVRC-2012 folders (``--dataset imagenet``) through the reader, the
ImageNet-style recipe, the cache tool, train.py and the library pairing
:class:`~saliencymixplus.data.WithSaliency`. Every tree is made here."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import exit_code

from saliencymixplus import folders
from saliencymixplus.cache import CacheMismatchError, SaliencyCache
from saliencymixplus.data import WithSaliency, build_dataset
from saliencymixplus.datasets import get_spec
from saliencymixplus.rawdata import DataFileError, load_split
from saliencymixplus.transforms import eval_transform, train_transform

pytestmark = pytest.mark.usefixtures("one_thread")


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


# Relative to DIR/train: the images of each class, in the order torchvision's ImageFolder
# gives them (classes sorted; os.walk roots sorted, the class folder itself first; names sorted).
TRAIN_FILES = {
    "b_dog": ["a.JPEG", "c.png", "deep/er/x.jpeg", "deep/y.Png"],
    "a_cat": ["1.png", "2.jpeg", "Z.JPG", "sub/3.JPEG"],
    "c_empty": [],
}
EXPECTED_TRAIN = [("a_cat", f) for f in ("1.png", "2.jpeg", "Z.JPG", "sub/3.JPEG")] + \
    [("b_dog", f) for f in ("a.JPEG", "c.png", "deep/y.Png", "deep/er/x.jpeg")]


@pytest.fixture
def tree(tmp_path) -> Path:
    """DIR/train with 3 classes (one empty), nested folders, mixed extensions and a text file;
    DIR/val with 2 classes (one image each)."""
    root = tmp_path / "tree"
    seed = 0
    for cls, files in TRAIN_FILES.items():
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for f in files:
            seed += 1
            fmt = "PNG" if f.lower().endswith(".png") else "JPEG"
            _save(root / "train" / cls / f, _img(20 + seed, 24, seed), format=fmt)
    (root / "train" / "a_cat" / "notes.txt").write_text("not an image")
    for cls in ("a_cat", "b_dog"):
        _save(root / "val" / cls / "v.jpg", _img(30, 40, 100 + len(cls)))
    return root


def test_tree_order_labels_and_extensions_follow_torchvision(tree):
    with pytest.warns(UserWarning, match=r"1 class folder .* holds no image \(c_empty\)"):
        raw = load_split("imagefolder", tree, "train")
    got = [(Path(p).relative_to(tree / "train").parts[0], Path(p).relative_to(tree / "train" / Path(p).relative_to(
        tree / "train").parts[0]).as_posix()) for p in raw.paths]
    assert got == EXPECTED_TRAIN  # by hand: notes.txt left out, nested files counted, any case
    assert raw.classes == ["a_cat", "b_dog", "c_empty"] and raw.num_classes == 3
    assert raw.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert raw.empty_classes == ["c_empty"]
    from torchvision.datasets import ImageFolder

    tv = ImageFolder(str(tree / "train"), allow_empty=True)
    assert [(p, y) for p, y in tv.samples] == list(zip(raw.paths, raw.labels.tolist()))
    assert tv.classes == raw.classes


def test_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert folders.IMG_EXTENSIONS == IMG_EXTENSIONS


def test_test_split_is_val_with_train_classes(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = load_split("imagefolder", tree, "test")
    assert [Path(p).relative_to(tree).as_posix() for p in raw.paths] == ["val/a_cat/v.jpg", "val/b_dog/v.jpg"]
    assert raw.labels.tolist() == [0, 1] and raw.num_classes == 3 and raw.split == "test"


def test_val_class_unknown_to_train_is_refused(tree):
    _save(tree / "val" / "d_new" / "q.png", _img(8, 8, 1))
    with pytest.raises(DataFileError, match=r"class folders that .*train has not \(d_new\)"):
        load_split("imagefolder", tree, "test")


def test_missing_folders_say_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no folder .*nothing[/\\]val .*DIR/val/<class>"):
        load_split("imagefolder", tmp_path / "nothing", "test")
    (tmp_path / "t" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no class folder"):
        load_split("imagefolder", tmp_path / "t", "train")
    with pytest.raises(FileNotFoundError, match="needs --data-dir"):
        load_split("imagefolder", None, "train")


def test_grayscale_and_cmyk_jpegs_decode_to_rgb(tmp_path):
    gray = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (16, 1))  # [16, 30] ramp
    _save(tmp_path / "train" / "g" / "gray.jpg", gray, quality=100)
    cmyk = Image.new("CMYK", (12, 10), (0, 255, 255, 0))  # pure red in CMYK
    (tmp_path / "train" / "c").mkdir(parents=True)
    cmyk.save(tmp_path / "train" / "c" / "cmyk.JPEG", quality=100)
    raw = load_split("imagefolder", tmp_path, "train")
    by_name = {Path(p).name: i for i, p in enumerate(raw.paths)}
    g = raw.image(by_name["gray.jpg"])
    assert g.dtype == np.uint8 and g.shape == (16, 30, 3)
    assert np.abs(g.astype(int) - gray[..., None].astype(int)).max() <= 3  # the ramp on all three channels
    c = raw.image(by_name["cmyk.JPEG"])
    assert c.shape == (10, 12, 3)
    r, gg, b = (c[..., k].astype(int).mean() for k in range(3))
    assert r > 240 and gg < 15 and b < 15, (r, gg, b)  # red, not the raw C/M/Y channels


def test_fingerprint_covers_file_size_and_mtime(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_split("imagefolder", tree, "train").fingerprint()
        p = tree / "train" / "a_cat" / "1.png"
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        b = load_split("imagefolder", tree, "train").fingerprint()
        _save(p, _img(20, 24, 999), format="PNG")  # another image, same name
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        c = load_split("imagefolder", tree, "train").fingerprint()
    assert len({a, b, c}) == 3


def test_unreadable_files_are_named_in_one_error(tree, capsys):
    from saliencymixplus.precompute import main

    (tree / "train" / "b_dog" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated PNG
    (tree / "train" / "a_cat" / "2.jpeg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = exit_code(main, ["--dataset", "imagefolder", "--data-dir", tree, "--out", tree / "c.h5",
                              "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "2 images of imagefolder/train cannot be decoded" in err
    assert str(tree / "train" / "b_dog" / "c.png") in err and str(tree / "train" / "a_cat" / "2.jpeg") in err
    assert "move it out of the data folder" in err and "--resume" in err


# ----------------------------------------------------------------------------- ImageNet layout

def _wnid(k: int) -> str:
    return f"n{k:08d}"


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """1000 made-up wnid folders with one 8x8 JPEG each; val: 3 of them."""
    root = tmp_path_factory.mktemp("imagenet")
    jpeg = root / "one.JPEG"
    _save(jpeg, _img(8, 8, 0))
    data = jpeg.read_bytes()
    for k in range(1000):
        d = root / "train" / _wnid(k)
        d.mkdir(parents=True)
        (d / f"{_wnid(k)}_1.JPEG").write_bytes(data)
    for k in (0, 500, 999):
        d = root / "val" / _wnid(k)
        d.mkdir(parents=True)
        (d / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes(data)
    jpeg.unlink()
    return root


def test_imagenet_layout_loads_1000_classes(imagenet):
    raw = load_split("imagenet", imagenet, "train")
    assert len(raw) == 1000 and raw.num_classes == 1000 and raw.labels.tolist() == list(range(1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # val has 3 of the 1000 classes
        val = load_split("imagenet", imagenet, "test")
    assert val.labels.tolist() == [0, 500, 999] and val.num_classes == 1000


def test_imagenet_class_count_is_checked(imagenet, tmp_path):
    import shutil

    short = tmp_path / "in"
    shutil.copytree(imagenet / "train", short / "train", ignore=lambda d, names: [n for n in names if n == _wnid(7)])
    with pytest.raises(DataFileError, match=r"holds 999 class folders, expected 1000"):
        load_split("imagenet", short, "train")


def test_missing_imagenet_says_where_to_get_it(tmp_path, imagenet):
    with pytest.raises(FileNotFoundError, match=r"image-net\.org.*valprep\.sh"):
        load_split("imagenet", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"^--download: .*image-net\.org"):  # nothing is downloaded
        get_spec("imagenet").load(imagenet, "train", download=True)


def test_imagenet_val_not_sorted_into_wnids_is_refused(imagenet, tmp_path):
    import shutil

    root = tmp_path / "in"
    (root / "val").mkdir(parents=True)
    os.symlink(imagenet / "train", root / "train")
    shutil.copy(next((imagenet / "train" / _wnid(3)).iterdir()), root / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataFileError, match=r"images outside class folders .*valprep\.sh"):
        load_split("imagenet", root, "test")


def test_imagenet_training_defaults_are_the_published_recipe():
    from saliencymixplus.training.config import parse_config

    c = parse_config(["--dataset", "imagenet", "--data-dir", "x"])
    assert (c.model, c.epochs, c.batch_size, c.learning_rate, c.milestones, c.loader, c.image_size) == \
        ("resnet50", 300, 256, 0.1, (75, 150, 225), "torch", 224)
    assert c.num_classes == 1000 and (c.mean, c.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert get_spec("imagenet").stored_resolution == (96, 96) == get_spec("imagefolder").stored_resolution


# ----------------------------------------------------------------------------- recipe and flags

def test_eval_recipe_resizes_to_size_over_0875_then_centre_crops():
    image = _img(300, 400, 3)
    tf = eval_transform("imagefolder", 224)
    out, geo = tf.apply_image(image)
    # By hand: shorter side 300 -> 256 (= 224 / 0.875), so 256 x 341; the centre 224 x 224 starts at
    # row round(32 / 2) = 16 and column round(117 / 2) = 58 (Python's round: 58.5 -> 58, as torchvision).
    assert tuple(out.shape) == (3, 224, 224) and geo.size == (224, 224) and not geo.flip
    assert geo.box == pytest.approx((16 / 256, 58 / 341, 240 / 256, 282 / 341))
    from torchvision.transforms.v2 import functional as TF

    ref = TF.center_crop(TF.resize(torch.from_numpy(image).permute(2, 0, 1), 256, antialias=True), 224)
    assert torch.equal(out, ref)
    assert tuple(eval_transform("imagefolder", 64).apply_image(image)[0].shape) == (3, 64, 64)  # 73 then 64
    yy, xx = np.mgrid[0:300, 0:400]
    ramp = np.repeat(((xx * 0.5 + yy * 0.3) % 256).astype(np.uint8)[..., None], 3, axis=2)  # smooth
    x, s = tf(ramp, ramp[..., 0])  # map = red channel: it stays aligned with the image's red channel
    red = tf.apply_image(ramp)[0][0].float()
    assert s.shape == (224, 224) and (s.float() - red).abs().mean() < 1.5


def test_train_recipe_crops_to_image_size_and_flips():
    image = _img(60, 90, 4)
    tf = train_transform("imagefolder", 48)
    torch.manual_seed(0)
    x, s = tf(image, image[..., 1])
    assert tuple(x.shape) == (3, 48, 48) and tuple(s.shape) == (48, 48)
    types = [type(t).__name__ for t in tf.steps]
    assert types == ["RandomResizedCrop", "RandomHorizontalFlip"]


def test_mean_std_and_image_size_reach_the_config():
    from saliencymixplus.training.config import Config, UsageError, parse_config

    c = parse_config(["--dataset", "imagefolder", "--data-dir", "x", "--mean", "0.5", "0.4", "0.3",
                      "--std", "0.1", "0.2", "0.3", "--image-size", "96"])
    assert (c.mean, c.std) == ((0.5, 0.4, 0.3), (0.1, 0.2, 0.3)) and c.image_size == 96 and c.num_classes is None
    with pytest.raises(UsageError, match="cifar100's recipe is fixed at 32 px, got --image-size 64"):
        Config(dataset="cifar100", image_size=64)


# ----------------------------------------------------------------------------- end to end

def test_cache_tool_and_train_py_on_a_tree(tree, tmp_path, capsys):
    from saliencymixplus.precompute import main as precompute
    from saliencymixplus.training.runner import main as train

    cache = tmp_path / "C.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = exit_code(precompute, ["--dataset", "imagefolder", "--data-dir", tree, "--split", "train",
                                    "--out", cache, "--workers", "0", "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        c = SaliencyCache(cache, expect=load_split("imagefolder", tree, "train"))
        assert len(c) == 8 and c.resolution == (96, 96)
        rc = exit_code(train, ["--dataset", "imagefolder", "--data-dir", tree, "--epochs", "1",
                               "--saliency-cache", cache, "--model", "resnet_tiny", "--image-size", "32",
                               "--batch_size", "4", "--limit-train-batches", "2", "--limit-test-batches", "1",
                               "--workers", "0", "--no-progress", "--out-dir", tmp_path / "run"])
    assert rc == 0, capsys.readouterr().err
    from saliencymixplus.checkpoint_file import read_checkpoint

    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"]["num_classes"] == 3 and ck["config"]["image_size"] == 32
    assert ck["model"]["fc.weight"].shape[0] == 3


def test_train_py_refuses_a_missing_tree(tmp_path, capsys):
    from saliencymixplus.training.runner import main as train

    rc = exit_code(train, ["--dataset", "imagefolder", "--data-dir", tmp_path / "none", "--epochs", "1",
                           "--out-dir", tmp_path / "run"])
    err = capsys.readouterr().err
    assert rc == 2 and "no folder" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- library pairing

@pytest.fixture
def tree_cache(tree, tmp_path):
    from saliencymixplus.precompute import build_cache

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_cache("imagefolder", tree, "train", "spectral_residual", tmp_path / "c.h5", workers=0,
                           progress=False, log=lambda m: None, resolution=(16, 16))


def test_with_saliency_pairs_a_raw_split_and_torchvision_imagefolder(tree, tree_cache):
    from torchvision.datasets import ImageFolder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = load_split("imagefolder", tree, "train")
    stored = SaliencyCache(tree_cache).read_all()
    a = WithSaliency(raw, tree_cache)
    b = WithSaliency(ImageFolder(str(tree / "train"), allow_empty=True), tree_cache)
    assert len(a) == len(b) == 8
    for i in (0, 5, 7):
        (ia, sa, ya), (ib, sb, yb) = a[i], b[i]
        assert ya == yb == int(raw.labels[i])
        assert np.array_equal(sa, stored[i]) and np.array_equal(sb, stored[i])
        assert np.abs(ia.astype(int) - ib.astype(int)).max() <= 2  # OpenCV's and PIL's JPEG decoders
    t = WithSaliency(raw, tree_cache, transform=eval_transform("imagefolder", 32))
    x, s, y = t[3]
    assert tuple(x.shape) == (3, 32, 32) and tuple(s.shape) == (32, 32) and s.dtype == torch.uint8


def test_with_saliency_refuses_other_images(tree, tree_cache):
    from torchvision.datasets import ImageFolder

    with pytest.raises(ValueError, match=r"has 8 maps but the data set has 7 items"):
        WithSaliency(torch.utils.data.Subset(ImageFolder(str(tree / "train"), allow_empty=True), range(7)),
                     tree_cache)
    p = tree / "train" / "b_dog" / "c.png"
    _save(p, _img(5, 5, 1), format="PNG")  # same name, other bytes
    with pytest.raises(CacheMismatchError, match="fingerprint") as e:
        WithSaliency(ImageFolder(str(tree / "train"), allow_empty=True), tree_cache)
    assert f"--dataset imagefolder --data-dir {tree} --split train" in str(e.value)  # the command that rebuilds it
    with pytest.raises(CacheMismatchError, match="fingerprint"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        WithSaliency(load_split("imagefolder", tree, "train"), tree_cache)


# ----------------------------------------------------------------------------- reading at scale

def test_each_ddp_rank_reads_only_its_own_maps(tree, tree_cache, monkeypatch):
    from saliencymixplus.training.distributed import Dist
    from saliencymixplus.training.loaders import TorchLoader

    read: dict[int, list[int]] = {}
    rank = [0]
    original = SaliencyCache.stored

    def spy(self, i):
        read.setdefault(rank[0], []).append(int(i))
        return original(self, i)

    monkeypatch.setattr(SaliencyCache, "stored", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("imagefolder", tree, "train", train=True, saliency_cache=str(tree_cache), image_size=16)
    for r in (0, 1):
        rank[0] = r
        loader = TorchLoader(ds, torch.device("cpu"), batch_size=2, train=True, workers=0, dist_=Dist(r, 2))
        loader.set_epoch(0, 0)
        assert sum(len(y) for _, _, y in loader) == 4
    assert len(read[0]) == len(read[1]) == 4
    assert sorted(read[0] + read[1]) == list(range(8))  # each map read once, by one rank


@pytest.mark.slow
def test_torchrun_two_ranks_train_on_a_tree(tree, tmp_path):
    import subprocess
    import sys

    from cli_helpers import subprocess_env

    from saliencymixplus.checkpoint_file import read_checkpoint

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(root / "train.py"), "--dataset", "imagefolder", "--data-dir", str(tree), "--epochs", "1",
           "--model", "resnet_tiny", "--image-size", "32", "--batch_size", "4", "--limit-train-batches", "1",
           "--limit-test-batches", "1", "--workers", "0", "--no-progress", "--out-dir", str(tmp_path / "run")]
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "on 2 x cpu" in r.stdout
    assert (tree / "imagefolder-train-fine_grained.h5").is_file()  # built once, by rank 0, beside the tree
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"]["num_classes"] == 3 and ck["model"]["fc.weight"].shape[0] == 3
