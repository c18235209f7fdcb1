#!/usr/bin/env python
"""Train an image classifier with SaliencyMix+, CutMix or SaliencyMix (one process, or DDP under
torchrun): ``python train.py --help`` for the flags, README.md for the commands; the code is in
saliencymixplus/training/ (docs/design.md, "Training")."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from saliencymixplus.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
