"""``--saliency refresh``: maps written back through the loader's flip/crop land where they came
from, the refresh leaves the training step alone, train.py refreshes exactly the unmixed images
(one process and DDP), saves a reusable cache every epoch and resumes bit-exactly.

Expected values are built by hand or by direct per-pixel loops, not by the code under test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from saliencymixplus import refresh as R
from saliencymixplus.cache import CacheMismatchError, SaliencyCache
from saliencymixplus.checkpoint_file import read_checkpoint
from saliencymixplus.training import DeviceLoader, main
from saliencymixplus.training.distributed import Dist

from cli_helpers import exit_code, subprocess_env as _env

pytestmark = pytest.mark.usefixtures("one_thread")


def call(argv) -> int:
    return exit_code(main, argv)


ROOT = Path(__file__).resolve().parent.parent
MEAN_STD = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _maps(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["saliency"][...]


def _weights_equal(a, b) -> bool:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ----------------------------------------------------------------------------- the inverse transform

def test_to_stored_frame_by_hand():
    """One 3x4 map, pad 1, window at (dy, dx) = (0, 2), flipped."""
    stored = torch.arange(12).view(1, 3, 4)
    # Forward by hand: padded rows -1..1 of the stored map, columns 1..4 (4 is padding), flipped.
    padded = torch.nn.functional.pad(stored, (1, 1, 1, 1))
    seen = padded[:, 0:3, 2:6].flip(-1)
    assert seen.tolist() == [[[0, 0, 0, 0], [0, 3, 2, 1], [0, 7, 6, 5]]]
    old = torch.full_like(stored, -1)
    back = R.to_stored_frame(seen, old, flip=torch.tensor([True]),
                             offsets=(torch.tensor([0]), torch.tensor([2])), pad=1)
    # Row 2 and column 0 of the stored map were outside the window: they keep ``old``.
    assert back.tolist() == [[[-1, 1, 2, 3], [-1, 5, 6, 7], [-1, -1, -1, -1]]]
    # No crop, no flip: the identity.
    assert torch.equal(R.to_stored_frame(stored, old), stored)


@pytest.mark.parametrize("pad", [0, 3])
def test_maps_seen_through_the_device_loader_land_where_they_came_from(pad):
    """The loader's own flips and pad-crops forward; to_stored_frame back."""
    rng = np.random.default_rng(pad)
    n, h, w = 40, 6, 9
    stored = rng.integers(1, 256, (n, h, w), dtype=np.uint8)  # >= 1: padding (0) is recognisable
    images = np.repeat(stored[..., None], 3, axis=3)
    dl = DeviceLoader(images, np.arange(n), MEAN_STD, torch.device("cpu"), batch_size=8, train=True,
                      saliency=stored, pad=pad)
    dl.set_epoch(1, 2)
    flips = 0
    for x, s, y in dl:
        p = dl.last_batch
        assert torch.equal(p.indices, y)  # labels are the indices here
        seen = torch.round(s * 255).to(torch.uint8)
        old = torch.zeros_like(seen)
        back = R.to_stored_frame(seen, old, flip=p.flip, offsets=p.offsets, pad=p.pad)
        for k, i in enumerate(y.tolist()):
            want = np.zeros((h, w), np.uint8)
            if pad:  # the stored pixels the window covered (by hand, from the offsets)
                dy, dx = int(p.offsets[0][k]), int(p.offsets[1][k])
                r0, c0 = max(dy - pad, 0), max(dx - pad, 0)
                r1, c1 = min(dy - pad + h, h), min(dx - pad + w, w)
                want[r0:r1, c0:c1] = stored[i, r0:r1, c0:c1]
            else:
                want = stored[i]
            np.testing.assert_array_equal(back[k].numpy(), want)
        flips += int(p.flip.sum())
    assert 0 < flips < n  # both cases were exercised


