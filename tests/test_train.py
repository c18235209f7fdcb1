"""End-to-end tests of train.py / saliencymixplus.training and tools/run_table.py.

Everything runs on the CPU with tiny settings (a few steps per epoch): most runs call
``training.main`` in this process; the demo command, Ctrl-C and DDP (torchrun, gloo) run as
real subprocesses.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saliencymixplus import training
from saliencymixplus.checkpoint_file import read_checkpoint
from saliencymixplus.training import evaluate_checkpoint, main, parse_config

from cli_helpers import exit_code, subprocess_env as _env

pytestmark = pytest.mark.usefixtures("one_thread")


def call(argv) -> int:
    return exit_code(main, argv)


ROOT = Path(__file__).resolve().parent.parent
TINY = ["--limit-train-batches", "3", "--limit-test-batches", "1", "--batch_size", "16",
        "--no-progress", "--workers", "0"]


def _same_weights(a, b) -> bool:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ----------------------------------------------------------------------------- command line

PUBLISHED_CIFAR = ("--dataset cifar100 --model resnet50 --epochs 200 --batch_size 128 "
                   "--mix_prob=0.5 --learning_rate 0.1 --mix_aug saliencymixplus").split()
PUBLISHED_PET = ("--dataset oxford_pet --model resnet50 --epochs 300 --batch_size 64 "
                 "--learning_rate 0.1 --mix_prob=0.5 --mix_aug saliencymixplus").split()


def test_published_commands_are_accepted_with_the_published_recipe():
    c = parse_config(PUBLISHED_CIFAR + ["--seed", "0"])
    assert (c.dataset, c.model, c.epochs, c.batch_size, c.learning_rate, c.mix_prob, c.mix_aug) == \
        ("cifar100", "resnet50", 200, 128, 0.1, 0.5, "saliencymixplus")
    assert (c.momentum, c.nesterov, c.weight_decay, c.milestones, c.gamma) == (0.9, True, 5e-4, (75, 150, 225), 0.1)
    assert (c.image_size, c.num_classes, c.loader, c.data_dir) == (32, 100, "device", "data")
    assert c.saliency_cache == os.path.join("data", "cifar100-train-fine_grained.h5")
    p = parse_config(PUBLISHED_PET)
    assert (p.dataset, p.epochs, p.batch_size, p.image_size, p.num_classes, p.loader, p.data_dir) == \
        ("oxford_pet", 300, 64, 224, 37, "torch", "dataset")
    dashed = parse_config("--dataset cifar100 --model resnet50 --epochs 200 --batch-size 128 "
                          "--mix-prob 0.5 --learning-rate 0.1 --mix-aug saliencymixplus".split())
    assert dashed == parse_config(PUBLISHED_CIFAR)
    assert parse_config(["--mix_aug", "saliencymix_plus"]).mix_aug == "saliencymixplus"


def test_paper_flag_and_defaults():
    c = parse_config(["--dataset", "demo"])
    assert (c.model, c.box, c.pairing, c.saliency, c.mix_prob) == ("resnet_tiny", "window", "full", "cache", 0.5)
    assert c.saliency_cache == os.path.join("data", "demo-train-fine_grained.h5")
    p = parse_config(["--paper"])
    assert (p.box, p.pairing, p.saliency) == ("peak", "half", "online")
    assert parse_config(["--paper", "--box", "window"]).box == "window"  # explicit flags win
    assert parse_config(["--mix_aug", "cutmix"]).saliency_cache is None


def test_mismatched_cache_exits_2(tmp_path, cifar_dir, demo_cache, capsys):
    rc = call(["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--model", "resnet_tiny",
               "--saliency-cache", demo_cache, "--out-dir", tmp_path, *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "saliency cache mismatch" in err and "does not match" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- runs

def test_demo_command_end_to_end(tmp_path):
    """The README's main command, as a user runs it (defaults: cache built on demand, runs/).
    Its speed is measured in benchmarks/, not here (the timeout only catches a hang)."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "demo", "--epochs", "1"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| demo | resnet_tiny | saliencymixplus" in r.stdout  # the result table
    assert (tmp_path / "data" / "demo-train-fine_grained.h5").is_file()  # built on demand
    out = tmp_path / "runs" / "demo_resnet_tiny_saliencymixplus0.5_s0"
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert list(rows[0]) == list(training.CSV_FIELDS) and len(rows) == 1
    s = json.loads((out / "summary.json").read_text())
    for key in ("best_top1_err", "best_top5_err", "best_epoch", "last_top1_err", "last_top5_err",
                "wall_time_s", "config"):
        assert s[key] is not None, key
    assert s["status"] == "finished" and s["config"]["dataset"] == "demo"
    assert (out / "curves.png").stat().st_size > 1000
    ck = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config"} <= set(ck)
    assert ck["epoch"] == 1 and ck["config"]["num_classes"] == 10 and ck["config"]["image_size"] == 32
    assert (out / "best.pt").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("extra", [
    ["--mix_aug", "none"], ["--mix_aug", "cutmix"], ["--mix_aug", "saliencymix"],
    ["--mix_aug", "saliencymixplus"],
    ["--mix_aug", "saliencymixplus", "--box", "peak", "--lam-mode", "sample", "--label-smoothing", "0.1"],
    ["--paper"],
    ["--mix_aug", "saliencymixplus", "--loader", "torch", "--amp", "bf16", "--channels-last"],
], ids=["none", "cutmix", "saliencymix", "saliencymixplus", "peak-sample-ls", "paper", "torchloader-amp"])
def test_every_mix_aug_trains(extra, tmp_path, demo_cache, capsys):
    rc = call(["--dataset", "demo", "--epochs", "1", "--mix_prob", "1", "--saliency-cache", demo_cache,
               "--out-dir", tmp_path, *TINY, *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    s = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= s["last_top1_err"] <= 100 and s["epochs_done"] == 1
    row = next(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(row["train_loss"]) > 0 and float(row["images_per_s"]) > 0
    if "--paper" in extra:
        assert (s["config"]["box"], s["config"]["pairing"], s["config"]["saliency"]) == ("peak", "half", "online")


def test_online_saliency_leaves_model_untouched():
    from saliencymixplus.models import build_model
    from saliencymixplus.saliency import gradient_saliency

    torch.manual_seed(0)
    net = build_model("resnet_tiny", 10, 32).train()
    bn = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    s = gradient_saliency(net, x, y)
    assert s.shape == (4, 32, 32) and s.dtype == torch.float32 and (s >= 0).all()
    assert all(p.grad is None for p in net.parameters()) and net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in bn.items())


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_cifar_folder_with_cache_built_on_demand(loader, tmp_path, cifar_dir, capsys):
    cache = tmp_path / "cifar-train.h5"
    rc = call(["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--model", "resnet_tiny",
               "--saliency-cache", cache, "--loader", loader, "--epochs", "2", "--out-dir", tmp_path / "run",
               *TINY])
    assert rc == 0, capsys.readouterr().err
    from saliencymixplus.cache import SaliencyCache
    from saliencymixplus.data import load_split

    assert len(SaliencyCache(cache, expect=load_split("cifar100", cifar_dir["root"], "train"))) == 48
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_oxford_pet_folder_224px_with_cache(tmp_path, pet_dir, capsys):
    rc = call(["--dataset", "oxford_pet", "--data-dir", pet_dir["data_dir"], "--model", "resnet_tiny",
               "--saliency-cache", tmp_path / "pet.h5", "--epochs", "1", "--batch_size", "4",
               "--limit-test-batches", "1", "--no-progress", "--workers", "0", "--out-dir", tmp_path / "run"])
    assert rc == 0, capsys.readouterr().err
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["config"]["image_size"] == 224 and ck["config"]["num_classes"] == 37


def test_device_loader_flips_image_and_saliency_together():
    import numpy as np

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    sal = imgs[..., 0].copy()  # saliency = red channel, so alignment is checkable
    mean_std = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for pad in (0, 2):
        dl = training.DeviceLoader(imgs, np.arange(64), mean_std, torch.device("cpu"), batch_size=16,
                                   train=True, saliency=sal, pad=pad)
        dl.set_epoch(0, 0)
        seen = []
        for x, s, y in dl:
            assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and s.shape == (16, 8, 8)
            assert torch.allclose(x[:, 0], s)  # same flip (and crop) for both (both pixel / 255)
            seen.append(y)
        assert sorted(torch.cat(seen).tolist()) == list(range(64))  # a permutation of the set


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, demo_cache):
    """A real Ctrl-C (SIGINT) mid-run, then --resume: the same final weights as one run."""
    common = ["--dataset", "demo", "--saliency-cache", demo_cache, "--seed", "3",
              "--limit-train-batches", "6", "--limit-test-batches", "1", "--batch_size", "16",
              "--no-progress", "--workers", "0", "--milestones", "1"]
    run_dir = tmp_path / "interrupted"
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps
    # an ignored SIGINT ignored: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *common, "--epochs", "100",
                             "--out-dir", str(run_dir)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    done = read_checkpoint(run_dir / "last.pt")["epoch"]
    assert 1 <= done < 100
    total = done + 1
    assert call([*common, "--epochs", total, "--out-dir", run_dir, "--resume"]) == 0
    assert call([*common, "--epochs", total, "--out-dir", tmp_path / "straight"]) == 0
    assert _same_weights(run_dir / "last.pt", tmp_path / "straight" / "last.pt")
    a = list(csv.DictReader(open(run_dir / "log.csv")))
    b = list(csv.DictReader(open(tmp_path / "straight" / "log.csv")))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b] and len(a) == total


