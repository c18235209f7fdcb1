"""saliencymixplus: SaliencyMix+, CutMix and SaliencyMix as batched PyTorch ops."""
