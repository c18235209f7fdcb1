#!/usr/bin/env python
"""Reproduce the published table: train the four rows (baseline, CutMix, SaliencyMix,
SaliencyMix+) for one model and data set, then write a Markdown table of top-1/top-5 test
errors beside the published numbers.

    python tools/run_table.py --dataset cifar100 --model resnet50 --epochs 200 \\
        --out runs/table_cifar100.md -- --data-dir data --amp bf16
    python tools/run_table.py --dataset demo --epochs 15                 # CPU, minutes
    python tools/run_table.py --dataset oxford_pet --model resnet50 --epochs 300 \\
        --launcher "torchrun --nproc_per_node 8" -- --data-dir data/oxford_pet

Everything after ``--`` is passed to every ``train.py`` run (e.g. ``--paper``,
``--data-dir``). A row whose run folder already holds a finished ``summary.json`` with the
same configuration is not trained again, so an interrupted table resumes where it stopped.
Each row is trained in this process, or with ``--launcher`` in a subprocess such as
``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saliencymixplus.training import UsageError, parse_config  # noqa: E402
from saliencymixplus.training import main as train_main  # noqa: E402

#: Published test errors (%), ResNet-50 trained from scratch: {(dataset, model): {mix_aug:
#: (top-1, top-5 or None)}} with the epochs of the published runs.
PUBLISHED: dict[tuple[str, str], dict] = {
    ("cifar100", "resnet50"): {
        "epochs": 200,
        "saliencymixplus": (24.95, 7.00),
        "cutmix": (25.19, None),
        "saliencymix": (25.28, None),
    },
    ("oxford_pet", "resnet50"): {
        "epochs": 300,
        "saliencymixplus": (34.89, 12.13),
        "cutmix": (41.32, None),
        "saliencymix": (40.28, None),
    },
}

ROWS = (("none", "Baseline"), ("cutmix", "CutMix"), ("saliencymix", "SaliencyMix"),
        ("saliencymixplus", "SaliencyMix+"))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(dataset: str, model: str, epochs: int, results: dict[str, dict | None]) -> str:
    """The Markdown table: one row per method, ours (best and last epoch) beside published.

    ``results[mix_aug]`` is a run's ``summary.json`` content (or ``None`` if it did not run).
    """
    pub = PUBLISHED.get((dataset, model), {})
    lines = [f"### {dataset}, {model}, {epochs} epochs (test error %)", "",
             "| method | top-1 (best) | top-5 (best) | top-1 (last) | top-5 (last) "
             "| published top-1 | published top-5 |",
             "|---|---|---|---|---|---|---|"]
    for key, name in ROWS:
        s = results.get(key)
        p = pub.get(key, (None, None))
        mine = ["-"] * 4 if s is None else [_fmt(s["best_top1_err"]), _fmt(s["best_top5_err"]),
                                           _fmt(s["last_top1_err"]), _fmt(s["last_top5_err"])]
        lines.append(f"| {name} | " + " | ".join(mine) + f" | {_fmt(p[0])} | {_fmt(p[1])} |")
    if pub:
        lines += ["", f"Published: ResNet-50 from scratch, {pub['epochs']} epochs."]
    else:
        lines += ["", "No published numbers for this data set and model."]
    return "\n".join(lines) + "\n"


def _train_argv(args, mix_aug: str, extra: list[str]) -> list[str]:
    argv = ["--dataset", args.dataset, "--mix_aug", mix_aug, "--seed", str(args.seed),
            "--out-dir", str(Path(args.runs) / f"{args.dataset}_{args.model or 'default'}_{mix_aug}_s{args.seed}")]
    for flag, v in (("--model", args.model), ("--epochs", args.epochs)):
        if v is not None:
            argv += [flag, str(v)]
    return argv + extra


def run_row(args, mix_aug: str, extra: list[str]) -> dict | None:
    """Train one row (or reuse a finished run) and return its summary."""
    argv = _train_argv(args, mix_aug, extra)
    out = Path(argv[argv.index("--out-dir") + 1])
    summary_path = out / "summary.json"
    cfg = parse_config(argv).to_dict()
    if summary_path.exists():
        s = json.loads(summary_path.read_text())
        same = {k: v for k, v in s["config"].items() if k not in ("resume", "progress")} == \
               {k: v for k, v in cfg.items() if k not in ("resume", "progress")}
        if s.get("status") == "finished" and same:
            print(f"[run_table] {mix_aug}: reusing {summary_path}", flush=True)
            return s
    argv += ["--resume"]  # continue an interrupted row from its last.pt
    print(f"[run_table] {mix_aug}: train.py {' '.join(argv)}", flush=True)
    if args.launcher:
        cmd = shlex.split(args.launcher) + [str(ROOT / "train.py"), *argv]
        rc = subprocess.call(cmd)
    else:
        rc = train_main(argv)
    if rc != 0:
        print(f"[run_table] {mix_aug}: train.py exited with {rc}", file=sys.stderr)
        return None
    return json.loads(summary_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="run_table.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar100", help="cifar100, oxford_pet or demo")
    p.add_argument("--model", default=None, help="network (default: train.py's for the data set; "
                                                  "the published rows use resnet50)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the data set's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=",".join(k for k, _ in ROWS),
                   help="comma-separated subset of none,cutmix,saliencymix,saliencymixplus")
    p.add_argument("--runs", default="runs/table", help="folder of the per-row run folders")
    p.add_argument("--out", default=None, help="Markdown file (default: <runs>/<dataset>_<model>.md)")
    p.add_argument("--launcher", default=None,
                   help="run each row as a subprocess with this prefix, e.g. 'torchrun --nproc_per_node 8'")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in dict(ROWS)]
    if bad:
        p.error(f"--rows: unknown {bad}; choose from {[k for k, _ in ROWS]}")
    try:
        cfg = parse_config(_train_argv(args, "none", extra))
    except SystemExit as e:  # argparse already printed why
        return int(e.code or 2)
    except UsageError as e:
        print(f"run_table.py: error: {e}", file=sys.stderr)
        return 2
    model, epochs = cfg.model, cfg.epochs
    results = {r: run_row(args, r, extra) for r in rows}
    table = markdown_table(args.dataset, model, epochs, results)
    out = Path(args.out or Path(args.runs) / f"{args.dataset}_{model}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    print(f"[run_table] table written to {out}")
    return 0 if all(results[r] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
