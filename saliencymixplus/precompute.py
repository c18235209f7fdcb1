"""The cache tool (``saliencymixplus-precompute`` or ``python tools/precompute_saliency.py``):
a data set split's saliency maps into an HDF5 cache, on every core, resumably::

    saliencymixplus-precompute --dataset cifar100 --data-dir data --split train \\
        --method fine_grained --out data/cifar100_train_fine_grained.h5

The OpenCV methods run in a pool of worker processes, one block of images per task;
``gradient`` runs batched on the best device in the main process. ``OUT`` is checked writable
before any work, locked while it is built (a second build of it waits, then reuses it; with
``--no-wait`` it stops), written block by block to ``OUT.partial`` (``--resume`` continues from
the finished blocks) and renamed into place when complete; images that cannot be decoded are
all named in one error at the end. Exit status: 0 done, 2 bad arguments, data, output path or
busy cache, 130 interrupted. See docs/design.md, "The saliency cache".
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .cache import (CacheMismatchError, CacheWriter, SaliencyCache, cache_lock, format_resolution, parse_resolution,
                    quantize, verify_cache)
from .datasets import DATASETS, SPLITS, get_spec
from .files import BusyError, DiskFullError, FileLock, check_output_file, file_sha256
from .precompute_command import PROGRAM
from .rawdata import ImageDecodeError, default_workers, load_split
from .saliency import (DEFAULT_METHOD, DEFAULT_POSTPROCESS, METHODS, OPENCV_METHODS, compute_saliency, format_postprocess,
                       parse_postprocess, sharpen)

__all__ = ["build_cache", "main"]

_STATE: dict = {}  # per process: the split and settings the workers compute with


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the main process dies (even by SIGKILL).
    A worker still starting when its parent died (it may take seconds to import) exits here:
    the kernel's signal only covers deaths after it is asked for."""
    if sys.platform.startswith("linux"):
        import multiprocessing as mp

        parent = mp.parent_process()
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if parent is not None and os.getppid() != parent.pid:  # reparented: the parent is gone
            os._exit(1)


def _init_worker(dataset, data_dir, split, method, resolution, dtype, postprocess=None, in_pool=False) -> None:
    import cv2

    if in_pool:
        _die_with_parent()
    cv2.setNumThreads(1)  # one process per core already
    key = (dataset, str(data_dir), split)
    if _STATE.get("key") != key:  # a worker process loads the split itself
        _STATE.update(key=key, raw=load_split(dataset, data_dir, split))
    _STATE.update(method=method, resolution=tuple(resolution), dtype=dtype, postprocess=parse_postprocess(postprocess))


def _resize(m: np.ndarray, resolution) -> np.ndarray:
    """``float32[h, w]`` -> ``float32[H, W]`` (area when shrinking, bilinear when growing)."""
    import cv2

    h, w = resolution
    if m.shape == (h, w):
        return m
    shrink = m.shape[0] * m.shape[1] > h * w
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decode(raw, i: int, bad: list):
    """Image ``i`` of ``raw``, or ``None`` after appending ``(file, reason)`` to ``bad``."""
    try:
        return raw.image(i)
    except ImageDecodeError as e:
        bad.extend(e.bad or [(str(i), str(e))])
        return None


def _compute_block(bounds: tuple[int, int]) -> tuple[int, np.ndarray, list]:
    """Maps of images ``[a, b)`` in the storage dtype, ``[b - a, h, w]``, and the
    ``(file, reason)`` of the images that could not be decoded (their maps are zeros)."""
    a, b = bounds
    raw, method, res = _STATE["raw"], _STATE["method"], _STATE["resolution"]
    bad: list = []
    if raw.in_memory and raw.image_size() == res:
        maps = compute_saliency(raw.images[a:b], method)
    else:
        maps = np.zeros((b - a, *res), np.float32)
        for i in range(a, b):
            img = _decode(raw, i, bad)
            if img is not None:
                maps[i - a] = _resize(compute_saliency(img, method)[0], res)
    return a, quantize(_postprocess(maps, _STATE.get("postprocess")), _STATE["dtype"]), bad


