"""Loads the compiled ops (``saliencymixplus._C``) and registers their fake kernels.

The ops live in ``torch.ops.saliencymixplus``; the fake (meta) kernels here give
``torch.compile`` their output shapes. Without the compiled module the package still works
on the pure-PyTorch references in ``ops.py``.
"""

from __future__ import annotations

import torch


_LIBRARY = "saliencymixplus"
_OPS = ("window_search", "peak_boxes", "paste", "label_weights", "saliency_mix")

try:
    from . import _C  # noqa: F401  (registers the ops with the dispatcher)

    _LOAD_ERROR: str | None = None
except ImportError as error:  # not built: the references serve
    _LOAD_ERROR = f"the compiled module saliencymixplus._C could not be loaded: {error}"


def has_ops() -> bool:
    """Whether the compiled ops are registered."""
    return _LOAD_ERROR is None


def extension_info() -> dict:
    """Which kernels the compiled extension has.

    Returns:
        ``{"loaded": bool, "cpu": bool, "cuda": bool, "ops": [...], "error": str | None}``;
        ``cpu``/``cuda`` are true when every op has a kernel for that device.
    """
    if not has_ops():
        return {"loaded": False, "cpu": False, "cuda": False, "ops": [], "error": _LOAD_ERROR}

    def has_kernel(key: str) -> bool:
        return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"{_LIBRARY}::{op}", key) for op in _OPS)

    return {"loaded": True, "cpu": has_kernel("CPU"), "cuda": has_kernel("CUDA"), "ops": list(_OPS), "error": None}


def memory_format(images: torch.Tensor) -> torch.memory_format:
    """The layout of :func:`paste`'s output: channels-last for a channels-last input, else contiguous."""
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _batch_of(t: torch.Tensor) -> int:
    torch._check(t.dim() >= 1, lambda: f"expected a batched tensor, got shape {list(t.shape)}")
    return t.shape[0]


if has_ops():

    @torch.library.register_fake(f"{_LIBRARY}::window_search")
    def _window_search_fake(saliency, box_h, box_w):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency), 4), dtype=torch.long)

    @torch.library.register_fake(f"{_LIBRARY}::peak_boxes")
    def _peak_boxes_fake(saliency, box_h, box_w):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency), 4), dtype=torch.long)

    @torch.library.register_fake(f"{_LIBRARY}::paste")
    def _paste_fake(images, perm, boxes):
        torch._check(images.dim() == 4, lambda: f"images must be a Tensor[B, C, H, W], got {list(images.shape)}")
        return torch.empty_like(images, memory_format=memory_format(images))

    @torch.library.register_fake(f"{_LIBRARY}::label_weights")
    def _label_weights_fake(saliency, perm, boxes):
        torch._check(saliency.dim() == 3, lambda: f"saliency must be a Tensor[B, H, W], got {list(saliency.shape)}")
        return saliency.new_empty((_batch_of(saliency),), dtype=torch.float32)

    @torch.library.register_fake(f"{_LIBRARY}::saliency_mix")
    def _saliency_mix_fake(images, saliency, perm, box_h, box_w, mode):
        torch._check(images.dim() == 4, lambda: f"images must be a Tensor[B, C, H, W], got {list(images.shape)}")
        batch = _batch_of(images)
        return (
            torch.empty_like(images, memory_format=memory_format(images)),
            images.new_empty((batch, 4), dtype=torch.long),
            images.new_empty((batch,), dtype=torch.float32),
        )
