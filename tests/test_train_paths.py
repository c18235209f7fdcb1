"""Paths users take that the end-to-end runs in test_train.py do not check.

* the mixers on what training feeds them: channels-last, bfloat16 and uint8 images, uint8
  saliency; each result checked by brute force from its pairing and boxes;
* ``--amp fp16``: the loop steps through the ``GradScaler`` (an overflowing step is skipped
  and the scale halves; a finite one applies the unscaled gradients);
* ``--compile`` with the default (inductor) backend trains like eager mode;
* ``--resume`` gives the weights of an uninterrupted run with ``--paper``, with the
  ``DataLoader`` path (worker processes) and with ``--amp fp16``;
* a saliency cache whose only difference is the fingerprint (same data set, split and count,
  one label changed) stops the command line with exit code 2 and one line.
"""

from __future__ import annotations

import csv
import pickle
import shutil

import pytest
import torch
import torch.nn.functional as F

from saliencymixplus import mix
from saliencymixplus.checkpoint_file import read_checkpoint
from saliencymixplus.training import Config, main
from saliencymixplus.training.distributed import Dist
from saliencymixplus.training.loop import train_one_epoch

from cli_helpers import exit_code
from fixtures_data import Batches, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


def call(argv) -> int:
    return exit_code(main, argv)


TINY = ["--limit-train-batches", "3", "--limit-test-batches", "1", "--batch_size", "16",
        "--no-progress", "--workers", "0"]


# ----------------------------------------------------------------------------- mixers

K, B, H, W = 7, 6, 12, 10

MIXERS = {
    "cutmix": lambda: mix.CutMix(K),
    "saliencymix": lambda: mix.SaliencyMix(K),
    "saliencymixplus-window": lambda: mix.SaliencyMixPlus(K),
    "saliencymixplus-peak-half": lambda: mix.SaliencyMixPlus(K, box="peak", pairing="half"),
}
AREA_RULE = ("cutmix", "saliencymix")


def _inputs(kind: str, seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, H, W, generator=g).to(device)
    s = (torch.rand(B, H, W, generator=g) ** 4).to(device)  # peaked maps
    y = torch.randint(0, K, (B,), generator=g).to(device)
    if "bfloat16" in kind:
        x = x.to(torch.bfloat16)
    if "uint8" in kind:
        x = (x.sigmoid() * 255).round().to(torch.uint8)
    if "channels_last" in kind:
        x = x.contiguous(memory_format=torch.channels_last)
    if "uint8_saliency" in kind:
        s = (s * 255).round().to(torch.uint8)
    return x, y, s


@pytest.mark.parametrize("kind", ["channels_last", "bfloat16", "bfloat16-channels_last", "uint8",
                                  "uint8-channels_last-uint8_saliency"])