def _postprocess(maps: np.ndarray, kwargs: dict | None) -> np.ndarray:
    """:func:`~saliencymixplus.saliency.sharpen` with ``kwargs`` (the identity when empty)."""
    return sharpen(maps, **kwargs) if kwargs else maps


def _opencv_blocks(raw, pending, method, resolution, dtype, workers, data_dir, postprocess=None):
    """Yield ``(start, maps, bad)`` for the pending blocks, in order, computed by ``workers`` processes."""
    args = (raw.name, data_dir, raw.split, method, resolution, dtype, postprocess)
    _STATE.update(key=(raw.name, str(data_dir), raw.split), raw=raw)  # for the in-process path
    if workers <= 1 or len(pending) <= 1:
        _init_worker(*args)
        yield from map(_compute_block, pending)
        return
    import multiprocessing as mp

    # Fresh worker processes: a fork of a process whose OpenCV/OpenMP thread pools are running
    # can deadlock in the child's first parallel call.
    context = mp.get_context("spawn")
    with context.Pool(min(workers, len(pending)), initializer=_init_worker, initargs=(*args, True)) as pool:
        yield from pool.imap(_compute_block, pending, chunksize=1)


def _load_gradient_model(checkpoint, raw):
    """The model of ``checkpoint`` on the best device, checked against ``raw``'s classes.

    Raises:
        ValueError: not a readable ``train.py`` checkpoint, or trained on another class count.
    """
    from .checkpoint_file import load_checkpoint_model

    model, cfg = load_checkpoint_model(checkpoint)
    if int(cfg["num_classes"]) != raw.num_classes:
        raise ValueError(f"checkpoint {checkpoint} has {cfg['num_classes']} classes but {raw.name} has "
                         f"{raw.num_classes}: use a checkpoint trained on {raw.name}")
    return model


