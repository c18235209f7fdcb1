"""What the saliency cache costs the training DataLoader on file-backed data (Oxford-IIIT Pet).

On a GPU, training on JPEG folders is limited by the DataLoader's workers, so the time the
saliency adds per image there is what SaliencyMix+ costs. This script:

1. writes an Oxford-Pet-format folder (``images/*.jpg`` and ``annotations/{trainval,test}.txt``)
   of ``--n`` JPEGs of ``--size`` (default 400 of 375x500, like the real set's typical image),
   made with the test fixtures' image generator (a coloured blob on a gradient, plus noise),
   in a temporary directory (or reuses ``--data-dir``);
2. builds its saliency cache with the project's own precompute (``build_cache``; maps stored
   256x256 uint8, the Pet default);
3. times the DataLoader of ``build_dataset(..., train=True)`` (the published Pet pipeline:
   resize 256x256, random-resized-crop 224, flip) exactly as ``train.py`` builds it
   (``TorchLoader``'s workers, prefetch and seeding), in three variants on the same folder,
   workers and batch: **no cache**, **cache** (read into memory, as the reader does for caches
   up to 256 MB) and **cache, HDF5** (read per item from the file, one handle per worker, as
   for ImageNet-sized caches; checked once with ``verify_cache`` first, as ``train.py`` does on
   every start, so that each map is read as its chunk's raw bytes). Rounds are interleaved, the order rotating each round; each
   variant's loader has persistent workers, one warm-up epoch, and the same shuffle and
   worker seeds as the others, so all three make the same crops. One round = one epoch each;
   images/s = images / wall time of the epoch. Also reported: the CPU time the workers and
   this process spent per image (from ``/proc``), which other jobs on a shared machine
   disturb far less than wall time; its ratio is no-cache CPU time / variant CPU time, so
   that it reads like the images/s ratio.
4. times each step of one item in this process (one thread, as in a worker).

With ``--dataset imagefolder`` (issue 22 point 5, reading at scale) the folder is a torchvision
``ImageFolder`` tree (``train/<class>/*.JPEG``, ``--classes`` classes, and a small ``val/``), the
cache is the folder sets' default (96x96 uint8 maps) and the pipeline is the ImageNet-style
recipe (random-resized crop to 224, flip); steps 1-3 as above, no step table.

    PYTHONPATH=. python benchmarks/bench_loader.py [--rounds 20] [--workers 2] [--batch 32] [--quick]
    PYTHONPATH=. python benchmarks/bench_loader.py --dataset imagefolder --n 2000 --rounds 5

Prints two Markdown tables (median and spread). The machine's load average is printed first
and last: on a shared machine, rerun when it is high.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_pet_folder(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """``root/images/<Breed>_<k>.jpg`` (``n`` JPEGs of ``size``) and the two annotation lists."""
    import cv2
    from fixtures_data import PET_BREEDS, smooth_images

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n):
        cls = k % len(PET_BREEDS)
        name = f"{PET_BREEDS[cls]}_{k + 1}"
        img = smooth_images(rng, 1, *size)[0]
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), img[:, :, ::-1])
        species = 1 if PET_BREEDS[cls][0].isupper() else 2
        lines.append(f"{name} {cls + 1} {species} {cls + 1}")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(lines[: max(1, n // 10)]) + "\n")


def make_image_folder(root: Path, n: int, size: tuple[int, int], classes: int, seed: int = 0) -> None:
    """A torchvision ``ImageFolder`` tree: ``root/train/c<k>/<i>.JPEG`` (``n`` JPEGs of ``size``,
    class ``i % classes``) and ``root/val/c<k>/`` (``max(classes, n // 10)`` more)."""
    import cv2
    from fixtures_data import smooth_images

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for k in range(classes):
            (root / split / f"c{k:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = smooth_images(rng, 1, *size)[0]
            cv2.imwrite(str(root / split / f"c{i % classes:03d}" / f"{i:06d}.JPEG"), img[:, :, ::-1])


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def spread(values) -> tuple[float, float, float]:
    """``(median, low, high)``: p10 and p90 when there are 10 or more values, else min and max."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) >= 10:
        return float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90))
    return float(np.median(v)), float(v.min()), float(v.max())


def make_loader(ds, batch: int, workers: int, seed: int):
    """The training DataLoader as ``TorchLoader`` builds it, but with persistent workers (so that
    worker start-up is not timed) and a generator the caller reseeds."""
    import torch
    from torch.utils.data import DataLoader

    from saliencymixplus.training.loaders import TorchLoader
    from saliencymixplus.training.distributed import seed_worker

    ref = TorchLoader(ds, torch.device("cpu"), batch_size=batch, train=True, workers=workers).loader
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=False,
                        drop_last=True, generator=g, worker_init_fn=seed_worker,
                        persistent_workers=workers > 0, prefetch_factor=ref.prefetch_factor)
    return loader, g


def _cpu_seconds(pids) -> float:
    """User + system CPU seconds of processes ``pids`` so far (Linux ``/proc``; NaN elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")
    return total


def time_epoch(loader) -> tuple[float, float, int]:
    """``(wall seconds, CPU seconds of the workers and this process, images)`` of one pass."""
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []  # persistent workers
    pids = [w.pid for w in workers]
    n = 0
    c0, p0, t = _cpu_seconds(pids), time.process_time(), time.perf_counter()
    for batch in loader:
        n += len(batch[-1])
    dt = time.perf_counter() - t
    return dt, (_cpu_seconds(pids) - c0) + (time.process_time() - p0) if pids else float("nan"), n


def loader_table(data_dir: Path, cache_path: Path, args) -> list[str]:
    from saliencymixplus.cache import SaliencyCache, verify_cache
    from saliencymixplus.data import SaliencyDataset, load_split
    from saliencymixplus.transforms import train_transform

    raw = load_split(args.dataset, data_dir, "train")
    verify_cache(cache_path, expect=raw)  # as train.py does on every start
    variants = {
        "no cache": SaliencyDataset(raw, train_transform(args.dataset)),
        "cache (in memory)": SaliencyDataset(raw, train_transform(args.dataset),
                                             SaliencyCache(cache_path, expect=raw, in_memory=True)),
        "cache (HDF5, per item)": SaliencyDataset(raw, train_transform(args.dataset),
                                                  SaliencyCache(cache_path, expect=raw, in_memory=False)),
    }
    loaders = {k: make_loader(ds, args.batch, args.workers, seed=0) for k, ds in variants.items()}
    for loader, _ in loaders.values():  # warm-up: workers started, files in the page cache
        time_epoch(loader)
    names = list(loaders)
    rates, cpu = {k: [] for k in names}, {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            loader, g = loaders[k]
            g.manual_seed(1000 + r)  # the same shuffle in every variant of this round
            dt, c, n = time_epoch(loader)
            rates[k].append(n / dt)
            cpu[k].append(c / n * 1e3)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {rates[k][-1]:.0f}" for k in names)
              + f" images/s (load {load_average()})", file=sys.stderr)
    loaders.clear()  # their persistent workers exit
    rows = ["| variant | images/s, median | spread | x no cache (median of per-round ratios) | ratio spread "
            "| CPU ms / image (workers + main) | x no cache |",
            "|---|---|---|---|---|---|---|"]
    for k in names:
        med, lo, hi = spread(rates[k])
        rmed, rlo, rhi = spread(np.asarray(rates[k]) / np.asarray(rates["no cache"]))
        cmed = spread(cpu[k])[0]
        crat = spread(np.asarray(cpu["no cache"]) / np.asarray(cpu[k]))[0]  # > 1: cheaper than no cache
        rows.append(f"| {k} | {med:.0f} | {lo:.0f}-{hi:.0f} | {rmed:.3f} | {rlo:.3f}-{rhi:.3f} "
                    f"| {cmed:.2f} | {crat:.3f} |")
    return rows


def _two_step_map(image_size, stored, geo):
    """The map's share of the path before the composed one, for reference only: the stored map as
    float, resized to the raw image's size, then replaying the Pet steps (resize 256x256,
    crop-and-resize to 224, flip; antialiased, as the image) with the crop ``geo`` shows."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    s = torch.from_numpy(stored).float().mul_(1 / 255)[None]
    s = TF.resize(s, list(image_size), antialias=True)
    s = TF.resize(s, [256, 256], antialias=True)
    t, l, b, r = (round(v * 256) for v in geo.box)
    s = TF.resized_crop(s, t, l, b - t, r - l, list(geo.size), antialias=True)
    return (TF.horizontal_flip(s) if geo.flip else s)[0].clamp_(0, 1)


def step_table(data_dir: Path, cache_path: Path, args) -> list[str]:
    """Per-item time of each step, in this process with one thread (as in a DataLoader worker)."""
    import torch

    from saliencymixplus.cache import SaliencyCache, verify_cache
    from saliencymixplus.data import SaliencyDataset, load_split
    from saliencymixplus.transforms import resample_saliency, train_transform

    torch.set_num_threads(1)
    raw = load_split("oxford_pet", data_dir, "train")
    mem = SaliencyCache(cache_path, expect=raw, in_memory=True)
    verify_cache(cache_path, expect=raw)
    disk = SaliencyCache(cache_path, expect=raw, in_memory=False)
    tmp = tempfile.TemporaryDirectory()
    copy = Path(tmp.name) / cache_path.name  # a file this process has not verified
    shutil.copyfile(cache_path, copy)
    checked = SaliencyCache(copy, expect=raw, in_memory=False)
    assert checked.reads_checked and not disk.reads_checked
    tf = train_transform("oxford_pet")
    n = min(len(raw), args.items)
    images = [raw.image(i) for i in range(n)]
    geos = []
    for i in range(n):
        torch.manual_seed(i)
        geos.append(tf.apply_image(images[i])[1])
    uint8_images = [tf.apply_image(images[i])[0] for i in range(n)]
    plain = SaliencyDataset(raw, tf)
    cached = SaliencyDataset(raw, tf, mem)
    cached_disk = SaliencyDataset(raw, tf, disk)
    disk.stored(0), checked.stored(0)  # open the handles, as a worker does on its first item

    steps = {
        "decode JPEG (`raw.image`)": lambda i: raw.image(i),
        "image: resize, crop, flip (`apply_image`)": lambda i: tf.apply_image(images[i]),
        "image: to float, normalise": lambda i: tf.normalize(uint8_images[i]),
        "map: read (in memory)": lambda i: mem.stored(i),
        "map: read (HDF5, each chunk's checksum)": lambda i: checked.stored(i),
        "map: read (HDF5, direct chunk read after `verify_cache`)": lambda i: disk.stored(i),
        "map: cut and resize (`resample_saliency`)": lambda i: resample_saliency(mem.stored(i), geos[i]),
        "map: the old path, for reference (to image size, 256, crop 224, flip)":
            lambda i: _two_step_map(images[i].shape[:2], mem.stored(i), geos[i]),
        "whole item, no cache": lambda i: plain[i],
        "whole item, cache in memory": lambda i: cached[i],
        "whole item, cache HDF5": lambda i: cached_disk[i],
    }
    times = {k: [] for k in steps}
    for rep in range(args.step_repeats):  # interleaved: each step once per image, round by round
        for i in range(n):
            for k, f in steps.items():
                t = time.perf_counter()
                f(i)
                times[k].append(time.perf_counter() - t)
    rows = ["| step (per item, one thread) | median ms | p10-p90 ms |", "|---|---|---|"]
    for k, v in times.items():
        med, lo, hi = spread(np.asarray(v[n:] if args.step_repeats > 1 else v) * 1e3)
        rows.append(f"| {k} | {med:.3f} | {lo:.3f}-{hi:.3f} |")
    checked.close()
    tmp.cleanup()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("oxford_pet", "imagefolder"), default="oxford_pet",
                   help="the folder's format: Oxford-IIIT Pet's (the published Pet pipeline) or a torchvision "
                        "ImageFolder tree (the ImageNet-style recipe, 96x96 maps)")
    p.add_argument("--classes", type=int, default=10, help="--dataset imagefolder: class folders")
    p.add_argument("--n", type=int, default=400, help="JPEGs in the folder")
    p.add_argument("--size", default="375x500", help="HxW of the JPEGs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (one epoch per variant each)")
    p.add_argument("--items", type=int, default=100, help="images timed step by step")
    p.add_argument("--step-repeats", type=int, default=3)
    p.add_argument("--method", default="spectral_residual",
                   help="saliency of the cache (the loader's cost does not depend on it; "
                        "spectral_residual builds fastest)")
    p.add_argument("--data-dir", default=None, help="reuse this folder (and its train.h5)")
    p.add_argument("--no-steps", action="store_true", help="only the DataLoader table")
    p.add_argument("--quick", action="store_true", help="tiny sizes, two rounds (CI)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.size, args.rounds, args.batch, args.items, args.step_repeats = 24, "60x80", 2, 4, 8, 1
        args.workers = min(args.workers, 1)
    try:
        from saliencymixplus.precompute_command import parse_resolution

        size = parse_resolution(args.size)
    except ValueError as e:
        print(f"bench_loader.py: error: --size: {e}", file=sys.stderr)
        return 2

    from saliencymixplus.precompute import build_cache

    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        pet = args.dataset == "oxford_pet"
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / ("pet" if pet else "tree")
        if not (data_dir / "annotations" / "trainval.txt" if pet else data_dir / "train").exists():
            t = time.perf_counter()
            if pet:
                make_pet_folder(data_dir, args.n, size)
            else:
                make_image_folder(data_dir, args.n, size, args.classes)
            print(f"wrote {args.n} JPEGs of {size[0]}x{size[1]} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        cache_path = data_dir / "train.h5"
        build_cache(args.dataset, data_dir, "train", args.method, cache_path, workers=args.workers,
                    progress=False, log=lambda *a: None)
        import h5py

        with h5py.File(cache_path, "r") as f:
            ds = f["saliency"]
            desc = f"{ds.shape[0]} maps {ds.shape[1]}x{ds.shape[2]} {ds.dtype}"
        kind = "Oxford-Pet-format folder" if pet else f"ImageFolder tree ({args.classes} classes)"
        print(f"\n{kind}: {args.n} JPEGs {size[0]}x{size[1]}; cache: {desc} ({args.method}); "
              f"{args.workers} workers, batch {args.batch}, {args.rounds} rounds\n")
        print("\n".join(loader_table(data_dir, cache_path, args)))
        if not args.no_steps and pet:
            print()
            print("\n".join(step_table(data_dir, cache_path, args)))
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
