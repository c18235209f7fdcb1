"""What a run shows and leaves behind: the progress bar, ``log.csv``, ``summary.json``,
``curves.png`` and the one-row result table. Only rank 0 calls the writers."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

from ..files import atomic_write
from .config import Config
from .distributed import Dist

__all__ = ["CSV_FIELDS", "progress", "write_csv", "write_summary", "plot_curves", "summarize", "result_table"]

CSV_FIELDS = ("epoch", "lr", "train_loss", "train_top1_err", "train_top5_err",
              "test_top1_err", "test_top5_err", "images_per_s", "time_s")


def progress(cfg: Config, d: Dist, total: int, desc: str):
    """A ``tqdm`` bar on stderr, or ``None`` (``--no-progress``, or not rank 0)."""
    if not (cfg.progress and d.main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, file=sys.stderr)


def write_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch, the columns of :data:`CSV_FIELDS`, floats to 6 significant digits."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in history:
                w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})

    atomic_write(path, write)


def write_summary(path: Path, summary: dict) -> None:
    """``summary`` (from :func:`summarize`) as indented JSON."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)

    atomic_write(path, write)


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss and error curves per epoch as a PNG, with a marker on every epoch (so that a
    one-epoch run shows its point); nothing without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], marker="o", markersize=4, label="train loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    for key, lab in (("train_top1_err", "train top-1"), ("test_top1_err", "test top-1"),
                     ("test_top5_err", "test top-5")):
        a2.plot(ep, [r[key] for r in history], marker="o", markersize=4, label=lab)
    a2.set_xlabel("epoch"), a2.set_ylabel("error (%)"), a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def summarize(cfg: Config, history: list[dict], best: Optional[dict], wall: float, status: str) -> dict:
    """``summary.json``'s content: best and last errors (None before the first epoch), speed,
    wall time, ``status`` ("finished", "interrupted" or "diverged": stopped at a non-finite
    loss) and the config."""
    last = history[-1] if history else None
    pick = lambda r, k: (r[k] if r else None)
    return {
        "status": status,
        "epochs_done": len(history),
        "best_top1_err": pick(best, "test_top1_err"), "best_top5_err": pick(best, "test_top5_err"),
        "best_epoch": pick(best, "epoch"),
        "last_top1_err": pick(last, "test_top1_err"), "last_top5_err": pick(last, "test_top5_err"),
        "last_epoch": pick(last, "epoch"),
        "images_per_s": pick(last, "images_per_s"),
        "wall_time_s": wall,
        "config": cfg.to_dict(),
    }


def result_table(summary: dict) -> str:
    """A one-row Markdown table of a run's result."""
    c = summary["config"]
    f = lambda v, fmt=".2f": "-" if v is None else format(v, fmt)
    return "\n".join([
        "| data set | model | mix | epochs | best top-1 err | best top-5 err | last top-1 err "
        "| last top-5 err | images/s | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {c['dataset']} | {c['model']} | {c['mix_aug']} (p={c['mix_prob']:g}) | "
        f"{summary['epochs_done']} | {f(summary['best_top1_err'])} | {f(summary['best_top5_err'])} | "
        f"{f(summary['last_top1_err'])} | {f(summary['last_top5_err'])} | "
        f"{f(summary['images_per_s'], '.0f')} | "
        f"{summary['wall_time_s']:.1f} s |",
    ])
