"""How the precompute tool is called, for messages that tell users which command to run.

The tool's parser lives in :mod:`saliencymixplus.precompute`; this module only spells its
command line, so that the cache reader (below the tool) can name the command that rebuilds a
cache without importing the tool. ``tests/test_precompute.py`` checks that the tool's parser
accepts every command spelled here.
"""

from __future__ import annotations

import shlex

from .rawdata import GENERATED

__all__ = ["PROGRAM", "rebuild_command"]

PROGRAM = "saliencymixplus-precompute"


def rebuild_command(dataset, split, method, out, resolution=None, data_dir=None) -> str:
    """The command line that builds this cache. ``method`` ``None`` leaves the tool's default
    (``fine_grained``); ``data_dir`` ``None`` leaves ``--data-dir`` out for generated sets
    and writes a ``DATA_DIR`` placeholder for the others (the folder is not known);
    ``resolution`` is ``(h, w)``. Paths are quoted for a POSIX shell where they need it."""
    cmd = f"{PROGRAM} --dataset {dataset}"
    if data_dir is not None:
        cmd += f" --data-dir {shlex.quote(str(data_dir))}"
    elif dataset not in GENERATED:
        cmd += " --data-dir DATA_DIR"
    cmd += f" --split {split}"
    if method is not None:
        cmd += f" --method {method}"
        if method == "gradient":
            cmd += " --checkpoint CHECKPOINT"
    cmd += f" --out {shlex.quote(str(out))}"
    if resolution is not None:
        cmd += f" --resolution {int(resolution[0])}x{int(resolution[1])}"
    return cmd
