"""The cache tool (``saliencymixplus-precompute``, ``--help`` lists its flags): a data set
split's saliency maps into an HDF5 cache, on every core, resumably, in shards if asked; docs/design.md,
"The saliency cache", says how a build is written, locked, resumed, sharded and joined."""

from __future__ import annotations

import argparse
import ctypes
import functools
import multiprocessing as mp
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from .cache import (DTYPES, SHARD_ATTRS, CacheMismatchError, CacheWriter, SaliencyCache, cache_lock, join_cache,
                    quantize, verify_cache)
from .datasets import DATASETS, SPECS, SPLITS, get_spec
from .files import BusyError, DiskFullError, check_output_file, file_sha256
from .interrupts import ctrl_c_remembered, raise_if_interrupted
from .precompute_command import PROGRAM, format_resolution, parse_resolution, parse_shard, shard_path, shard_range
from .rawdata import ImageDecodeError, default_workers, load_split
from .saliency import (DEFAULT_METHOD, DEFAULT_POSTPROCESS, METHODS, OPENCV_METHODS, compute_saliency, format_postprocess,
                       gradient_saliency, parse_postprocess, sharpen)

__all__ = ["build_cache", "join_shards", "parse_shard", "main"]

_STATE: dict = {}  # per process: the split and settings the workers compute with


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the main process dies (even by SIGKILL).
    A worker still starting when its parent died (it may take seconds to import) exits here:
    the kernel's signal only covers deaths after it is asked for."""
    if sys.platform.startswith("linux"):
        parent = mp.parent_process()
        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if parent is not None and os.getppid() != parent.pid:  # reparented: the parent is gone
            os._exit(1)


def _init_worker(dataset, data_dir, split, method, resolution, dtype, postprocess, raw=None) -> None:
    cv2.setNumThreads(1)  # one process per core already
    if raw is None:  # a pool worker: it loads the split itself
        _die_with_parent()
        raw = load_split(dataset, data_dir, split)
    _STATE.update(raw=raw, method=method, resolution=tuple(resolution), dtype=dtype,
                  postprocess=parse_postprocess(postprocess))


def _resize(m: np.ndarray, resolution) -> np.ndarray:
    """``float32[h, w]`` -> ``float32[H, W]`` (area when shrinking, bilinear when growing)."""
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
    return a, _stored(maps, _STATE["postprocess"], _STATE["dtype"]), bad


def _stored(maps: np.ndarray, postprocess: dict, dtype: str) -> np.ndarray:
    """``float32[n, h, w]`` maps sharpened with ``postprocess`` (:func:`~saliencymixplus.saliency.sharpen`'s
    keyword arguments; none: as they are), in the storage ``dtype``."""
    return quantize(sharpen(maps, **postprocess) if postprocess else maps, dtype)


def _opencv_blocks(raw, pending, method, resolution, dtype, workers, postprocess):
    """Yield ``(start, maps, bad)`` for the pending blocks, in order, computed by ``workers`` processes."""
    args = (raw.name, raw.data_dir, raw.split, method, resolution, dtype, postprocess)
    if workers <= 1 or len(pending) <= 1:
        _init_worker(*args, raw=raw)
        yield from map(_compute_block, pending)
        return
    # Fresh worker processes: a fork of a process whose OpenCV/OpenMP thread pools are running
    # can deadlock in the child's first parallel call.
    context = mp.get_context("spawn")
    with context.Pool(min(workers, len(pending)), initializer=_init_worker, initargs=args) as pool:
        yield from pool.imap(_compute_block, pending, chunksize=1)


def _load_gradient_model(checkpoint, raw):
    """The model of ``checkpoint`` on the best device, checked against ``raw``'s classes."""
    from .checkpoint_file import load_checkpoint_model

    model, cfg = load_checkpoint_model(checkpoint)
    if int(cfg["num_classes"]) != raw.num_classes:
        raise ValueError(f"checkpoint {checkpoint} has {cfg['num_classes']} classes but {raw.name} has "
                         f"{raw.num_classes}: use a checkpoint trained on {raw.name}")
    return model


