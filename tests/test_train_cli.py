"""train.py answers every user error with an exit status and a message, never a traceback: the
flags and values it refuses (one table), outputs it cannot write (checked before any work),
undecodable images (all named at once), a diverging run (stopped, the last good checkpoint
kept), bad ``--resume`` files and flags; and the smaller promises of its command line (help
text, one-epoch curves, the largest seed)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from fixtures_data import tiny_net
from saliencymixplus.datasets import SPECS
from saliencymixplus.checkpoint_file import CheckpointFileError, read_checkpoint
from saliencymixplus.training import Config, UsageError, build_parser, main, runner

from cli_helpers import exit_code, no_traceback

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--limit-train-batches", "3", "--limit-test-batches", "1", "--batch_size", "16", "--no-progress",
        "--workers", "0", "--model", "resnet_tiny"]


def call(argv) -> int:
    return exit_code(main, argv)


def _cifar(cifar_dir, tmp_path, *extra):
    return ["--dataset", "cifar100", "--data-dir", cifar_dir["root"], "--saliency-cache", tmp_path / "cache.h5",
            "--out-dir", tmp_path / "run", *TINY, *extra]


# ----------------------------------------------------------------------------- refused flags

REFUSED = [
    # values the parser refuses
    (["--mix_aug", "mixup"], "invalid choice 'mixup'"),
    (["--dataset", "imagenet21k"], "invalid choice: 'imagenet21k'"),
    (["--epochs", "0"], "must be a positive integer"),
    (["--epochs", "1.5"], "argument --epochs: expected an integer, got '1.5'"),
    (["--mix_prob", "1.5"], "must be in [0, 1]"),
    (["--learning_rate", "fast"], "--learning_rate"),
    (["--lr", "nan"], "must be a finite number, got nan"),
    (["--alpha", "inf"], "must be a finite number, got inf"),
    (["--weight-decay", "-1"], "argument --weight-decay/--weight_decay: must be >= 0, got -1"),
    (["--label-smoothing", "1"], "must be in [0, 1) (1 would leave no label), got 1"),
    (["--seed", "99999999999999999999"], "argument --seed: must be an integer in [0, 2**63 - 1]"),
    (["--seed", "-3"], "must be an integer in [0, 2**63 - 1], got -3"),
    (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
    (["--milestones", "5,x"], "expected comma-separated epochs like 75,150,225, got '5,x'"),
    (["--milestones", "0,5"], "argument --milestones: must be positive epochs, got 0,5"),
    (["--refresh-postprocess", "sharp"], "--refresh-postprocess"),
    (["--refresh-postprocess", "gamma=2"], "keys must be"),
    (["--std", "0.2", "0", "0.2"], "--std: must be > 0, got 0"),
    (["--mean", "0.5", "0.5"], "--mean: expected 3 argument"),
    (["--mean", "0.5", "nan", "0.5"], "--mean: must be a finite number"),
    (["--train-size", "0"], "argument --train-size/--train_size: must be a positive integer, got 0"),
    (["--train-size", "half"], "argument --train-size/--train_size: expected an integer, got 'half'"),
    # combinations, missing data and checkpoints
    (["--dataset", "oxford_pet", "--loader", "device"], "--loader device needs an in-memory data set"),
    (["--saliency", "refresh", "--mix_aug", "cutmix"], "--saliency refresh needs a saliency mixer"),
    (["--dataset", "cifar100", "--data-dir", "/nonexistent/cifar"], "CIFAR-100 not found"),
    (["--dataset", "oxford_pet", "--data-dir", "/nonexistent/pet"], "Oxford-IIIT Pet not found"),
    (["--resume", "/nonexistent/last.pt"], "no such checkpoint"),
]


@pytest.mark.parametrize("argv, message", REFUSED)
def test_refused_flags_exit_2_before_any_work(argv, message, tmp_path, capsys):
    assert call(argv + ["--out-dir", tmp_path / "run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mean, std", [(0.5, (0.2, 0.2, 0.2)), ((0.5, 0.5), (0.2, 0.2, 0.2)),
                                       ((0.5, float("nan"), 0.5), (0.2, 0.2, 0.2)), ((0.5, 0.5, 0.5), (0.2, 0, 0.2)),
                                       ((0.5, 0.5, 0.5), ("a", 1, 1))])
def test_config_made_in_code_refuses_a_bad_normalisation(mean, std):
    """The parser's checks do not cover a Config made in code: its mean and std are refused too."""
    with pytest.raises(UsageError, match=r"--mean/--std: mean and std must be 3 finite numbers each"):
        Config(dataset="demo", mean=mean, std=std)
    assert Config(dataset="demo", mean=[0, 0.5, 1], std=[1, 1, 2]).mean == (0.0, 0.5, 1.0)


