"""Time the saliency precompute tool on a CIFAR-100-sized training split (50,000 32x32 images).

Writes a generated ``cifar-100-python`` folder (structured images: a blob on a gradient, in the
real pickled format) to a temporary directory, then runs ``saliencymixplus-precompute`` on it
end to end (loading, all cores, writing, atomic rename) and prints the time and file size.

    PYTHONPATH=. python benchmarks/bench_precompute.py [--n 50000] [--method fine_grained] [--workers N]
"""

from __future__ import annotations

import argparse
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
    args = p.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
