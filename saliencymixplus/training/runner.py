"""``train.py`` from start to end: :func:`main` (the command line), :func:`run` (one run, from the
start or ``--resume`` to its summary, and the files it leaves in its folder) and
:func:`evaluate_checkpoint`; the rules are those of docs/design.md, "Training"."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..cache import CacheCorruptError, CacheMismatchError, SaliencyCache, verify_cache
from ..checkpoint_file import (RESUME_KEYS, CheckpointFileError, describe_load_error, load_checkpoint_model,
                               read_checkpoint)
from ..datasets import get_spec
from ..files import BusyError, DiskFullError, FileLock, OutputPathError, atomic_write, check_writable_dir, ensure_writable_dir
from ..interrupts import ctrl_c_remembered, raise_if_interrupted
from ..models import build_model
from ..precompute_command import rebuild_command
from ..rawdata import DataFileError, ImageDecodeError
from .config import CACHE_NAME, PROG, Config, UsageError, parse_config
from .distributed import Dist, barrier, log, rng_state, seed_everything, set_rng_state, setup_distributed
from .loaders import DeviceLoader, build_loaders, split_loader
from .loop import REFRESH_KEY, InPlaceRefresh, NonFiniteLossError, PassRefresh, build_mixer, evaluate, train_one_epoch

__all__ = ["main", "run", "evaluate_checkpoint", "prepare_data", "CSV_FIELDS"]

#: What a run leaves in its folder besides ``config.json`` (the last line lists those that exist).
OUTPUT_FILES = ("log.csv", "summary.json", "curves.png", "last.pt", "best.pt")
CSV_FIELDS = ("epoch", "lr", "train_loss", "train_top1_err", "train_top5_err",
              "test_top1_err", "test_top5_err", "images_per_s", "time_s")
#: Config keys that may change on ``--resume`` (docs/design.md, "Training"); the cache is identified
#: by its content hash, :data:`CACHE_KEY`.
RESUME_MAY_DIFFER = ("epochs", "out_dir", "resume", "progress", "workers", "device", "download", "data_dir",
                     "saliency_cache", "saliency_method", "compile", "channels_last", "limit_test_batches", "paper")
#: The checkpoint entry that holds the ``content_sha256`` of the saliency cache the run trained on.
CACHE_KEY = "saliency_cache_sha256"


class CacheBuildInterrupted(KeyboardInterrupt):
    """Ctrl-C while ``train.py`` built the training split's cache (``path``)."""

    def __init__(self, path):
        super().__init__(str(path))
        self.path = path


# ----------------------------------------------------------------------------- files of a run folder

def _write(path: Path, dump: Callable[[Any], None], mode: str = "w") -> None:
    """``dump(file)`` into ``path`` atomically; an ``OSError`` (a full disk) names ``path``, not its temporary file."""
    def write(tmp: Path) -> None:
        with open(tmp, mode, newline=None if "b" in mode else "") as f:
            dump(f)

    try:
        atomic_write(path, write)
    except OSError as e:
        if e.filename == str(path):
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def save_checkpoint(state: dict[str, Any], *paths: Path) -> None:
    """``torch.save(state)`` to each of ``paths`` atomically. The bytes are made once, in memory: torch
    reports a failed write (a full disk) as a ``RuntimeError`` without the ``OSError``, and a Ctrl-C
    inside its writer as a damaged archive."""
    buf = io.BytesIO()
    torch.save(state, buf)
    for path in paths:
        _write(path, lambda f: f.write(buf.getbuffer()), "wb")


def write_json(path: Path, data: dict) -> None:
    _write(path, lambda f: json.dump(data, f, indent=2))


def write_csv(path: Path, history: list[dict]) -> None:
    def dump(f) -> None:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS})

    _write(path, dump)


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss and error curves per epoch as a PNG, a marker on every epoch; nothing without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], marker="o", markersize=4, label="train loss")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend()
    for key, lab in (("train_top1_err", "train top-1"), ("test_top1_err", "test top-1"),
                     ("test_top5_err", "test top-5")):
        a2.plot(ep, [r[key] for r in history], marker="o", markersize=4, label=lab)
    a2.set_xlabel("epoch"), a2.set_ylabel("error (%)"), a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        _write(path, lambda f: fig.savefig(f, format="png", dpi=100), "wb")
    finally:
        plt.close(fig)


