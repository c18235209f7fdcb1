"""saliencymixplus: SaliencyMix+, CutMix and SaliencyMix as batched PyTorch ops (README.md, docs/design.md)."""

import torch  # noqa: F401  (torch must be loaded before the extension)

from . import mix
from ._extension import extension_info
from .mix import CutMix, MixResult, SaliencyMix, SaliencyMixPlus, mix_targets, one_hot, soft_target_cross_entropy
from .ops import label_weights, paste, peak_boxes, saliency_mix_plus, window_search

__version__ = "0.1.0"

__all__ = [*mix.__all__, "window_search", "peak_boxes", "paste", "label_weights", "saliency_mix_plus",
           "extension_info", "__version__"]
