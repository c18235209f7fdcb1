"""SaliencyMix+'s label error against the resolution its saliency cache stores maps at, to
choose the stored resolution of large sets (issue 22, point 3).

ImageNet's 1,281,167 training maps at Pet's 256x256 would take 84 GB. On two sets whose object
masks are known, every map is stored at each resolution ``r x r`` as the cache tool stores it
(the map of the whole image area-averaged to ``r x r`` when that shrinks it, bilinear when it
grows it, then post-processed, then quantised to uint8), brought to the training crop by the
path training takes, and mixed by SaliencyMix+ (window boxes); the label error is
mean ``|lam - true|`` against the true label weight of the object masks
(:mod:`saliencymixplus.label_noise`), and, on the same boxes, the area rule's (CutMix's rule,
for scale):

* ``demo_hard`` (48x48 images, objects 1-6 % of the image): the stored maps (upsampled above
  48) are brought back to 48x48 by ``train.py``'s device loader
  (:class:`~saliencymixplus.training.loaders.DeviceLoader`, bilinear); the truth is the
  48x48 mask;
* an Oxford-IIIT Pet-format folder with trimaps (``--pet-dir``; by default ``--pet-images``
  generated 375x500 or 500x375 JPEGs, each with one drawn, fur-textured object of 2-50 % of the
  image beside faint lines and two plain distractor blobs, and its trimap): each image goes
  ``--pet-rounds`` times through the Pet training pipeline (resize 256, random-resized crop 224,
  flip); the stored map is cut and resized to the crop by
  :func:`saliencymixplus.transforms.resample_saliency` (the DataLoader's path); the truth is the
  full-resolution trimap mask (1 pet, 0.5 border) through the same crop.

Two saliency sources: the cache's default (OpenCV ``fine_grained``, sharpened
``top=0.2,power=2``) and the object masks themselves (oracle: the label error then is the
resolution's alone). The reference is the *full-resolution store*: the map at the image's own
size (demo_hard: 48x48). Every resolution is mixed with the same random draws (lam, pairing),
so the added error of resolution ``r`` is a paired difference; its standard error is taken over
batches (one lam per batch). The script also builds a cache with the cache tool
(:func:`saliencymixplus.precompute.build_cache`) at one resolution of each set and checks that
its maps equal the ones scored here, byte for byte.

The default is chosen by the rule of :func:`choose`: the smallest resolution whose added label
error, taken at its upper bound (+ 2 standard errors), is at most 10 % (:data:`ADDED_SHARE`) of
the gap between the area rule and SaliencyMix+ at full resolution, at that resolution and at
every larger one measured, on the Pet-format crops (the geometry of the ImageNet recipe: a
random-resized crop of scale 0.08-1 of the image), for both sources.

    PYTHONPATH=. python benchmarks/resolution_curve.py                      # 5 min of CPU time
    PYTHONPATH=. python benchmarks/resolution_curve.py --pet-dir data/oxford-iiit-pet
    PYTHONPATH=. python benchmarks/resolution_curve.py --quick              # CI
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_noise import mixed_batches  # noqa: E402

from saliencymixplus.cache import SaliencyCache, quantize  # noqa: E402
from saliencymixplus.datasets import get_spec  # noqa: E402
from saliencymixplus import ops  # noqa: E402
from saliencymixplus.label_noise import label_errors, true_label_weights  # noqa: E402
from saliencymixplus.mix import SaliencyMixPlus  # noqa: E402
from saliencymixplus.rawdata import load_split, read_pet_trimap, trimap_object_mask  # noqa: E402
from saliencymixplus.saliency import (DEFAULT_METHOD, DEFAULT_POSTPROCESS, compute_saliency,  # noqa: E402
                                      format_postprocess, parse_postprocess, sharpen)
from saliencymixplus.transforms import resample_saliency, train_transform  # noqa: E402

DEMO_RESOLUTIONS = (256, 128, 96, 64, 48, 32, 24, 16, 12)
PET_RESOLUTIONS = (256, 128, 96, 64, 48, 32, 24, 16)
#: ILSVRC-2012 training images.
IMAGENET_TRAIN = 1_281_167
#: HDF5's fletcher32 checksum, one per chunk (one map per chunk).
CHECKSUM_BYTES = 4
#: The rule's threshold: the added label error (its upper bound, + 2 standard errors) at most this
#: share of the area rule's excess error over SaliencyMix+.
ADDED_SHARE = 0.10
BOUND_SE = 2.0
MIXER = "SaliencyMix+ window"  # the name label_noise.mixed_batches knows it by
DEMO_CHECK, PET_CHECK = 96, 64  # resolutions checked against the cache tool (demo_hard: grown; Pet: shrunk)
PET_SIZES = ((375, 500), (500, 375))


def imagenet_bytes(r: int) -> int:
    """Bytes of ImageNet's training maps stored at ``r x r`` uint8, one checksummed chunk each."""
    return IMAGENET_TRAIN * (r * r + CHECKSUM_BYTES)