def summarize(cfg: Config, history: list[dict], best: Optional[dict], wall: float, status: str) -> dict:
    """``summary.json``'s content: best and last errors (None before the first epoch), speed, wall time,
    ``status`` ("finished", "interrupted", "diverged": a non-finite loss, "failed": another error), config."""
    last = history[-1] if history else None
    pick = lambda r, k: (r[k] if r else None)
    return {
        "status": status,
        "epochs_done": len(history),
        "best_top1_err": pick(best, "test_top1_err"), "best_top5_err": pick(best, "test_top5_err"),
        "best_epoch": pick(best, "epoch"),
        "last_top1_err": pick(last, "test_top1_err"), "last_top5_err": pick(last, "test_top5_err"),
        "last_epoch": pick(last, "epoch"),
        "images_per_s": pick(last, "images_per_s"),
        "wall_time_s": wall,
        "config": cfg.to_dict(),
    }


def result_table(summary: dict) -> str:
    """A one-row Markdown table of a run's result."""
    c = summary["config"]
    f = lambda v, fmt=".2f": "-" if v is None else format(v, fmt)
    return "\n".join([
        "| data set | model | mix | epochs | best top-1 err | best top-5 err | last top-1 err "
        "| last top-5 err | images/s | time |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {c['dataset']} | {c['model']} | {c['mix_aug']} (p={c['mix_prob']:g}) | "
        f"{summary['epochs_done']} | {f(summary['best_top1_err'])} | {f(summary['best_top5_err'])} | "
        f"{f(summary['last_top1_err'])} | {f(summary['last_top5_err'])} | "
        f"{f(summary['images_per_s'], '.0f')} | "
        f"{summary['wall_time_s']:.1f} s |",
    ])


# ----------------------------------------------------------------------------- checkpoints

def _done_so_far(ck: dict[str, Any]) -> tuple[list[dict], Optional[dict], float]:
    """A checkpoint's ``(history, best row, wall time)``: what :func:`summarize` takes of the epochs it has done."""
    return list(ck.get("history") or []), ck.get("best"), float(ck.get("wall_time_s", 0.0))


def _differences(old: dict, now: dict, form: str) -> str:
    """The config keys that define a run (all but :data:`RESUME_MAY_DIFFER`) and differ, each as ``form``."""
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
    return "; ".join(form.format(k=k, a=old[k], b=now[k]) for k in now
                     if k not in RESUME_MAY_DIFFER and k in old and norm(old[k]) != norm(now[k]))


def read_resume(cfg: Config, d: Dist) -> Optional[tuple[Path, dict[str, Any]]]:
    """The checked ``--resume`` checkpoint ``(path, checkpoint)`` on the CPU, or ``None`` when there
    is nothing to resume (no flag, or a bare ``--resume`` and no ``<out-dir>/last.pt`` yet)."""
    if cfg.resume is None:
        return None
    p = Path(cfg.out_dir) / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
    if cfg.resume == "auto" and not p.exists():
        log(d, f"--resume: no checkpoint at {p}; starting from scratch")
        return None
    ck = read_checkpoint(p, need=RESUME_KEYS, label="--resume")
    done, history = ck["epoch"], ck.get("history")
    damaged = f"the file is damaged or was not written by {PROG}"
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        raise CheckpointFileError(f"--resume {p}: its epoch is {done!r}, expected the number of epochs it has done "
                                  f"(an integer >= 0); {damaged}")
    if history is not None and (not isinstance(history, list) or len(history) != done):
        n = len(history) if isinstance(history, list) else type(history).__name__
        raise CheckpointFileError(f"--resume {p}: its epoch is {done} but its history has {n} epochs; {damaged}")
    diffs = _differences(ck["config"], cfg.to_dict(), "{k}: checkpoint {a!r}, now {b!r}")
    if diffs:
        raise CheckpointFileError(
            f"--resume {p}: this command differs from the run it would continue ({diffs}). Repeat that run's flags "
            f"(its config.json lists them) to continue it, or drop --resume and choose another --out-dir to start "
            f"a new run")
    if done > cfg.epochs:
        raise CheckpointFileError(f"--resume {p}: the checkpoint has already done {done} epochs, more than "
                                  f"--epochs {cfg.epochs}: pass --epochs {done + 1} or more to train further")
    return p, ck


