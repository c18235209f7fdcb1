"""The session checks of conftest.py: kernel tests cannot skip without a word.

``package_problem`` is called with made-up extension states; one real ``pytest`` subprocess
shows that a checkout copy without ``_C`` in front of an installed package stops the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import saliencymixplus
from suite_checks import installed_extension, needs_gpu, package_problem

ROOT = Path(__file__).resolve().parent.parent
LOADED = {"loaded": True, "cpu": True, "cuda": True, "ops": ["paste"], "error": None}
CPU_ONLY = {**LOADED, "cuda": False}
MISSING = {"loaded": False, "cpu": False, "cuda": False, "ops": [], "error": "no _C"}


@pytest.mark.parametrize("info, installed, env, gpu, expected", [
    (LOADED, "/site/_C.so", {}, False, None),
    (MISSING, None, {}, False, None),  # a plain checkout, nothing required: the references serve
    (MISSING, "/site/_C.so", {}, False, "shadows the install"),
    (MISSING, None, {"SMP_REQUIRE_EXTENSION": "1"}, False, "SMP_REQUIRE_EXTENSION=1"),
    ({**LOADED, "cpu": False}, None, {"SMP_REQUIRE_EXTENSION": "1"}, False, "SMP_REQUIRE_EXTENSION=1"),
    (LOADED, None, {"SMP_REQUIRE_EXTENSION": "1"}, False, None),
    (LOADED, None, {"SMP_REQUIRE_GPU": "1"}, False, "no CUDA device"),
    (CPU_ONLY, None, {"SMP_REQUIRE_GPU": "1"}, True, "no CUDA kernels"),
    (LOADED, None, {"SMP_REQUIRE_GPU": "1"}, True, None),
])
def test_package_problem(info, installed, env, gpu, expected):
    msg = package_problem(info, installed, "/checkout/saliencymixplus", env=env, gpu=gpu)
    if expected is None:
        assert msg is None
    else:
        assert msg is not None and expected in msg


def _fake_dist(site: Path, name: str, files: dict[str, bool]) -> None:
    """``site/<name>-1.0.dist-info`` whose RECORD lists ``files``; those mapped to True exist."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    for f, exists in files.items():
        if exists:
            (site / f).parent.mkdir(parents=True, exist_ok=True)
            (site / f).write_bytes(b"")


def test_installed_extension(tmp_path, monkeypatch):
    so = "fakepkg_a/_C.cpython-311-x86_64-linux-gnu.so"
    _fake_dist(tmp_path, "fakepkg_a", {"fakepkg_a/__init__.py": True, so: True})
    _fake_dist(tmp_path, "fakepkg_b", {"fakepkg_b/__init__.py": True,
                                       "fakepkg_b/_C.cpython-311-x86_64-linux-gnu.so": False})
    _fake_dist(tmp_path, "fakepkg_c", {"fakepkg_c/__init__.py": True, "fakepkg_c/_Cython.py": True})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert installed_extension("fakepkg_a") == str(tmp_path / so)
    assert installed_extension("fakepkg_b") is None  # listed, but the file is gone
    assert installed_extension("fakepkg_c") is None  # no compiled module
    assert installed_extension("no_such_distribution_xyz") is None
    found = installed_extension()
    if found is not None:  # this very session passed the check, so its kernels loaded
        assert saliencymixplus.extension_info()["loaded"]


def _item(params=None, markers=(), skipif_reasons=()):
    marks = {"cuda": [SimpleNamespace(kwargs={})] if "cuda" in markers else [],
             "skipif": [SimpleNamespace(kwargs={"reason": r}) for r in skipif_reasons]}
    return SimpleNamespace(callspec=SimpleNamespace(params=params) if params is not None else None,
                           get_closest_marker=lambda name: (marks.get(name) or [None])[0],
                           iter_markers=lambda name: iter(marks.get(name, [])))


def test_needs_gpu():
    import torch

    assert needs_gpu(_item(markers=("cuda",)))
    assert needs_gpu(_item(params={"device": "cuda", "dtype": torch.float32}))
    assert needs_gpu(_item(params={"device": torch.device("cuda", 1)}))
    assert needs_gpu(_item(skipif_reasons=["needs a CUDA GPU"]))
    assert not needs_gpu(_item(params={"device": "cpu"}))
    assert not needs_gpu(_item(skipif_reasons=["SMP_REQUIRE_CUDA_KERNELS is not set"]))  # a build check
    assert not needs_gpu(_item())


def test_a_checkout_without_the_extension_cannot_shadow_an_installed_one(tmp_path):
    """A copy of the package without ``_C`` first on the path: the session stops (exit 4) when
    an installed copy has the kernels; an editable install's finder wins over the path, so
    there the installed package is tested and the session runs."""
    pkg = tmp_path / "saliencymixplus"
    shutil.copytree(ROOT / "saliencymixplus", pkg, ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "suite_checks.py", "fixtures_data.py", "cli_helpers.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    (tests / "test_one.py").write_text("def test_one():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMP_REQUIRE")}
    env["PYTHONPATH"] = str(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tests / "test_one.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    where = "import importlib.util as u; print(u.find_spec('saliencymixplus').origin)"
    probe = subprocess.run([sys.executable, "-c", where], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    shadowed = Path(probe.stdout.strip()).parent == pkg
    if shadowed and installed_extension() is not None:
        assert r.returncode == 4, out
        assert "shadows the install" in out and str(pkg) in out and "1 passed" not in out
    else:
        assert r.returncode == 0 and "1 passed" in out, out