@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("device", ["cpu", "cuda"])  # cuda: the GPU suite (conftest marks and skips it)
def test_mixers_on_channels_last_bf16_and_uint8(device, name, kind):
    x, y, s = _inputs(kind, seed=3, device=device)
    r = MIXERS[name]().mix(x, y, s, generator=torch.Generator().manual_seed(11))
    n = r.images.shape[0]
    assert n == (B // 2 if "half" in name else B) and r.images.dtype == x.dtype
    assert r.images.device == r.targets.device == x.device
    if "channels_last" in kind:
        assert r.images.is_contiguous(memory_format=torch.channels_last)
    assert r.perm is not None and r.boxes is not None
    perm, boxes = r.perm.tolist(), r.boxes.tolist()
    x, y, s, images, targets = (t.cpu() for t in (x, y, s, r.images, r.targets))
    sal = s.double()
    pasted = 0
    for i in range(n):
        y1, x1, y2, x2 = boxes[i]
        assert 0 <= y1 <= y2 <= H and 0 <= x1 <= x2 <= W
        j = perm[i]
        expected = x[i].clone()
        expected[:, y1:y2, x1:x2] = x[j, :, y1:y2, x1:x2]
        assert torch.equal(images[i], expected), (i, boxes[i], j)  # bitwise: pasting only copies
        area = (y2 - y1) * (x2 - x1)
        pasted += area > 0
        if name in AREA_RULE:
            lam = 1 - area / (H * W)
        else:
            a = 1 - sal[i, y1:y2, x1:x2].sum() / sal[i].sum()
            b = sal[j, y1:y2, x1:x2].sum() / sal[j].sum()
            lam = float(a / (a + b))
        want = lam * F.one_hot(y[i], K).double() + (1 - lam) * F.one_hot(y[j], K).double()
        torch.testing.assert_close(targets[i].double(), want, rtol=1e-5, atol=1e-6)
    assert pasted > 0, "choose a seed with a non-empty box"
    # The layout and dtype change nothing of what is drawn: the same as float32, contiguous.
    x, y, s = (t.to(device) for t in (x, y, s))
    ref = MIXERS[name]().mix(x.float().contiguous(), y, s.float(), generator=torch.Generator().manual_seed(11))
    assert torch.equal(ref.perm, r.perm) and torch.equal(ref.boxes, r.boxes)


# ----------------------------------------------------------------------------- --amp fp16


def _fp16_step(init_scale: float):
    cfg = Config(mix_aug="none", amp="fp16", progress=False, num_classes=5, learning_rate=0.1)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 8, 8, generator=g), None, torch.randint(0, 5, (8,), generator=g))
    net = tiny_net(5)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    train_one_epoch(cfg, Dist(), net, net, Batches([batch]), None, opt, scaler, 0)
    return net, start, scaler, batch


def test_amp_fp16_overflowing_step_is_skipped_and_the_scale_halves():
    net, start, scaler, _ = _fp16_step(2.0 ** 40)  # loss * 2^40 overflows float16 gradients
    for name, p in net.named_parameters():
        assert torch.equal(p, start[name]), name
    assert scaler.get_scale() == 2.0 ** 39


def test_amp_fp16_finite_step_applies_the_unscaled_gradients():
    net, start, scaler, (x, _, y) = _fp16_step(2.0 ** 10)
    assert scaler.get_scale() == 2.0 ** 10  # no overflow: the scale stays (growth comes later)
    ref = tiny_net(5)  # the same step by hand, in float32 and without scaling
    F.cross_entropy(ref(x), y).backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        # SGD without momentum: w1 = w0 - lr * g, so the applied gradient is (w0 - w1) / lr.
        torch.testing.assert_close((start[name] - p.detach()) / 0.1, q.grad, rtol=0.05, atol=2e-3, msg=name)


