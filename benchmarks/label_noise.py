"""Label noise of each mixer on a generated set (``demo``, ``demo_hard``), whose object masks
are known, and on an Oxford-IIIT Pet folder's trimaps after the Pet training crop.

For every saliency source (OpenCV fine-grained / spectral residual, each raw and
post-processed with :func:`saliencymixplus.saliency.sharpen`; optionally gradient saliency
from a ``train.py`` checkpoint; the object masks themselves as an oracle) and every mixer
(CutMix, SaliencyMix, SaliencyMix+ window, SaliencyMix+ peak), the training split is
mixed batch by batch through the mixers' own ``.mix`` (maps quantised to uint8 as the cache
stores them) and each mixed sample is scored against the true label weight of
:mod:`saliencymixplus.label_noise`:

* ``own``: mean |lam - true| of the weight the mixer itself assigns (area rule for CutMix
  and SaliencyMix, saliency rule for SaliencyMix+);
* ``area`` / ``sal``: the area rule and the saliency rule on the *same* boxes (the mixer's own),
  so box placement and label weighting are judged apart; ``sal/area`` is their ratio;
* ``noisy``: share of samples whose box holds < 5 % of the source object while the source
  label gets >= 30 % (with the mixer's own weights).

``--pet-dir DIR`` adds a section on an Oxford-IIIT Pet folder with trimaps
(``annotations/trimaps/*.png``): each training image goes through the Pet training pipeline
(resize 256, random-resized crop 224, flip) with its trimap's object mask as the saliency map
(:class:`saliencymixplus.transforms.JointTransform`, the path the cache's maps take), and, with
the same random draws, through torchvision's own joint transform of an image and a
``tv_tensors.Mask`` (the mask cropped directly, nearest neighbour). The mixers run on the
crops; their label error against the truth from the transformed maps and against the truth
from the directly cropped masks must agree (``abs. diff``), which checks the joint transform at
the level of labels.

    PYTHONPATH=. python benchmarks/label_noise.py                 # demo: 5,000 images x 3 seeds, ~1 min
    PYTHONPATH=. python benchmarks/label_noise.py --dataset demo_hard
    PYTHONPATH=. python benchmarks/label_noise.py --pet-dir data/oxford-iiit-pet
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
from saliencymixplus.label_noise import label_errors, noisy_mask, object_shares, true_label_weights  # noqa: E402
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


def mixed_batches(name: str, mixer, tensors: tuple, seeds, batch: int):
    """For each seed, each full batch of a permutation drawn from it: ``(the batch's rows of each
    of tensors, MixResult)``; ``tensors`` starts with images, labels, saliency (CutMix gets none)."""
    n = len(tensors[0])
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g)
        for a in range(0, n - batch + 1, batch):
            rows = tuple(t[order[a:a + batch]] for t in tensors)
            x, y, s = rows[:3]
            yield rows, (mixer.mix(x, y, generator=g) if name == "CutMix" else mixer.mix(x, y, s, generator=g))


def score(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, saliency: torch.Tensor, *,
          seeds, batch: int, num_classes: int, only=None) -> dict:
    """``{mixer: {"own", "area", "sal", "noisy", "n"}}`` over all batches and seeds (the mixers
    named in ``only``, default all)."""
    out = {}
    _, _, h, w = images.shape
    for name, mixer in mixers(num_classes).items():
        if only is not None and name not in only:
            continue
        acc = {k: [] for k in ("own", "area", "sal", "noisy")}
        for (_, _, s, m), r in mixed_batches(name, mixer, (images, labels, saliency, masks), seeds, batch):
            true = true_label_weights(m, r.perm, r.boxes)
            _, pasted = object_shares(m, r.perm, r.boxes)
            sal = ops.label_weights(s, r.perm, r.boxes)
            acc["own"].append(label_errors(r.lam, true))
            acc["area"].append(label_errors(ops.area_rule(r.boxes, h, w, torch.float64), true))
            acc["sal"].append(label_errors(sal, true))
            acc["noisy"].append(noisy_mask(r.lam, pasted).double())
        out[name] = {k: torch.cat(v).mean().item() for k, v in acc.items()}
        out[name]["n"] = sum(len(v) for v in acc["own"])
    return out


def gradient_maps(checkpoint: str, raw) -> np.ndarray:
    """Gradient saliency of a generated set's images from a ``train.py`` checkpoint, ``float32[N, H, W]``."""
    from saliencymixplus.checkpoint_file import load_checkpoint_model
    from saliencymixplus.saliency import gradient_saliency
    from saliencymixplus.transforms import eval_transform

    model, _ = load_checkpoint_model(checkpoint, torch.device("cpu"))
    tf = eval_transform(raw.name)
    out = []
    for a in range(0, len(raw.labels), 500):
        x = torch.stack([tf(raw.images[i], None)[0] for i in range(a, min(a + 500, len(raw.labels)))])
        out.append(gradient_saliency(model, x, torch.as_tensor(raw.labels[a:a + 500])).numpy())
    return np.concatenate(out)


