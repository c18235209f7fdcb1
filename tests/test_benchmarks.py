"""The benchmark scripts run end to end in their --quick mode (they assert nothing about speed)."""

import os
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, tmp_path, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p.stdout


@pytest.mark.parametrize("script, header", [
    ("bench_ops.py", "| device | size | mixer | implementation | median ms |"),
    ("bench_step.py", "| model | batch | variant | median s / step |"),
    ("label_noise.py", "| saliency | post-processing | mixer | samples | own rule |"),
])
def test_quick_mode_prints_its_table(script, header, tmp_path):
    out = _run([str(ROOT / "benchmarks" / script), "--quick"], tmp_path)
    assert header in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    assert len(rows) > 4, out


def test_label_noise_oracle_is_exact_and_pet_crops_agree(tmp_path):
    """The oracle rows (saliency rule on the true masks) have zero error; and on a Pet folder with
    trimaps the label errors against the transformed maps and the directly cropped masks agree."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures_data import make_pet_folder, write_pet_trimaps

    pet = make_pet_folder(tmp_path / "pet", n_train=8, n_test=2, seed=5)
    write_pet_trimaps(pet, seed=6)
    out = _run([str(ROOT / "benchmarks" / "label_noise.py"), "--quick", "--postprocess", "none", "--pet-dir",
                str(pet["data_dir"]), "--pet-rounds", "2", "--batch", "8"], tmp_path)
    demo, pet_part = out.split("Oxford-IIIT Pet folder")
    oracle = [line.split("|") for line in demo.splitlines() if line.startswith("| object masks (oracle)")]
    assert len(oracle) == 4
    for cells in oracle:
        assert float(cells[7]) == 0.0  # the saliency rule on the true masks is the true weight
    assert "8 training images with trimaps x 2 crops" in pet_part and "images of the two paths identical: yes" in pet_part
    rows = [line.split("|") for line in pet_part.splitlines() if line.startswith("| ")]
    assert [r[1].strip() for r in rows[1:]] == ["CutMix", "SaliencyMix", "SaliencyMix+ window", "SaliencyMix+ peak"]
    for r in rows[1:]:
        assert int(r[2]) == 16 and abs(float(r[3]) - float(r[4])) < 0.02 and float(r[5]) < 0.02


def test_accuracy_table_quick(tmp_path):
    out = _run([str(ROOT / "benchmarks" / "accuracy_table.py"), "--quick", "--quiet", "--jobs", "2", "--out-dir",
                str(tmp_path / "runs")], tmp_path, timeout=400)
    assert "| mixer | top-1 err, last epoch (%)" in out
    for name in ("No mixing", "CutMix", "SaliencyMix", "SaliencyMix+", "SaliencyMix+ refreshed",
                 "SaliencyMix+ on object masks", "SaliencyMix+ published (--paper)"):
        assert f"| {name} |" in out
    assert "| SaliencyMix+ - CutMix | " in out  # the paired differences (one seed: no standard error)
    assert (tmp_path / "runs" / "table.md").read_text().strip() in out
    assert (tmp_path / "runs" / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = lambda run: json.loads((tmp_path / "runs" / run / "summary.json").read_text())["config"]
    assert config("saliencymixplus_masks_s0")["saliency_method"] == "object_mask"
    assert config("saliencymixplus_s0")["saliency_method"] == "fine_grained"
    assert (config("paper_s0")["saliency"], config("paper_s0")["saliency_cache"]) == ("online", None)
    # The object-mask cache holds the generated set's masks: 255 on the object, 0 elsewhere.
    import h5py
    from saliencymixplus.rawdata import load_split

    with h5py.File(tmp_path / "runs" / "demo-train-object_mask.h5", "r") as f:
        maps = f["saliency"][:50]
    assert np.array_equal(maps, load_split("demo", None, "train").masks[:50] * 255)
    # Run again: every run is finished, so none is trained again and the table is the same.
    again = _run([str(ROOT / "benchmarks" / "accuracy_table.py"), "--quick", "--quiet", "--jobs", "2", "--out-dir",
                  str(tmp_path / "runs")], tmp_path, timeout=400)
    assert "seed 0:" not in again and again.split("| mixer")[1] == out.split("| mixer")[1]
    # Asked for another length, the table refuses the folder before any work: its finished
    # 1-epoch runs would otherwise enter a 2-epoch table.
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy_table.py"), "--out-dir",
                        str(tmp_path / "runs"), "--epochs", "2", "--seeds", "0", "--mixers", "none,cutmix"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "holds finished runs of other lengths than --epochs 2" in r.stderr, r.stderr
    assert "none_s0: 1 epochs" in r.stderr and "Traceback" not in r.stderr


def test_accuracy_table_paired_difference_by_hand():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from accuracy_table import paired, render
    finally:
        sys.path.pop(0)
    # differences -1, -2, -3: mean -2, sample sd 1, standard error 1 / sqrt(3)
    m, se = paired([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    assert m == pytest.approx(-2.0) and se == pytest.approx(1 / 3 ** 0.5)
    assert paired([5.0], [4.0]) == (1.0, None)
    runs = lambda errs: [{"last_top1_err": e, "best_top1_err": e, "last_top5_err": 0.0, "wall_time_s": 1.0} for e in errs]
    text = render("demo_hard", [("cutmix", "CutMix", runs([11.0, 22.0, 33.0])),
                                ("saliencymixplus", "SaliencyMix+", runs([10.0, 20.0, 30.0]))], [0, 1, 2], "head")
    # t = -2 / (1 / sqrt 3) = -3.46 with 2 degrees of freedom, where P(|T| > t) = 1 - t / sqrt(2 + t^2)
    # = 1 - sqrt(12 / 14) = 0.074; the sign test: 3 of 3 won, p = 2 / 2^3 = 0.25.
    assert "| SaliencyMix+ - CutMix | -1.00, -2.00, -3.00 | -2.00 ± 0.58 | -3.5 | 0.074 | 3 of 3 | 0.250 | no |" in text
    assert "| CutMix | 22.00 ± 11.00 | 22.00 ± 11.00 | 0.00 ± 0.00 | 1 |" in text
    # Every seed the same gap: the standard error is 0 and no t-test is made (it is not "beyond noise").
    same = render("demo_hard", [("cutmix", "CutMix", runs([24.4, 13.3])),
                                ("saliencymixplus", "SaliencyMix+", runs([23.4, 12.3]))], [0, 1], "head")
    assert "| SaliencyMix+ - CutMix | -1.00, -1.00 | -1.00 ± 0.00 | - | - | 2 of 2 | 0.500 | - |" in same
    assert "| mixer | seed 0 | seed 1 | seed 2 |" in text and "| SaliencyMix+ | 10.00 (1 s) | 20.00 (1 s) | 30.00 (1 s) |" in text


def test_accuracy_table_tests_by_hand():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from accuracy_table import sign_test_p, t_critical, t_test_p
    finally:
        sys.path.pop(0)
    # Student's t in closed form: 1 degree of freedom P(|T| > t) = 1 - 2 atan(t) / pi; 2 degrees
    # 1 - t / sqrt(2 + t^2); many degrees: the normal's 1.96 -> 0.05.
    for t in (0.3, 1.0, 4.0, -12.7):
        assert t_test_p(t, 1) == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi, abs=1e-6)
        assert t_test_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), abs=1e-6)
    assert t_test_p(1.959964, 100000) == pytest.approx(0.05, abs=1e-4)
    assert t_test_p(2.262157, 9) == pytest.approx(0.05, abs=1e-5)  # the table's 9 degrees of freedom
    assert t_test_p(0.0, 9) == pytest.approx(1.0) and t_test_p(math.inf, 9) == 0.0
    assert t_critical(9) == pytest.approx(2.262157, abs=1e-5) and t_critical(1) == pytest.approx(12.7062, abs=1e-3)
    # The sign test: 10 of 10 -> 2 / 2^10; 8 of 10 -> 2 (1 + 10 + 45) / 2^10; zeros are dropped.
    assert sign_test_p([-1.0] * 10) == pytest.approx(2 / 1024)
    assert sign_test_p([-1.0] * 8 + [0.5, 2.0]) == pytest.approx(112 / 1024)
    assert sign_test_p([-1.0, 0.0, 0.0]) == 1.0 and sign_test_p([0.0]) == 1.0
    assert sign_test_p([1.0] * 5 + [-1.0] * 5) == 1.0


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar100"], "argument --dataset: invalid choice: 'cifar100'"),
    (["--seeds", "0,x"], "argument --seeds: expected comma-separated integers like 0,1,2,3,4, got '0,x'"),
    (["--seeds", "1,1"], "argument --seeds: expected distinct seeds >= 0, got '1,1'"),
    (["--mixers", "cutmix,mixup"], "argument --mixers: expected a comma-separated subset of none,cutmix,"),
    (["--jobs", "0"], "argument --jobs: expected a positive integer, got 0"),
    (["--postprocess", "top=2"], "--postprocess: "),
])
def test_accuracy_table_usage_errors(args, message, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy_table.py"), "--out-dir",
                        str(tmp_path / "r"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


def test_refresh_benchmark_quick(tmp_path):
    out = _run([str(ROOT / "benchmarks" / "refresh.py"), "--quick", "--out-dir", str(tmp_path / "runs")],
               tmp_path, timeout=300)
    assert "| mode | epoch time, median (s) |" in out and "| refresh raw |" in out
    assert "| OpenCV fine-grained, sharpened (the cache) |" in out
    assert out.count("| 1 | ") == 1  # the per-epoch row of the only epoch


def test_visualize_mix_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    text = _run([str(ROOT / "tools" / "visualize_mix.py"), "--rows", "3", "--out", str(out)], tmp_path)
    assert "wrote" in text and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