@pytest.mark.cuda
@pytest.mark.parametrize("extra", [
    ["--amp", "fp16", "--channels-last"], ["--paper", "--amp", "bf16"], ["--loader", "torch", "--amp", "fp16"],
], ids=["fp16-cl", "paper-bf16", "torchloader-fp16"])
def test_cuda_training_paths(extra, tmp_path, demo_cache, capsys):
    """The GPU suite: the device loader, mixers, autocast and GradScaler on a CUDA device."""
    rc = call(["--dataset", "demo", "--epochs", "1", "--mix_prob", "1", "--device", "cuda",
               "--saliency-cache", demo_cache, "--out-dir", tmp_path, *TINY, *extra])
    assert rc == 0, capsys.readouterr().err
    ck = read_checkpoint(tmp_path / "last.pt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert (ck["scaler"] is not None) == ("fp16" in extra)


# ----------------------------------------------------------------------------- --compile


@pytest.mark.slow
def test_compile_with_the_default_backend_trains_like_eager(tmp_path, monkeypatch, capsys):
    """About a minute on a 2-core CPU (inductor compiles the forward, backward and eval graphs).
    The model is a tiny CNN instead of resnet_tiny to keep the C++ compilation short."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from saliencymixplus.training import runner

    monkeypatch.setattr(runner, "build_model", lambda name, num_classes, image_size: tiny_net(num_classes))
    argv = ["--dataset", "demo", "--epochs", "1", "--mix_aug", "cutmix", "--mix_prob", "1", "--seed", "1",
            "--limit-train-batches", "2", "--limit-test-batches", "1", "--batch_size", "16", "--no-progress",
            "--workers", "0"]
    torch._dynamo.reset()
    counters.clear()
    try:
        assert call([*argv, "--compile", "--out-dir", tmp_path / "compiled"]) == 0, capsys.readouterr().err
        assert counters["stats"]["unique_graphs"] >= 2  # the training and the evaluation graphs
    finally:
        torch._dynamo.reset()
    assert call([*argv, "--out-dir", tmp_path / "eager"]) == 0, capsys.readouterr().err
    a, b = read_checkpoint(tmp_path / "compiled" / "last.pt"), read_checkpoint(tmp_path / "eager" / "last.pt")
    assert a["model"].keys() == b["model"].keys()  # the plain module's names, no _orig_mod. prefix
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert a["history"][0]["train_loss"] == pytest.approx(b["history"][0]["train_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- --resume


@pytest.mark.parametrize("extra", [
    ["--paper"],
    ["--mix_aug", "saliencymixplus", "--loader", "torch", "--workers", "2"],
    ["--mix_aug", "cutmix", "--amp", "fp16"],
], ids=["paper", "dataloader-workers", "amp-fp16"])
def test_resume_equals_an_uninterrupted_run(extra, tmp_path, demo_cache, monkeypatch, capsys):
    if "fp16" in extra:  # float16 convolutions are slow on a CPU: a tiny CNN instead of resnet_tiny
        from saliencymixplus.training import runner

        monkeypatch.setattr(runner, "build_model", lambda name, num_classes, image_size: tiny_net(num_classes))
    common = ["--dataset", "demo", "--saliency-cache", demo_cache, "--seed", "4", "--milestones", "1",
              *TINY, *extra]
    run = tmp_path / "resumed"
    assert call([*common, "--epochs", "1", "--out-dir", run]) == 0, capsys.readouterr().err
    assert call([*common, "--epochs", "2", "--out-dir", run, "--resume"]) == 0, capsys.readouterr().err
    assert "resumed from" in capsys.readouterr().out
    assert call([*common, "--epochs", "2", "--out-dir", tmp_path / "straight"]) == 0, capsys.readouterr().err
    a, b = read_checkpoint(run / "last.pt"), read_checkpoint(tmp_path / "straight" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), k
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    la = list(csv.DictReader(open(run / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "straight" / "log.csv")))
    assert [r["train_loss"] for r in la] == [r["train_loss"] for r in lb] and len(la) == 2
    if "--amp" in extra:
        assert a["scaler"] is not None and a["scaler"] == b["scaler"]
    if "--paper" in extra:
        assert (a["config"]["box"], a["config"]["pairing"], a["config"]["saliency"]) == ("peak", "half", "online")


# ----------------------------------------------------------------------------- cache fingerprint


def test_cache_differing_only_in_fingerprint_exits_2(tmp_path, cifar_dir, capsys):
    """The cache was built for this very folder; then one training label changed. Data set,
    split and count still match: only the fingerprint tells."""
    from saliencymixplus.precompute import build_cache

    cache = build_cache("cifar100", cifar_dir["root"], "train", "fine_grained", tmp_path / "cifar-train.h5",
                        workers=0, progress=False, log=lambda *a: None)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(cifar_dir["root"] / "cifar-100-python", relabelled / "cifar-100-python")
    train = relabelled / "cifar-100-python" / "train"
    entry = pickle.loads(train.read_bytes())
    entry["fine_labels"][0] = (entry["fine_labels"][0] + 1) % 100
    train.write_bytes(pickle.dumps(entry, protocol=2))
    rc = call(["--dataset", "cifar100", "--data-dir", relabelled, "--model", "resnet_tiny",
               "--saliency-cache", cache, "--out-dir", tmp_path / "run", *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "saliency cache mismatch" in err and "fingerprint: cache has" in err
    for other in ("dataset: cache has", "split: cache has", "count: cache has"):
        assert other not in err
    assert not (tmp_path / "run" / "last.pt").exists()
    # The original folder still trains on the same cache.
    assert call(["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--model", "resnet_tiny",
                 "--saliency-cache", cache, "--epochs", "1", "--out-dir", tmp_path / "ok", *TINY]) == 0
