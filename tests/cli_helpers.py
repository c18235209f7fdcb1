"""What the command-line tests share: a subprocess's environment and a ``main`` called in-process."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
