"""Label noise of each mixer on the demo set, whose object masks are known.

For every saliency source (OpenCV fine-grained / spectral residual, each raw and
post-processed with :func:`saliencymixplus.saliency.sharpen`; optionally gradient saliency
from a ``train.py`` checkpoint; the object masks themselves as an oracle) and every mixer
(CutMix, SaliencyMix, SaliencyMix+ window, SaliencyMix+ peak), the demo training split is
mixed batch by batch through the mixers' own ``.mix`` (maps quantised to uint8 as the cache
stores them) and each mixed sample is scored against the true label weight of
:mod:`saliencymixplus.label_noise`:

* ``own``: mean |lam - true| of the weight the mixer itself assigns (area rule for CutMix
  and SaliencyMix, saliency rule for SaliencyMix+);
* ``area`` / ``sal``: the area rule and the saliency rule on the *same* boxes (the mixer's own),
  so box placement and label weighting are judged apart; ``sal/area`` is their ratio;
* ``noisy``: share of samples whose box holds < 5 % of the source object while the source
  label gets >= 30 % (with the mixer's own weights).

    PYTHONPATH=. python benchmarks/label_noise.py                 # 5,000 images x 3 seeds, ~1 min
    PYTHONPATH=. python benchmarks/label_noise.py --checkpoint runs/accuracy_demo/none_s0/best.pt
    PYTHONPATH=. python benchmarks/label_noise.py --quick         # CI
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saliencymixplus import ops  # noqa: E402
from saliencymixplus.cache import quantize  # noqa: E402
from saliencymixplus.data import load_split  # noqa: E402
from saliencymixplus.label_noise import (area_weights, label_errors, noisy_mask, object_shares,  # noqa: E402
                                         true_label_weights)
from saliencymixplus.mix import CutMix, SaliencyMix, SaliencyMixPlus  # noqa: E402
from saliencymixplus.saliency import compute_saliency, format_postprocess, sharpen, parse_postprocess  # noqa: E402

POSTPROCESS = ("none", "power=2", "top=0.2", "top=0.1", "top=0.2,power=2")


def mixers(num_classes: int) -> dict:
    return {
        "CutMix": CutMix(num_classes),
        "SaliencyMix": SaliencyMix(num_classes),
        "SaliencyMix+ window": SaliencyMixPlus(num_classes, box="window"),
        "SaliencyMix+ peak": SaliencyMixPlus(num_classes, box="peak"),
    }


def score(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, saliency: torch.Tensor, *,
          seeds, batch: int, num_classes: int, only=None) -> dict:
    """``{mixer: {"own", "area", "sal", "noisy", "n"}}`` over all batches and seeds (the mixers
    named in ``only``, default all)."""
    out = {}
    n_img, _, h, w = images.shape
    for name, mixer in mixers(num_classes).items():
        if only is not None and name not in only:
            continue
        acc = {k: [] for k in ("own", "area", "sal", "noisy")}
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(n_img, generator=g)
            for a in range(0, n_img - batch + 1, batch):
                idx = order[a:a + batch]
                x, y, m, s = images[idx], labels[idx], masks[idx], saliency[idx]
                r = mixer.mix(x, y, generator=g) if name == "CutMix" else mixer.mix(x, y, s, generator=g)
                true = true_label_weights(m, r.perm, r.boxes)
                _, pasted = object_shares(m, r.perm, r.boxes)
                sal = ops.label_weights(s, r.perm, r.boxes)
                acc["own"].append(label_errors(r.lam, true))
                acc["area"].append(label_errors(area_weights(r.boxes, h, w), true))
                acc["sal"].append(label_errors(sal, true))
                acc["noisy"].append(noisy_mask(r.lam, pasted).double())
        out[name] = {k: torch.cat(v).mean().item() for k, v in acc.items()}
        out[name]["n"] = sum(len(v) for v in acc["own"])
    return out


def gradient_maps(checkpoint: str, raw) -> np.ndarray:
    """Gradient saliency of the demo images from a ``train.py`` checkpoint, ``float32[N, H, W]``."""
    from saliencymixplus.checkpoint_file import load_checkpoint_model
    from saliencymixplus.saliency import gradient_saliency
    from saliencymixplus.transforms import test_transform

    model, _ = load_checkpoint_model(checkpoint, torch.device("cpu"))
    tf = test_transform("demo")
    out = []
    for a in range(0, len(raw.labels), 500):
        x = torch.stack([tf(raw.images[i], None)[0] for i in range(a, min(a + 500, len(raw.labels)))])
        out.append(gradient_saliency(model, x, torch.as_tensor(raw.labels[a:a + 500])).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="demo training images used (default: all 5,000)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--postprocess", nargs="*", default=list(POSTPROCESS),
                   help=f"post-processings of the OpenCV maps (default: {' '.join(POSTPROCESS)})")
    p.add_argument("--checkpoint", default=None, help="also score gradient saliency from this train.py checkpoint")
    p.add_argument("--quick", action="store_true", help="256 images, 1 seed, 2 post-processings (CI)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.n, seeds, args.postprocess = 256, seeds[:1], ["none", "top=0.2,power=2"]
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # small tensors: one thread is as fast, and leaves the other cores alone
    torch.manual_seed(0)
    raw = load_split("demo", None, "train")
    n = min(args.n, len(raw.labels))
    images = torch.from_numpy(raw.images[:n]).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(raw.labels[:n]).long()
    masks = torch.from_numpy(raw.masks[:n]).float()
    num_classes = int(labels.max()) + 1

    sources = []
    for method in ("fine_grained", "spectral_residual"):
        maps = compute_saliency(raw.images[:n], method)
        for pp in args.postprocess:
            kw = parse_postprocess(pp)
            sources.append((method, format_postprocess(pp), sharpen(maps, **kw) if kw else maps))
    if args.checkpoint:
        grad = gradient_maps(args.checkpoint, raw)[:n]
        for pp in ("none", "top=0.2,power=2"):
            kw = parse_postprocess(pp)
            sources.append(("gradient", format_postprocess(pp), sharpen(grad, **kw) if kw else grad))
    sources.append(("object masks (oracle)", "none", raw.masks[:n].astype(np.float32)))

    print(f"demo train, {n} images, batch {args.batch}, seeds {','.join(map(str, seeds))}, lam ~ Beta(1, 1) per batch; "
          f"mean |lam - true| (lower is better); torch {torch.__version__}, {platform.machine()}")
    print("| saliency | post-processing | mixer | samples | own rule | area rule, same boxes | "
          "saliency rule, same boxes | sal / area | noisy share (own) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, pp, maps in sources:
        s = torch.from_numpy(quantize(maps)).float() / 255.0  # as the uint8 cache stores them
        res = score(images, labels, masks, s, seeds=seeds, batch=args.batch, num_classes=num_classes)
        for name, r in res.items():
            print(f"| {method} | {pp} | {name} | {r['n']} | {r['own']:.3f} | {r['area']:.3f} | {r['sal']:.3f} | "
                  f"{r['sal'] / r['area']:.2f} | {100 * r['noisy']:.1f} % |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