def _gradient_blocks(raw, pending, model, resolution, dtype, postprocess):
    """Yield ``(start, maps, bad)`` of gradient saliency of ``model``, batched on its device."""
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
            yield a, _stored(np.stack([_resize(m, resolution) for m in s]), parse_postprocess(postprocess), dtype), []


def _settings(spec, data_dir, method: str, checkpoint, resolution,
              postprocess) -> tuple[tuple[int, int] | None, dict]:
    """Check what a build and a join of shards take alike, before the output is touched:
    ``(resolution as (h, w) or None, the attributes that record the checkpoint's hash and the postprocess)``."""
    spec.check_data_dir(data_dir)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "gradient" and checkpoint is None:
        raise ValueError("checkpoint is required for method 'gradient' (a train.py checkpoint)")
    if method != "gradient" and checkpoint is not None:
        raise ValueError(f"checkpoint is only used by method 'gradient', not {method!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    resolution = parse_resolution(resolution) if resolution is not None else None
    extra = {"checkpoint": file_sha256(checkpoint)} if checkpoint is not None else {}
    extra["postprocess"] = format_postprocess(postprocess)  # checks it, and the form the attribute records
    return resolution, extra


def build_cache(dataset: str, data_dir, split: str, method: str, out, *, resolution=None, workers: int | None = None,
                resume: bool = True, checkpoint=None, progress: bool = True, dtype: str = "uint8",
                block_size: int | None = None, download: bool = False, log=print,
                postprocess=DEFAULT_POSTPROCESS, wait: bool = True, shard: tuple[int, int] | None = None) -> Path:
    """Compute the saliency maps of one split and write them to the HDF5 cache ``out``; return
    its path (the shard file's, for ``shard``).

    Args:
        resolution: ``(h, w)`` or ``"HxW"`` of the stored maps (default: the spec's
            ``stored_resolution``, else the images' size).
        workers: processes for the OpenCV methods (default: every core; 0 or 1: in process).
        resume: continue a matching ``out.partial`` and return at once if ``out`` is already a
            matching complete cache (every byte checked); ``False`` starts afresh.
        checkpoint: a ``train.py`` checkpoint, required for ``method="gradient"`` (which runs
            on the best device).
        block_size: images per task and per resumable block (default: 500, 256 for gradient,
            for sets in memory; 16 for image files).
        postprocess: :func:`~saliencymixplus.saliency.sharpen` applied to every map before it
            is stored, as ``"top=0.2,power=2"`` or a dict; ``"none"`` stores the maps as the
            method gives them. Recorded in the cache attribute ``postprocess``.
        wait: when another process is building ``out``, wait for it (saying so through ``log``)
            and then reuse its cache if it matches; ``False`` raises :class:`~saliencymixplus.files.BusyError`.
        shard: ``(k, n)``: build only shard ``k`` of ``n`` (the images
            :func:`~saliencymixplus.precompute_command.shard_range` gives it) into its own cache
            ``shard_path(out, k, n)``, which :func:`join_shards` joins.

    Undecodable images are one :class:`~saliencymixplus.rawdata.ImageDecodeError` naming them
    all, raised after the other blocks are written (kept for ``resume``).
    """
    spec = get_spec(dataset)
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    resolution, extra = _settings(spec, data_dir, method, checkpoint, resolution, postprocess)
    if shard is not None:
        shard = parse_shard(shard)
        out = shard_path(out, *shard)
    out = Path(out)
    if not (resume and out.is_file()):
        check_output_file(out)  # before any work: a folder, or a folder we cannot write in
    raw = load_split(dataset, data_dir, split, download=download)
    resolution = resolution or spec.stored_resolution or raw.image_size()
    if block_size is None:
        block_size = (256 if method == "gradient" else 500) if raw.in_memory else 16
    start, stop = 0, len(raw)
    if shard is not None:
        start, stop = shard_range(len(raw), block_size, *shard)
        extra.update(zip(SHARD_ATTRS, (*shard, start, stop, len(raw))))
    expect = raw if shard is None else _Span(raw, start, stop)

    def reusable(note_mismatch: bool) -> bool:
        """``out`` is a complete, undamaged cache of these settings."""
        try:
            done = verify_cache(out, expect=expect, method=method)
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

    with cache_lock(out).acquire(wait=wait, on_wait=lambda pid: log(
            f"another process (pid {pid}) is building {out}; waiting for it to finish (lock {out}.lock) ...")) as lock:
        if lock.waited and reusable(False):
            log(f"{out} was built by the other process; reusing it")
            return out
        partial = Path(str(out) + ".partial")
        if not resume and partial.exists():
            log(f"note: discarding {partial} from an earlier run (pass --resume to continue it)")
        with CacheWriter(out, dataset=raw.name, split=raw.split, count=stop - start, fingerprint=raw.fingerprint(),
                         method=method, resolution=resolution, dtype=dtype, block_size=block_size, resume=resume,
                         extra_attrs=extra, lock=lock, item_stamps=raw.item_stamps()[start:stop]) as writer:
            if writer.note:
                log(writer.note)
            pending = [(a + start, b + start) for a, b in writer.pending()]
            if method in OPENCV_METHODS:
                nw = default_workers() if workers is None else workers
                blocks = _opencv_blocks(raw, pending, method, resolution, dtype, nw, extra["postprocess"])
            else:
                blocks = _gradient_blocks(raw, pending, model, resolution, dtype, extra["postprocess"])
            from tqdm import tqdm

            bad_images: list = []
            desc = f"{method} {raw.name}/{raw.split}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
            with tqdm(total=stop - start, initial=writer.images_done(), unit="img", disable=not progress,
                      desc=desc, dynamic_ncols=True, file=sys.stderr) as bar:
                for a, maps, bad in blocks:
                    if bad:  # not written: the block is computed again once its images are fixed
                        bad_images += bad
                        continue
                    writer.write(a - start, maps)
                    bar.update(len(maps))
                    raise_if_interrupted()
            if bad_images:
                raise ImageDecodeError.for_files(bad_images, raw.name, raw.split, resume=True)
            return writer.finalize()


class _Span:
    """Images ``[start, stop)`` of a split, as a shard file's reader checks them: the split's
    name, folder and fingerprint, ``stop - start`` images."""

    def __init__(self, raw, start: int, stop: int):
        self.raw, self.start, self.stop = raw, start, stop
        self.name, self.split, self.data_dir = raw.name, raw.split, raw.data_dir

    def __len__(self) -> int:
        return self.stop - self.start

    def fingerprint(self) -> str:
        return self.raw.fingerprint()


def join_shards(dataset: str, data_dir, split: str, method: str, out, num_shards: int, *, resolution=None,
                checkpoint=None, dtype: str = "uint8", postprocess=DEFAULT_POSTPROCESS, download: bool = False,
                wait: bool = True, log=print) -> Path:
    """Join the ``num_shards`` shard files that :func:`build_cache` with ``shard=(k, num_shards)``
    wrote for ``out`` into the cache ``out`` (:func:`~saliencymixplus.cache.join_cache`: a virtual
    dataset over the shard files, which stay where they are). The arguments are those the shards
    were built with (errors as :func:`build_cache`'s and ``join_cache``'s); the split is loaded to
    check that every shard was built from its current images.
    """
    spec = get_spec(dataset)
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    resolution, extra = _settings(spec, data_dir, method, checkpoint, resolution, postprocess)
    out = check_output_file(out)
    raw = load_split(dataset, data_dir, split, download=download)
    attrs = {"dataset": raw.name, "split": raw.split, "count": len(raw), "fingerprint": raw.fingerprint(),
             "method": method, "resolution": resolution or spec.stored_resolution or raw.image_size(), **extra}
    with cache_lock(out).acquire(wait=wait, on_wait=lambda pid: log(
            f"another process (pid {pid}) is writing {out}; waiting for it ...")) as lock:
        return join_cache(out, num_shards, attrs=attrs, dtype=dtype, data_dir=data_dir, lock=lock)


def _torchrun_world() -> tuple[int, int, int, int] | None:
    """``(rank, world size, local rank, local world size)`` when started by ``torchrun`` (or any
    launcher that sets ``RANK`` and ``WORLD_SIZE``) with more than one process, else ``None``."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or "RANK" not in os.environ:
            return None
        return (int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    except ValueError:
        return None


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
    p.add_argument("--resolution", default=None,
                   help="HxW of the stored maps (default: " + ", ".join(
                       f"{k} {format_resolution(v.stored_resolution)}" for k, v in SPECS.items()
                       if v.stored_resolution) + "; else the image size)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial")
    p.add_argument("--dtype", default="uint8", choices=list(DTYPES))
    p.add_argument("--block-size", type=int, default=None, help="images per resumable block")
    p.add_argument("--postprocess", default=DEFAULT_POSTPROCESS,
                   help="sharpen the maps before storing: 'top=F,power=P' keeps the top fraction F of each "
                        "map's pixels (rescaled) and raises them to P; 'none' stores them as computed "
                        f"(default: {DEFAULT_POSTPROCESS}, see benchmarks/RESULTS.md)")
    p.add_argument("--download", action="store_true", help="download the data set if missing (online)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="build only shard K of N (K = 0 .. N-1; contiguous runs of blocks) into "
                        "OUT.shard-K-of-N.h5, resumable like a whole cache; then --join N writes OUT")
    p.add_argument("--join", type=int, default=None, metavar="N",
                   help="join the N shard files OUT.shard-K-of-N.h5 (built with the same arguments and --shard "
                        "K/N) into OUT, a cache whose maps are read from them (keep them beside OUT). Under "
                        "torchrun (WORLD_SIZE > 1) each rank builds its shard and rank 0 joins them: no "
                        "--shard or --join then")
    p.add_argument("--no-wait", action="store_true",
                   help="if another process is building OUT, stop (exit 2) instead of waiting for it "
                        "and reusing its result")
    return p


def _check_args(parser: argparse.ArgumentParser, args, world) -> None:
    """What argparse cannot check alone and the library does not check (:func:`_attempt` names
    the flags in the library's errors); ``parser.error`` exits with status 2."""
    if args.join is not None and args.shard is not None:
        parser.error("--shard builds one shard and --join joins them all: give one of them")
    if world is not None and (args.shard is not None or args.join is not None):
        parser.error(f"--shard and --join are not used under torchrun (WORLD_SIZE={world[1]}): each rank builds "
                     f"its shard and rank 0 joins them")


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status (2 for bad arguments)."""
    parser = _parser()
    world = _torchrun_world()
    try:  # argparse exits (2 on bad arguments, 0 on --help): return the status instead
        args = parser.parse_args(argv)
        _check_args(parser, args, world)
    except SystemExit as e:
        return int(e.code or 0)
    if world is not None:
        return _main_ranks(args, parser, *world)
    t0 = time.perf_counter()
    if args.join is not None:
        return _attempt(parser, args, lambda: _report(_join(args, args.join), t0, args.join))
    return _attempt(parser, args, lambda: _report(_build(args), t0))


def _build(args) -> Path:
    return build_cache(args.dataset, args.data_dir, args.split, args.method, args.out,
                       resolution=args.resolution, workers=args.workers, resume=args.resume,
                       checkpoint=args.checkpoint, progress=not args.no_progress, dtype=args.dtype,
                       block_size=args.block_size, download=args.download, postprocess=args.postprocess,
                       wait=not args.no_wait, log=functools.partial(print, flush=True), shard=args.shard)


def _join(args, n: int) -> Path:
    return join_shards(args.dataset, args.data_dir, args.split, args.method, args.out, n, resolution=args.resolution,
                       checkpoint=args.checkpoint, dtype=args.dtype, postprocess=args.postprocess,
                       download=args.download, wait=not args.no_wait, log=functools.partial(print, flush=True))


#: The arguments of build_cache and join_shards whose refusals (``NAME must ...``, ``NAME is required
#: ...``) the tool reports under its flag; other messages may start with a path, and stay as they are.
_FLAGS = {"resolution": "--resolution", "postprocess": "--postprocess", "top": "--postprocess top",
          "power": "--postprocess power", "workers": "--workers", "block_size": "--block-size",
          "checkpoint": "--checkpoint", "shard": "--shard", "num_shards": "--join"}
_REFUSAL = re.compile(r"(\w+)(?= (must|keys|value|is required|is only) )")


def _attempt(parser, args, work) -> int:
    """Run ``work()`` for the command line ``args``; the exit status: 0, or 2 (bad arguments,
    data, output or shards) or 130 (interrupted) after printing why."""
    try:
        with ctrl_c_remembered():
            work()
            return 0
    except (FileNotFoundError, ValueError, BusyError, DiskFullError) as e:  # OutputPathError, ImageDecodeError included
        text, refusal = str(e), _REFUSAL.match(str(e))
        if refusal and refusal[1] in _FLAGS:
            text = _FLAGS[refusal[1]] + text[refusal.end():]
        print(f"{parser.prog}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = shard_path(args.out, *parse_shard(args.shard)) if args.shard is not None else args.out
        print(f"\ninterrupted: finished blocks are kept in {out}.partial; rerun with --resume to continue",
              file=sys.stderr)
        return 130


def _report(path: Path, t0: float, joined: int | None = None) -> None:
    dt = time.perf_counter() - t0
    cache = SaliencyCache(path, in_memory=False)
    size = sum(p.stat().st_size for p in [path, *(q.path for q in cache._parts or ())])
    what = f" (joined from {joined} shard files)" if joined else ""
    print(f"wrote {path}{what}: {len(cache)} maps {format_resolution(cache.resolution)} {cache.dtype}, "
          f"{size / 1e6:.1f} MB, in {dt:.1f} s")


def _main_ranks(args, parser, rank: int, world: int, local_rank: int, local_world: int) -> int:
    """Under ``torchrun``: build shard ``rank`` of ``world`` (gradient saliency on GPU
    ``LOCAL_RANK`` when there is one; the OpenCV methods on this machine's share of its cores),
    agree on success (gloo), then rank 0 joins the shards into ``--out``."""
    from datetime import timedelta

    import torch.distributed as dist

    if args.method == "gradient" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())  # the best device of build_cache
    if args.workers is None:
        args.workers = max(1, default_workers() // max(1, local_world))
    args.shard = (rank, world)  # what _build builds, and the partial file _attempt names
    args.no_progress = args.no_progress or rank != 0
    # A rank waits for the slowest shard: allow days (torchrun stops the others if one dies).
    try:
        dist.init_process_group("gloo", timeout=timedelta(days=7))
    except (ValueError, RuntimeError) as e:  # RANK/WORLD_SIZE set, but no torchrun rendezvous
        print(f"{parser.prog}: error: WORLD_SIZE={world} asks for {world} ranks, but they cannot meet ({e}): run "
              f"under torchrun, or unset RANK and WORLD_SIZE", file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        rc = _attempt(parser, args, lambda: _build(args))
        status = torch.tensor([rc])
        dist.all_reduce(status, op=dist.ReduceOp.MAX)  # the barrier: every shard is finished, or one failed
        if int(status) != 0:
            if rc == 0 and rank == 0:
                print(f"{parser.prog}: error: a shard failed on another rank (see its message): run the same "
                      f"command again (with --resume) to finish it", file=sys.stderr)
            return rc or int(status)
        if rank == 0:
            rc = _attempt(parser, args, lambda: _report(_join(args, world), t0, world))
        return rc
    finally:
        dist.destroy_process_group()
