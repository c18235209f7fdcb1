"""``train.py``'s entry point, :func:`main`, and its exit codes:

* 0: success (or nothing left to train);
* 1: the run diverged (a NaN or infinite training loss; ``last.pt`` keeps the last good epoch);
* 2: a usage or data error, before any training: bad flags, missing data, an output folder that
  cannot be written, a ``--resume`` file that is not a checkpoint of this run, image files that
  cannot be decoded, a saliency cache that does not match or is damaged, a cache another
  process builds with ``--no-wait``;
* 130: Ctrl-C.

Each error is one line on stderr (the image error: one line per file), never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import torch.distributed as dist

from ..cache import CacheCorruptError, CacheMismatchError
from ..files import BusyError, OutputPathError
from ..rawdata import ImageDecodeError
from .config import PROG, UsageError, parse_config
from .loop import NonFiniteLossError
from .reporting import result_table
from .runner import run

__all__ = ["main", "OUTPUT_FILES"]

#: What a run leaves in its folder (the last line lists those that exist).
OUTPUT_FILES = ("log.csv", "summary.json", "curves.png", "last.pt", "best.pt")


def _message(e: BaseException) -> str:
    """``e``'s message; for an error re-raised from a ``DataLoader`` worker, its last line (the
    original error) instead of the worker's traceback."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        head, sep, tail = last.partition(": ")
        return tail if sep and "Error" in head else last
    if isinstance(e, ImageDecodeError):
        return text  # one line per file
    return text.splitlines()[0] if text else type(e).__name__


def _diverged(e: NonFiniteLossError, cfg) -> str:
    done = getattr(e, "epochs_done", None)
    if done:
        kept = (f"{cfg.out_dir}/last.pt holds epoch {done}, the last good one (finite loss and weights; "
                f"best.pt the best of those), and nothing of the failed epoch was saved")
    else:
        kept = "no epoch ended with a finite loss and weights, so no checkpoint was written"
    return f"{e}; {kept}. Lower --learning_rate (now {cfg.learning_rate:g}) and start again"


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point; returns the exit status (see the module docstring)."""
    try:
        cfg = parse_config(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        summary = run(cfg)
    except (UsageError, FileNotFoundError, CacheMismatchError, OutputPathError, ImageDecodeError,
            BusyError) as e:
        msg = _message(e)
        if isinstance(e, CacheCorruptError):
            what = "saliency cache damaged"
            msg += " (or delete it: train.py builds a missing cache)"
        elif isinstance(e, CacheMismatchError):
            what = "saliency cache mismatch"
            msg += " (delete it to rebuild, or pass another --saliency-cache)"
        else:
            what = "error"
        if is_main:
            print(f"{PROG}: {what}: {msg}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        if is_main:
            print(f"{PROG}: error: {_diverged(e, cfg)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if is_main:
            print(f"\n{PROG}: interrupted; {cfg.out_dir}/last.pt holds the last completed epoch. "
                  f"Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a folder removed mid-run: what and where, in one line
        if is_main:
            print(f"{PROG}: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}"
                  f" ({type(e).__name__})", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        print(result_table(summary))
        if summary.get("nothing_to_train"):
            print(f"nothing was trained or written; {cfg.out_dir} is as it was")
        else:
            have = [f for f in OUTPUT_FILES if (Path(cfg.out_dir) / f).is_file()]
            print(f"outputs in {cfg.out_dir}: {', '.join(have) if have else 'none'}")
    return 0
