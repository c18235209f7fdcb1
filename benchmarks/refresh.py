"""``--saliency refresh`` on the demo set: label error of its maps per epoch, time per epoch,
against the OpenCV cache, online (``--paper``) saliency and a final checkpoint's gradient.

Trains ``train.py --dataset demo`` in every mode of :data:`MODES`, one epoch at a time with the
modes interleaved (epoch ``k`` of a mode is a ``--resume`` of its epoch ``k - 1``, which is
bit-exact), so that a changing load on a shared machine falls on every mode alike; keeps each
epoch's model. Then scores saliency maps against the demo set's object masks with
``benchmarks/label_noise.py``'s ``score`` (all 5,000 training images, seeds 0-2, maps
quantised to uint8 as a cache stores them); the label error is the mean ``|lam - true|`` of
the weight SaliencyMix+ assigns (window and peak boxes):

* ``OpenCV``: the fine-grained cache train.py builds (sharpened ``top=0.2,power=2``), and raw;
* ``refresh`` / ``refresh raw``: the maps ``--saliency refresh`` saved after each epoch
  (refreshed maps sharpened, or stored raw with ``--refresh-postprocess none``);
* ``online``: gradient saliency of the ``--paper`` run's model after each epoch, i.e. what
  online saliency computes at that point of training (raw, as published; and sharpened);
* ``final checkpoint``: gradient saliency of a run's final model (an offline gradient cache).

    PYTHONPATH=. python benchmarks/refresh.py --out-dir runs/refresh_demo     # 15 epochs, 4 modes
    PYTHONPATH=. python benchmarks/refresh.py --device cuda --out-dir runs/refresh_gpu
    PYTHONPATH=. python benchmarks/refresh.py --quick                         # CI: 1 short epoch

An interrupted benchmark continues where it stopped (epochs already trained are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_noise import gradient_maps, score  # noqa: E402

from saliencymixplus.cache import SaliencyCache, quantize  # noqa: E402
from saliencymixplus.checkpoint_file import read_checkpoint  # noqa: E402
from saliencymixplus.data import load_split  # noqa: E402
from saliencymixplus.saliency import compute_saliency, sharpen  # noqa: E402
from saliencymixplus.training import parse_config, run  # noqa: E402

#: mode -> train.py flags (besides the shared ones).
MODES = {
    "cache": [],
    "refresh": ["--saliency", "refresh"],
    "refresh raw": ["--saliency", "refresh", "--refresh-postprocess", "none"],
    "online (--paper)": ["--paper"],
}
MIXERS = ("SaliencyMix+ window", "SaliencyMix+ peak")
SHARP = dict(top=0.2, power=2.0)


def _folder(out: Path, mode: str) -> Path:
    return out / mode.replace(" ", "_").replace("(", "").replace(")", "").replace("--", "")


def train(out: Path, cache: Path, epochs: int, seed: int, device: str, extra: list[str]) -> None:
    """Every mode, epoch by epoch, interleaved (the order rotates each epoch)."""
    modes = list(MODES)
    for epoch in range(1, epochs + 1):
        for mode in modes[epoch % len(modes):] + modes[:epoch % len(modes)]:
            folder = _folder(out, mode)
            kept = folder / f"model-e{epoch:02d}.pt"
            if kept.is_file():
                continue
            argv = ["--dataset", "demo", "--seed", str(seed), "--saliency-cache", str(cache), "--device", device,
                    "--epochs", str(epoch), "--no-progress", "--refresh-keep", "all", "--out-dir", str(folder),
                    *MODES[mode], *extra]
            cfg = parse_config(argv + (["--resume"] if epoch > 1 else []))  # the LR schedule is by epoch
            with contextlib.redirect_stdout(io.StringIO()):
                run(cfg)
            shutil.copyfile(folder / "last.pt", kept)
            row = read_checkpoint(kept)["history"][-1]
            print(f"  epoch {epoch:2d}  {mode:17s} {row['time_s']:6.1f} s  test err {row['test_top1_err']:.2f}",
                  flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="runs/refresh_demo")
    p.add_argument("--epochs", type=int, default=15, help="the demo default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="train.py --device (e.g. cuda)")
    p.add_argument("--seeds", default="0,1,2", help="label-noise seeds")
    p.add_argument("--quick", action="store_true", help="1 epoch of 2 steps, 128 images scored (CI)")
    args = p.parse_args(argv)
    extra, n, seeds = [], 5000, [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.epochs, extra, n, seeds = 1, ["--limit-train-batches", "2", "--limit-test-batches", "1"], 128, seeds[:1]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(1)  # a shared 2-core machine: OpenMP spinning makes 2 threads far slower
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    from saliencymixplus.precompute import build_cache

    cache = build_cache("demo", None, "train", "fine_grained", out / "demo-train-fine_grained.h5", progress=False,
                        log=lambda *a: None)
    print(f"training {len(MODES)} modes x {args.epochs} epochs, interleaved ...", flush=True)
    train(out, cache, args.epochs, args.seed, args.device, extra)
    t_train = time.perf_counter() - t0

    # ---- time per epoch
    hist = {m: read_checkpoint(_folder(out, m) / "last.pt")["history"] for m in MODES}
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"\ntorch {torch.__version__}, {platform.machine()}{gpu}, {torch.get_num_threads()} threads; "
          f"load {load0:.2f} at the start; training {t_train:.0f} s")
    print("| mode | epoch time, median (s) | train time, median (s) | trained images/s, median | "
          "epoch time / cache's, median (p10-p90) over epochs |")
    print("|---|---|---|---|---|")
    base = [r["time_s"] for r in hist["cache"]]
    for m, rows in hist.items():
        ratios = sorted(r["time_s"] / b for r, b in zip(rows, base))
        lo, hi = ratios[int(0.1 * (len(ratios) - 1))], ratios[int(round(0.9 * (len(ratios) - 1)))]
        print(f"| {m} | {statistics.median(r['time_s'] for r in rows):.2f} | "
              f"{statistics.median(r['train_time_s'] for r in rows):.2f} | "
              f"{statistics.median(r['images_per_s'] for r in rows):.0f} | "
              f"{statistics.median(ratios):.3f} ({lo:.3f}-{hi:.3f}) |")
    print("| mode | " + " | ".join(f"e{r['epoch']}" for r in hist["cache"]) + " |  (test top-1 err %)")
    for m, rows in hist.items():
        print(f"| {m} | " + " | ".join(f"{r['test_top1_err']:.1f}" for r in rows) + " |")

    # ---- label error
    raw = load_split("demo", None, "train")
    first = SimpleNamespace(name=raw.name, images=raw.images[:n], labels=raw.labels[:n])  # for gradient_maps
    images = torch.from_numpy(raw.images[:n]).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(raw.labels[:n]).long()
    masks = torch.from_numpy(raw.masks[:n]).float()

    def err(maps: np.ndarray) -> dict:
        """Label error per mixer of float maps in [0, 1] (or uint8 as stored)."""
        q = maps if maps.dtype == np.uint8 else quantize(maps)
        s = torch.from_numpy(q[:n]).float() / 255.0
        r = score(images, labels, masks, s, seeds=seeds, batch=128, num_classes=10, only=MIXERS)
        return {k: r[k]["own"] for k in MIXERS}

    fmt = lambda e: " / ".join(f"{e[k]:.3f}" for k in MIXERS)  # noqa: E731
    opencv = SaliencyCache(cache).read_all()
    print(f"\nlabel error of SaliencyMix+ window / peak (mean |lam - true|, {n} images, seeds {args.seeds}, batch 128)")
    print("| saliency | window / peak |")
    print("|---|---|")
    print(f"| OpenCV fine-grained, sharpened (the cache) | {fmt(err(opencv))} |")
    print(f"| OpenCV fine-grained, raw | {fmt(err(compute_saliency(raw.images[:n], 'fine_grained')))} |")
    for m in ("cache", "refresh"):
        g = gradient_maps(str(_folder(out, m) / f"model-e{args.epochs:02d}.pt"), first)
        print(f"| final checkpoint of the {m} run, gradient raw | {fmt(err(g))} |")
        print(f"| final checkpoint of the {m} run, gradient sharpened | {fmt(err(sharpen(g, **SHARP)))} |")
    print("\n| epoch | refresh: window / peak | refreshed maps | refresh raw: window / peak | "
          "online (--paper model), raw: window / peak | online, sharpened: window / peak |")
    print("|---|---|---|---|---|---|")
    for e in range(1, args.epochs + 1):
        ref = SaliencyCache(_folder(out, "refresh") / f"saliency-refresh-e{e:04d}.h5").read_all()
        share = float((ref != opencv).reshape(len(ref), -1).any(1).mean())
        rraw = SaliencyCache(_folder(out, "refresh raw") / f"saliency-refresh-e{e:04d}.h5").read_all()
        g = gradient_maps(str(_folder(out, "online (--paper)") / f"model-e{e:02d}.pt"), first)
        print(f"| {e} | {fmt(err(ref))} | {100 * share:.0f} % | {fmt(err(rraw))} | {fmt(err(g))} | "
              f"{fmt(err(sharpen(g, **SHARP)))} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s in all; load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