def restore(ck: dict[str, Any], path: Path, net: nn.Module, optimizer, scheduler, scaler) -> None:
    """Load ``ck`` into the model, optimizer, scheduler, scaler and RNGs (CheckpointFileError when they do not fit)."""
    try:
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointFileError(f"--resume {path}: its saved states do not fit this run "
                                  f"({describe_load_error(e)})") from None


# ----------------------------------------------------------------------------- before training

def check_outputs(cfg: Config) -> None:
    """Before any work, creating nothing: :class:`OutputPathError` unless ``--out-dir`` and the files
    in it, and a saliency cache that must be built, can be written."""
    out = Path(cfg.out_dir)
    check_writable_dir(out, "--out-dir")
    for name in ("config.json", *OUTPUT_FILES):
        if (out / name).is_dir():
            raise OutputPathError(f"--out-dir {out}: {out / name} is a folder, where the run writes its {name}; "
                                  f"remove it or pick another --out-dir")
    if cfg.saliency_cache is None:
        return
    cache = Path(cfg.saliency_cache)
    if cache.is_dir():
        raise OutputPathError(f"--saliency-cache {cache} is a folder; give the .h5 file "
                              f"(e.g. {cache / CACHE_NAME.format(dataset=cfg.dataset, method=cfg.saliency_method)})")
    if not cache.exists():
        try:
            check_writable_dir(cache.parent, "the folder of --saliency-cache")
        except OutputPathError as e:
            how = rebuild_command(cfg.dataset, "train", cfg.saliency_method, "FILE.h5", data_dir=cfg.data_dir)
            raise OutputPathError(f"{e}: the saliency cache {cache} is missing and cannot be built there; "
                                  f"pass --saliency-cache FILE.h5 in a writable folder (built on first use, "
                                  f"or beforehand with: {how})") from None


def _held_run(cfg: Config, out: Path) -> str:
    """Why ``out``, which holds a ``last.pt``, cannot take this run, and what to do instead."""
    def read(name: str) -> dict:
        try:
            return json.loads((out / name).read_text())
        except (OSError, ValueError):
            return {}

    summary = read("summary.json")
    done, status = summary.get("epochs_done"), summary.get("status")
    what = f"{'an' if status == 'interrupted' else 'a'} {status + ' ' if status else ''}run"
    what += f" of {done} epoch{'s' if done != 1 else ''}" if done is not None else ""
    diffs = _differences(summary.get("config") or read("config.json"), cfg.to_dict(), "{k}: {a!r} there, {b!r} now")
    if diffs:
        return (f"--out-dir {out} already holds {what} with other settings ({diffs}): pick another --out-dir "
                f"for this run")
    return (f"--out-dir {out} already holds {what} of these settings: add --resume to continue it (with more "
            f"--epochs to train further), or pick another --out-dir (or remove {out}) to start again")


def _take_run_folder(cfg: Config, resumed: Optional[tuple[Path, dict]], held: contextlib.ExitStack) -> None:
    """Create the run folder and lock it until ``held`` closes (rank 0, once the data is found);
    :class:`UsageError` when it holds the checkpoint of a run this one does not continue."""
    out = ensure_writable_dir(cfg.out_dir, "--out-dir")
    held.enter_context(FileLock(out, lock_path=out / ".lock",
                                busy="--out-dir {target} is in use by another train.py (pid {pid}); wait for it "
                                     "to end or pick another --out-dir").acquire(wait=False))
    last = out / "last.pt"
    if last.exists() and (resumed is None or not last.samefile(resumed[0])):
        raise UsageError(_held_run(cfg, out))


