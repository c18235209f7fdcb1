import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/fixtures_data.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the package, uninstalled

from fixtures_data import install_fake_models, make_cifar100_folder, make_pet_folder  # noqa: E402


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A tiny real-format ``cifar-100-python`` folder (48 train, 24 test); see fixtures_data."""
    return make_cifar100_folder(tmp_path_factory.mktemp("cifar"), n_train=48, n_test=24, seed=0)


@pytest.fixture(scope="session")
def pet_dir(tmp_path_factory):
    """A tiny real-format Oxford-IIIT Pet folder (10 trainval, 6 test JPEGs of varied sizes)."""
    return make_pet_folder(tmp_path_factory.mktemp("pet"), n_train=10, n_test=6, seed=1)


@pytest.fixture()
def fake_models(monkeypatch):
    """A stand-in ``saliencymixplus.models.build_model`` (a tiny CNN); yields the calls made."""
    return install_fake_models(monkeypatch)
