"""The training behind ``train.py`` (``sys.exit(main())``).

Everything a run needs is in one :class:`Config`, parsed by :func:`parse_config` from the
command line; :func:`run` trains and returns the summary. Modules, in the order a run uses
them: ``config`` (the settings and the flags), ``distributed`` (rank, world, device and the
random streams), ``loaders`` (the device-resident loader and the ``DataLoader`` path), ``loop``
(the mixer, an epoch, an evaluation, ``--saliency refresh``) and ``runner`` (the run,
checkpoints, the run folder's files, :func:`main` and its exit codes). See docs/design.md,
"Training".
"""

from .config import MIX_AUGS, Config, UsageError, build_parser, parse_config
from .loaders import DeviceLoader
from .runner import CSV_FIELDS, evaluate_checkpoint, load_checkpoint, main, run

__all__ = [
    "MIX_AUGS", "CSV_FIELDS", "Config", "UsageError", "build_parser", "parse_config",
    "run", "main", "evaluate_checkpoint", "load_checkpoint", "DeviceLoader",
]
