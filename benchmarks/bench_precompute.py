"""Time the saliency precompute tool end to end (loading, computing, writing, atomic rename).

Default: a CIFAR-100-sized training split (50,000 32x32 images) in a generated
``cifar-100-python`` folder (structured images: a blob on a gradient, in the real pickled format),
built by one tool process; prints the time and file size.

``--jpegs N`` (issue 22 point 7): a Pet-format folder of N JPEGs of ``--size`` (375x500), textured
so that they weigh about what ImageNet's do, cached at ``--resolution`` (96x96, the large-set
default) four ways, each timed from the first process's start to the finished (joined) cache:
``1 process`` (``--workers 0``: one core), ``1 process, pool`` (the default: a worker per core),
``2 --shard processes`` (``--shard 0/2`` and ``1/2`` at once, ``--workers 0`` each, then
``--join 2``) and ``torchrun --nproc_per_node 2`` (ranks shard, rank 0 joins); every cache is
checked equal to the first byte for byte. Then the ImageNet estimate, with its arithmetic.

    PYTHONPATH=. python benchmarks/bench_precompute.py [--n 50000] [--method fine_grained] [--workers N]
    PYTHONPATH=. python benchmarks/bench_precompute.py --jpegs 2000 [--size 375x500] [--resolution 96x96]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--method", default="fine_grained")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--jpegs", type=int, default=0, help="time a Pet-format folder of this many JPEGs instead")
    p.add_argument("--size", default="375x500", help="HxW of the JPEGs (--jpegs)")
    p.add_argument("--resolution", default="96x96", help="stored map resolution (--jpegs)")
    p.add_argument("--block-size", type=int, default=16, help="images per block (--jpegs)")
    p.add_argument("--join-maps", type=int, default=0,
                   help="time joining (and verifying) this many random 96x96 maps in 8 shards instead")
    args = p.parse_args()
    if args.join_maps:
        return bench_join(args.join_maps)
    if args.jpegs:
        return bench_folder(args)

    from fixtures_data import make_cifar100_folder

    from saliencymixplus.demo import generate_demo
    from saliencymixplus.precompute import main as precompute

    with tempfile.TemporaryDirectory() as tmp:
        images = generate_demo(args.n, seed=123)[0]  # natural-ish 32x32 content, made in ~1 s
        make_cifar100_folder(tmp, n_test=10, images=np.ascontiguousarray(images))
        out = Path(tmp) / "train.h5"
        argv = ["--dataset", "cifar100", "--data-dir", tmp, "--split", "train", "--method", args.method,
                "--out", str(out), "--no-progress"]
        if args.workers is not None:
            argv += ["--workers", str(args.workers)]
        t = time.perf_counter()
        rc = precompute(argv)
        dt = time.perf_counter() - t
        print(f"{args.n} images, {args.method}: {dt:.1f} s end to end ({args.n / dt:,.0f} images/s), "
              f"{out.stat().st_size / 1e6:.1f} MB")
    return rc


IMAGENET_TRAIN = 1_281_167  # images
IMAGENET_PIXELS = 400 * 350  # the average train image, about (benchmarks figure it at this size)
ROOT = Path(__file__).resolve().parent.parent


def make_jpeg_folder(root: Path, n: int, h: int, w: int, seed: int = 0) -> float:
    """A Pet-format folder (``images/*.jpg``, ``annotations/trainval.txt``, a 2-image test list)
    of ``n`` JPEGs ``h x w`` (quality 90; a blob on a gradient with fine noise, so that a file
    weighs about what a photo does). Returns the mean file size in bytes."""
    import cv2
    from fixtures_data import PET_BREEDS, smooth_images

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    base = smooth_images(rng, 16, h, w).astype(np.int16)
    lines, sizes = [], []
    for i in range(n + 2):
        cls = i % len(PET_BREEDS)
        name = f"{PET_BREEDS[cls]}_{i}"
        img = np.clip(base[i % 16] + rng.integers(-24, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        path = root / "images" / f"{name}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        sizes.append(path.stat().st_size)
        lines.append(f"{name} {cls + 1} 1 {cls + 1}")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines[:n]) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(lines[n:]) + "\n")
    return float(np.mean(sizes[:n]))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _timed(commands: list[list[str]], cwd: Path) -> tuple[float, float]:
    """``(wall, cpu)``: seconds from starting every command at once to the last one's end (each
    must succeed), and the CPU seconds (user + system) they and their children used."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for c, proc in zip(commands, procs):
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{' '.join(c)} failed ({proc.returncode}):\n{out[-2000:]}{err[-2000:]}")
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_join(n: int, shards: int = 8, res=(96, 96)) -> int:
    """Time :func:`~saliencymixplus.cache.join_cache` and :func:`~saliencymixplus.cache.verify_cache`
    of ``n`` random uint8 maps in ``shards`` shard files (each reads every map once), and scale to
    ImageNet's cache."""
    from saliencymixplus.cache import CacheWriter, join_cache, verify_cache
    from saliencymixplus.precompute_command import shard_path, shard_range

    rng = np.random.default_rng(0)
    attrs = dict(dataset="imagenet", split="train", fingerprint="f", method="fine_grained", resolution=res)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "j.h5"
        for k in range(shards):
            a, b = shard_range(n, 1024, k, shards)
            with CacheWriter(shard_path(out, k, shards), count=b - a, block_size=1024,
                             extra_attrs=dict(shard=k, num_shards=shards, start=a, stop=b, split_count=n,
                                              postprocess="top=0.2,power=2"), **attrs) as w:
                for s in range(0, b - a, 1024):
                    w.write(s, rng.integers(0, 256, (min(1024, b - a - s), *res), dtype=np.uint8))
                w.finalize()
        gb = n * (res[0] * res[1] + 4) / 1e9
        t = time.perf_counter()
        join_cache(out, shards, attrs={**attrs, "count": n, "postprocess": "top=0.2,power=2"})
        t_join = time.perf_counter() - t
        t = time.perf_counter()
        verify_cache(out)
        t_verify = time.perf_counter() - t
    full = IMAGENET_TRAIN * (res[0] * res[1] + 4) / 1e9
    print(f"join of {n} maps {res[0]}x{res[1]} ({gb:.2f} GB) in {shards} shards: {t_join:.2f} s = {gb / t_join:.2f} "
          f"GB/s; verify_cache of the joined cache {t_verify:.2f} s = {gb / t_verify:.2f} GB/s; ImageNet's "
          f"{full:.2f} GB: join ~{full / (gb / t_join):.0f} s, verify ~{full / (gb / t_verify):.0f} s "
          f"(files in the page cache)")
    return 0


def bench_folder(args) -> int:
    from saliencymixplus.cache import SaliencyCache
    from saliencymixplus.precompute_command import parse_resolution

    h, w = parse_resolution(args.size)
    n = args.jpegs
    tool = [sys.executable, str(ROOT / "tools" / "precompute_saliency.py")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mean_bytes = make_jpeg_folder(tmp / "pet", n, h, w)

        def cmd(out: str, *extra) -> list[str]:
            return [*tool, "--dataset", "oxford_pet", "--data-dir", str(tmp / "pet"), "--split", "train",
                    "--method", args.method, "--resolution", args.resolution, "--block-size",
                    str(args.block_size), "--no-progress", "--out", str(tmp / out), *extra]

        runs = {}
        runs["1 process (--workers 0)"] = ("one.h5", _timed([cmd("one.h5", "--workers", "0")], tmp))
        runs["1 process, pool (default workers)"] = ("pool.h5", _timed([cmd("pool.h5")], tmp))
        t_shards = _timed([cmd("sh.h5", "--workers", "0", "--shard", f"{k}/2") for k in range(2)], tmp)
        t_join = _timed([cmd("sh.h5", "--join", "2")], tmp)
        runs["2 --shard processes (--workers 0 each) + --join"] = ("sh.h5", tuple(np.add(t_shards, t_join)))
        runs["torchrun --nproc_per_node 2"] = ("tr.h5", _timed(
            [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              *cmd("tr.h5")[1:]]], tmp))
        want = SaliencyCache(tmp / "one.h5").read_all().tobytes()
        print(f"{n} JPEGs {h}x{w} (mean {mean_bytes / 1e3:.0f} kB), {args.method}, stored {args.resolution}, "
              f"blocks of {args.block_size}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end")
        for name, (out, (dt, cpu)) in runs.items():
            same = SaliencyCache(tmp / out).read_all().tobytes() == want
            print(f"  {name:<50s} {dt:7.1f} s  {n / dt:7.1f} images/s  CPU {cpu:7.1f} s = {1e3 * cpu / n:5.1f} ms "
                  f"an image  maps equal to 1 process: {same}")
        print(f"  (the join alone, a process loading the split and reading every map: {t_join[0]:.2f} s, "
              f"CPU {t_join[1]:.2f} s)")
        # CPU time per image does not depend on what else the machine runs; wall time does.
        cpu1 = runs["1 process (--workers 0)"][1][1] / n
        cpu_in = cpu1 * IMAGENET_PIXELS / (h * w)  # the cost grows with the pixels
        one_machine = IMAGENET_TRAIN * cpu_in / 16
        print(f"ImageNet estimate: {1e3 * cpu1:.1f} CPU ms an image at {h}x{w} x {IMAGENET_PIXELS}/{h * w} pixels "
              f"= {1e3 * cpu_in:.1f} ms at ~400x350; {IMAGENET_TRAIN:,} x {cpu_in:.4f} s / 16 cores = "
              f"{one_machine:,.0f} s = {one_machine / 3600:.2f} h on one 16-core machine (if its 16 cores scale as "
              f"the 2 here did); on 8 such machines {one_machine / 8:,.0f} s = {one_machine / 8 / 3600:.2f} h, "
              f"plus the join")
    return 0


if __name__ == "__main__":
    sys.exit(main())