def pet_crops(pet_dir, *, rounds: int, seed: int, limit: int | None = None):
    """Every Pet training image with a trimap, ``rounds`` times through the Pet training pipeline.

    Returns ``(maps float32[N, 224, 224], masks float32[N, 224, 224], labels int64[N], same)``:
    ``maps`` the trimaps' object masks (:func:`saliencymixplus.rawdata.trimap_object_mask`) as
    saliency through :class:`~saliencymixplus.transforms.JointTransform`; ``masks`` the same
    masks cropped by torchvision's joint transform of an image and a ``tv_tensors.Mask`` with the
    same random draws (nearest neighbour); ``same`` whether the two paths' images were equal
    (they are when the draws agree).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from saliencymixplus.rawdata import load_oxford_pet, read_pet_trimap, trimap_object_mask
    from saliencymixplus.transforms import resample_saliency, train_transform

    raw = load_oxford_pet(pet_dir, "train")
    tf = train_transform("oxford_pet")
    ref = v2.Compose(tf.steps)
    maps, masks, labels, same = [], [], [], True
    n = len(raw) if limit is None else min(limit, len(raw))
    for r in range(rounds):
        for i in range(n):
            image, obj = raw.image(i), trimap_object_mask(read_pet_trimap(raw, i))
            torch.manual_seed(seed * 1_000_003 + r * 10_007 + i)
            img_a, geo = tf.apply_image(image)
            maps.append(resample_saliency(obj, geo).float())
            torch.manual_seed(seed * 1_000_003 + r * 10_007 + i)
            img_b, m_b = ref(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                             tv_tensors.Mask(torch.from_numpy(obj)))
            same &= torch.equal(img_a, img_b.as_subclass(torch.Tensor))
            masks.append(m_b.as_subclass(torch.Tensor).float())
            labels.append(int(raw.labels[i]))
    return torch.stack(maps), torch.stack(masks), torch.as_tensor(labels, dtype=torch.long), same


def pet_section(pet_dir, *, rounds: int, seeds, batch: int) -> list[str]:
    """The Markdown lines of the Pet section (see the module docstring)."""
    maps, masks, labels, same = pet_crops(pet_dir, rounds=rounds, seed=seeds[0])
    n = len(labels)
    batch = min(batch, n)
    lines = [f"Oxford-IIIT Pet folder {pet_dir}: {n // rounds} training images with trimaps x {rounds} crops "
             f"(resize 256, random-resized crop 224, flip), batch {batch}, seeds {','.join(map(str, seeds))}; "
             f"images of the two paths identical: {'yes' if same else 'NO'}",
             "| mixer | samples | own rule vs truth of the transformed maps | own rule vs truth of the cropped masks "
             "| mean abs. diff of the true weights | max abs. diff |", "|---|---|---|---|---|---|"]
    images = torch.zeros(n, 3, *maps.shape[1:])  # pixels do not enter the label weights
    for name, mixer in mixers(37).items():
        err_a, err_b, diff = [], [], []
        for (_, _, s, m), r in mixed_batches(name, mixer, (images, labels, maps, masks), seeds, batch):
            true_a = true_label_weights(s, r.perm, r.boxes)
            true_b = true_label_weights(m, r.perm, r.boxes)
            err_a.append(label_errors(r.lam, true_a))
            err_b.append(label_errors(r.lam, true_b))
            diff.append((true_a - true_b).abs())
        ea, eb, d = torch.cat(err_a), torch.cat(err_b), torch.cat(diff)
        lines.append(f"| {name} | {len(ea)} | {ea.mean():.3f} | {eb.mean():.3f} | {d.mean():.4f} | {d.max():.4f} |")
    return lines


def main(argv=None) -> int:
    from saliencymixplus.datasets import GENERATED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo", choices=GENERATED, help="the generated set to score")
    p.add_argument("--n", type=int, default=None, help="training images used (default: the whole split)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--postprocess", nargs="*", default=list(POSTPROCESS),
                   help=f"post-processings of the OpenCV maps (default: {' '.join(POSTPROCESS)})")
    p.add_argument("--checkpoint", default=None, help="also score gradient saliency from this train.py checkpoint")
    p.add_argument("--pet-dir", default=None, help="also score an Oxford-IIIT Pet folder with annotations/trimaps/")
    p.add_argument("--pet-rounds", type=int, default=4, help="random crops of every Pet image (default 4)")
    p.add_argument("--quick", action="store_true", help="256 images, 1 seed, 2 post-processings (CI)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    for flag, v in (("--n", args.n), ("--batch", args.batch), ("--pet-rounds", args.pet_rounds)):
        if v is not None and v <= 0:
            p.error(f"{flag} must be a positive integer, got {v}")
    if args.quick:
        args.n, seeds, args.postprocess = 256, seeds[:1], ["none", "top=0.2,power=2"]
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # small tensors: one thread is as fast, and leaves the other cores alone
    torch.manual_seed(0)
    raw = load_split(args.dataset, None, "train")
    n = len(raw.labels) if args.n is None else min(args.n, len(raw.labels))
    images = torch.from_numpy(raw.images[:n]).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(raw.labels[:n]).long()
    masks = torch.from_numpy(raw.masks[:n]).float()
    num_classes = raw.num_classes

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

    share = masks.mean((1, 2))
    print(f"{args.dataset} train, {n} images ({images.shape[2]}x{images.shape[3]}, {num_classes} classes, object "
          f"{100 * share.mean():.1f} % of the image on average), batch {args.batch}, seeds {','.join(map(str, seeds))}, "
          f"lam ~ Beta(1, 1) per batch; mean |lam - true| (lower is better); torch {torch.__version__}, "
          f"{platform.machine()}")
    print("| saliency | post-processing | mixer | samples | own rule | area rule, same boxes | "
          "saliency rule, same boxes | sal / area | noisy share (own) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, pp, maps in sources:
        s = torch.from_numpy(quantize(maps)).float() / 255.0  # as the uint8 cache stores them
        res = score(images, labels, masks, s, seeds=seeds, batch=args.batch, num_classes=num_classes)
        for name, r in res.items():
            print(f"| {method} | {pp} | {name} | {r['n']} | {r['own']:.3f} | {r['area']:.3f} | {r['sal']:.3f} | "
                  f"{r['sal'] / r['area']:.2f} | {100 * r['noisy']:.1f} % |", flush=True)
    if args.pet_dir:
        print()
        print("\n".join(pet_section(args.pet_dir, rounds=args.pet_rounds, seeds=seeds, batch=args.batch)))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
