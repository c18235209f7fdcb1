"""What the command-line tests share: a subprocess's environment, a ``main`` called in-process and
the check that an error was answered in one line, without a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "precompute_saliency.py"
#: ``build_cache`` keyword arguments for a silent build.
QUIET = dict(progress=False, log=lambda *a: None)
#: ``train.py`` flags for a run of a few steps.
TINY_RUN = ["--limit-train-batches", "2", "--limit-test-batches", "1", "--batch_size", "16", "--no-progress",
            "--workers", "0", "--epochs", "1", "--model", "resnet_tiny"]


def subprocess_env(**extra) -> dict:
    """This environment with the checkout importable and one OpenMP thread (the machine is shared)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def exit_code(main, argv) -> int:
    """``main(argv)`` as the shell sees it: argparse's SystemExit becomes its code."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code)


def no_traceback(err: str, lines: int | None = 1) -> str:
    """``err`` has no traceback and, unless ``lines`` is None, that many lines; returns it."""
    assert "Traceback" not in err, err
    if lines is not None:
        assert len(err.strip().splitlines()) == lines, err
    return err


def gradient_image(h: int = 40, w: int = 30) -> np.ndarray:
    """``uint8[h, w, 3]``: smooth ramps, an image every format stores."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 6, xx * 8, (yy + xx) * 3], -1).astype(np.uint8)