def finish(maps: np.ndarray, pp: dict) -> np.ndarray:
    """Maps in [0, 1] at the stored size -> ``uint8``: sharpened with ``pp`` (none when empty), quantised."""
    return quantize(sharpen(maps, **pp) if pp else maps)


def to_stored(m: np.ndarray, r: int, pp: dict) -> np.ndarray:
    """Maps ``float32[N, H, W]`` (or one ``[H, W]``) in [0, 1] -> ``uint8[N, r, r]`` (``[r, r]``)
    as the cache tool stores them at ``r x r``: area-averaged when that shrinks the map (fewer
    pixels), bilinear when it grows it; then :func:`finish`."""
    one = m.ndim == 2
    maps = m[None] if one else m
    if maps.shape[1:] != (r, r):
        how = cv2.INTER_AREA if maps.shape[1] * maps.shape[2] > r * r else cv2.INTER_LINEAR
        maps = np.stack([cv2.resize(x, (r, r), interpolation=how) for x in maps])
    out = finish(maps, pp)
    return out[0] if one else out


def sample_errors(images, labels, saliency, masks, *, seeds, batch: int, num_classes: int):
    """SaliencyMix+ (window) over every full batch of each seed (the same lam and pairing for
    any ``saliency``): ``(own, area)``, float64 ``Tensor[n]`` each: ``|lam - true|`` of its own
    weights and of the area rule on its boxes, ``true`` from ``masks`` (``Tensor[N, H, W]``)."""
    mixer = SaliencyMixPlus(num_classes, box="window")
    h, w = masks.shape[1:]
    own, area = [], []
    for (_, _, _, m), r in mixed_batches(MIXER, mixer, (images, labels, saliency, masks), seeds, batch):
        true = true_label_weights(m, r.perm, r.boxes)
        own.append(label_errors(r.lam, true))
        area.append(label_errors(ops.area_rule(r.boxes, h, w, torch.float64), true))
    return torch.cat(own), torch.cat(area)


def curve(results: dict, ref, batch: int) -> dict:
    """``{"rows": {key: row}, "gap"}`` for ``results`` ``{key: (own, area)}`` against ``results[ref]``:
    mean errors, the added error (mean of the paired differences, s.e. over batches), the ratio
    of the errors (NaN where the reference's is under 0.01) and ``(added + BOUND_SE s.e.) / gap``,
    ``gap`` the area rule's excess error over SaliencyMix+ at the reference (NaN if not > 0)."""
    own0, area0 = results[ref]
    gap = (area0.mean() - own0.mean()).item()
    rows = {}
    for key, (own, area) in results.items():
        per_batch = (own - own0).view(-1, batch).mean(1)
        se = (per_batch.std() / math.sqrt(len(per_batch))).item() if len(per_batch) > 1 else float("nan")
        added = per_batch.mean().item()
        rows[key] = dict(own=own.mean().item(), area=area.mean().item(), added=added, se=se,
                         ratio=own.mean().item() / own0.mean().item() if own0.mean() >= 0.01 else float("nan"),
                         bound=(added + BOUND_SE * se) / gap if gap > 0 else float("nan"), n=len(own))
    return dict(rows=rows, gap=gap)