def test_read_checkpoint_checks_what_it_is_asked_for(tmp_path):
    p = tmp_path / "m.pt"
    torch.save({"model": {}}, p)
    assert read_checkpoint(p, need=("model",)) == {"model": {}}
    with pytest.raises(CheckpointFileError, match=r"lacks \['config'\]"):
        read_checkpoint(p)
    torch.save({"model": {}, "config": [1]}, p)
    with pytest.raises(CheckpointFileError, match="its 'config' is not a dict"):
        read_checkpoint(p)


def test_sets_on_the_device_loader_have_a_recipe_it_can_batch():
    """The device loader flips whole batches and nothing more; Config refuses --loader device for
    the other sets, so it is their spec that must not give it a crop or resize."""
    assert all(s.recipe.batchable for s in SPECS.values() if s.train.loader == "device")


def test_largest_seed_runs_through_every_stream(tmp_path, demo_cache, capsys):
    """--seed 2**63 - 1 is taken by every random stream of a run (torch, NumPy, Python, the
    loader's, the mixer's and its coin's, per epoch): the run trains, twice alike, and its
    neighbour seed trains otherwise."""
    top = 2 ** 63 - 1
    args = ["--dataset", "demo", "--saliency-cache", demo_cache, "--epochs", "2", "--mix_prob", "0.5", *TINY]
    for name, seed in (("a", top), ("b", top), ("c", top - 1)):
        assert call([*args, "--seed", seed, "--out-dir", tmp_path / name]) == 0, capsys.readouterr().err
    a, b, c = (read_checkpoint(tmp_path / name / "last.pt") for name in "abc")
    assert a["config"]["seed"] == top
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert not all(torch.equal(v, c["model"][k]) for k, v in a["model"].items())


def test_help_shows_no_default_for_switches():
    text = build_parser().format_help()
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "--no-progress         no progress bar (one line per epoch only)\n" in text
    assert "(default: 0)" in text  # --seed's default is shown (0 is not "no default")


# ----------------------------------------------------------------------------- outputs

def test_train_outputs_checked_before_any_work(cifar_dir, tmp_path, capsys, monkeypatch, read_only):
    def no_work(*a, **kw):
        raise AssertionError("data work started before the outputs were checked")

    monkeypatch.setattr(runner, "prepare_data", no_work)
    (tmp_path / "afile").write_text("x")
    args = _cifar(cifar_dir, tmp_path)
    args[args.index("--out-dir") + 1] = tmp_path / "afile" / "run"
    assert call(args) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"cannot create --out-dir {tmp_path / 'afile' / 'run'}: Not a directory" in err

    ro = tmp_path / "ro_run"
    ro.mkdir()
    read_only(ro)
    args[args.index("--out-dir") + 1] = ro
    assert call(args) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"cannot write in --out-dir {ro}: Read-only file system" in err


