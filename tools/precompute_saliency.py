#!/usr/bin/env python
"""Precompute a data set split's saliency maps into an HDF5 cache.

Thin wrapper over :func:`saliencymixplus.precompute.main` (also installed as the console script
``saliencymixplus-precompute``); run with ``--help`` for the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from saliencymixplus.precompute import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