def choose(rows: dict, resolutions) -> int | None:
    """The smallest of ``resolutions`` whose added error's upper bound (+ :data:`BOUND_SE` standard
    errors), and that of every larger one, is at most :data:`ADDED_SHARE` of the gap; ``None``
    when even the largest is above it."""
    best = None
    for r in sorted(resolutions, reverse=True):
        if not rows[r]["bound"] <= ADDED_SHARE:
            break
        best = r
    return best


def table(c: dict, label) -> list[str]:
    """Markdown lines of one curve; ``label(key) -> (name, bytes per map, ImageNet GB text)``."""
    lines = ["| stored map | bytes per map | ImageNet cache (GB) | SaliencyMix+ error | area rule, same boxes "
             "| added error vs full-res store ± s.e. | error / full-res store's "
             f"| (added + {BOUND_SE:g} s.e.) / gap |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in c["rows"].items():
        name, nbytes, gb = label(key)
        ref = r["added"] == 0 and r["se"] == 0
        added = "0 (reference)" if ref else f"{r['added']:+.4f} ± {r['se']:.4f}"
        ratio = "—" if math.isnan(r["ratio"]) else f"{r['ratio']:.3f}"
        bound = "—" if ref or math.isnan(r["bound"]) else f"{r['bound']:+.3f}"
        lines.append(f"| {name} | {nbytes} | {gb} | {r['own']:.4f} | {r['area']:.4f} | {added} | {ratio} | {bound} |")
    lines.append(f"\nGap (area rule - SaliencyMix+ at full resolution): {c['gap']:.4f}; "
                 f"{next(iter(c['rows'].values()))['n']} mixed samples per row.")
    return lines


def resolution_label(r: int) -> tuple[str, str, str]:
    return f"{r}x{r}", f"{r * r + CHECKSUM_BYTES:,}", f"{imagenet_bytes(r) / 1e9:.2f}"


def check_cache_tool(dataset: str, data_dir, r: int, ours: np.ndarray, work: Path) -> str:
    """Build ``dataset``'s training cache at ``r x r`` with the cache tool (default method and
    post-processing) and say whether its first ``len(ours)`` maps equal ``ours`` and what the
    file holds per map beyond the map and its checksum."""
    from saliencymixplus.precompute import build_cache

    out = build_cache(dataset, data_dir, "train", DEFAULT_METHOD, work / f"{dataset}_{r}.h5", resolution=(r, r),
                      workers=1, resume=False, progress=False, log=lambda *a: None)
    stored = SaliencyCache(out, in_memory=True).read_all()
    same = np.array_equal(stored[:len(ours)], ours)
    size = out.stat().st_size
    extra = size / len(stored) - (r * r + CHECKSUM_BYTES)
    return (f"- {dataset}: the cache tool's maps at {r}x{r} equal those scored here: {'yes' if same else 'NO'} "
            f"({len(ours)} of {len(stored)} maps compared); its file holds {size:,} bytes = {len(stored):,} x "
            f"({r}x{r} + {CHECKSUM_BYTES}) + {extra:.1f} bytes per map (chunk index, attributes)")


# ----------------------------------------------------------------------------- demo_hard

def demo_hard_section(n: int | None, resolutions, *, seeds, batch: int, check: bool, work: Path):
    """``(markdown lines, {source: curve}, check line or None)`` on demo_hard."""
    from saliencymixplus.training.loaders import DeviceLoader

    raw = load_split("demo_hard", None, "train")
    n = len(raw.labels) if n is None else min(n, len(raw.labels))
    spec = get_spec("demo_hard")
    size = raw.images.shape[1]
    images = torch.from_numpy(raw.images[:n]).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(raw.labels[:n]).long()
    masks = torch.from_numpy(raw.masks[:n]).float()
    pp = parse_postprocess(DEFAULT_POSTPROCESS)
    sources = {f"OpenCV {DEFAULT_METHOD}, {format_postprocess(pp)} (the cache's default)":
               (compute_saliency(raw.images[:n], DEFAULT_METHOD), pp),
               "object masks (oracle)": (raw.masks[:n].astype(np.float32), {})}
    keys = sorted(set(resolutions) | {size}, reverse=True)
    curves, check_line = {}, None
    lines = [f"### demo_hard: {n} training images ({size}x{size}, objects 1-6 % of the image), maps brought to "
             f"{size}x{size} by the device loader"]
    for i, (source, (full, kw)) in enumerate(sources.items()):
        results = {}
        for r in keys:
            stored = to_stored(full, r, kw)
            if i == 0 and check and r == DEMO_CHECK:
                check_line = check_cache_tool("demo_hard", None, r, stored, work)
            s = DeviceLoader(raw.images[:n], raw.labels[:n], spec.mean_std, torch.device("cpu"), batch_size=batch,
                             train=False, saliency=stored).saliency
            results[r] = sample_errors(images, labels, s, masks, seeds=seeds, batch=batch,
                                       num_classes=raw.num_classes)
        curves[source] = c = curve(results, size, batch)
        lines += ["", f"Saliency: {source}", ""]
        lines += table(c, lambda r: (resolution_label(r)[0] + (" (image size)" if r == size else ""),
                                     *resolution_label(r)[1:]))
    return lines, curves, check_line


# ----------------------------------------------------------------------------- Pet format

def draw_pet_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8[h, w, 3] RGB, uint8[h, w] trimap)``: one object of random shape covering 2-50 % of
    the image (log-uniform), with a fur-like texture and a brightness unlike its surroundings,
    on a smooth colour field crossed by faint lines, beside two plain distractor blobs; the
    trimap is 1 on the object, 3 on a 5-pixel band along its outline, 2 elsewhere (as
    Oxford-IIIT Pet's)."""
    img = cv2.resize(rng.uniform(40, 215, (4, 5, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(8):
        p = (rng.uniform(0, 1, 4) * [w, h, w, h]).astype(int)
        colour = img[p[1] % h, p[0] % w] + rng.normal(0, 35, 3)
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour.tolist(), int(rng.integers(1, 4)),
                 cv2.LINE_AA)

    def blob(share: float) -> np.ndarray:
        r0 = math.sqrt(share * h * w / math.pi)
        t = np.linspace(0, 2 * math.pi, 360, endpoint=False)
        radius = np.ones_like(t)
        for k in range(2, 7):
            radius += rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        cy = rng.uniform(min(0.6 * r0, h / 2), max(h - 0.6 * r0, h / 2))
        cx = rng.uniform(min(0.6 * r0, w / 2), max(w - 0.6 * r0, w / 2))
        pts = np.stack([cx + r0 * radius * np.cos(t), cy + r0 * radius * np.sin(t)], 1)
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        return m.astype(bool)

    for _ in range(2):
        img[blob(math.exp(rng.uniform(math.log(0.005), math.log(0.05))))] = rng.uniform(0, 255, 3)
    obj = blob(math.exp(rng.uniform(math.log(0.02), math.log(0.5))))
    bright = img[obj].mean() < 128
    colour = rng.uniform(150, 240, 3) if bright else rng.uniform(15, 100, 3)
    fur = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
    fur *= 0.35 / fur.std()
    img[obj] = (colour[None] * (1 + fur[obj])[:, None]).clip(0, 255)
    img = cv2.GaussianBlur(img + rng.normal(0, 4, img.shape).astype(np.float32), (3, 3), 0)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    o = obj.astype(np.uint8)
    trimap = np.full((h, w), 2, np.uint8)
    trimap[cv2.dilate(o, k) > 0] = 3
    trimap[cv2.erode(o, k) > 0] = 1
    return np.clip(img, 0, 255).astype(np.uint8), trimap


def make_pet_folder(root: Path, n: int, seed: int = 0) -> Path:
    """Write an Oxford-IIIT Pet-format folder of ``n`` training images (:func:`draw_pet_image`):
    ``images/*.jpg``, ``annotations/trainval.txt`` (37 classes in turn), ``annotations/test.txt``
    and ``annotations/trimaps/*.png``. Returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        h, w = PET_SIZES[int(rng.random() < 1 / 3)]
        img, trimap = draw_pet_image(rng, h, w)
        name, cls = f"pet_{i:04d}", i % 37 + 1
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(root / "annotations" / "trimaps" / f"{name}.png"), trimap)
        lines.append(f"{name} {cls} 1 {cls}")
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "test.txt").write_text(lines[0] + "\n")
    return root


def pet_section(pet_dir, resolutions, *, rounds: int, seeds, batch: int, check: bool, work: Path, title: str):
    """``(markdown lines, {source: curve}, check line or None)`` on a Pet-format folder."""
    raw = load_split("oxford_pet", pet_dir, "train")
    tf = train_transform("oxford_pet")
    pp = parse_postprocess(DEFAULT_POSTPROCESS)
    opencv = f"OpenCV {DEFAULT_METHOD}, {format_postprocess(pp)} (the cache's default)"
    oracle = "trimap object masks (oracle)"
    n = len(raw)
    geos, truth, shares, sizes = [None] * (rounds * n), [None] * (rounds * n), [], set()
    stored = {opencv: {r: [] for r in ("full", *resolutions)}, oracle: {r: [] for r in ("full", *resolutions)}}
    for i in range(n):
        image = raw.image(i)
        obj = trimap_object_mask(read_pet_trimap(raw, i))
        shares.append(float(obj.mean()))
        sizes.add(image.shape[:2])
        for source, full, kw in ((opencv, compute_saliency(image, DEFAULT_METHOD)[0], pp), (oracle, obj, {})):
            stored[source]["full"].append(finish(full, kw))
            for r in resolutions:
                stored[source][r].append(to_stored(full, r, kw))
        for k in range(rounds):
            torch.manual_seed(seeds[0] * 1_000_003 + k * 10_007 + i)
            _, geo = tf.apply_image(image)
            geos[k * n + i] = (i, geo)
            truth[k * n + i] = resample_saliency(obj, geo)
    check_line = check_cache_tool("oxford_pet", pet_dir, PET_CHECK, np.stack(stored[opencv][PET_CHECK]), work) \
        if check and PET_CHECK in resolutions else None
    masks = torch.stack(truth)
    labels = torch.as_tensor([int(raw.labels[i]) for i, _ in geos], dtype=torch.long)
    images = torch.zeros((1, 3, *masks.shape[1:]), dtype=torch.uint8).expand(len(labels), -1, -1, -1)
    batch = min(batch, len(labels))
    lines = [f"### Pet-format folder ({title}): {n} training images with trimaps (objects "
             f"{100 * min(shares):.0f}-{100 * max(shares):.0f} % of the image, mean {100 * np.mean(shares):.0f} %; "
             f"sizes {', '.join(f'{h}x{w}' for h, w in sorted(sizes))}) x {rounds} crops (resize 256, "
             f"random-resized crop 224, flip), maps cut and resized to the crop by transforms.resample_saliency"]
    curves = {}
    for source, by_res in stored.items():
        results = {key: sample_errors(images, labels, torch.stack([resample_saliency(maps[i], g) for i, g in geos]),
                                      masks, seeds=seeds, batch=batch, num_classes=raw.num_classes)
                   for key, maps in by_res.items()}
        curves[source] = c = curve(results, "full", batch)
        lines += ["", f"Saliency: {source}", ""]
        lines += table(c, lambda key: ("image size (reference)", "H x W + 4", "—") if key == "full"
                       else resolution_label(key))
    return lines, curves, check_line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-n", type=int, default=None, help="demo_hard training images used (default: all 6,000)")
    p.add_argument("--demo-resolutions", default=",".join(map(str, DEMO_RESOLUTIONS)))
    p.add_argument("--pet-resolutions", default=",".join(map(str, PET_RESOLUTIONS)))
    p.add_argument("--pet-dir", default=None, help="an Oxford-IIIT Pet folder with annotations/trimaps/ "
                                                   "(default: a generated one of --pet-images images)")
    p.add_argument("--pet-images", type=int, default=300, help="images of the generated Pet-format folder")
    p.add_argument("--pet-rounds", type=int, default=4, help="random crops of every Pet image (default 4)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--work-dir", default=None, help="where the generated folder and the check caches go "
                                                    "(default: a temporary folder, removed)")
    p.add_argument("--no-check", action="store_true", help="skip building caches with the cache tool to compare")
    p.add_argument("--quick", action="store_true", help="256 demo_hard images (not checked against the cache tool), "
                                                        "12 Pet images x 2 crops, batch 8, 1 seed (CI)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        demo_res = [int(s) for s in args.demo_resolutions.split(",")]
        pet_res = [int(s) for s in args.pet_resolutions.split(",")]
    except ValueError:
        p.error("--seeds, --demo-resolutions and --pet-resolutions take comma-separated integers, got "
                f"{args.seeds!r}, {args.demo_resolutions!r}, {args.pet_resolutions!r}")
    for flag, v in (("--demo-n", args.demo_n), ("--pet-images", args.pet_images), ("--pet-rounds", args.pet_rounds),
                    ("--batch", args.batch), ("a resolution", min(demo_res + pet_res))):
        if v is not None and v <= 0:
            p.error(f"{flag} must be a positive integer, got {v}")
    if args.quick:
        args.demo_n, args.pet_images, args.pet_rounds, args.batch, seeds = 256, 12, 2, 8, seeds[:1]
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # small tensors: one thread is as fast, and leaves the other cores alone
    load0 = os.getloadavg()[0]
    print(f"SaliencyMix+ (window boxes) label error against the stored map resolution; lam ~ Beta(1, 1) per batch, "
          f"batch {args.batch}, seeds {','.join(map(str, seeds))}; mean |lam - true| (lower is better); "
          f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, load {load0:.1f}")
    print(f"ImageNet cache = {IMAGENET_TRAIN:,} x (h x w + {CHECKSUM_BYTES}) bytes (uint8 maps, one checksummed "
          f"chunk each); GB = 10^9 bytes.\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        lines, _, demo_check = demo_hard_section(args.demo_n, demo_res, seeds=seeds, batch=args.batch,
                                                 check=not (args.quick or args.no_check), work=work)
        print("\n".join(lines), flush=True)
        pet_dir = args.pet_dir or make_pet_folder(work / "pet", args.pet_images)
        lines, pet_curves, pet_check = pet_section(pet_dir, pet_res, rounds=args.pet_rounds, seeds=seeds,
                                                   batch=args.batch, check=not args.no_check, work=work,
                                                   title=args.pet_dir or "generated by this script")
        print()
        print("\n".join(lines))
    print("\n### The cache tool stores the same maps")
    print(demo_check or f"- demo_hard: not checked (--quick, --no-check, or {DEMO_CHECK} not among --demo-resolutions)")
    print(pet_check or f"- Pet-format folder: not checked (--no-check, or {PET_CHECK} not among --pet-resolutions)")
    picks = {source: choose(c["rows"], pet_res) for source, c in pet_curves.items()}
    print(f"\n### Choice\n\nRule: the smallest stored resolution r whose added SaliencyMix+ label error against the "
          f"full-resolution store, taken at its upper bound (+ {BOUND_SE:g} standard errors), is at most "
          f"{ADDED_SHARE:.0%} of the gap between the area rule and SaliencyMix+ at full resolution, at r and at every "
          f"larger resolution measured, on the Pet-format crops, for both sources.\n")
    for source, r in picks.items():
        print(f"- {source}: {'none of ' + str(pet_res) if r is None else f'{r}x{r}'}")
    if any(r is None for r in picks.values()):
        print("\nNo resolution measured meets the rule for every source.")
    else:
        r = max(picks.values())
        print(f"\nLarge-set default: {r}x{r}; ImageNet cache {IMAGENET_TRAIN:,} x ({r}x{r} + {CHECKSUM_BYTES}) bytes = "
              f"{imagenet_bytes(r) / 1e9:.2f} GB (256x256: {imagenet_bytes(256) / 1e9:.1f} GB).")
    print(f"\n{time.perf_counter() - t0:.0f} s, load {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
