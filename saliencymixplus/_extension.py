"""Loads the compiled ops (``saliencymixplus._C``, registered as ``torch.ops.saliencymixplus``) and
says which kernels they have; :mod:`saliencymixplus.ops` is their Python face.
"""

from __future__ import annotations

import torch


_LIBRARY = "saliencymixplus"
_OPS = ("window_search", "peak_boxes", "paste", "label_weights", "saliency_mix_plus")

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
