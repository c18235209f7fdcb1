"""What a ``train.py`` checkpoint file holds, and how to read it (``weights_only``; docs/design.md,
"Training"): a dict saved with ``torch.save``, ``model`` (the plain module's state_dict), ``config``
(the run's :class:`~saliencymixplus.training.Config` as a dict) and, for ``--resume``,
``optimizer``, ``scheduler``, ``scaler`` (or None), ``epoch`` (epochs done), ``rng``, ``history``
(a row per epoch), ``best`` (the best row or None), ``wall_time_s`` and, when the run used them,
``saliency_cache_sha256`` and ``saliency_refresh``. Written by :mod:`saliencymixplus.training.runner`;
read by ``train.py`` and the cache tool (gradient saliency).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .datasets import get_spec

__all__ = ["RESUME_KEYS", "CheckpointFileError", "read_checkpoint", "load_checkpoint_model", "describe_load_error",
           "best_device"]

#: The keys ``--resume`` needs (a model-only file has ``model`` and ``config``).
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config")


class CheckpointFileError(ValueError):
    """A file that is not a readable ``train.py`` checkpoint; the message says why, in one line."""


def describe_load_error(e: BaseException) -> str:
    """One line on why ``torch.load`` failed."""
    text = str(e).strip()
    lines = text.splitlines()
    if text.startswith("Weights only load failed"):  # the reason is on a later line
        detail = next((ln.strip() for ln in lines[1:] if ln.strip() and not ln.startswith(
            ("Please file", "Check the documentation"))), "")
        return ("refused: it holds objects other than tensors and plain data, which could run code when "
                "loaded" + (f" ({detail})" if detail else ""))
    first = lines[0] if lines else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def read_checkpoint(path: str | os.PathLike, map_location="cpu", *, need=("model", "config"),
                    label: str = "checkpoint") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checkpoint that must hold the keys ``need``
    (a dict ``config`` among them); else ``FileNotFoundError`` or
    :class:`CheckpointFileError`, whose one line starts with ``label`` and the path (``label=""``:
    the path alone, for a caller that names it)."""
    p = Path(path)
    name = f"{label} {p}" if label else str(p)
    if p.is_dir():
        raise CheckpointFileError(f"{name} is a folder; give the checkpoint file (e.g. {p / 'last.pt'})")
    if not p.is_file():
        raise FileNotFoundError(f"{name}: no such checkpoint")
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a cut or foreign file
        raise CheckpointFileError(f"{name} cannot be read as a train.py checkpoint "
                                  f"({describe_load_error(e)})") from None
    if not isinstance(ck, dict):
        raise CheckpointFileError(f"{name} is not a train.py checkpoint (it holds a {type(ck).__name__}, "
                                  f"not a dict)")
    missing = [k for k in need if k not in ck]
    if missing or ("config" in need and not isinstance(ck["config"], dict)):
        what = f"lacks {missing}" if missing else "its 'config' is not a dict"
        if "epoch" not in need:
            what += f"; it needs {' and '.join(map(repr, need))}"
        elif "epoch" in missing:
            what += "; a model-only file cannot be resumed"
        raise CheckpointFileError(f"{name} is not a train.py checkpoint ({what})")
    return ck


def load_checkpoint_model(path, device=None):
    """The trained model of a ``train.py`` checkpoint, for inference, as ``(model in eval mode on
    device, config dict)``; built for the config's ``image_size``, else its data set's training
    default, on ``device`` (default: :func:`best_device`)."""
    ckpt = read_checkpoint(path)
    cfg = dict(ckpt["config"])
    for k in ("model", "dataset", "num_classes"):
        if k not in cfg:
            raise CheckpointFileError(f"checkpoint {path}: config lacks {k!r} (has {sorted(cfg)})")
    if not cfg.get("image_size"):
        try:
            cfg["image_size"] = get_spec(cfg["dataset"]).train.image_size
        except ValueError as e:
            raise CheckpointFileError(f"checkpoint {path}: config has no 'image_size', and {e}") from None
    from .models import build_model  # imported when needed (tests stand in for it)

    try:
        model = build_model(cfg["model"], int(cfg["num_classes"]), int(cfg["image_size"]))
        state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointFileError(f"checkpoint {path}: its weights do not fit the model its config names "
                                  f"({cfg['model']!r}, {cfg['num_classes']} classes): {describe_load_error(e)}") \
            from None
    model.to(device or best_device()).eval()
    return model, cfg


def best_device() -> torch.device:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