def test_update_writes_the_gradient_saliency_back_in_the_stored_frame():
    """SaliencyRefresh.update through the loader: per image, round(255 * |g| summed over
    channels / its maximum) lands unflipped in the stored row of that image; others are untouched."""
    rng = np.random.default_rng(1)
    n, h, w = 24, 5, 7
    start = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    dl = DeviceLoader(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.arange(n), MEAN_STD,
                      torch.device("cpu"), batch_size=8, train=True, saliency=start.copy())
    store = R.SaliencyRefresh(dl.saliency, postprocess="none")
    dl.set_epoch(0, 0)
    it = iter(dl)
    x, _, y = next(it)
    g = torch.randn(8, 3, h, w, generator=torch.Generator().manual_seed(0))
    store.update(dl.last_batch.indices, g, flip=dl.last_batch.flip)
    got = dl.saliency.numpy()
    flip = dl.last_batch.flip.tolist()
    for k, i in enumerate(y.tolist()):
        m = g[k].abs().sum(0).numpy().astype(np.float64)
        m = m[:, ::-1] if flip[k] else m  # the model saw the flipped image: unflip
        np.testing.assert_array_equal(got[i], np.rint(255 * m / m.max()).astype(np.uint8))
    others = sorted(set(range(n)) - set(y.tolist()))
    np.testing.assert_array_equal(got[others], start[others])
    assert store.touched.nonzero().flatten().tolist() == sorted(y.tolist())
    # The next batch reads the refreshed maps (the store is the loader's tensor).
    assert dl.saliency.data_ptr() == store.maps.data_ptr()


def test_update_keeps_maps_of_a_non_finite_gradient_and_sharpens():
    maps = torch.full((3, 2, 5), 7, dtype=torch.uint8)
    store = R.SaliencyRefresh(maps, postprocess="top=0.2,power=2")
    g = torch.zeros(2, 1, 2, 5)
    g[0, 0] = torch.arange(10.0).view(2, 5)  # top 20 %: the two largest pixels survive
    g[1, 0, 0, 0] = float("inf")  # an overflowed fp16 step
    store.update(torch.tensor([2, 0]), g)
    # Hand: t = 0.8-quantile of [0, 1/9, ..., 1] = 7.2/9; (8/9 - t) / (1 - t) = 0.444..; squared: 0.1975
    assert maps[2].flatten().tolist() == [0] * 8 + [50, 255]
    assert (maps[0] == 7).all() and (maps[1] == 7).all()
    with pytest.raises(ValueError, match=r"grad must be Tensor\[2, C, 2, 5\]"):
        store.update(torch.tensor([0, 1]), torch.zeros(2, 1, 3, 5))
    with pytest.raises(ValueError, match="uint8 Tensor"):
        R.SaliencyRefresh(torch.zeros(2, 3, 3))


