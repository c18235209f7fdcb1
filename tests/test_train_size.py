"""``train.py --train-size N`` trains on the first N images of the training split, and only on
them (both loaders); a bad N is one line and exit 2 before anything is made; N is part of the
run's identity (config.json, ``--resume`` with another N refused). And benchmarks/curves.py draws
hand-made logs and prints their figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import exit_code, no_traceback, subprocess_env
from saliencymixplus.datasets import get_spec
from saliencymixplus.training import main
from saliencymixplus.training.config import Config
from saliencymixplus.training.distributed import Dist
from saliencymixplus.training.loaders import build_loaders

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "demo", "--mix_aug", "none", "--batch_size", "16", "--limit-test-batches", "1",
        "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def demo_train():
    return get_spec("demo").load(None, "train")


def _source_rows(batch: torch.Tensor, raw_images: np.ndarray) -> list[int]:
    """The split row each image of ``batch`` (float[B, 3, H, W], normalised, perhaps flipped) is
    an exact copy of, found by comparing it with every image of the split."""
    mean, std = get_spec("demo").mean_std
    x = batch * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    x = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
    flat = raw_images.reshape(len(raw_images), -1)
    flipped = raw_images[:, :, ::-1].reshape(len(raw_images), -1)
    rows = []
    for img in x:
        hit = np.flatnonzero((flat == img.reshape(-1)).all(1) | (flipped == img.reshape(-1)).all(1))
        assert len(hit) == 1, f"{len(hit)} rows of the split match a yielded image"
        rows.append(int(hit[0]))
    return rows


def test_device_loader_draws_exactly_the_first_n_images(demo_train):
    n = 48
    assert len(demo_train) > 4 * n
    cfg = Config(dataset="demo", mix_aug="none", batch_size=16, train_size=n, device="cpu")
    train, _ = build_loaders(cfg, Dist())
    assert len(train) == 3  # 48 images / 16
    for epoch in (0, 1):
        train.set_epoch(cfg.seed, epoch)
        seen = [r for x, _, _ in train for r in _source_rows(x, demo_train.images)]
        assert sorted(seen) == list(range(n))  # each of the first 48 once, no other
    assert len(train.images) == len(demo_train)  # the whole split held: rows are the cache's


def test_torch_loader_draws_exactly_the_first_n_images(demo_train):
    n = 40
    cfg = Config(dataset="demo", mix_aug="none", batch_size=8, train_size=n, device="cpu", loader="torch",
                 workers=0)
    train, _ = build_loaders(cfg, Dist())
    assert len(train) == 5
    seen = [r for x, _, _ in train for r in _source_rows(x, demo_train.images)]
    assert sorted(seen) == list(range(n))
    assert len(train.dataset) == len(demo_train)  # the whole split's data set, for --saliency refresh


def test_a_train_size_over_the_split_exits_2_in_one_line(tmp_path, capsys, demo_train):
    """Checked once the split is loaded (the parser's refusals are in test_train_cli.REFUSED)."""
    n = len(demo_train)
    out = tmp_path / "run"
    assert exit_code(main, [*TINY, "--train-size", n + 1, "--out-dir", out]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert f"--train-size must be at most the demo training split's {n} images, got {n + 1}" in err
    assert not out.exists()


def test_train_size_is_recorded_and_resume_with_another_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert exit_code(main, [*TINY, "--train-size", 32, "--epochs", 1, "--out-dir", out]) == 0
    assert json.loads((out / "config.json").read_text())["train_size"] == 32
    assert json.loads((out / "summary.json").read_text())["config"]["train_size"] == 32
    capsys.readouterr()
    assert exit_code(main, [*TINY, "--train-size", 64, "--epochs", 2, "--out-dir", out, "--resume"]) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "train_size: checkpoint 32, now 64" in err


# ----------------------------------------------------------------------------- benchmarks/curves.py

LOG_HEADER = "epoch,lr,train_loss,train_top1_err,train_top5_err,test_top1_err,test_top5_err,images_per_s,time_s\n"


def _log(folder: Path, rows: list[tuple[float, float]]) -> Path:
    """A run folder whose log.csv has one row per ``(train_top1_err, test_top1_err)``."""
    folder.mkdir()
    lines = [f"{e},0.05,1.0,{tr},0,{te},0,100,1.0\n" for e, (tr, te) in enumerate(rows, start=1)]
    (folder / "log.csv").write_text(LOG_HEADER + "".join(lines))
    return folder


def test_curves_draws_a_png_and_prints_each_runs_figures(tmp_path):
    a = _log(tmp_path / "none_s0", [(90.0, 80.0), (40.0, 45.5), (0.5, 47.0)])
    b = _log(tmp_path / "cutmix_s0", [(92.0, 85.0), (60.0, 50.0), (30.0, 41.25)])
    (b / "config.json").write_text(json.dumps({"mix_aug": "cutmix", "seed": 0, "train_size": 3000, "epochs": 3}))
    png = tmp_path / "pics" / "curves.png"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curves.py"), str(a), str(b), "--out", str(png)],
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*tmp*"))  # the atomic write left no temporary file
    rows = [line for line in p.stdout.splitlines() if line.startswith(f"| {tmp_path}")]
    # final train, final test, best test (epoch), read off the rows above by hand
    assert rows == [f"| {a} | 3 | 0.50 | 47.00 | 45.50 (2) |", f"| {b} | 3 | 30.00 | 41.25 | 41.25 (3) |"]


def test_curves_refuses_a_folder_without_log_in_one_line(tmp_path):
    a = _log(tmp_path / "a", [(90.0, 80.0)])
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curves.py"), str(a), str(tmp_path),
                        "--out", str(tmp_path / "c.png")], env=subprocess_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2
    assert f"{tmp_path}: no log.csv" in no_traceback(p.stderr, lines=None).splitlines()[-1]
    assert not (tmp_path / "c.png").exists()
