"""Saliency sources: OpenCV static saliency (``fine_grained``, Montabone & Soto 2010, what
SaliencyMix used; ``spectral_residual``, Hou & Zhang 2007) and gradient saliency from a trained
model, and :func:`sharpen`, the post-processing of the cache and of ``--saliency refresh``
(docs/design.md, "The saliency cache").
"""

from __future__ import annotations
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METHODS", "OPENCV_METHODS", "DEFAULT_METHOD", "compute_saliency", "gradient_saliency",
           "input_gradient_saliency", "sharpen", "parse_postprocess", "format_postprocess", "DEFAULT_POSTPROCESS"]

OPENCV_METHODS = ("fine_grained", "spectral_residual")
METHODS = OPENCV_METHODS + ("gradient",)
#: The method a cache is built with unless told otherwise (what SaliencyMix used).
DEFAULT_METHOD = "fine_grained"


def _opencv_saliency(method: str):
    import cv2

    if not hasattr(cv2, "saliency"):
        raise ImportError("cv2.saliency is missing: install opencv-contrib-python-headless "
                          "(not opencv-python, which lacks the contrib modules)")
    if method == "fine_grained":
        return cv2.saliency.StaticSaliencyFineGrained_create()
    return cv2.saliency.StaticSaliencySpectralResidual_create()


def compute_saliency(images: np.ndarray, method: str) -> np.ndarray:
    """OpenCV static saliency (``method`` one of :data:`OPENCV_METHODS`) of a batch of raw images.

    Args:
        images: ``np.uint8[N, H, W, 3]``, RGB (a single ``[H, W, 3]`` image is also accepted
            and gives ``[1, H, W]``).

    Returns:
        ``np.float32[N, H, W]`` in [0, 1].
    """
    if method not in OPENCV_METHODS:
        extra = " (gradient saliency needs a model: use gradient_saliency)" if method == "gradient" else ""
        raise ValueError(f"method must be one of {list(OPENCV_METHODS)}, got {method!r}{extra}")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be np.uint8[N, H, W, 3], got {images.dtype}{list(images.shape)}")
    sal = _opencv_saliency(method)
    out = np.empty(images.shape[:3], np.float32)
    for i in range(len(images)):  # OpenCV's API takes one image at a time
        ok, m = sal.computeSaliency(np.ascontiguousarray(images[i, :, :, ::-1]))  # BGR, as cv2.imread gives
        if not ok:
            raise RuntimeError(f"OpenCV {method} saliency failed on image {i} of shape {images.shape[1:]}")
        out[i] = m
    # OpenCV's maps are in [0, 1] already: only clipped (resize ringing), NaN set to 0
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0, out=out)


#: What the cache tool and ``--saliency refresh`` apply unless told otherwise (``none``: raw maps):
#: the best post-processing measured (``benchmarks/RESULTS.md``, label noise).
DEFAULT_POSTPROCESS = "top=0.2,power=2"


def _sharpen_maps(m, top: float, power: float, xp):
    """The sharpening rule on ``float32[N, H, W]`` maps with no NaN, with ``xp`` numpy or torch."""
    m = m.clip(min=0.0)
    peak = xp.amax(m, (1, 2), keepdims=True)
    m = m / xp.where(peak > 0, peak, 1.0)
    if top < 1.0:
        t = xp.quantile(m.reshape(len(m), -1), 1.0 - top, 1)[:, None, None]
        t = xp.minimum(t, xp.where(peak > 0, 1.0 - 1e-6, 0.0))  # a flat map keeps its maximum
        m = ((m - t) / (1.0 - t)).clip(min=0.0, max=1.0)
    if power != 1.0:
        m = m ** power
    return m


