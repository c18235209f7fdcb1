"""What conftest.py checks before a session: that the package under test has the compiled
kernels it should, and which tests need a GPU. Kept apart so that tests/test_suite_checks.py
can call them with made-up inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

__all__ = ["installed_extension", "package_problem", "needs_gpu"]


def installed_extension(name: str = "saliencymixplus") -> Optional[str]:
    """Path of the compiled ``_C`` that the installed ``name`` distribution ships (its RECORD
    lists it and the file exists), or ``None`` (not installed, or installed without one)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.parts[:1] == (name,) and f.name.startswith("_C.") and f.suffix in (".so", ".pyd"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return str(path)
    return None


def package_problem(info: dict, installed: Optional[str], package_dir, env: Mapping[str, str] = os.environ,
                    gpu: Optional[bool] = None) -> Optional[str]:
    """Why a test session must not run (one message), or ``None``.

    Args:
        info: ``saliencymixplus.extension_info()`` of the package under test.
        installed: what :func:`installed_extension` found.
        package_dir: the folder of the package under test (for the message).
        env: the environment: ``SMP_REQUIRE_EXTENSION=1`` demands the compiled CPU ops,
            ``SMP_REQUIRE_GPU=1`` a CUDA device and the CUDA kernels.
        gpu: whether a CUDA device is usable (default: ask torch, only when it matters).
    """
    where = f"the saliencymixplus under test is {package_dir}"
    if not info["loaded"] and installed is not None:
        return (f"{where} and has no compiled ops ({info['error']}), but an installed copy has them "
                f"({installed}): the checkout shadows the install and every kernel test would skip. "
                f"Run `pytest` (not `python -m pytest` from the checkout), or install with "
                f"`pip install --no-build-isolation -e .`")
    if env.get("SMP_REQUIRE_EXTENSION") == "1" and not (info["loaded"] and info["cpu"]):
        return f"SMP_REQUIRE_EXTENSION=1 but the compiled CPU ops are not loaded ({info['error']}); {where}"
    if env.get("SMP_REQUIRE_GPU") == "1":
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        if not gpu:
            return "SMP_REQUIRE_GPU=1 but torch sees no CUDA device"
        if not info["cuda"]:
            return f"SMP_REQUIRE_GPU=1 but the compiled extension has no CUDA kernels; {where}"
    return None


def _is_cuda(value) -> bool:
    if isinstance(value, str):
        return value == "cuda" or value.startswith("cuda:")
    return getattr(value, "type", None) == "cuda"  # a torch.device


def needs_gpu(item) -> bool:
    """Whether a collected test needs a GPU: it has the ``cuda`` marker, a parameter that is a
    CUDA device (``"cuda"``, ``"cuda:1"``, ``torch.device("cuda")``), or a ``skipif`` whose
    reason names a GPU ("needs a CUDA GPU")."""
    if item.get_closest_marker("cuda") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(_is_cuda(v) for v in callspec.params.values()):
        return True
    return any("gpu" in str(m.kwargs.get("reason", "")).lower() for m in item.iter_markers("skipif"))
