"""Shared fixtures, and the checks that the tests run the package (and kernels) they should.

Which ``saliencymixplus`` is tested: an installed one when there is one (editable, as CI
installs it, or a regular ``pip install .``), else the checkout, which is then put on
``sys.path``. Putting the checkout first unconditionally made a regular install's tests import
the checkout, which has no compiled ``_C``: every kernel test skipped without a word.

The session stops before any test, with a message that says why, when

* ``SMP_REQUIRE_EXTENSION=1`` (CI) and the compiled ops did not load;
* an installed ``saliencymixplus`` ships a compiled ``_C`` but the package under test has
  none loaded (the checkout shadows the install, e.g. ``python -m pytest`` puts the current
  folder first);
* ``SMP_REQUIRE_GPU=1`` (the GPU suite) and there is no GPU or no CUDA kernels.

Tests that need a GPU carry the ``cuda`` marker (``pytest -m cuda`` runs just them); tests
whose id or skip reason names CUDA/GPU get it automatically, so the GPU suite finds them.
"""

import errno
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

sys.path.insert(0, str(TESTS))  # tests/fixtures_data.py, tests/brute_force.py
if importlib.util.find_spec("saliencymixplus") is None:
    sys.path.insert(0, str(ROOT))  # not installed: the checkout itself

import torch  # noqa: E402

import saliencymixplus  # noqa: E402
from cli_helpers import gradient_image  # noqa: E402
from fixtures_data import install_fake_models, make_cifar100_folder, make_pet_folder  # noqa: E402
from suite_checks import installed_extension, needs_gpu, package_problem  # noqa: E402


def pytest_report_header(config):
    info = saliencymixplus.extension_info()
    kernels = ", ".join(k for k in ("cpu", "cuda") if info[k]) or f"none ({info['error']})"
    return (f"saliencymixplus: {Path(saliencymixplus.__file__).parent}; compiled kernels: {kernels}; "
            f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")


def pytest_sessionstart(session):
    problem = package_problem(saliencymixplus.extension_info(), installed_extension(),
                              Path(saliencymixplus.__file__).parent)
    if problem:
        pytest.exit(problem, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(tryfirst=True)  # before `-m cuda` selects by marker
def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (the cuda marker; run by the GPU suite)")
    for item in items:
        if needs_gpu(item):
            if item.get_closest_marker("cuda") is None:
                item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(no_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 threads far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A tiny real-format ``cifar-100-python`` folder (48 train, 24 test); see fixtures_data."""
    return make_cifar100_folder(tmp_path_factory.mktemp("cifar"), n_train=48, n_test=24, seed=0)


@pytest.fixture(scope="session")
def pet_dir(tmp_path_factory):
    """A tiny real-format Oxford-IIIT Pet folder (10 trainval, 6 test JPEGs of varied sizes)."""
    return make_pet_folder(tmp_path_factory.mktemp("pet"), n_train=10, n_test=6, seed=1)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> str:
    """The demo training split's fine-grained saliency cache, built once per session."""
    from saliencymixplus.precompute import build_cache

    path = tmp_path_factory.mktemp("cache") / "demo-train.h5"
    return str(build_cache("demo", None, "train", "fine_grained", path, workers=0, progress=False,
                           log=lambda *a: None))


@pytest.fixture()
def fake_models(monkeypatch):
    """A stand-in ``saliencymixplus.models.build_model`` (a tiny CNN); yields the calls made."""
    return install_fake_models(monkeypatch)


@pytest.fixture()
def read_only(monkeypatch):
    """``read_only(folder)``: writing a file in ``folder`` fails with EROFS, as on a read-only
    mount (works as root too, where permission bits do not stop a write)."""
    real = tempfile.mkstemp
    folders = []

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and any(Path(dir).resolve() == f for f in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda folder: folders.append(Path(folder).resolve())


@pytest.fixture()
def odd_pet(tmp_path):
    """A Pet folder whose training images are 4 bad files and 4 odd but good ones; one test
    image is truncated. Returns ``(data_dir, bad train files, bad test files, good odd files)``."""
    from PIL import Image

    pet = make_pet_folder(tmp_path / "pet", n_train=8, n_test=4, seed=3)
    img_dir = pet["root"] / "images"
    train = [img_dir / f"{n}.jpg" for n in pet["train"][0]]
    test = [img_dir / f"{n}.jpg" for n in pet["test"][0]]
    rng = np.random.default_rng(0)
    data = train[0].read_bytes()
    train[0].write_bytes(data[: len(data) // 2])                      # truncated JPEG
    train[1].write_text("<html>404 Not Found</html>")                 # a web page saved as .jpg
    train[2].write_bytes(b"")                                         # empty
    train[3].write_bytes(b"\xff\xd8" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() + b"\xff\xd9")
    img = gradient_image()                                            # both ends intact, middle garbage
    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])).save(train[4], format="PNG")
    Image.fromarray(img).convert("L").save(train[5], format="JPEG", quality=95)
    Image.fromarray(img).convert("CMYK").save(train[6], format="JPEG", quality=95)
    Image.fromarray(img).convert("P").save(train[7], format="GIF")
    data = test[1].read_bytes()
    test[1].write_bytes(data[: len(data) - 300])
    return pet["data_dir"], train[:4], [test[1]], train[4:]
