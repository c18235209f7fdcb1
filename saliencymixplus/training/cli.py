"""``train.py``'s entry point, :func:`main`, and its exit codes: 0 on success, 2 on a usage or
data error (bad flags, missing data or checkpoint, a mismatched saliency cache), 130 on Ctrl-C."""

from __future__ import annotations

import os
import sys
from typing import Optional

import torch.distributed as dist

from ..cache import CacheMismatchError
from .config import PROG, UsageError, parse_config
from .reporting import result_table
from .runner import run

__all__ = ["main"]


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point: 0 on success, 2 on a usage/data error, 130 on Ctrl-C."""
    try:
        cfg = parse_config(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        summary = run(cfg)
    except (UsageError, FileNotFoundError, CacheMismatchError) as e:
        text = str(e).strip()
        msg = text.splitlines()[0] if text else type(e).__name__
        if isinstance(e, CacheMismatchError):
            what = "saliency cache mismatch"
            msg += " (delete it to rebuild, or pass another --saliency-cache)"
        else:
            what = "error"
        print(f"{PROG}: {what}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if is_main:
            print(f"\n{PROG}: interrupted; {cfg.out_dir}/last.pt holds the last completed epoch. "
                  f"Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        print(result_table(summary))
        print(f"outputs in {cfg.out_dir}: log.csv, summary.json, curves.png, last.pt, best.pt")
    return 0
