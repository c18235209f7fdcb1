#!/usr/bin/env python
"""Train an image classifier with SaliencyMix+, CutMix or SaliencyMix.

    python train.py --dataset demo                       # the embedded demo set, on a CPU
    python train.py --dataset cifar100 --model resnet50 --epochs 200 --batch_size 128 \\
        --mix_prob=0.5 --learning_rate 0.1 --mix_aug saliencymixplus --data-dir data
    torchrun --nproc_per_node 8 train.py ...             # DDP, one process per GPU

See ``python train.py --help`` for all flags; the training code is in
saliencymixplus/training/ (see its __init__ and docs/design.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from saliencymixplus.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
