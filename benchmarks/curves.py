"""Learning curves of two or more ``train.py`` runs side by side (issue 23, point 1): one panel
per run with its train and test top-1 error per epoch, all panels on one error axis, and a last
panel with every run's test top-1 error together. It reads each run folder's ``log.csv`` (and
``config.json``, for the panel's title) and prints, per run, the numbers the picture shows:
final train error, final and best test error, and where the test error stopped falling.

    PYTHONPATH=. python benchmarks/curves.py runs/regime/none_s0 runs/regime/cutmix_s0 --out curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saliencymixplus.files import OutputPathError, atomic_write, check_output_file  # noqa: E402

#: The ``log.csv`` columns read: epoch, then top-1 error in percent.
COLUMNS = ("epoch", "train_top1_err", "test_top1_err")


class RunFolderError(ValueError):
    """A run folder whose ``log.csv`` is missing, lacks a column, or holds no epoch."""


def read_log(folder) -> dict[str, list[float]]:
    """``{column: values}`` of :data:`COLUMNS` from ``folder/log.csv``, one value per epoch
    (``epoch`` as int, errors as float, in percent).

    Raises:
        RunFolderError: no ``log.csv``, a column missing, a value that is not a number, or no row.
    """
    path = Path(folder) / "log.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise RunFolderError(f"{folder}: no log.csv (expected a train.py run folder)") from None
    if not rows:
        raise RunFolderError(f"{path}: no epoch in it")
    missing = [c for c in COLUMNS if c not in rows[0]]
    if missing:
        raise RunFolderError(f"{path}: expected columns {', '.join(COLUMNS)}, missing {', '.join(missing)}")
    out: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for n, row in enumerate(rows, start=2):
        for c in COLUMNS:
            try:
                out[c].append(int(row[c]) if c == "epoch" else float(row[c]))
            except (TypeError, ValueError):
                raise RunFolderError(f"{path} line {n}: {c} must be a number, got {row[c]!r}") from None
    return out


def label(folder) -> str:
    """The panel title: the run's mixer, images and epochs from ``config.json``, else the folder name."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return Path(folder).name
    size = cfg.get("train_size")
    return (f"{cfg.get('mix_aug', '?')} (seed {cfg.get('seed', '?')}"
            f"{f', {size} images' if size else ''}, {cfg.get('epochs', '?')} epochs)")


def stats(log: dict[str, list[float]]) -> dict[str, float]:
    """Final train error, final and best test error and the best's epoch, all from ``log``."""
    test = log["test_top1_err"]
    best = min(range(len(test)), key=test.__getitem__)
    return {"epochs": len(test), "final_train_err": log["train_top1_err"][-1], "final_test_err": test[-1],
            "best_test_err": test[best], "best_epoch": log["epoch"][best]}


def draw(logs: list[dict[str, list[float]]], labels: list[str], out, title: str = "") -> None:
    """Write ``out`` (PNG, atomically): a panel per run (train and test top-1 error against epoch),
    then one panel of every run's test error; one error axis for all panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(logs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4), sharey=True)
    for ax, log, name in zip(axes, logs, labels):
        ax.plot(log["epoch"], log["train_top1_err"], marker="o", markersize=3, label="train top-1")
        ax.plot(log["epoch"], log["test_top1_err"], marker="o", markersize=3, label="test top-1")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("top-1 error (%)")
    last = axes[-1]
    for k, (log, name) in enumerate(zip(logs, labels)):  # colours unlike the panels' train/test pair
        last.plot(log["epoch"], log["test_top1_err"], marker="o", markersize=3, label=name, color=f"C{k + 2}")
    last.set_title("test top-1, all runs", fontsize=9)
    last.set_xlabel("epoch")
    last.grid(alpha=0.3)
    last.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="curves.py")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="train.py run folders (two or more)")
    p.add_argument("--out", default="curves.png", help="the PNG to write")
    p.add_argument("--title", default="", help="title above the panels")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error(f"expected two or more run folders, got {len(args.runs)}")
    try:
        check_output_file(args.out)
        logs = [read_log(r) for r in args.runs]
    except (RunFolderError, OutputPathError) as e:
        p.error(str(e))
    labels = [label(r) for r in args.runs]
    draw(logs, labels, args.out, args.title)
    print("| run | epochs | final train top-1 err | final test top-1 err | best test top-1 err (epoch) |")
    print("|---|---|---|---|---|")
    for run, log in zip(args.runs, logs):
        s = stats(log)
        print(f"| {run} | {s['epochs']} | {s['final_train_err']:.2f} | {s['final_test_err']:.2f} | "
              f"{s['best_test_err']:.2f} ({s['best_epoch']}) |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