def test_refresh_leaves_the_training_step_unchanged():
    """One SGD step with and without the input gradient kept: the same parameters, BatchNorm
    statistics and loss; the kept gradient is the one autograd gives for the input."""
    from saliencymixplus.models import build_model

    def step(keep: bool):
        torch.manual_seed(0)
        net = build_model("resnet_tiny", 10, 32).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        y = torch.arange(8)
        if keep:
            x = R.SaliencyRefresh.track(x)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return net, loss.detach(), x.grad

    a, la, ga = step(False)
    b, lb, gb = step(True)
    assert ga is None and gb is not None and torch.equal(la, lb)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # The kept gradient equals a separate autograd computation at the same (initial) weights.
    torch.manual_seed(0)
    net = build_model("resnet_tiny", 10, 32).train()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), torch.arange(8)), [x])
    torch.testing.assert_close(gb, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_update_has_no_host_sync_on_a_gpu():
    dev = torch.device("cuda")
    store = R.SaliencyRefresh(torch.zeros(64, 32, 32, dtype=torch.uint8, device=dev), postprocess="top=0.2,power=2")
    idx = torch.randperm(64, device=dev)[:16]
    g = torch.randn(16, 3, 32, 32, device=dev)
    flip = torch.rand(16, device=dev) < 0.5
    off = (torch.randint(0, 9, (16,), device=dev), torch.randint(0, 9, (16,), device=dev))
    store.update(idx, g, flip=flip, offsets=off, pad=4)  # warm up
    torch.cuda.set_sync_debug_mode("error")
    try:
        store.update(idx, g, flip=flip, offsets=off, pad=4)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the saved cache

def test_save_and_load_refreshed(tmp_path, demo_cache):
    src = SaliencyCache(demo_cache)
    maps = torch.from_numpy(src.read_all()).clone()
    maps[3] = 255 - maps[3]
    path = R.save_refreshed(tmp_path / "r.h5", maps, like=src.attrs, epoch=4, postprocess="power=2")
    back = SaliencyCache(path, method="gradient_refresh")  # an ordinary cache, checked as one
    assert back.attrs["epoch"] == 4 and back.attrs["postprocess"] == "power=2"
    assert back.attrs["fingerprint"] == src.attrs["fingerprint"] and back.attrs["count"] == 5000
    np.testing.assert_array_equal(back.read_all(), maps.numpy())
    digest = back.attrs["maps_sha256"]
    assert digest == R.maps_digest(maps) != R.maps_digest(src.read_all())
    np.testing.assert_array_equal(R.load_refreshed(path, like=src.attrs, epoch=4, digest=digest), maps.numpy())
    with pytest.raises(CacheMismatchError, match="epoch: file has 4, expected 5"):
        R.load_refreshed(path, epoch=5)
    with pytest.raises(CacheMismatchError, match="maps_sha256"):
        R.load_refreshed(path, digest="0" * 16)
    with pytest.raises(CacheMismatchError, match="fingerprint"):
        R.load_refreshed(path, like={**src.attrs, "fingerprint": "x"})
    with pytest.raises(CacheMismatchError, match="method"):
        R.load_refreshed(demo_cache)  # not a refreshed cache
    with pytest.raises(FileNotFoundError):
        R.load_refreshed(tmp_path / "none.h5")
    assert not list(tmp_path.glob("*.partial"))


# ----------------------------------------------------------------------------- train.py

TINY = ["--dataset", "demo", "--batch_size", "16", "--limit-test-batches", "1", "--no-progress",
        "--workers", "0"]


def _batches(seed: int, epoch: int, steps: int, rank: int = 0, world: int = 1, batch: int = 16) -> list[int]:
    """The images the device loader yields in one epoch (a loader over dummy data, same seed)."""
    dl = DeviceLoader(np.zeros((5000, 1, 1, 3), np.uint8), np.arange(5000), MEAN_STD, torch.device("cpu"),
                      batch_size=batch, train=True, dist_=Dist(rank, world))
    dl.limit = steps
    dl.set_epoch(seed, epoch)
    return sorted(int(i) for _, _, y in dl for i in y)


def test_train_refreshes_exactly_the_unmixed_images_and_saves_a_reusable_cache(tmp_path, demo_cache, capsys):
    start = _maps(demo_cache)
    # --mix_prob 0: every step is unmixed, every image trained on is refreshed.
    run = tmp_path / "all"
    assert call([*TINY, "--saliency", "refresh", "--saliency-cache", demo_cache, "--mix_prob", "0",
                 "--limit-train-batches", "3", "--epochs", "1", "--seed", "5", "--out-dir", run]) == 0
    f = run / "saliency-refresh-e0001.h5"
    cache = SaliencyCache(f, method="gradient_refresh")
    assert cache.attrs["epoch"] == 1 and cache.attrs["source"] == Path(demo_cache).name
    assert cache.attrs["postprocess"] == "top=0.2,power=2" and cache.attrs["source_method"] == "fine_grained"
    changed = np.flatnonzero((cache.read_all() != start).reshape(5000, -1).any(1)).tolist()
    assert changed == _batches(5, 0, 3)
    # Sharpened (top 20 %): most pixels of a refreshed map are 0, its maximum 255.
    new = cache.read_all()[changed].reshape(len(changed), -1)
    assert (new.max(1) == 255).all() and ((new == 0).mean(1) >= 0.75).all()
    ck = read_checkpoint(run / "last.pt")
    assert ck["saliency_refresh"]["file"] == f.name and ck["saliency_refresh"]["epoch"] == 1
    assert ck["config"]["saliency"] == "refresh"
    # --mix_prob 1: no unmixed step, nothing refreshed.
    assert call([*TINY, "--saliency", "refresh", "--saliency-cache", demo_cache, "--mix_prob", "1",
                 "--limit-train-batches", "2", "--epochs", "1", "--out-dir", tmp_path / "none"]) == 0
    np.testing.assert_array_equal(_maps(tmp_path / "none" / "saliency-refresh-e0001.h5"), start)
    # The saved file is a cache train.py takes as it is.
    assert call([*TINY, "--saliency-cache", f, "--limit-train-batches", "2", "--epochs", "1",
                 "--out-dir", tmp_path / "reuse"]) == 0, capsys.readouterr().err


def test_kill_and_resume_give_the_same_weights_and_maps(tmp_path, demo_cache, capsys):
    """SIGKILL mid-run, then --resume: the maps come back from the file the checkpoint names and
    the run ends with the weights and maps of an uninterrupted one."""
    common = [*TINY, "--saliency", "refresh", "--saliency-cache", demo_cache, "--seed", "2",
              "--limit-train-batches", "6", "--milestones", "1"]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *common, "--epochs", "100",
                             "--out-dir", str(run)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 100
    total = done + 1
    assert call([*common, "--epochs", total, "--out-dir", run, "--resume"]) == 0, capsys.readouterr().err
    assert "refreshed saliency of epoch" in capsys.readouterr().out
    straight = tmp_path / "straight"
    assert call([*common, "--epochs", total, "--out-dir", straight]) == 0
    assert _weights_equal(run / "last.pt", straight / "last.pt")
    name = f"saliency-refresh-e{total:04d}.h5"
    np.testing.assert_array_equal(_maps(run / name), _maps(straight / name))
    # --refresh-keep last: only the files of last.pt and best.pt stay.
    best = read_checkpoint(straight / "best.pt")["saliency_refresh"]["file"]
    assert {p.name for p in straight.glob("saliency-refresh-*.h5")} == {name, best}
    # Without its maps the resume would not be exact: a missing file is an error, not a guess.
    for p in run.glob("saliency-refresh-*.h5"):
        p.unlink()
    assert call([*common, "--epochs", total + 1, "--out-dir", run, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("keep", ["last", "all"])
def test_prune_keeps_the_files_of_the_last_and_best_checkpoints(keep, tmp_path, demo_cache):
    from saliencymixplus.training import parse_config
    from saliencymixplus.training.loaders import build_loaders
    from saliencymixplus.training.loop import InPlaceRefresh, refresh_file

    cfg = parse_config([*TINY, "--saliency", "refresh", "--saliency-cache", demo_cache, "--refresh-keep", keep,
                        "--out-dir", str(tmp_path)])
    train, _ = build_loaders(cfg, Dist())
    run = InPlaceRefresh(cfg, Dist(), train, tmp_path)
    for epoch, best in ((1, True), (2, False), (3, True), (4, False), (5, False)):
        (tmp_path / refresh_file(epoch)).write_bytes(b"")  # stands in for end_epoch's file
        run.current = {"file": refresh_file(epoch), "epoch": epoch, "maps_sha256": "-"}
        assert run.record(best)["best_file"] == refresh_file(1 if epoch < 3 else 3)
        run.prune()
    left = sorted(p.name for p in tmp_path.glob("saliency-refresh-*.h5"))
    assert left == ([refresh_file(3), refresh_file(5)] if keep == "last" else [refresh_file(e) for e in range(1, 6)])


def test_torch_loader_refresh_pass_and_resume(tmp_path, cifar_dir, capsys):
    """--loader torch: a pass every --refresh-every epochs gives every image the gradient
    saliency of the model at that epoch's end; resuming from it gives the same weights."""
    from saliencymixplus.data import load_split
    from saliencymixplus.models import build_model
    from saliencymixplus.datasets import get_spec
    from saliencymixplus.transforms import Normalize

    cache = tmp_path / "cifar.h5"
    common = ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--model", "resnet_tiny",
              "--saliency-cache", cache, "--loader", "torch", "--saliency", "refresh", "--refresh-every", "2",
              "--refresh-postprocess", "none", "--batch_size", "16", "--limit-test-batches", "1",
              "--no-progress", "--workers", "0", "--milestones", "1"]
    assert call([*common, "--epochs", "2", "--out-dir", tmp_path / "a"]) == 0, capsys.readouterr().err
    assert not (tmp_path / "a" / "saliency-refresh-e0001.h5").exists()  # epoch 1: no pass
    maps = _maps(tmp_path / "a" / "saliency-refresh-e0002.h5")
    # By hand: |d CE / d x| summed over channels of the epoch-2 model (eval mode), per image / max.
    # The float32 input gradient of a ReLU net jumps where a pre-activation rounds to the other
    # side of 0 (here -5e-8 in float64 rounds to +2e-7 under one of oneDNN's kernels and not
    # the other): one unit's whole receptive field changes, by up to 18/255. So the reference
    # does the pass's float32 arithmetic: images as contiguous NCHW (a permuted NHWC array is
    # channels_last and takes other conv kernels) in batches of --batch_size, normalised with
    # the library's Normalize (hand-checked in test_transforms.py): (x / 255 - mean) / std
    # written another way differs in the last bit, and that is enough to flip such a unit.
    ck = read_checkpoint(tmp_path / "a" / "last.pt")
    net = build_model("resnet_tiny", 100, 32)
    net.load_state_dict(ck["model"])
    net.eval()
    raw = load_split("cifar100", cifar_dir["root"], "train")
    x = Normalize(*get_spec("cifar100").mean_std)(torch.from_numpy(raw.images).permute(0, 3, 1, 2))
    x, labels, g = x.contiguous(), torch.from_numpy(raw.labels), []
    for a in range(0, len(x), 16):
        xb = x[a:a + 16].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xb), labels[a:a + 16], reduction="sum")
        g.append(torch.autograd.grad(loss, [xb])[0])
    s = torch.cat(g).abs().sum(1)
    want = np.rint(255 * (s / s.flatten(1).amax(1)[:, None, None]).numpy()).astype(np.int16)
    assert np.abs(maps.astype(np.int16) - want).max() <= 1  # float rounding at .5 only
    # The training set's next workers read the new maps.
    from saliencymixplus.training import parse_config
    from saliencymixplus.training.loaders import build_loaders
    from saliencymixplus.training.loop import PassRefresh

    cfg = parse_config([str(a) for a in [*common, "--out-dir", tmp_path / "c"]])
    train, _ = build_loaders(cfg, Dist())
    run = PassRefresh(cfg, Dist(), train, tmp_path / "c")
    (tmp_path / "c").mkdir()
    run.end_epoch(2, net)
    np.testing.assert_array_equal(train.loader.dataset.cache.read_all(), maps)
    assert train.loader.dataset[5][1].shape == (32, 32)
    # 3 epochs straight = 2 epochs, then --resume to 3 (epoch 3 trains on the epoch-2 maps).
    assert call([*common, "--epochs", "3", "--out-dir", tmp_path / "b"]) == 0
    assert call([*common, "--epochs", "3", "--out-dir", tmp_path / "a", "--resume"]) == 0
    assert _weights_equal(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")


class _BoxProbe(torch.nn.Module):
    """Logit 0 is the sum of the input over rows ``[r0, r1)`` and columns ``[c0, c1)``; the others
    are 0. The input gradient of its cross-entropy is one value on that box and 0 elsewhere, so
    its gradient saliency is exactly the box's indicator, wherever the box is in the input."""

    def __init__(self, box, classes):
        super().__init__()
        self.box, self.classes = box, classes
        # Small: the softmax stays near uniform, so d CE / d logit 0 is never 0 (not saturated).
        self.scale = torch.nn.Parameter(torch.full((), 1e-3))

    def forward(self, x):
        r0, r1, c0, c1 = self.box
        v = self.scale * x[:, :, r0:r1, c0:c1].sum((1, 2, 3))
        return torch.cat([v[:, None], v.new_zeros(len(x), self.classes - 1)], 1)


def test_file_backed_pass_writes_maps_in_the_stored_frame(tmp_path, pet_dir):
    """Oxford Pet (JPEGs of varied sizes, the torch loader): the pass gives every image the
    saliency of the model looking at the whole image at the stored maps' resolution (non-square
    here), unflipped and uncropped: the frame resample_saliency reads the maps in."""
    from saliencymixplus.precompute import build_cache
    from saliencymixplus.training import parse_config
    from saliencymixplus.training.loaders import build_loaders
    from saliencymixplus.training.loop import PassRefresh

    cache = build_cache("oxford_pet", pet_dir["data_dir"], "train", "fine_grained", tmp_path / "pet.h5",
                        resolution="24x40", workers=0, progress=False, log=lambda *a: None)
    cfg = parse_config(["--dataset", "oxford_pet", "--data-dir", str(pet_dir["data_dir"]), "--saliency", "refresh",
                        "--saliency-cache", str(cache), "--refresh-every", "1", "--refresh-postprocess", "none",
                        "--batch_size", "4", "--workers", "0", "--no-progress", "--out-dir", str(tmp_path / "run")])
    train, _ = build_loaders(cfg, Dist())
    (tmp_path / "run").mkdir()
    run = PassRefresh(cfg, Dist(), train, tmp_path / "run")
    box = (3, 9, 30, 37)  # rows 3..8, columns 30..36 of a 24x40 map: off-centre, near the right edge
    run.end_epoch(1, _BoxProbe(box, 37))
    maps = _maps(tmp_path / "run" / "saliency-refresh-e0001.h5")
    want = np.zeros((len(pet_dir["train"][0]), 24, 40), np.uint8)
    want[:, 3:9, 30:37] = 255
    np.testing.assert_array_equal(maps, want)
    # The training set reads them from now on, each cut and flipped with its image.
    np.testing.assert_array_equal(train.loader.dataset.cache.read_all(), want)


def test_train_py_demo_refresh_runs_out_of_the_box(tmp_path, demo_cache):
    """``train.py --dataset demo --saliency refresh`` and nothing else about saliency: the default
    cache path (data/demo-train-fine_grained.h5, here already built) is refreshed and saved."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo-train-fine_grained.h5").write_bytes(Path(demo_cache).read_bytes())
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "demo", "--saliency", "refresh",
                        "--epochs", "1", "--limit-train-batches", "2", "--limit-test-batches", "1", "--no-progress",
                        "--workers", "0", "--out-dir", "run"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    cache = SaliencyCache(tmp_path / "run" / "saliency-refresh-e0001.h5", method="gradient_refresh")
    assert cache.attrs["epoch"] == 1 and cache.attrs["source"] == "demo-train-fine_grained.h5"
    assert read_checkpoint(tmp_path / "run" / "last.pt")["saliency_refresh"]["file"] == "saliency-refresh-e0001.h5"


def test_ddp_each_rank_refreshes_what_it_trains_on(tmp_path, demo_cache):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), *TINY, "--batch_size", "32", "--epochs", "1", "--limit-train-batches", "2",
           "--saliency", "refresh", "--mix_prob", "0", "--saliency-cache", demo_cache, "--seed", "1",
           "--out-dir", str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    changed = np.flatnonzero((_maps(out / "saliency-refresh-e0001.h5") != _maps(demo_cache))
                             .reshape(5000, -1).any(1)).tolist()
    mine = [_batches(1, 0, 2, rank, 2) for rank in (0, 1)]
    assert not set(mine[0]) & set(mine[1])
    assert changed == sorted(mine[0] + mine[1])  # rank 0 saved rank 1's updates too
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 1