def test_ddp_two_gloo_processes_evaluate_exactly_like_one_process(tmp_path, demo_cache):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--dataset", "demo", "--epochs", "1", "--batch_size", "32",
           "--limit-train-batches", "4", "--saliency-cache", demo_cache, "--workers", "0",
           "--no-progress", "--out-dir", str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert r.stdout.count("| demo | resnet_tiny") == 1  # one result table: rank 0 only
    assert "on 2 x cpu" in r.stdout
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1
    s = json.loads((out / "summary.json").read_text())
    # The sharded, all-reduced test errors are exactly a one-process evaluation of the saved
    # weights (rank 0's; every rank evaluates with rank 0's BatchNorm statistics).
    single = evaluate_checkpoint(out / "last.pt")
    assert single["test_top1_err"] == s["last_top1_err"]
    assert single["test_top5_err"] == s["last_top5_err"]
    assert single["test_loss"] == pytest.approx(read_checkpoint(out / "last.pt")["history"][0]["test_loss"], rel=1e-6)


def test_run_table_writes_markdown_beside_published(tmp_path, demo_cache, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import run_table

    assert run_table.PUBLISHED[("cifar100", "resnet50")]["saliencymixplus"] == (24.95, 7.00)
    out = tmp_path / "table.md"
    rc = run_table.main(["--dataset", "demo", "--epochs", "1", "--runs", str(tmp_path / "runs"),
                         "--out", str(out), "--", "--saliency-cache", demo_cache, *TINY])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    for name in ("Baseline", "CutMix", "SaliencyMix", "SaliencyMix+"):
        assert f"| {name} |" in text
    assert "published top-1" in text
    # A second call reuses the finished rows instead of training again.
    capsys.readouterr()
    assert run_table.main(["--dataset", "demo", "--epochs", "1", "--runs", str(tmp_path / "runs"),
                           "--out", str(out), "--", "--saliency-cache", demo_cache, *TINY]) == 0
    assert capsys.readouterr().out.count("reusing") == 4
    md = run_table.markdown_table("cifar100", "resnet50", 200, {"saliencymixplus": None})
    assert "| SaliencyMix+ | - | - | - | - | 24.95 | 7.00 |" in md