def prepare_data(cfg: Config, d: Dist, train_raw, test_raw) -> Optional[dict]:
    """Rank 0, before training: every image file of both splits looks whole, and the saliency cache
    is verified against the training split or built; every bad image is named in one
    :class:`ImageDecodeError`. Returns the cache's attributes, or ``None`` without one.
    """
    bad = test_raw.find_bad_images()
    build = cfg.saliency_cache is not None and not Path(cfg.saliency_cache).exists()
    if build:  # building decodes every training image and names those it cannot decode
        from ..precompute import build_cache  # OpenCV and worker pools: only when building

        log(d, f"saliency cache {cfg.saliency_cache} not found: building it ({cfg.saliency_method}) ...")
        try:
            build_cache(cfg.dataset, cfg.data_dir, "train", cfg.saliency_method, cfg.saliency_cache,
                        workers=cfg.workers, progress=cfg.progress, log=lambda m: log(d, m))
            raise_if_interrupted()
        except ImageDecodeError as e:
            if not e.bad:
                raise
            bad = list(e.bad) + bad
        except KeyboardInterrupt:
            raise CacheBuildInterrupted(cfg.saliency_cache) from None
    else:
        bad = train_raw.find_bad_images() + bad
    if bad:
        raise ImageDecodeError.for_files(bad, cfg.dataset)
    if cfg.saliency_cache is None:
        return None
    cache = SaliencyCache(cfg.saliency_cache, in_memory=False) if build else \
        verify_cache(cfg.saliency_cache, expect=train_raw)
    return dict(cache.attrs)


# ----------------------------------------------------------------------------- a run

def run(cfg: Config) -> dict:
    """Train (or continue) one run and return its summary (``summary.json``'s content); with
    ``--resume`` of a checkpoint that has done ``--epochs`` epochs, the checkpoint's, writing nothing.

    Raises the errors of :data:`EXITS`, those with exit code 2 before any training;
    :class:`NonFiniteLossError` (``e.epochs_done`` good epochs) before that epoch's checkpoint.
    """
    d = setup_distributed(cfg)
    if cfg.num_classes is None:  # a folder set: its class folders, before the checkpoint is compared
        cfg.num_classes = get_spec(cfg.dataset).count_classes(cfg.data_dir)
    if cfg.batch_size % d.world:
        raise UsageError(f"--batch_size {cfg.batch_size} must be divisible by the number of "
                         f"processes ({d.world})")
    out = Path(cfg.out_dir)
    if d.main:
        check_outputs(cfg)  # before any work
    seed_everything(cfg.seed)
    if d.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    resumed = read_resume(cfg, d)  # a bad --resume fails before any data work
    if resumed is not None and resumed[1]["epoch"] >= cfg.epochs:
        log(d, f"nothing to train: {resumed[0]} has already done all {cfg.epochs} epochs "
               f"(pass --epochs {cfg.epochs + 1} or more to train further)")
        return {**summarize(cfg, *_done_so_far(resumed[1]), "finished"), "nothing_to_train": True}
    cache_sha, splits = None, None  # rank 0 loads the splits once, for its checks and its loaders
    with contextlib.ExitStack() as held:  # the run folder's lock
        if d.main:
            spec = get_spec(cfg.dataset)
            train_raw = spec.load(cfg.data_dir, "train", download=cfg.download)  # missing data: nothing made yet
            cfg.train_count(len(train_raw))  # a bad --train-size: nothing made yet
            splits = train_raw, spec.load(cfg.data_dir, "test", download=cfg.download)
            _take_run_folder(cfg, resumed, held)
            cache = prepare_data(cfg, d, *splits)
            if cache is not None:
                cfg.saliency_method, cache_sha = str(cache["method"]), str(cache["content_sha256"])
                want = resumed and resumed[1].get(CACHE_KEY)
                if want and want != cache_sha:
                    raise CheckpointFileError(
                        f"--resume {resumed[0]}: the run trained on a saliency cache with content_sha256 {want[:16]}"
                        f"..., but --saliency-cache {cfg.saliency_cache} has {cache_sha[:16]}...: continue with the "
                        f"run's own cache, or start a new run (another --out-dir) on this one")
        barrier(d)
        return _train(cfg, d, out, resumed, cache_sha, splits)


