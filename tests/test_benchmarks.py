"""The benchmark scripts run end to end in their --quick mode (they assert nothing about speed)."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_label_noise_oracle_is_exact(tmp_path):
    out = _run([str(ROOT / "benchmarks" / "label_noise.py"), "--quick", "--postprocess", "none"], tmp_path)
    oracle = [line.split("|") for line in out.splitlines() if line.startswith("| object masks (oracle)")]
    assert len(oracle) == 4
    for cells in oracle:
        assert float(cells[7]) == 0.0  # the saliency rule on the true masks is the true weight


def test_accuracy_table_quick(tmp_path):
    out = _run([str(ROOT / "benchmarks" / "accuracy_table.py"), "--quick", "--quiet", "--out-dir",
                str(tmp_path / "runs")], tmp_path, timeout=180)
    assert "| mixer | top-1 err, last epoch (%)" in out
    for name in ("No mixing", "CutMix", "SaliencyMix", "SaliencyMix+"):
        assert f"| {name} |" in out


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
