"""The training behind ``train.py`` (``sys.exit(main())``).

Everything a run needs is in one :class:`Config`, parsed by :func:`parse_config` from the
command line with the per-data-set defaults of :data:`DATASET_DEFAULTS`; :func:`run` trains
and returns the summary. Modules, in the order data flows through a run:

* ``config``: :class:`Config`, the flags and the defaults table.
* ``distributed``: rank, world size and device under ``torchrun``; rank-0 logging.
* ``seeding``: per-``(seed, epoch, rank)`` streams and the RNG state checkpoints carry.
* ``loaders``: the device-resident loader, the ``DataLoader`` path, the saliency cache.
* ``loop``: the mixer, one training epoch, one evaluation.
* ``checkpoints``: atomic save, ``weights_only`` load, ``--resume``.
* ``reporting``: progress bar, ``log.csv``, ``summary.json``, ``curves.png``, result table.
* ``runner``: :func:`run` and :func:`evaluate_checkpoint`.
* ``cli``: :func:`main` and its exit codes.
"""

from .checkpoints import load_checkpoint
from .cli import main
from .config import DATASET_DEFAULTS, MIX_AUGS, Config, UsageError, build_parser, parse_config
from .loaders import DeviceLoader
from .loop import online_saliency
from .reporting import CSV_FIELDS
from .runner import evaluate_checkpoint, run

__all__ = [
    "DATASET_DEFAULTS", "MIX_AUGS", "CSV_FIELDS", "Config", "UsageError", "build_parser", "parse_config",
    "run", "main", "evaluate_checkpoint", "load_checkpoint", "online_saliency", "DeviceLoader",
]
