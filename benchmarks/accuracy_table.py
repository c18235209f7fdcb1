r"""An accuracy table on a generated set (``demo`` or ``demo_hard``): no mixing, CutMix,
SaliencyMix, SaliencyMix+ (cache), SaliencyMix+ refreshed (``--saliency refresh``), SaliencyMix+
on the set's true object masks (an upper bound: what perfect saliency would give) and the
published method (``--paper``: online saliency, peak box, half batch).

Trains ``train.py --dataset DATASET`` (the data set's defaults unless flags after ``--`` say
otherwise) for every mixer and seed, then prints the mean and sample standard deviation of the
top-1 test error over the seeds (last epoch and best epoch), the mean wall time of a run, and
the *paired* difference of chosen rows (``PAIRS``): the same seed gives both runs the same
initial weights and data order, so the per-seed difference cancels much of the seed-to-seed
spread. Each difference gets its mean ± standard error, a paired t-test and an exact sign
test (two-sided); a gap is called beyond noise at 5 % when the t-test's p < 0.05. The cache
rows read one cache of the training split, built first (OpenCV fine-grained, post-processed
with ``--postprocess``); the refreshed rows start from it and refresh their own copy.

A run whose ``summary.json`` says "finished" is not trained again, and an interrupted run
resumes from its ``last.pt``, so an interrupted table continues where it stopped. ``--jobs 2``
trains two runs at a time with one thread each (on a 2-core machine that does more work per
second than one run on two threads). The table is also written to ``OUT_DIR/table.md`` and
the per-run figures to ``OUT_DIR/table.json``, and drawn in ``OUT_DIR/table.png`` (per-seed
errors, and every paired gap with its 95 % interval).

    # the regime where no mixing overfits (benchmarks/RESULTS.md): 70 runs, 1-1.5 h on 2 cores
    PYTHONPATH=. python benchmarks/accuracy_table.py --dataset demo_hard --epochs 40 \
        --seeds 0,1,2,3,4,5,6,7,8,9 --jobs 2 --quiet --out-dir runs/regime_n3000_e40 \
        -- --train-size 3000 --milestones 30,37
    PYTHONPATH=. python benchmarks/accuracy_table.py --dataset demo_hard --jobs 2   # 12 epochs, 35 runs
    PYTHONPATH=. python benchmarks/accuracy_table.py --quick                        # CI: 1 seed, 1 epoch, 5 steps
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: ``(key, row name, train.py flags, saliency cache)``; the cache is ``None`` (the row reads
#: none, or computes its saliency online), ``"saliency"`` (the OpenCV cache of the training
#: split) or ``"masks"`` (the generated set's true object masks, stored as a cache).
MIXERS = (
    ("none", "No mixing", ["--mix_aug", "none"], None),
    ("cutmix", "CutMix", ["--mix_aug", "cutmix"], None),
    ("saliencymix", "SaliencyMix", ["--mix_aug", "saliencymix"], "saliency"),
    ("saliencymixplus", "SaliencyMix+", ["--mix_aug", "saliencymixplus"], "saliency"),
    ("saliencymixplus_refresh", "SaliencyMix+ refreshed", ["--mix_aug", "saliencymixplus", "--saliency", "refresh"],
     "saliency"),
    ("saliencymixplus_masks", "SaliencyMix+ on object masks", ["--mix_aug", "saliencymixplus"], "masks"),
    ("paper", "SaliencyMix+ published (--paper)", ["--mix_aug", "saliencymixplus", "--paper"], None),
)
DATASETS = ("demo", "demo_hard")
#: The paired comparisons printed under the table: ``(row, baseline)``.
PAIRS = (("saliencymixplus", "cutmix"), ("saliencymixplus", "saliencymix"), ("saliencymixplus", "paper"),
         ("saliencymixplus", "none"), ("saliencymixplus_refresh", "cutmix"), ("saliencymixplus_refresh", "saliencymixplus"),
         ("saliencymixplus_refresh", "paper"), ("saliencymixplus_masks", "saliencymixplus"),
         ("saliencymixplus_masks", "saliencymixplus_refresh"), ("paper", "cutmix"), ("cutmix", "none"))


def _usage(p: argparse.ArgumentParser, msg: str):
    p.error(msg)  # exit 2, one line


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2,3,4, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _mixers(text: str) -> list[str]:
    keys = [m[0] for m in MIXERS]
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in keys]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(keys)}, got {text!r}")
    return [k for k in keys if k in chosen]


def _cache(dataset: str, out_dir: Path, method: str, postprocess: str) -> Path:
    from saliencymixplus.precompute import build_cache
    from saliencymixplus.saliency import format_postprocess

    tag = format_postprocess(postprocess).replace("=", "").replace(",", "_")
    return build_cache(dataset, None, "train", method, out_dir / f"{dataset}-train-{method}-{tag}.h5",
                       progress=False, postprocess=postprocess, log=lambda *a: None)


def _mask_cache(dataset: str, out_dir: Path) -> Path:
    """The generated set's true object masks (``RawSplit.masks``, 0 or 1) written as a saliency
    cache of its training split (method ``object_mask``): SaliencyMix+ with perfect saliency."""
    from saliencymixplus.cache import CacheMismatchError, CacheWriter, quantize, verify_cache
    from saliencymixplus.rawdata import load_split

    raw = load_split(dataset, None, "train")
    out = out_dir / f"{dataset}-train-object_mask.h5"
    try:
        verify_cache(out, expect=raw, method="object_mask")
        return out
    except (FileNotFoundError, CacheMismatchError):
        pass
    with CacheWriter(out, dataset=raw.name, split=raw.split, count=len(raw), fingerprint=raw.fingerprint(),
                     method="object_mask", resolution=raw.image_size(), block_size=len(raw), resume=False,
                     extra_attrs={"postprocess": "none"}, item_stamps=raw.item_stamps()) as writer:
        writer.write(0, quantize(raw.masks.astype(np.float32)))
        return writer.finalize()


def _finished(out: Path) -> dict | None:
    summary = out / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        if s.get("status") == "finished":
            return s
    return None


def _run(key: str, flags: list[str], seed: int, args, cache: Path | None, out: Path) -> dict:
    done = _finished(out)
    if done is not None:
        return done
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", args.dataset, *flags, "--seed", str(seed),
           "--out-dir", str(out), "--no-progress", "--device", args.device]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if cache is not None:
        cmd += ["--saliency-cache", str(cache)]
    if (out / "last.pt").is_file():
        cmd += ["--resume"]  # an interrupted run continues from its last epoch
    cmd += args.train_args
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t = time.perf_counter()
    log = open(out.parent / f"{out.name}.log", "a") if args.quiet else None
    try:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None).returncode
    finally:
        if log:
            log.close()
    done = _finished(out)
    print(f"  {key} seed {seed}: {time.perf_counter() - t:.0f} s"
          f"{'' if done else f', FAILED (exit {rc}; see its output)'}", flush=True)
    return done  # None: left out of the table, the other runs go on


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample std / sqrt(n); ``None`` for one pair) of ``a[i] - b[i]``."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    if len(d) < 2:
        return d[0], None
    return statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))


def t_test_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom:
    ``1 - 2 * integral_0^|t| pdf``, the pdf integrated by Simpson's rule (error < 1e-6)."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    n, x = 4000, min(abs(t), 1e3)
    h = x / n
    area = h / 3 * (pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, n)))
    return max(0.0, 1.0 - 2.0 * area)


def sign_test_p(d: list[float]) -> float:
    """Two-sided exact sign test of the differences ``d`` (zeros dropped): the binomial
    probability, at p = 1/2, of a split at least as lopsided as the one seen."""
    neg, pos = sum(x < 0 for x in d), sum(x > 0 for x in d)
    n = neg + pos
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(neg, pos) + 1)) / 2 ** n)


def t_critical(df: int, alpha: float = 0.05) -> float:
    """The ``t`` whose two-sided p-value with ``df`` degrees of freedom is ``alpha`` (bisection)."""
    lo, hi = 0.0, 1e3
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_test_p(mid, df) > alpha else (lo, mid)
    return (lo + hi) / 2


def plot(rows: list[tuple[str, str, list[dict]]], seeds: list[int], title: str, out: Path) -> None:
    """``out`` (PNG): left, each row's last-epoch top-1 error per seed (dots) and its mean (bar);
    right, each paired gap of :data:`PAIRS`, per seed (dots) and its mean with the 95 % interval
    of the paired t-test (a gap beyond noise at 5 % has an interval clear of 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saliencymixplus.files import atomic_write

    by_key = {k: (name, [r["last_top1_err"] for r in runs]) for k, name, runs in rows}
    pairs = [(a, b) for a, b in PAIRS if a in by_key and b in by_key]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * max(len(rows), len(pairs)) + 1.8), layout="constrained")
    for y, (_, name, errs) in enumerate(reversed([(k, *by_key[k]) for k, _, _ in rows])):
        axes[0].scatter(errs, [y] * len(errs), s=14, color="tab:blue", alpha=0.6)
        axes[0].plot([statistics.mean(errs)] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
    axes[0].set_yticks(range(len(rows)), [by_key[k][0] for k, _, _ in reversed(rows)])
    axes[0].set_xlabel("top-1 test error, last epoch (%):\nseeds (dots), mean (bar)")
    crit = t_critical(len(seeds) - 1) if len(seeds) > 1 else None
    for y, (a, b) in enumerate(reversed(pairs)):
        d = [x - z for x, z in zip(by_key[a][1], by_key[b][1])]
        m, se = paired(by_key[a][1], by_key[b][1])
        axes[1].scatter(d, [y] * len(d), s=14, color="tab:gray", alpha=0.6)
        if se:
            clear = abs(m) > crit * se
            axes[1].errorbar(m, y, xerr=crit * se, fmt="o", color="tab:red" if clear else "black", capsize=4)
    axes[1].axvline(0, color="black", lw=0.8)
    axes[1].set_yticks(range(len(pairs)), [f"{by_key[a][0]} − {by_key[b][0]}" for a, b in reversed(pairs)])
    axes[1].set_xlabel("paired gap in points (< 0: the first errs less):\nseeds (dots), mean ± 95 % interval\n"
                       "(red: beyond noise at 5 %)")
    fig.suptitle(title, fontsize=9)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}" if p >= 0.001 else "< 0.001"


