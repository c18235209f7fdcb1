"""The precompute tool with two test hooks, for tests that run it as a process.

    python tests/precompute_with_hooks.py [--stop-after N] [--pause-file PATH] PRECOMPUTE ARGS...

``--stop-after N``: after the N-th written block the process SIGKILLs itself (a real, unclean
death, pool workers and all). ``--pause-file PATH``: after each written block, wait while PATH
exists (so that a test can hold a build, and its lock, until another process has met it).
The hooks wrap :meth:`CacheWriter.write`; everything else is the real tool.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from saliencymixplus import precompute
from saliencymixplus.cache import CacheWriter


def install(stop_after: int, pause_file: str | None) -> None:
    write = CacheWriter.write
    written = 0

    def hooked(self, start, maps):
        nonlocal written
        write(self, start, maps)
        written += 1
        if stop_after and written >= stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
        while pause_file and os.path.exists(pause_file):
            time.sleep(0.05)

    CacheWriter.write = hooked


if __name__ == "__main__":
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--stop-after", type=int, default=0)
    p.add_argument("--pause-file", default=None)
    hooks, rest = p.parse_known_args()
    install(hooks.stop_after, hooks.pause_file)
    sys.exit(precompute.main(rest))
