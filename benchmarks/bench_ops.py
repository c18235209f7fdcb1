"""Time per batch of each mixer: compiled fused op vs pure-PyTorch reference vs the published
per-sample loop vs torchvision's CutMix, on CPU and (when there is one) CUDA.

Implementations, each called as one mixer step on a batch already on the device
(``images Tensor[B, 3, H, W]``, ``labels``, ``saliency float32[B, H, W]``):

* ``fused``: ``mixer.mix(...)`` with the compiled ops (``torch.ops.saliencymixplus``);
* ``reference``: the same call with the compiled ops switched off, so the ``*_reference``
  pure-PyTorch ops run;
* ``published``: a per-sample Python/numpy loop of the published algorithm (docs/design.md):
  saliency to the host as numpy, for each image the box from its source's map
  (peak: argmax; window: a numpy summed-area table), the paste as a tensor slice, the label
  weights from numpy sums, then the weights back to the device. CutMix's published code is one
  numpy box per batch and one slice assignment; SaliencyMix's computes OpenCV fine-grained
  saliency of one source image per batch on the host (as published) and pastes one box;
* ``torchvision``: ``torchvision.transforms.v2.CutMix`` (CutMix row only).

CPU: wall time per call (``time.perf_counter``). CUDA: device events around each call. Both:
the ratio to the memory-bandwidth floor, the bytes the op must move (read the batch, write the
mixed batch, read the saliency) over the rate of a measured copy between two allocated buffers
on the device (on a shared CPU the rate also says how busy the machine was). The table
gives the median and the 10th-90th percentile spread over the repeats, after warm-up.

``--threads`` measures instead what a busy machine does on the CPU: a SaliencyMix+ mixer call
(the fused op with its draws and targets) on a CIFAR batch with torch's default threads
against one thread, interleaved call by call, on an idle machine and while another process
keeps every core busy.

``--targets`` measures the two CPU targets of the kernels, each as a ratio of two calls taking
turns round by round in one run (so a busy machine slows both alike), on a CIFAR batch
(128x3x32x32 float32 images, float32 maps, window boxes):

* one thread: the fused op (``ops.saliency_mix_plus(..., check=False)``; each call's box size
  from the next of 64 seeded draws of lam ~ Beta(1, 1), one per batch) over ``images.clone()``
  (target <= 4);
* torch's default threads: the published per-sample numpy loop over the fused op (target >= 10),
  and over a whole SaliencyMix+ window mixer call (its draws, checks and targets too).

    PYTHONPATH=. python benchmarks/bench_ops.py                   # CPU (and CUDA if present)
    PYTHONPATH=. python benchmarks/bench_ops.py --device cuda --repeats 200
    PYTHONPATH=. python benchmarks/bench_ops.py --threads         # CPU: default threads vs one, idle and busy
    PYTHONPATH=. python benchmarks/bench_ops.py --targets         # CPU: fused op / clone, published / mixer
    PYTHONPATH=. python benchmarks/bench_ops.py --quick           # CI: tiny sizes, 2 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saliencymixplus import _extension, ops  # noqa: E402
from saliencymixplus.mix import CutMix, SaliencyMix, SaliencyMixPlus, mix_targets  # noqa: E402

NUM_CLASSES = 100
SIZES = {  # name: (batch, channels, height, width, image dtype, saliency dtype)
    "cpu": {
        "CIFAR 128x3x32x32 fp32, f32 maps": (128, 3, 32, 32, torch.float32, torch.float32),
        "CIFAR 128x3x32x32 fp32, u8 maps": (128, 3, 32, 32, torch.float32, torch.uint8),
        "ImageNet 256x3x224x224 fp32, f32 maps": (256, 3, 224, 224, torch.float32, torch.float32),
    },
    "cuda": {
        "CIFAR 128x3x32x32 fp32, f32 maps": (128, 3, 32, 32, torch.float32, torch.float32),
        "ImageNet 256x3x224x224 fp32, f32 maps": (256, 3, 224, 224, torch.float32, torch.float32),
        "ImageNet 256x3x224x224 fp32, u8 maps": (256, 3, 224, 224, torch.float32, torch.uint8),
        "ImageNet 256x3x224x224 bf16, f32 maps": (256, 3, 224, 224, torch.bfloat16, torch.float32),
        "ImageNet 256x3x224x224 bf16, u8 maps": (256, 3, 224, 224, torch.bfloat16, torch.uint8),
    },
}
QUICK_SIZES = {
    "tiny 8x3x32x32 fp32, f32 maps": (8, 3, 32, 32, torch.float32, torch.float32),
    "tiny 4x3x64x64 bf16, u8 maps": (4, 3, 64, 64, torch.bfloat16, torch.uint8),
}
MIXERS = ("CutMix", "SaliencyMix", "SaliencyMix+ window", "SaliencyMix+ peak")


@contextlib.contextmanager
def reference_ops():
    """Run the ``*_reference`` pure-PyTorch ops instead of the compiled ones."""
    saved = _extension.has_ops
    _extension.has_ops = lambda: False
    try:
        yield
    finally:
        _extension.has_ops = saved


def make_mixer(name: str, gen: torch.Generator):
    if name == "CutMix":
        return CutMix(NUM_CLASSES, generator=gen)
    if name == "SaliencyMix":
        return SaliencyMix(NUM_CLASSES, generator=gen)
    return SaliencyMixPlus(NUM_CLASSES, box=name.split()[-1], generator=gen)


# ------------------------------------------------------------- the published per-sample loops


def _cut_size(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, float]:
    lam = rng.beta(1.0, 1.0)
    return int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam)), lam


def published_cutmix(x, y, s, rng):
    """Yun et al.'s train.py: one numpy box per batch, one slice assignment."""
    b, _, h, w = x.shape
    ch, cw, _ = _cut_size(h, w, rng)
    cy, cx = rng.integers(h), rng.integers(w)
    y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    perm = torch.randperm(b, device=x.device)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return x, mix_targets(y, perm, torch.full((b,), lam, device=x.device), NUM_CLASSES)