def _train(cfg: Config, d: Dist, out: Path, resumed: Optional[tuple[Path, dict]], cache_sha: Optional[str],
           splits) -> dict:
    """:func:`run` once the data and the run folder are ready."""
    train_loader, test_loader = build_loaders(cfg, d, splits)
    net = build_model(cfg.model, cfg.num_classes, cfg.image_size).to(d.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                     gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(d.device.type) if cfg.amp == "fp16" else None
    refresh = None
    if cfg.saliency == "refresh":
        strategy = InPlaceRefresh if isinstance(train_loader, DeviceLoader) else PassRefresh
        refresh = strategy(cfg, d, train_loader, out)
    history, best, start_epoch, wall_before = [], None, 0, 0.0
    if resumed is not None:
        ckpt_path, ck = resumed
        restore(ck, ckpt_path, net, optimizer, scheduler, scaler)
        start_epoch, (history, best, wall_before) = ck["epoch"], _done_so_far(ck)
        if refresh is not None:
            refresh.restore(ck, ckpt_path)
        del ck, resumed  # the restored states live in the model, optimizer and refreshed maps now
        log(d, f"resumed from {ckpt_path} after epoch {start_epoch}")

    model: nn.Module = net
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    # Evaluation runs the module itself on each rank's shard (no DDP hooks needed).
    eval_model = model if not d.enabled else (torch.compile(net) if cfg.compile else net)
    mixer = build_mixer(cfg)

    if d.main:
        write_json(out / "config.json", cfg.to_dict())
        log(d, f"{cfg.dataset}: {cfg.model}, {cfg.mix_aug} p={cfg.mix_prob:g}, {cfg.epochs} epochs, "
               f"batch {cfg.batch_size} on {d.world} x {d.device}, loader {cfg.loader}; out {out}")
    t_start = time.perf_counter()
    status = "finished"
    try:
        for epoch in range(start_epoch, cfg.epochs):
            lr = optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            tr = train_one_epoch(cfg, d, model, net, train_loader, mixer, optimizer, scaler, epoch, refresh)
            if refresh is not None:
                refresh.end_epoch(epoch + 1, net)  # all ranks' maps agree; rank 0 saves them
            te = evaluate(cfg, d, eval_model, test_loader)
            scheduler.step()
            row = {"epoch": epoch + 1, "lr": lr, **tr, **te, "time_s": time.perf_counter() - t0}
            history.append(row)
            is_best = best is None or row["test_top1_err"] <= best["test_top1_err"]
            if is_best:
                best = row
            if d.main:
                ck = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),  # see checkpoint_file
                      "scheduler": scheduler.state_dict(), "scaler": None if scaler is None else scaler.state_dict(),
                      "epoch": epoch + 1, "rng": rng_state(), "config": cfg.to_dict(), "history": history,
                      "best": best, "wall_time_s": wall_before + time.perf_counter() - t_start}
                if cache_sha is not None:
                    ck[CACHE_KEY] = cache_sha
                if refresh is not None:
                    ck[REFRESH_KEY] = refresh.record(is_best)
                save_checkpoint(ck, out / "last.pt", *([out / "best.pt"] if is_best else []))
                if refresh is not None:
                    refresh.prune()
                write_csv(out / "log.csv", history)
                log(d, f"epoch {epoch + 1}/{cfg.epochs}  lr {lr:.4g}  loss {row['train_loss']:.4f}  "
                       f"train err {row['train_top1_err']:.2f}  test err {row['test_top1_err']:.2f} / "
                       f"{row['test_top5_err']:.2f}  {row['images_per_s']:.0f} img/s  {row['time_s']:.1f} s")
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        if isinstance(e, NonFiniteLossError):  # stopped before this epoch's checkpoint: last.pt is the last good one
            status, e.epochs_done = "diverged", len(history)
        raise
    finally:
        summary = summarize(cfg, history, best, wall_before + time.perf_counter() - t_start, status)
        if d.main and out.exists():
            try:
                write_json(out / "summary.json", summary)
                if history:
                    plot_curves(out / "curves.png", history, f"{cfg.dataset} {cfg.model} {cfg.mix_aug}")
            except OSError:
                if status == "finished":
                    raise  # else the error that stopped the run is the one to report
    return summary


