"""saliencymixplus: SaliencyMix+, CutMix and SaliencyMix as batched PyTorch ops.

``import saliencymixplus`` loads the compiled ops (``torch.ops.saliencymixplus.*``) when they
were built; without them every op runs its pure-PyTorch reference.
"""

import torch  # noqa: F401  (torch must be loaded before the extension)

from ._extension import extension_info
from .mix import CutMix, MixResult, SaliencyMix, SaliencyMixPlus, mix_targets, one_hot, soft_target_cross_entropy
from .ops import label_weights, paste, peak_boxes, saliency_mix_plus, window_search

__version__ = "0.1.0"

__all__ = [
    "CutMix",
    "SaliencyMix",
    "SaliencyMixPlus",
    "MixResult",
    "one_hot",
    "mix_targets",
    "soft_target_cross_entropy",
    "window_search",
    "peak_boxes",
    "paste",
    "label_weights",
    "saliency_mix_plus",
    "extension_info",
    "__version__",
]