def published_saliencymix(x, y, s, rng):
    """Uddin et al.: OpenCV fine-grained saliency of one source image per batch, one peak box."""
    import cv2

    b, _, h, w = x.shape
    ch, cw, _ = _cut_size(h, w, rng)
    perm = torch.randperm(b, device=x.device)
    img = x[perm[0]].float().cpu().numpy().transpose(1, 2, 0)
    img = np.ascontiguousarray(np.clip((img - img.min()) / (np.ptp(img) + 1e-12) * 255, 0, 255).astype(np.uint8))
    _, sal = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(img)
    py, px = np.unravel_index(np.argmax(sal), sal.shape)
    y1, y2 = np.clip(py - ch // 2, 0, h), np.clip(py + ch // 2, 0, h)
    x1, x2 = np.clip(px - cw // 2, 0, w), np.clip(px + cw // 2, 0, w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return x, mix_targets(y, perm, torch.full((b,), lam, device=x.device), NUM_CLASSES)


def _window_numpy(sal: np.ndarray, ch: int, cw: int) -> tuple[int, int, int, int]:
    h, w = sal.shape
    sat = np.zeros((h + 1, w + 1))
    sat[1:, 1:] = sal.cumsum(0).cumsum(1)
    sums = sat[ch:, cw:] - sat[:h + 1 - ch, cw:] - sat[ch:, :w + 1 - cw] + sat[:h + 1 - ch, :w + 1 - cw]
    y1, x1 = np.unravel_index(np.argmax(sums), sums.shape)
    return y1, x1, y1 + ch, x1 + cw


def _published_plus(x, y, s, rng, box: str):
    """SaliencyMix+ as published: saliency to the host, then a Python loop over the batch."""
    b, _, h, w = x.shape
    ch, cw, _ = _cut_size(h, w, rng)
    perm = torch.randperm(b, device=x.device)
    sal = s.float().cpu().numpy()
    perm_np = perm.cpu().numpy()
    out = x.clone()
    lam = np.empty(b)
    for i in range(b):
        src = sal[perm_np[i]]
        if box == "peak":
            py, px = np.unravel_index(np.argmax(src), src.shape)
            y1, y2 = np.clip(py - ch // 2, 0, h), np.clip(py + ch // 2, 0, h)
            x1, x2 = np.clip(px - cw // 2, 0, w), np.clip(px + cw // 2, 0, w)
        else:
            y1, x1, y2, x2 = _window_numpy(src, ch, cw)
        out[i, :, y1:y2, x1:x2] = x[perm_np[i], :, y1:y2, x1:x2]
        tgt = sal[i]
        tt, ts = tgt.sum(), src.sum()
        a = (tt - tgt[y1:y2, x1:x2].sum()) / tt if tt > 0 else 0.0
        bb = src[y1:y2, x1:x2].sum() / ts if ts > 0 else 0.0
        lam[i] = a / (a + bb) if a + bb > 0 else 1 - (y2 - y1) * (x2 - x1) / (h * w)
    lam_t = torch.as_tensor(lam, dtype=torch.float32).to(x.device)
    return out, mix_targets(y, perm, lam_t, NUM_CLASSES)


PUBLISHED = {
    "CutMix": published_cutmix,
    "SaliencyMix": published_saliencymix,
    "SaliencyMix+ window": lambda x, y, s, rng: _published_plus(x, y, s, rng, "window"),
    "SaliencyMix+ peak": lambda x, y, s, rng: _published_plus(x, y, s, rng, "peak"),
}


# ------------------------------------------------------------------------------ timing


def time_calls(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn()``: wall time on CPU, device events on CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def copy_rate(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Bytes per second a copy between two allocated buffers moves (read + write), median of 20."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), device, 3, 20)
    return 2 * nbytes / statistics.median(times)


def floor_bytes(b: int, c: int, h: int, w: int, dtype: torch.dtype, saliency_dtype: torch.dtype) -> int:
    """What a mixer must move at least: read the batch, write the mixed batch, read the saliency."""
    return 2 * b * c * h * w * dtype.itemsize + b * h * w * saliency_dtype.itemsize


def spread(times: list[float]) -> tuple[float, float, float]:
    q = np.quantile(np.asarray(times), [0.1, 0.5, 0.9])
    return float(q[1]), float(q[0]), float(q[2])


def bench(device: torch.device, sizes: dict, warmup: int, repeats: dict, only=None) -> list[tuple]:
    rows = []
    rate = copy_rate(device, 1 << 30 if device.type == "cuda" else 1 << 28)
    print(f"measured {device.type} copy rate: {rate / 1e9:.1f} GB/s (read + write)")
    import torchvision.transforms.v2 as v2

    for size_name, (b, c, h, w, dtype, saliency_dtype) in sizes.items():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(b, c, h, w, generator=g).to(device=device, dtype=dtype)
        y = torch.randint(NUM_CLASSES, (b,), generator=g).to(device)
        s = torch.rand(b, h, w, generator=g)
        s = (s * 255).to(torch.uint8) if saliency_dtype == torch.uint8 else s.to(saliency_dtype)
        s = s.to(device)
        reps = repeats[size_name]
        floor = floor_bytes(b, c, h, w, dtype, saliency_dtype) / rate if rate else None
        for mixer_name in MIXERS:
            mixer = make_mixer(mixer_name, torch.Generator().manual_seed(1))
            args = (x, y) if mixer_name == "CutMix" else (x, y, s)
            impls = {"fused": lambda: mixer.mix(*args), "reference": lambda: mixer.mix(*args)}
            rng = np.random.default_rng(0)
            impls["published"] = lambda fn=PUBLISHED[mixer_name]: fn(x, y, s, rng)
            if mixer_name == "CutMix":
                tv = v2.CutMix(num_classes=NUM_CLASSES)
                impls["torchvision v2.CutMix"] = lambda: tv(x, y)
            for impl, fn in impls.items():
                if only and impl not in only:
                    continue
                ctx = reference_ops() if impl == "reference" else contextlib.nullcontext()
                with ctx:
                    med, lo, hi = spread(time_calls(fn, device, warmup, reps))
                ratio = med / floor if floor else None
                rows.append((device.type, size_name, mixer_name, impl, med, lo, hi, reps, ratio))
                print(f"  {device.type} {size_name} {mixer_name} {impl}: {med * 1e3:.3f} ms", file=sys.stderr,
                      flush=True)
    return rows


# ------------------------------------------------------------- threads on a busy machine

_BUSY = "import torch, os; torch.set_num_threads(os.cpu_count()); a = torch.rand(1024, 1024)\nwhile True: a @ a"


def bench_threads(repeats: int, rounds: int = 5) -> list[tuple]:
    """A SaliencyMix+ window mixer call on a CIFAR batch: default threads vs one thread, call by
    call, idle and with another process keeping every core busy (a torch matmul on all cores)."""
    g = torch.Generator().manual_seed(0)
    x, s = torch.rand(128, 3, 32, 32, generator=g), torch.rand(128, 32, 32, generator=g)
    y = torch.randint(NUM_CLASSES, (128,), generator=g)
    mixer = SaliencyMixPlus(NUM_CLASSES, generator=torch.Generator().manual_seed(1))
    default = torch.get_num_threads()

    def call():
        mixer.mix(x, y, s)

    rows = []
    for load in ("idle", "busy"):
        busy = subprocess.Popen([sys.executable, "-c", _BUSY]) if load == "busy" else None
        try:
            if busy:
                time.sleep(2.0)  # let it take the cores
            times = {default: [], 1: []}
            for _ in range(rounds):
                for threads in (default, 1):
                    torch.set_num_threads(threads)
                    times[threads] += time_calls(call, torch.device("cpu"), 3, repeats // rounds)
        finally:
            torch.set_num_threads(default)
            if busy:
                busy.kill()
                busy.wait()
        one = statistics.median(times[1])
        for threads in (default, 1):
            med, lo, hi = spread(times[threads])
            rows.append((load, threads, med, lo, hi, len(times[threads]), med / one))
            print(f"  {load}, {threads} threads: {med * 1e3:.3f} ms", file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------ the CPU targets


def interleaved(fns: dict, rounds: int, calls: int, warmup: int = 3) -> dict:
    """Seconds per call of each of ``fns``, ``rounds`` times ``calls`` calls each, the
    functions taking turns round by round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += time_calls(fn, torch.device("cpu"), warmup, calls)
    return times


def bench_targets(rounds: int, calls: int) -> list[tuple]:
    """The fused op on one thread over ``images.clone()``, and the published per-sample loop over
    a SaliencyMix+ window mixer call with torch's default threads; CIFAR batch, float32 maps."""
    g = torch.Generator().manual_seed(0)
    b, c, h, w = 128, 3, 32, 32
    x, s = torch.rand(b, c, h, w, generator=g), torch.rand(b, h, w, generator=g)
    y = torch.randint(NUM_CLASSES, (b,), generator=g)
    perm = torch.randperm(b, generator=g)
    lams = torch.rand(64, generator=g, dtype=torch.float64)  # Beta(1, 1): one lam per batch, as the mixers draw
    sizes = itertools.cycle([ops.box_sizes(lam.expand(b), h, w) for lam in lams])
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = interleaved({"clone": lambda: x.clone(),
                           "fused op": lambda: ops.saliency_mix_plus(x, s, perm, *next(sizes), check=False)},
                          rounds, calls)
    finally:
        torch.set_num_threads(default)
    mixer = make_mixer("SaliencyMix+ window", torch.Generator().manual_seed(1))
    rng = np.random.default_rng(0)
    many = interleaved({"mixer call": lambda: mixer.mix(x, y, s),
                        "fused op": lambda: ops.saliency_mix_plus(x, s, perm, *next(sizes), check=False),
                        "published loop": lambda: PUBLISHED["SaliencyMix+ window"](x, y, s, rng)},
                       rounds, max(1, calls // 4))
    rows = []
    for threads, times, num, den, target in ((1, one, "fused op", "clone", "<= 4"),
                                             (default, many, "published loop", "fused op", ">= 10"),
                                             (default, many, "published loop", "mixer call", "")):
        n, d = statistics.median(times[num]), statistics.median(times[den])
        rows.append((threads, num, den, n, d, len(times[num]), n / d, target))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", action="append", choices=("cpu", "cuda"),
                   help="where to run (repeatable; default: cpu, and cuda when available)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per case (default: CPU 50 CIFAR / 10 ImageNet; CUDA 200)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="implementations to run (fused reference published ...)")
    p.add_argument("--threads", action="store_true",
                   help="CPU only: the fused op with default threads vs one, on an idle and on a busy machine")
    p.add_argument("--targets", action="store_true",
                   help="CPU only: fused op / images.clone() on one thread, published loop / mixer call with "
                        "the default threads (CIFAR batch), interleaved")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (CI)")
    args = p.parse_args(argv)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.quick:
        args.warmup = 1
    info = _extension.extension_info()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch threads {torch.get_num_threads()}, compiled ops: cpu={info['cpu']} cuda={info['cuda']}")
    if args.targets:
        start = os.getloadavg()[0]
        rows = bench_targets(rounds=2 if args.quick else 10, calls=args.repeats or (4 if args.quick else 40))
        print(f"load (1-minute average): {start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
              f"{os.cpu_count()} cpus")
        print("\n| threads | this | over that | this median ms | that median ms | calls each | ratio | target |")
        print("|---|---|---|---|---|---|---|---|")
        for threads, num, den, n, d, calls, ratio, target in rows:
            print(f"| {threads} | {num} | {den} | {n * 1e3:.3f} | {d * 1e3:.3f} | {calls} | {ratio:.2f} | {target} |")
        return 0
    if args.threads:
        rows = bench_threads(args.repeats or (10 if args.quick else 200), rounds=2 if args.quick else 5)
        print("\n| machine | threads | median ms | p10-p90 ms | calls | x one thread |")
        print("|---|---|---|---|---|---|")
        for load, threads, med, lo, hi, n, rel in rows:
            print(f"| {load} | {threads} | {med * 1e3:.3f} | {lo * 1e3:.3f}-{hi * 1e3:.3f} | {n} | {rel:.2f} |")
        return 0
    rows = []
    for dev in devices:
        device = torch.device(dev)
        sizes = QUICK_SIZES if args.quick else SIZES[dev]
        if device.type == "cuda":
            if not torch.cuda.is_available():
                print("cuda: not available, skipped")
                continue
            print(f"cuda: {torch.cuda.get_device_name(device)}")
        repeats = {k: args.repeats or (2 if args.quick else 200 if dev == "cuda" else 50 if v[2] <= 64 else 10)
                   for k, v in sizes.items()}
        rows += bench(device, sizes, args.warmup, repeats, args.only)
    print("\n| device | size | mixer | implementation | median ms | p10-p90 ms | repeats | x fused | x bandwidth floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    fused = {(r[0], r[1], r[2]): r[4] for r in rows if r[3] == "fused"}
    for dev, size, mixer, impl, med, lo, hi, reps, ratio in rows:
        rel = med / fused[(dev, size, mixer)] if (dev, size, mixer) in fused else float("nan")
        print(f"| {dev} | {size} | {mixer} | {impl} | {med * 1e3:.3f} | {lo * 1e3:.3f}-{hi * 1e3:.3f} | {reps} | "
              f"{rel:.2f} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