def evaluate_checkpoint(path: str | os.PathLike, *, data_dir: Optional[str] = None,
                        device: str = "cpu", limit_test_batches: Optional[int] = None) -> dict[str, float]:
    """Test errors of a checkpoint's weights on its data set's test split (one process)."""
    net, saved = load_checkpoint_model(path, device)
    fields = {f.name for f in dataclasses.fields(Config)}
    cfg = Config(**{k: v for k, v in saved.items() if k in fields})
    cfg.data_dir = data_dir if data_dir is not None else cfg.data_dir
    cfg.limit_test_batches = limit_test_batches
    d = Dist(device=torch.device(device))
    test = split_loader(cfg, d, get_spec(cfg.dataset).load(cfg.data_dir, "test"), train=False)
    return evaluate(cfg, d, net, test)


# ----------------------------------------------------------------------------- the command line

#: Usage and data errors, found before any training (exit code 2).
USAGE_ERRORS = (UsageError, CheckpointFileError, FileNotFoundError, OutputPathError, DataFileError, BusyError,
                DiskFullError)
#: How :func:`main` reports what :func:`run` raises: ``(types, exit code, stderr line)``, the first
#: that matches; ``{m}`` is :func:`_message`. The codes are those of docs/design.md, "Training".
EXITS = (
    (CacheCorruptError, 2, "{p}: saliency cache damaged: {m} (or delete it: train.py builds a missing cache)"),
    (CacheMismatchError, 2, "{p}: saliency cache mismatch: {m} (delete it to rebuild, or pass another "
                            "--saliency-cache)"),
    (USAGE_ERRORS, 2, "{p}: error: {m}"),
    (NonFiniteLossError, 1, "{p}: error: {m}"),
    (OSError, 1, "{p}: error: {m}"),  # a full disk, a folder removed mid-run: what and where
    (KeyboardInterrupt, 130, "\n{p}: {m}"),
)


def _message(e: BaseException, cfg: Config) -> str:
    """``e``'s message in one line (one per file for bad images); for an error re-raised from a
    ``DataLoader`` worker, the original error instead of the worker's traceback."""
    if isinstance(e, NonFiniteLossError):
        if getattr(e, "epochs_done", None):
            kept = (f"{cfg.out_dir}/last.pt holds epoch {e.epochs_done}, the last good one (finite loss and weights; "
                    f"best.pt the best of those), and nothing of the failed epoch was saved")
        else:
            kept = "no epoch ended with a finite loss and weights, so no checkpoint was written"
        return f"{e}; {kept}. Lower --learning_rate (now {cfg.learning_rate:g}) and start again"
    if isinstance(e, CacheBuildInterrupted):
        return (f"interrupted while building the saliency cache {e.path}; run the same command again: the build "
                f"continues from its finished blocks")
    if isinstance(e, KeyboardInterrupt):
        last = Path(cfg.out_dir) / "last.pt"
        if last.is_file():
            return (f"interrupted; {last} holds the last completed epoch. Continue with the same command"
                    f"{'' if cfg.resume else ' plus --resume'}.")
        return "interrupted before the first epoch ended, so nothing was saved; run the same command again"
    if isinstance(e, OSError) and not isinstance(e, USAGE_ERRORS):
        return f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''} ({type(e).__name__})"
    text = str(e).strip()
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        head, sep, tail = last.partition(": ")
        return tail if sep and "Error" in head else last
    if isinstance(e, ImageDecodeError):
        return text  # one line per file
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point; returns the exit status (:data:`EXITS`)."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        cfg = parse_config(argv)
    except UsageError as e:
        if is_main:
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        with ctrl_c_remembered():
            summary = run(cfg)
    except BaseException as e:
        code, line = next(((code, line) for types, code, line in EXITS if isinstance(e, types)), (None, None))
        if code is None:
            raise
        if is_main:
            print(line.format(p=PROG, m=_message(e, cfg)), file=sys.stderr)
        return code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        print(result_table(summary))
        if summary.get("nothing_to_train"):
            print(f"nothing was trained or written; {cfg.out_dir} is as it was")
        else:
            have = [f for f in OUTPUT_FILES if (Path(cfg.out_dir) / f).is_file()]
            print(f"outputs in {cfg.out_dir}: {', '.join(have) if have else 'none'}")
    return 0