def render(dataset: str, rows: list[tuple[str, str, list[dict]]], seeds: list[int], header: str) -> str:
    """The Markdown table and the paired differences. ``rows``: ``(key, name, summaries per seed)``."""
    lines = [header, "",
             "| mixer | top-1 err, last epoch (%) | top-1 err, best epoch (%) | top-5 err, last (%) | s / run |",
             "|---|---|---|---|---|"]
    for _, name, runs in rows:
        lines.append(f"| {name} | {_mean_std([r['last_top1_err'] for r in runs])} | "
                     f"{_mean_std([r['best_top1_err'] for r in runs])} | {_mean_std([r['last_top5_err'] for r in runs])}"
                     f" | {statistics.mean(r['wall_time_s'] for r in runs):.0f} |")
    lines += ["", "Per seed: last-epoch top-1 error (%) and wall time of the run:", "",
              f"| mixer | {' | '.join(f'seed {s}' for s in seeds)} |", "|---|" + "---|" * len(seeds)]
    for _, name, runs in rows:
        lines.append(f"| {name} | " + " | ".join(f"{r['last_top1_err']:.2f} ({r['wall_time_s']:.0f} s)" for r in runs)
                     + " |")
    by_key = {k: (name, runs) for k, name, runs in rows}
    pairs = [(a, b) for a, b in PAIRS if a in by_key and b in by_key]
    if pairs:
        lines += ["", f"Paired difference of the last-epoch top-1 error, per seed ({', '.join(map(str, seeds))}), "
                      f"in points (negative: the first mixer errs less); mean ± standard error over the seeds, "
                      f"the paired t-test (t = mean / s.e., {len(seeds) - 1} degrees of freedom) and the sign test "
                      f"(how many seeds the first mixer won), both two-sided; a gap is beyond noise at 5 % when "
                      f"the t-test's p < 0.05:", "",
                  "| comparison | per seed | mean ± s.e. | t | p (t) | won | p (sign) | beyond noise at 5 % |",
                  "|---|---|---|---|---|---|---|---|"]
        for a, b in pairs:
            va = [r["last_top1_err"] for r in by_key[a][1]]
            vb = [r["last_top1_err"] for r in by_key[b][1]]
            d = [x - y for x, y in zip(va, vb)]
            m, se = paired(va, vb)
            per = ", ".join(f"{x:+.2f}" for x in d)
            won = "-" if se is None else f"{sum(x < 0 for x in d)} of {len(d)}"
            if not se:  # one seed, or every seed the same gap: no t-test
                stats, beyond = f"- | - | {won}", "-"
            else:
                p = t_test_p(m / se, len(d) - 1)
                stats, beyond = f"{m / se:+.1f} | {_p(p)} | {won}", "yes" if p < 0.05 else "no"
            lines.append(f"| {by_key[a][0]} - {by_key[b][0]} | {per} | {m:+.2f}"
                         f"{'' if se is None else f' ± {se:.2f}'} | {stats} | {_p(sign_test_p(d))} | {beyond} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo", choices=DATASETS, help="the generated set to train on")
    p.add_argument("--out-dir", default=None, help="run folders and the cache go here (default: runs/accuracy_DATASET)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4], help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument("--mixers", type=_mixers, default=[m[0] for m in MIXERS],
                   help="comma-separated subset of " + ",".join(m[0] for m in MIXERS) + " (default: all)")
    p.add_argument("--epochs", type=_positive, default=None,
                   help="default: the data set's default in train.py (demo 15, demo_hard 12)")
    p.add_argument("--device", default="cpu", help="train.py's --device for every run (default cpu; cuda on a GPU)")
    p.add_argument("--method", default="fine_grained", choices=("fine_grained", "spectral_residual"))
    p.add_argument("--postprocess", default="top=0.2,power=2", help="saliency post-processing of the cache")
    p.add_argument("--jobs", type=_positive, default=1, help="runs trained at the same time (default 1)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="OMP_NUM_THREADS of each run (default: 1 when --jobs > 1, else torch's default)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 5 steps per epoch (CI)")
    p.add_argument("--quiet", action="store_true", help="train.py's output to OUT_DIR/<run>.log instead of here")
    p.add_argument("train_args", nargs="*", help="after --: passed to every train.py run")
    args = p.parse_args(argv)
    from saliencymixplus.saliency import parse_postprocess

    try:
        parse_postprocess(args.postprocess)
    except ValueError as e:
        _usage(p, f"--postprocess: {e}")
    seeds = args.seeds
    if args.threads is None and args.jobs > 1:
        args.threads = 1
    if args.quick:
        seeds, args.epochs = seeds[:1], 1
        args.train_args = ["--limit-train-batches", "5", "--limit-test-batches", "2", *args.train_args]
    out_dir = Path(args.out_dir or f"runs/accuracy_{args.dataset}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _usage(p, f"cannot create --out-dir {out_dir}: {e.strerror or e}")
    # Seed by seed, so that a table stopped early holds whole seeds of every mixer.
    todo = [(k, name, flags, s) for s in seeds for k, name, flags, _ in MIXERS if k in args.mixers]
    if args.epochs is not None:  # a finished run of another length would enter the table as it is
        other = [(out_dir / f"{k}_s{s}", r["config"]["epochs"]) for k, _, _, s in todo
                 if (r := _finished(out_dir / f"{k}_s{s}")) and r["config"]["epochs"] != args.epochs]
        if other:
            _usage(p, f"--out-dir {out_dir} holds finished runs of other lengths than --epochs {args.epochs} "
                      f"(e.g. {other[0][0]}: {other[0][1]} epochs): pick another --out-dir")
    start = datetime.datetime.now(datetime.timezone.utc)
    load0 = _load()
    t0 = time.perf_counter()
    wanted = {c for k, _, _, c in MIXERS if k in args.mixers}
    caches = {None: None,
              "saliency": _cache(args.dataset, out_dir, args.method, args.postprocess) if "saliency" in wanted else None,
              "masks": _mask_cache(args.dataset, out_dir) if "masks" in wanted else None}
    cache_of = {k: caches[c] for k, _, _, c in MIXERS}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_run, k, flags, s, args, cache_of[k], out_dir / f"{k}_s{s}") for k, _, flags, s in todo]
        results = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    failed = [f"{k} seed {s}" for (k, _, _, s), r in zip(todo, results) if r is None]
    # Only seeds that every mixer finished, so that rows and paired differences compare like with like.
    seeds = [s for s in seeds if all(r is not None for (_, _, _, ss), r in zip(todo, results) if ss == s)]
    if not seeds:
        print(f"no seed finished for every mixer (failed: {', '.join(failed)})", file=sys.stderr)
        return 1
    rows = []
    for k, name, _, _ in MIXERS:
        if k in args.mixers:
            rows.append((k, name, [r for (kk, _, _, s), r in zip(todo, results) if kk == k and s in seeds]))
    c = rows[0][2][0]["config"]
    import torch

    size = f"{c['train_size']} training images" if c.get("train_size") else "the whole training split"
    header = (f"{args.dataset} set ({size}), {c['model']}, {c['epochs']} epochs (lr x{c['gamma']} at "
              f"{','.join(map(str, c['milestones']))}), batch {c['batch_size']}, lr {c['learning_rate']}, "
              f"mix prob {c['mix_prob']}, seeds {','.join(map(str, seeds))}; saliency {args.method} + "
              f"{args.postprocess}; {args.jobs} run(s) at a time, {args.threads or 'default'} thread(s) each; "
              f"{start:%Y-%m-%d %H:%M} UTC, {wall / 60:.0f} min, load {load0} -> {_load()}; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
              f"trained on {args.device}"
              + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") and torch.cuda.is_available()
                 else ""))
    if failed:
        header += f"; FAILED and left out with their seeds: {', '.join(failed)}"
    text = render(args.dataset, rows, seeds, header)
    print("\n" + text)
    (out_dir / "table.md").write_text(text + "\n")
    (out_dir / "table.json").write_text(json.dumps(
        {"header": header, "seeds": seeds,
         "rows": {k: {"name": name, "last_top1_err": [r["last_top1_err"] for r in runs],
                      "best_top1_err": [r["best_top1_err"] for r in runs],
                      "last_top5_err": [r["last_top5_err"] for r in runs],
                      "wall_time_s": [r["wall_time_s"] for r in runs]} for k, name, runs in rows}}, indent=2))
    plot(rows, seeds, f"{args.dataset} set, {size}, {c['epochs']} epochs, seeds {','.join(map(str, seeds))}",
         out_dir / "table.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