def test_train_default_cache_folder_on_a_read_only_mount(cifar_dir, tmp_path, capsys, read_only):
    """No --saliency-cache: the default is <data-dir>/cifar100-train-fine_grained.h5, and the data
    folder is read-only."""
    data = tmp_path / "data"
    shutil.copytree(cifar_dir["root"], data)
    read_only(data)
    rc = call(["--dataset", "cifar100", "--data-dir", data, "--out-dir", tmp_path / "run", *TINY])
    err = capsys.readouterr().err
    assert rc == 2, err
    no_traceback(err)
    cache = data / "cifar100-train-fine_grained.h5"
    assert f"cannot write in the folder of --saliency-cache {data}: Read-only file system" in err
    assert f"the saliency cache {cache} is missing and cannot be built there" in err
    assert f"saliencymixplus-precompute --dataset cifar100 --data-dir {data} --split train" in err
    assert not cache.exists() and not (tmp_path / "run" / "last.pt").exists()


def test_saliency_cache_naming_a_folder(cifar_dir, tmp_path, capsys):
    args = _cifar(cifar_dir, tmp_path)
    (tmp_path / "cache.h5").mkdir()
    assert call(args) == 2
    no_traceback(err := capsys.readouterr().err)
    assert f"--saliency-cache {tmp_path / 'cache.h5'} is a folder" in err


# ----------------------------------------------------------------------------- bad images

