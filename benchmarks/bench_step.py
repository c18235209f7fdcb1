"""Cost of mixing inside one training step of a ResNet, measured interleaved in one run.

Each step: take a batch from a set already on the device (images, labels and the cached
saliency maps, as ``train.py``'s device loader holds them), mix it, forward, soft-target
cross-entropy, backward, SGD step. Variants:

* ``none``: no mixing (plain cross-entropy on the batch);
* ``CutMix``, ``SaliencyMix``, ``SaliencyMix+ window``, ``SaliencyMix+ peak``: the mixers at
  prob 1, saliency from the cache (already on the device);
* ``published``: the published method: gradient saliency of the current model computed online
  (an extra forward + backward in eval mode, no parameter gradients), peak boxes, half-batch
  pairing, trained on half the batch.

Every round runs a block of ``--steps`` consecutive steps of each variant, in a rotating
order, so load changes hit all of them alike; the device is synchronised only at the ends of a
block, as in a training loop, so a variant that makes the host wait for the device inside a
step (a host sync) pays for it here as it would in training. Reported: the median time per
step and per *trained* sample, their ratios to ``none``, and the 10th-90th percentile of the
per-round ratio of step times.

    PYTHONPATH=. python benchmarks/bench_step.py                       # CPU defaults, ~8 min on 2 cores
    PYTHONPATH=. python benchmarks/bench_step.py --device cuda --rounds 30 --steps 10 --amp
    PYTHONPATH=. python benchmarks/bench_step.py --quick               # CI
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saliencymixplus.mix import CutMix, SaliencyMix, SaliencyMixPlus, one_hot, soft_target_cross_entropy  # noqa: E402
from saliencymixplus.models import build_model  # noqa: E402
from saliencymixplus.saliency import gradient_saliency  # noqa: E402

VARIANTS = ("none", "CutMix", "SaliencyMix", "SaliencyMix+ window", "SaliencyMix+ peak", "published")
# (label, model, image size, num classes, CPU batch, CUDA batch)
CONFIGS = (
    ("CIFAR ResNet-18 32x32", "resnet18", 32, 100, 32, 128),
    ("CIFAR ResNet-50 32x32", "resnet50", 32, 100, 16, 128),
    ("ResNet-50 224x224", "resnet50", 224, 1000, 4, 256),
)
QUICK_CONFIGS = (("quick resnet_tiny 32x32", "resnet_tiny", 32, 10, 8, 8),)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """One model, optimiser and device-resident data set; ``step(variant)`` trains one step."""

    def __init__(self, model_name: str, size: int, num_classes: int, batch: int, device: torch.device,
                 amp: bool, pool_batches: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.device, self.batch, self.num_classes = device, batch, num_classes
        self.model = build_model(model_name, num_classes, size).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        n = pool_batches * batch
        self.images = torch.randn(n, 3, size, size, generator=g).to(device)
        self.labels = torch.randint(num_classes, (n,), generator=g).to(device)
        self.saliency = torch.rand(n, size, size, generator=g).to(device)
        self.pool_batches, self.i = pool_batches, 0
        # a fresh autocast context per use (an autocast object is not a context factory)
        self.amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
        gen = torch.Generator().manual_seed(seed + 1)
        self.mixers = {
            "CutMix": CutMix(num_classes, generator=gen),
            "SaliencyMix": SaliencyMix(num_classes, generator=gen),
            "SaliencyMix+ window": SaliencyMixPlus(num_classes, box="window", generator=gen),
            "SaliencyMix+ peak": SaliencyMixPlus(num_classes, box="peak", generator=gen),
            "published": SaliencyMixPlus(num_classes, box="peak", pairing="half", generator=gen),
        }

    def _next(self):
        a = (self.i % self.pool_batches) * self.batch
        self.i += 1
        sl = slice(a, a + self.batch)
        x = self.images[sl]
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[sl], self.saliency[sl]

    def step(self, variant: str) -> int:
        """Train one step; returns the number of samples trained on."""
        x, y, s = self._next()
        if variant == "none":
            targets = one_hot(y, self.num_classes)
        elif variant == "CutMix":
            x, targets = self.mixers[variant](x, y)
        elif variant == "published":
            with self.amp():
                s = gradient_saliency(self.model, x, y)  # online, from the current model
            x, targets = self.mixers[variant](x, y, s)
        else:
            x, targets = self.mixers[variant](x, y, s)
        with self.amp():
            loss = soft_target_cross_entropy(self.model(x), targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return x.shape[0]


def run_config(label, model_name, size, num_classes, batch, device, rounds, warmup, amp, variants, steps=1):
    st = Stepper(model_name, size, num_classes, batch, device, amp)
    for _ in range(warmup):
        for v in variants:
            st.step(v)
    _sync(device)
    times = {v: [] for v in variants}
    trained = {}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            _sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                trained[v] = st.step(v)
            _sync(device)
            times[v].append((time.perf_counter() - t) / steps)
    base = np.asarray(times["none"])
    rows = []
    for v in variants:
        t = np.asarray(times[v])
        step_ratio = np.median(t) / np.median(base)
        per_sample = (np.median(t) / trained[v]) / (np.median(base) / trained["none"])
        lo, hi = np.quantile(t / base, [0.1, 0.9])
        rows.append((label, batch, v, float(np.median(t)), trained[v], step_ratio, per_sample, lo, hi, rounds))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default: CPU 20/12/6 per config; CUDA 50)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--batch", type=int, default=None, help="batch size for every config (default per config)")
    p.add_argument("--configs", default=None, help="comma-separated config indices to run (0, 1, 2)")
    p.add_argument("--steps", type=int, default=None, help="consecutive steps per timed block (default: CPU 1, CUDA 10)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--quick", action="store_true", help="a tiny model, batch 8, 2 rounds (CI)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    configs = QUICK_CONFIGS if args.quick else CONFIGS
    if args.configs:
        configs = [configs[int(i)] for i in args.configs.split(",")]
    cpu_rounds = {0: 20, 1: 12, 2: 6}
    print(f"torch {torch.__version__}, {device}"
          f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads "
          f"{torch.get_num_threads()}, amp {'bf16' if args.amp else 'off'}, channels-last on CUDA")
    rows = []
    for k, (label, model_name, size, nc, cpu_batch, cuda_batch) in enumerate(configs):
        batch = args.batch or (cuda_batch if device.type == "cuda" else cpu_batch)
        rounds = args.rounds or (2 if args.quick else 50 if device.type == "cuda" else cpu_rounds.get(k, 6))
        t = time.perf_counter()
        steps = args.steps or (10 if device.type == "cuda" else 1)
        rows += run_config(label, model_name, size, nc, batch, device, rounds, 1 if args.quick else args.warmup,
                           args.amp, list(VARIANTS), steps)
        print(f"  {label}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print("\n| model | batch | variant | median s / step | trained / step | step / none | "
          "per trained sample / none | p10-p90 of step / none | rounds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, batch, v, med, n, sr, ps, lo, hi, rounds in rows:
        print(f"| {label} | {batch} | {v} | {med:.4f} | {n} | {sr:.3f} | {ps:.3f} | {lo:.3f}-{hi:.3f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
