"""The precompute tool's command line, spelled for messages: the cache reader, below the tool
(:mod:`saliencymixplus.precompute`), names the command that rebuilds a cache without importing
it; this module imports only the light spec table. ``tests/test_precompute.py`` checks that
the tool's parser accepts every command spelled here. See docs/design.md, "The saliency cache".
"""

from __future__ import annotations

import shlex

from .datasets import SPECS

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
    elif dataset not in SPECS or not SPECS[dataset].generated:
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
