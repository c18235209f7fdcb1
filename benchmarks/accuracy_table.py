"""A small accuracy table on the embedded demo set: no mixing, CutMix, SaliencyMix, SaliencyMix+.

Trains ``train.py --dataset demo`` (the tiny ResNet, the demo defaults: 15 epochs, batch 64,
mix prob 0.5) for every mixer and seed, one after the other, then prints the mean and sample
standard deviation of the top-1 test error over the seeds (last epoch and best epoch).
SaliencyMix and SaliencyMix+ read one saliency cache of the demo training split, built first
(OpenCV fine-grained, post-processed with ``--postprocess``). A run whose ``summary.json``
exists is not trained again, so an interrupted table resumes.

    PYTHONPATH=. python benchmarks/accuracy_table.py --out-dir runs/accuracy_demo      # ~20-30 min, 2 cores
    PYTHONPATH=. python benchmarks/accuracy_table.py --quick                           # CI: 1 seed, 1 epoch, 5 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIXERS = (("none", "No mixing"), ("cutmix", "CutMix"), ("saliencymix", "SaliencyMix"),
          ("saliencymixplus", "SaliencyMix+"))


def _cache(out_dir: Path, method: str, postprocess: str) -> Path:
    from saliencymixplus.precompute import build_cache
    from saliencymixplus.saliency import format_postprocess

    tag = format_postprocess(postprocess).replace("=", "").replace(",", "_")
    return build_cache("demo", None, "train", method, out_dir / f"demo-train-{method}-{tag}.h5",
                       progress=False, postprocess=postprocess, log=lambda *a: None)


def _run(mix: str, seed: int, args, cache: Path, out: Path) -> dict:
    summary = out / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        if s.get("status") == "finished":
            return s
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", "demo", "--mix_aug", mix, "--seed", str(seed),
           "--out-dir", str(out), "--no-progress", "--device", "cpu"]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if mix in ("saliencymix", "saliencymixplus"):
        cmd += ["--saliency-cache", str(cache)]
    cmd += args.train_args
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
    print(f"  {mix} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    return json.loads(summary.read_text())


def _stats(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="runs/accuracy_demo", help="run folders and the cache go here")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="default: the demo default of train.py (15)")
    p.add_argument("--method", default="fine_grained", choices=("fine_grained", "spectral_residual"))
    p.add_argument("--postprocess", default="top=0.2,power=2", help="saliency post-processing of the cache")
    p.add_argument("--mixers", default=",".join(m for m, _ in MIXERS),
                   help="comma-separated --mix_aug values to train (default: all four)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 5 steps per epoch (CI)")
    p.add_argument("--quiet", action="store_true", help="hide train.py's output")
    p.add_argument("train_args", nargs="*", help="after --: passed to every train.py run")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = args.mixers.split(",")
    unknown = sorted(set(chosen) - {m for m, _ in MIXERS})
    if unknown:
        p.error(f"--mixers: unknown {unknown}; choose from {[m for m, _ in MIXERS]}")
    if args.quick:
        seeds, args.epochs = seeds[:1], 1
        args.train_args = ["--limit-train-batches", "5", "--limit-test-batches", "2", *args.train_args]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _cache(out_dir, args.method, args.postprocess)
    t0 = time.perf_counter()
    rows = []
    for mix, name in (m for m in MIXERS if m[0] in chosen):
        runs = [_run(mix, s, args, cache, out_dir / f"{mix}_s{s}") for s in seeds]
        rows.append((name, runs))
    wall = time.perf_counter() - t0
    c = rows[0][1][0]["config"]
    print(f"\ndemo set, {c['model']}, {c['epochs']} epochs, batch {c['batch_size']}, mix prob {c['mix_prob']}, "
          f"seeds {','.join(map(str, seeds))}; saliency {args.method} + {args.postprocess}; {wall:.0f} s")
    print("| mixer | top-1 err, last epoch (%) | top-1 err, best epoch (%) | top-5 err, last (%) | s / run |")
    print("|---|---|---|---|---|")
    for name, runs in rows:
        print(f"| {name} | {_stats([r['last_top1_err'] for r in runs])} | {_stats([r['best_top1_err'] for r in runs])}"
              f" | {_stats([r['last_top5_err'] for r in runs])} | "
              f"{statistics.mean(r['wall_time_s'] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