def _gradient_blocks(raw, pending, model, resolution, dtype, postprocess=None):
    """Yield ``(start, maps, bad)`` of gradient saliency of ``model``, batched on its device."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from .saliency import gradient_saliency
    from .transforms import eval_transform

    device = next(model.parameters()).device
    tf = eval_transform(raw.name)
    with ThreadPoolExecutor(max(1, default_workers())) as ex:  # decoding releases the GIL
        for a, b in pending:
            bad: list = []

            def load(i):
                img = _decode(raw, i, bad)
                return None if img is None else tf(img)[0]

            xs = list(ex.map(load, range(a, b)))
            if bad:
                yield a, None, bad
                continue
            x = torch.stack(xs).to(device)
            y = torch.as_tensor(raw.labels[a:b], device=device)
            s = gradient_saliency(model, x, y).cpu().numpy()
            maps = np.stack([_resize(m, resolution) for m in s])
            yield a, quantize(_postprocess(maps, parse_postprocess(postprocess)), dtype), []


def build_cache(dataset: str, data_dir, split: str, method: str, out, *, resolution=None, workers: int | None = None,
                resume: bool = True, checkpoint=None, progress: bool = True, dtype: str = "uint8",
                block_size: int | None = None, download: bool = False, log=print,
                postprocess=DEFAULT_POSTPROCESS, wait: bool = True) -> Path:
    """Compute the saliency maps of one split and write them to the HDF5 cache ``out``.

    Args:
        dataset: a key of :data:`~saliencymixplus.datasets.SPECS`.
        data_dir: the data folder (``None`` for a generated set).
        split: ``"train"`` or ``"test"``.
        method: one of :data:`~saliencymixplus.saliency.METHODS`.
        out: the ``.h5`` file to write.
        resolution: ``(h, w)`` or ``"HxW"`` of the stored maps (default: the spec's
            ``stored_resolution``, else the images' size).
        workers: processes for the OpenCV methods (default: every core; 0 or 1: in process).
        resume: continue a matching ``out.partial`` and return at once if ``out`` is already a
            matching complete cache (every byte checked, :func:`~saliencymixplus.cache.verify_cache`);
            ``False`` starts afresh.
        checkpoint: a ``train.py`` checkpoint, required for ``method="gradient"``.
        progress: show a progress bar (images/s).
        dtype: ``"uint8"`` (default) or ``"float16"``.
        block_size: images per task and per resumable block (default 500 for in-memory sets,
            16 for image files).
        download: fetch the data set first if missing (when online).
        log: where to print notes.
        postprocess: :func:`~saliencymixplus.saliency.sharpen` applied to every map before it
            is stored, as ``"top=0.2,power=2"`` or a dict; ``"none"`` stores the maps as the
            method gives them. Recorded in the cache attribute ``postprocess``.
        wait: when another process is building ``out``, wait for it (saying so through ``log``)
            and then reuse its cache if it matches; ``False`` raises :class:`~saliencymixplus.files.BusyError`.

    Returns:
        the path of the finished cache.

    Raises:
        ValueError: bad arguments. OutputPathError: ``out`` cannot be written (checked first).
        FileNotFoundError: missing data or checkpoint. ImageDecodeError: image files that
        cannot be decoded (all of them named; finished blocks are kept for ``resume``).
        BusyError: ``wait=False`` and another process is building ``out``.
    """
    spec = get_spec(dataset)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "gradient" and checkpoint is None:
        raise ValueError("checkpoint is required for method 'gradient' (a train.py checkpoint)")
    if method != "gradient" and checkpoint is not None:
        raise ValueError(f"checkpoint is only used by method 'gradient', not {method!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if resolution is not None:
        resolution = parse_resolution(resolution)
    out = Path(out)
    if not (resume and out.is_file()):
        check_output_file(out)  # before any work: a folder, or a folder we cannot write in
    raw = load_split(dataset, data_dir, split, download=download)
    if resolution is None:
        resolution = spec.stored_resolution or raw.image_size()
    if block_size is None:
        block_size = (256 if method == "gradient" else 500) if raw.in_memory else 16
    postprocess = format_postprocess(postprocess)  # checks it, and the form the attribute records
    extra = {"checkpoint": file_sha256(checkpoint)} if method == "gradient" else {}
    extra["postprocess"] = postprocess

    def reusable(note_mismatch: bool) -> bool:
        """``out`` is a complete, undamaged cache of these settings."""
        try:
            done = verify_cache(out, expect=raw, method=method)
        except FileNotFoundError:
            return False
        except CacheMismatchError as e:
            if note_mismatch:
                log(f"rebuilding {out}: {e}")
            return False
        if done.resolution == resolution and done.dtype == np.dtype(dtype) and \
                all(done.attrs.get(k) == v for k, v in extra.items()):
            return True
        if note_mismatch:
            log(f"{out} holds other settings; rebuilding it")
        return False

    if resume and out.is_file():
        if reusable(True):
            log(f"{out} is already a complete cache of {dataset}/{split} ({method}); nothing to do")
            return out
        check_output_file(out)
    model = _load_gradient_model(checkpoint, raw) if method == "gradient" else None  # fails before any writing

    lock = cache_lock(out).acquire(
        wait=wait, on_wait=lambda pid: log(f"another process (pid {pid}) is building {out}; waiting for it to "
                                           f"finish (lock {out}.lock) ..."))
    try:
        if lock.waited and reusable(False):
            log(f"{out} was built by the other process; reusing it")
            return out
        partial = Path(str(out) + ".partial")
        if not resume and partial.exists():
            log(f"note: discarding {partial} from an earlier run (pass --resume to continue it)")
        return _write_cache(raw, out, lock, method=method, resolution=resolution, dtype=dtype,
                            block_size=block_size, resume=resume, extra=extra, workers=workers,
                            data_dir=data_dir, model=model, postprocess=postprocess,
                            progress=progress, log=log)
    finally:
        lock.release()


def _write_cache(raw, out: Path, lock: FileLock, *, method, resolution, dtype, block_size, resume, extra,
                 workers, data_dir, model, postprocess, progress, log) -> Path:
    """Compute the pending blocks into ``out.partial`` (``lock`` held) and finalize it."""
    with CacheWriter(out, dataset=raw.name, split=raw.split, count=len(raw), fingerprint=raw.fingerprint(),
                     method=method, resolution=resolution, dtype=dtype, block_size=block_size,
                     resume=resume, extra_attrs=extra, lock=lock, item_stamps=raw.item_stamps()) as writer:
        if writer.note:
            log(writer.note)
        pending = writer.pending()
        if method in OPENCV_METHODS:
            nw = default_workers() if workers is None else workers
            blocks = _opencv_blocks(raw, pending, method, resolution, dtype, nw, data_dir, postprocess)
        else:
            blocks = _gradient_blocks(raw, pending, model, resolution, dtype, postprocess)
        from tqdm import tqdm

        bad_images: list = []
        with tqdm(total=len(raw), initial=writer.images_done(), unit="img", disable=not progress,
                  desc=f"{method} {raw.name}/{raw.split}", dynamic_ncols=True, file=sys.stderr) as bar:
            for a, maps, bad in blocks:
                if bad:  # not written: the block is computed again once its images are fixed
                    bad_images += bad
                    continue
                writer.write(a, maps)
                bar.update(len(maps))
        if bad_images:
            raise ImageDecodeError.for_files(bad_images, raw.name, raw.split, resume=True)
        return writer.finalize()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Precompute saliency maps of a data set split into an HDF5 cache (resumable).")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", default=None, help="data folder (not needed for a generated set)")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS)
    p.add_argument("--out", required=True, help="the .h5 file to write (built as OUT.partial, then renamed)")
    p.add_argument("--checkpoint", default=None, help="train.py checkpoint (method gradient)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument("--resolution", default=None, help="HxW of the stored maps (default: image size; Pet 256x256)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    p.add_argument("--dtype", default="uint8", choices=("uint8", "float16"))
    p.add_argument("--block-size", type=int, default=None, help="images per resumable block")
    p.add_argument("--postprocess", default=DEFAULT_POSTPROCESS,
                   help="sharpen the maps before storing: 'top=F,power=P' keeps the top fraction F of each "
                        "map's pixels (rescaled) and raises them to P; 'none' stores them as computed "
                        f"(default: {DEFAULT_POSTPROCESS}, see benchmarks/RESULTS.md)")
    p.add_argument("--download", action="store_true", help="download the data set if missing (online)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-wait", action="store_true",
                   help="if another process is building OUT, stop (exit 2) instead of waiting for it "
                        "and reusing its result")
    return p


def _check_args(parser: argparse.ArgumentParser, args) -> None:
    """What argparse cannot check alone; ``parser.error`` exits with status 2."""
    if args.resolution is not None:
        try:
            parse_resolution(args.resolution)
        except ValueError as e:
            parser.error(f"--resolution: {e}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if args.block_size is not None and args.block_size < 1:
        parser.error(f"--block-size must be >= 1, got {args.block_size}")
    if args.method == "gradient" and args.checkpoint is None:
        parser.error("--checkpoint is required with --method gradient")
    if args.method != "gradient" and args.checkpoint is not None:
        parser.error(f"--checkpoint is only used with --method gradient, not {args.method}")
    try:
        parse_postprocess(args.postprocess)
    except ValueError as e:
        parser.error(f"--postprocess: {e}")
    if not get_spec(args.dataset).generated and args.data_dir is None:
        parser.error(f"--data-dir is required for --dataset {args.dataset}")


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (2 for bad arguments)."""
    parser = _parser()
    try:  # argparse exits (2 on bad arguments, 0 on --help): return the status instead
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as e:
        return int(e.code or 0)
    partial = Path(args.out + ".partial")
    t0 = time.perf_counter()
    try:
        path = build_cache(args.dataset, args.data_dir, args.split, args.method, args.out,
                           resolution=args.resolution, workers=args.workers, resume=args.resume,
                           checkpoint=args.checkpoint, progress=not args.no_progress, dtype=args.dtype,
                           block_size=args.block_size, download=args.download, postprocess=args.postprocess,
                           wait=not args.no_wait, log=lambda msg: print(msg, flush=True))
    except (FileNotFoundError, ValueError, BusyError, DiskFullError) as e:  # OutputPathError, ImageDecodeError included
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished blocks are kept in {partial}; rerun with --resume to continue",
              file=sys.stderr)
        return 130
    dt = time.perf_counter() - t0
    cache = SaliencyCache(path, in_memory=False)
    n = len(cache)
    size = path.stat().st_size
    print(f"wrote {path}: {n} maps {format_resolution(cache.resolution)} {cache.dtype}, "
          f"{size / 1e6:.1f} MB, in {dt:.1f} s")
    return 0
