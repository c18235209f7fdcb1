"""The training behind ``train.py`` (``sys.exit(main())``): one :class:`Config`, parsed from the
command line by :func:`parse_config`; :func:`run` trains and returns the summary. The modules and
what each holds: docs/design.md, "Training".
"""

from .config import MIX_AUGS, Config, UsageError, build_parser, parse_config
from .loaders import DeviceLoader
from .runner import CSV_FIELDS, evaluate_checkpoint, main, run

__all__ = [
    "MIX_AUGS", "CSV_FIELDS", "Config", "UsageError", "build_parser", "parse_config",
    "run", "main", "evaluate_checkpoint", "DeviceLoader",
]