def test_train_names_every_bad_image_of_both_splits(odd_pet, tmp_path, capsys):
    data_dir, bad_train, bad_test, _ = odd_pet
    rc = call(["--dataset", "oxford_pet", "--data-dir", data_dir, "--saliency-cache", tmp_path / "pet.h5",
               "--out-dir", tmp_path / "run", "--epochs", "1", "--batch_size", "2", "--no-progress", "--workers",
               "0", "--model", "resnet_tiny"])
    err = capsys.readouterr().err
    assert rc == 2, err
    no_traceback(err, lines=None)
    assert "train.py: error: 5 images of oxford_pet cannot be decoded:" in err
    for path in bad_train + bad_test:
        assert f"  {path}: " in err, (path, err)
    assert err.strip().splitlines()[-1].startswith("Replace each with an intact copy")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_image_failing_in_a_loader_worker_is_one_line(tmp_path, capsys):
    """A test image whose ends look whole but whose data is garbage passes the quick scan; it
    fails in a DataLoader worker process, and the user still gets its name in one line."""
    import numpy as np

    from fixtures_data import make_pet_folder

    pet = make_pet_folder(tmp_path / "pet", n_train=4, n_test=2, seed=4)
    bad = pet["root"] / "images" / f"{pet['test'][0][1]}.jpg"
    bad.write_bytes(b"\xff\xd8" + np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
                    + b"\xff\xd9")
    rc = call(["--dataset", "oxford_pet", "--data-dir", pet["data_dir"], "--mix_aug", "cutmix", "--out-dir",
               tmp_path / "run", "--epochs", "1", "--batch_size", "2", "--no-progress", "--workers", "1",
               "--model", "resnet_tiny", "--limit-train-batches", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    no_traceback(err)
    assert f"train.py: error: cannot decode image {bad}: not an image file OpenCV or PIL can decode" in err


# ----------------------------------------------------------------------------- a diverging run

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
    rc = call([*_cifar(cifar_dir, tmp_path, "--epochs", "3", "--mix_aug", "none")])
    err = capsys.readouterr().err
    assert rc == 1, err
    no_traceback(err)
    assert "the training loss is nan in epoch 2" in err and "the run diverged" in err
    assert f"{tmp_path / 'run'}/last.pt holds epoch 1, the last good one" in err
    run = tmp_path / "run"
    last, best = read_checkpoint(run / "last.pt"), read_checkpoint(run / "best.pt")
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
    assert call(args) == 1
    err = capsys.readouterr().err
    assert "the training loss is nan in epoch 1 (seen by step 10)" in err and "no checkpoint was written" in err
    assert made[0].calls == 10
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_learning_rate_1e6_exits_non_zero(cifar_dir, tmp_path, capsys):
    rc = call(_cifar(cifar_dir, tmp_path, "--epochs", "2", "--lr", "1e6"))
    err = capsys.readouterr().err
    assert rc == 1, err
    no_traceback(err)
    assert "the run diverged" in err and "Lower --learning_rate (now 1e+06)" in err
    for name in ("last.pt", "best.pt"):  # whatever was kept has finite weights
        if (tmp_path / "run" / name).exists():
            ck = read_checkpoint(tmp_path / "run" / name)
            assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- --resume

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cifar_dir):
    """A 2-epoch run on the tiny CIFAR folder: ``(argv, run dir)``."""
    tmp = tmp_path_factory.mktemp("finished")
    argv = _cifar(cifar_dir, tmp, "--epochs", "2")
    assert call(argv) == 0
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
        torch.save({"model": read_checkpoint(run / "last.pt")["model"]}, path)
        why = "is not a train.py checkpoint (lacks ['optimizer', 'scheduler', 'epoch', 'rng', 'config']"
    else:
        path.mkdir()
        why = "is a folder; give the checkpoint file"
    out = tmp_path / "resumed"
    args = list(argv)
    args[args.index("--out-dir") + 1] = out
    rc = call([*args, "--resume", path])
    err = capsys.readouterr().err
    assert rc == 2, err
    no_traceback(err)
    assert f"--resume {path}" in err and why in err, err
    assert not (ROOT / "PWNED").exists() and not Path("PWNED").exists()
    assert not (out / "last.pt").exists()


@pytest.mark.parametrize("flags, diff", [
    (["--mix_aug", "cutmix"], "mix_aug: checkpoint 'saliencymixplus', now 'cutmix'"),
    (["--seed", "5"], "seed: checkpoint 0, now 5"),
    (["--lr", "0.2"], "learning_rate: checkpoint 0.1, now 0.2"),
])
def test_resume_with_other_settings_is_refused(flags, diff, finished_run, capsys):
    argv, run = finished_run
    before = (run / "last.pt").read_bytes()
    rc = call([*argv, "--epochs", "3", "--resume", *flags])
    err = capsys.readouterr().err
    assert rc == 2, err
    no_traceback(err)
    assert "this command differs from the run it would continue" in err and diff in err
    assert (run / "last.pt").read_bytes() == before


def test_resume_with_no_more_epochs_writes_nothing(finished_run, capsys):
    argv, run = finished_run
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    rc = call([*argv, "--epochs", "1", "--resume"])
    err = capsys.readouterr().err
    assert rc == 2
    no_traceback(err)
    assert "has already done 2 epochs, more than --epochs 1: pass --epochs 3 or more" in err
    rc = call([*argv, "--resume"])  # the same --epochs 2: nothing left to do
    out = capsys.readouterr().out
    assert rc == 0
    assert "nothing to train" in out and "nothing was trained or written" in out and "outputs in" not in out
    assert "| cifar100 | resnet_tiny" in out
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files


# ----------------------------------------------------------------------------- smaller

def test_one_epoch_curves_are_drawn(tmp_path, monkeypatch):
    """A line through one point draws nothing: every curve must carry markers."""
    import matplotlib.pyplot as plt

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    row = {"epoch": 1, "train_loss": 2.0, "train_top1_err": 80.0, "test_top1_err": 70.0, "test_top5_err": 30.0}
    runner.plot_curves(tmp_path / "c.png", [row], "one epoch")
    assert (tmp_path / "c.png").stat().st_size > 1000 and len(figs) == 1
    lines = [ln for ax in figs[0].axes for ln in ax.get_lines()]
    assert len(lines) == 4  # train loss; train top-1, test top-1, test top-5
    for ln in lines:
        assert len(ln.get_xdata()) == 1 and ln.get_marker() not in (None, "", "None", " ") and ln.get_markersize() >= 3