def sharpen(maps, *, top: float = 1.0, power: float = 1.0):
    """Sharpen saliency maps: keep each map's most salient pixels and raise them to a power (OpenCV's
    maps spread mass over edges and background texture, which the label weights count as noise).

    Per map: divide by its maximum; subtract its ``1 - top`` quantile ``t`` and rescale
    ``(s - t) / (1 - t)``, clipped at 0 (only about the ``top`` fraction of pixels stays
    non-zero; ``top=1`` keeps all); then raise to ``power`` (``> 1`` sharpens).

    Args:
        maps: ``float[N, H, W]`` (or one ``[H, W]`` map), ``>= 0``; numpy or anything
            ``np.asarray`` takes, or a torch ``Tensor`` (sharpened on its device, without a
            host sync, e.g. inside a training step).

    Returns:
        ``np.float32`` of the input's shape (a ``float32`` ``Tensor`` on the input's device
        for a tensor), each map in [0, 1] with maximum 1 (an all-zero map stays all zero;
        NaN is treated as 0).
    """
    if not 0.0 < top <= 1.0:
        raise ValueError(f"top must be in (0, 1], got {top!r}")
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    xp = np
    if type(maps).__module__.startswith("torch"):
        xp = torch
        m = xp.nan_to_num(maps.to(xp.float32), nan=0.0, posinf=0.0, neginf=0.0)
    else:
        m = np.nan_to_num(np.array(maps, dtype=np.float32, copy=True), nan=0.0, posinf=0.0, neginf=0.0)
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"maps must be float[N, H, W] or [H, W], got shape {list(m.shape)}")
    if all(m.shape):  # empty stays empty
        m = _sharpen_maps(m, float(top), float(power), xp)
    return m[0] if single else m


def parse_postprocess(spec) -> dict:
    """``"top=0.2,power=2"`` (or ``"none"``, ``""``, ``None``, a dict) -> :func:`sharpen` keyword arguments."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return {}
    if isinstance(spec, dict):
        items = dict(spec)
    else:
        items = {}
        for part in str(spec).split(","):
            key, eq, value = part.partition("=")
            if not eq:
                raise ValueError(f"postprocess must look like 'top=0.2,power=2' or 'none', got {spec!r}")
            try:
                items[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"postprocess value of {key.strip()!r} must be a number, got {value!r}") from None
    unknown = set(items) - {"top", "power"}
    if unknown:
        raise ValueError(f"postprocess keys must be 'top' and/or 'power', got {sorted(unknown)}")
    sharpen(np.zeros((1, 1, 1), np.float32), **items)  # range checks
    return {k: float(v) for k, v in items.items() if float(v) != 1.0}


def format_postprocess(spec) -> str:
    """The canonical string of a post-processing (``"none"`` for the identity), as caches record it."""
    kw = parse_postprocess(spec)
    return ",".join(f"{k}={kw[k]:g}" for k in ("top", "power") if k in kw) or "none"


def input_gradient_saliency(grad):
    """The reduction of :func:`gradient_saliency` (and of ``--saliency refresh``): ``|grad|`` summed
    over channels, each map divided by its maximum.

    Args:
        grad: ``Tensor[N, C, H, W]``, a loss's gradient with respect to the images (any float dtype and positive scale).

    Returns:
        ``Tensor[N, H, W]`` float32 on ``grad.device``, each map's maximum 1 (all-zero for a zero
        gradient; non-finite for a non-finite one).
    """
    s = grad.detach().abs().sum(1, dtype=torch.float32)
    peak = s.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    return s / peak[:, None, None]


def gradient_saliency(model, images, labels, *, batch_size: int | None = None):
    """Gradient saliency ``|d CE(model(x), y) / d x|`` reduced by :func:`input_gradient_saliency` (float32
    ``Tensor[N, H, W]`` on ``images.device``), with the model in eval mode (then put back) and no parameter's
    ``.grad`` touched.

    Args:
        model: a classifier ``Tensor[N, 3, H, W] -> Tensor[N, K]``.
        images: ``Tensor[N, 3, H, W]`` float, normalised as the model was trained; on the
            model's device.
        labels: ``Tensor[N]`` int64 class indices (the loss is taken at the true label).
        batch_size: split the work in batches of this many images (default: all at once).
    """
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"images must be a Tensor[N, C, H, W], got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (normalised), got {images.dtype}")
    labels = torch.as_tensor(labels, device=images.device).long()
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a Tensor[{images.shape[0]}], got {list(labels.shape)}")
    n = images.shape[0]
    bs = n if not batch_size else int(batch_size)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.enable_grad():
            for a in range(0, n, max(bs, 1)):
                x = images[a:a + bs].detach().clone().requires_grad_(True)
                loss = F.cross_entropy(model(x).float(), labels[a:a + bs], reduction="sum")
                (g,) = torch.autograd.grad(loss, [x])
                out.append(input_gradient_saliency(g))
    finally:
        model.train(was_training)
    if not out:
        return images.new_zeros((0, *images.shape[2:]), dtype=torch.float32)
    return torch.cat(out)
