"""What a saliency map costs a per-item torchvision v2 pipeline, beside the project's composed path.

One item = one Oxford-IIIT Pet training transform (resize 256x256, random-resized crop 224,
random horizontal flip, then the project's ``Normalize`` of the image) of a uint8 ``[3, 375, 500]``
image, as a DataLoader worker runs it (one thread for torch and OpenCV). Four ways:

* **image alone**: ``v2.Compose`` of those steps on the image;
* **image + Saliency**: the same ``v2.Compose`` called as ``pipeline(image, Saliency(map,
  canvas_size=(375, 500)))``, with the map as the cache stores it (uint8 256x256);
* **image + Saliency at image size**: the map first resized to 375x500, then ``Saliency(map)``
  (what a pipeline without ``canvas_size`` needs);
* **composed path**: ``transforms.train_transform("oxford_pet")`` (what ``train.py`` runs):
  the image through the same v2 functional ops, the map cut and resized once
  (``transforms.resample_saliency``).

Every way gets the same random draws (the global RNG seeded alike before each round). Rounds
are interleaved, the order rotating each round; a round times ``--items`` items of each way.
images/s is items over the round's wall time; CPU ms / image is this process's CPU time per
item, which other jobs on a shared machine disturb far less than wall time (the ratio column
uses it); both are medians over rounds.

    PYTHONPATH=. python benchmarks/bench_tv_pipeline.py [--rounds 7] [--items 200] [--quick]

Prints a Markdown table, the machine's core count and load average first (on a shared machine,
rerun when the load is high).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import torch  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

from saliencymixplus.transforms import JointTransform, train_transform  # noqa: E402
from saliencymixplus.tv_tensors import Saliency  # noqa: E402


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_ways(args):
    """``{name: item(image, map) -> (image, map or None)}`` for the four ways."""
    composed = train_transform("oxford_pet")
    steps = [v2.Resize((args.resize, args.resize), antialias=True), v2.RandomResizedCrop(args.crop, antialias=True),
             v2.RandomHorizontalFlip()]
    composed = JointTransform(steps, composed.normalize.mean, composed.normalize.std)
    pipeline, normalize, canvas = v2.Compose(steps), composed.normalize, (args.height, args.width)

    def image_alone(image, m):
        return normalize(pipeline(image)), None

    def with_saliency(image, m):
        img, s = pipeline(image, Saliency(m, canvas_size=canvas))
        return normalize(img), s

    def at_image_size(image, m):
        img, s = pipeline(image, Saliency(F.resize_image(m[None], list(canvas), antialias=True)[0]))
        return normalize(img), s

    return {"image alone (v2)": image_alone, "image + Saliency (v2, canvas_size)": with_saliency,
            "image + Saliency resized to the image first (v2)": at_image_size,
            "image + map, composed path (train_transform)": composed}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--items", type=int, default=200, help="items of each way per round")
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--map", type=int, default=256, help="side of the stored uint8 map")
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds of 10 items (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.items, args.height, args.width, args.map, args.resize, args.crop = 2, 10, 30, 40, 16, 24, 20
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"nproc {os.cpu_count()}, load average {load_average()}; torch {torch.__version__}, "
          f"1 thread; {args.items} items x {args.rounds} rounds per way")

    g = torch.Generator().manual_seed(0)
    n = 16
    images = [torch.randint(0, 256, (3, args.height, args.width), dtype=torch.uint8, generator=g) for _ in range(n)]
    maps = [torch.randint(0, 256, (args.map, args.map), dtype=torch.uint8, generator=g) for _ in range(n)]
    ways = make_ways(args)
    for item in ways.values():  # warm-up
        item(images[0], maps[0])
    wall, cpu = {name: [] for name in ways}, {name: [] for name in ways}
    for r in range(args.rounds):
        names = list(ways)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            torch.manual_seed(r)
            t0, c0 = time.perf_counter(), time.process_time()
            for k in range(args.items):
                ways[name](images[k % n], maps[k % n])
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)

    base = statistics.median(cpu["image alone (v2)"])
    print(f"\n{args.height}x{args.width} uint8 images, {args.map}x{args.map} uint8 maps; resize "
          f"{args.resize}x{args.resize}, random-resized crop {args.crop}, flip, normalise\n")
    print("| pipeline | images/s | CPU ms / image | speed vs image alone (CPU) |")
    print("|---|---:|---:|---:|")
    for name in ways:
        c = statistics.median(cpu[name])
        print(f"| {name} | {args.items / statistics.median(wall[name]):.0f} | {1000 * c / args.items:.3f} | "
              f"{base / c:.2f}x |")
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
