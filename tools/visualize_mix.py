#!/usr/bin/env python
"""Draw what each mixer does to a batch: a PNG grid.

One row per mixed image: the target, the source it receives from (with the source's saliency
overlaid), then for each mixer side by side the mixed image with the pasted box drawn.
Under each mixed image: the weight the mixer gives the target and the source label (``mix``),
the true weights from the object masks where the data set has them (``true``, demo set), and
what the other rule would give on the same box (area rule for SaliencyMix+, saliency rule for
CutMix/SaliencyMix).

    python tools/visualize_mix.py --out docs/mix_grid.png                         # demo set, 6 rows
    python tools/visualize_mix.py --dataset demo --rows 8 --seed 3 --postprocess none --out grid.png
    python tools/visualize_mix.py --dataset oxford_pet --data-dir data/oxford_pet --size 128 --out pet.png

Bad arguments and missing data exit with status 2 and a one-line message.

Every mixer sees the same pairing (``perm``) and the same box size, so the pictures differ only
in where the box goes and how the labels are weighted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saliencymixplus import ops  # noqa: E402
from saliencymixplus.cache import quantize  # noqa: E402
from saliencymixplus.label_noise import true_label_weights  # noqa: E402
from saliencymixplus.saliency import compute_saliency, parse_postprocess, sharpen  # noqa: E402

COLUMNS = ("CutMix", "SaliencyMix", "SaliencyMix+ window", "SaliencyMix+ peak")


def mix_batch(images: torch.Tensor, saliency: torch.Tensor, lam: float, seed: int):
    """Boxes and weights of every mixer for one batch, with one shared pairing and box size.

    Args:
        images: ``Tensor[B, C, H, W]``.
        saliency: ``Tensor[B, H, W]`` float in [0, 1].
        lam: the mixing ratio; the box side is ``int(size * sqrt(1 - lam))``.
        seed: draws the pairing and CutMix's box centre.

    Returns:
        ``(perm, {mixer: (mixed Tensor[B, C, H, W], boxes LongTensor[B, 4], lam FloatTensor[B],
        other-rule lam FloatTensor[B])})``.
    """
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = images.shape
    perm = torch.randperm(b, generator=g)
    box_h, box_w = ops.box_sizes(torch.full((b,), lam, dtype=torch.float64), h, w)
    cy, cx = torch.randint(h, (1,), generator=g).expand(b), torch.randint(w, (1,), generator=g).expand(b)
    cut = ops.centred_boxes(cy, cx, box_h, box_w, h, w)
    py, px = ops.saliency_peaks(saliency[perm[:1]])  # one source's peak, whole batch
    sm = ops.centred_boxes(py.expand(b), px.expand(b), box_h, box_w, h, w)
    out = {}
    for name, boxes in (("CutMix", cut), ("SaliencyMix", sm)):
        out[name] = (ops.paste(images, perm, boxes), boxes, ops.area_rule(boxes, h, w),
                     ops.label_weights(saliency, perm, boxes))
    for box in ops.BOXES:
        mixed, boxes, lam_s = ops.saliency_mix_plus(images, saliency, perm, box_h, box_w, box)
        out[f"SaliencyMix+ {box}"] = (mixed, boxes, lam_s, ops.area_rule(boxes, h, w))
    return perm, out


def draw_grid(images: np.ndarray, saliency: np.ndarray, masks: np.ndarray | None, labels, class_names,
              lam: float, seed: int, out: Path, title: str = "") -> Path:
    """Render the grid for ``images uint8[B, H, W, 3]`` and ``saliency float[B, H, W]`` to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    s = torch.from_numpy(saliency).float()
    perm, res = mix_batch(x, s, lam, seed)
    b = len(images)
    true = None
    if masks is not None:  # the step-4 rule on the object masks
        m = torch.from_numpy(np.asarray(masks)).float()
        true = {col: true_label_weights(m, perm, res[col][1]) for col in COLUMNS}
    ncol = 2 + len(COLUMNS)
    fig, axes = plt.subplots(b, ncol, figsize=(2.1 * ncol, 2.55 * b), squeeze=False)
    name = (lambda i: class_names[int(labels[i])]) if class_names else (lambda i: str(int(labels[i])))
    for i in range(b):
        j = int(perm[i])
        ax = axes[i, 0]
        ax.imshow(images[i], interpolation="nearest")
        ax.imshow(saliency[i], cmap="jet", alpha=0.35, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel(f"target: {name(i)}", fontsize=8)
        ax = axes[i, 1]
        ax.imshow(images[j], interpolation="nearest")
        ax.imshow(saliency[j], cmap="jet", alpha=0.35, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel(f"source: {name(j)}", fontsize=8)
        for k, col in enumerate(COLUMNS):
            mixed, boxes, lam_mix, lam_other = res[col]
            ax = axes[i, 2 + k]
            ax.imshow(mixed[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            y1, x1, y2, x2 = boxes[i].tolist()
            ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5, ec="white"))
            ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=0.7, ec="black"))
            lm, lo = float(lam_mix[i]), float(lam_other[i])
            other = "saliency" if col in ("CutMix", "SaliencyMix") else "area"
            text = f"mix {lm:.2f} / {1 - lm:.2f}\n{other} {lo:.2f} / {1 - lo:.2f}"
            if true is not None:
                t = float(true[col][i])
                text += f"\ntrue {t:.2f} / {1 - t:.2f}"
            ax.set_xlabel(text, fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    for k, head in enumerate(("target + saliency", "source + saliency", *COLUMNS)):
        axes[0, k].set_title(head, fontsize=9)
    fig.suptitle(title or f"lam = {lam:.2f}: label weights target / source", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _load_batch(raw, idx: np.ndarray, size: int) -> np.ndarray:
    """Images ``idx`` of ``raw`` as ``uint8[B, H, W, 3]``; sets of varied sizes (Pet) are resized
    to ``size x size``."""
    images = [np.asarray(raw.image(int(i))) for i in idx]
    if raw.image_size() is None:
        import cv2

        images = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images]
    return np.stack(images).astype(np.uint8)


def main(argv=None) -> int:
    from saliencymixplus.datasets import DATASETS, GENERATED, SPLITS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="demo", choices=DATASETS,
                   help="demo or demo_hard (object masks known), or cifar100 / oxford_pet with --data-dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--size", type=int, default=128, help="side the images of oxford_pet are resized to")
    p.add_argument("--rows", type=int, default=6, help="images in the batch (one row each)")
    p.add_argument("--start", type=int, default=0, help="first image of the batch")
    p.add_argument("--lam", type=float, default=0.6, help="mixing ratio (box side = size * sqrt(1 - lam))")
    p.add_argument("--seed", type=int, default=0, help="pairing and CutMix box")
    p.add_argument("--method", default="fine_grained", choices=("fine_grained", "spectral_residual"))
    p.add_argument("--postprocess", default="top=0.2,power=2", help="saliency post-processing ('none' for raw)")
    p.add_argument("--out", default="docs/mix_grid.png")
    args = p.parse_args(argv)
    if args.rows < 2:
        p.error(f"--rows must be >= 2, got {args.rows}")
    if not 0.0 <= args.lam < 1.0:
        p.error(f"--lam must be in [0, 1), got {args.lam}")
    if args.start < 0:
        p.error(f"--start must be >= 0, got {args.start}")
    if args.size < 8:
        p.error(f"--size must be >= 8, got {args.size}")
    try:
        kw = parse_postprocess(args.postprocess)
    except ValueError as e:
        p.error(f"--postprocess: {e}")
    from saliencymixplus.data import load_split
    from saliencymixplus.rawdata import ImageDecodeError

    try:
        raw = load_split(args.dataset, args.data_dir, args.split)
        if args.start + args.rows > len(raw):
            p.error(f"--start {args.start} + --rows {args.rows} is past the end of {args.dataset}/{args.split} "
                    f"({len(raw)} images)")
        idx = np.arange(args.start, args.start + args.rows)
        images = _load_batch(raw, idx, args.size)
    except (FileNotFoundError, ValueError, ImageDecodeError) as e:
        p.error(str(e))
    masks = raw.masks[idx] if getattr(raw, "masks", None) is not None else None
    sal = compute_saliency(images, args.method)
    if kw:
        sal = sharpen(sal, **kw)
    sal = quantize(sal).astype(np.float32) / 255.0
    names = None
    if args.dataset in GENERATED:
        from saliencymixplus.demo import GLYPHS

        names = GLYPHS
    try:
        from saliencymixplus.files import check_output_file

        check_output_file(args.out)
    except ValueError as e:
        p.error(str(e))
    out = draw_grid(images, sal, masks, raw.labels[idx], names, args.lam, args.seed, Path(args.out),
                    f"{args.dataset}: lam {args.lam:.2f}, saliency {args.method} + {args.postprocess}; "
                    f"label weights target / source")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
