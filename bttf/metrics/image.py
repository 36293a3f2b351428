"""Image-quality metrics for colorization, shared by training, ``bttf eval`` and video evaluation.

Layouts: numpy arrays are channel-last, as image libraries use them: RGB ``(H, W, 3)`` or a batch
``(N, H, W, 3)``; ab ``(H, W, 2)`` / ``(N, H, W, 2)``; per-pixel weights ``(H, W)`` / ``(N, H, W)``.
torch tensors are channel-first, as the models use them: ``(3, H, W)`` / ``(N, 3, H, W)``,
``(N, 2, H, W)``, ``(N, H, W)``. RGB is float sRGB in [0, 1]; uint8 RGB is read as value / 255.
ab is in Lab units. A batch gives the mean of the per-image values.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

__all__ = [
    "AUC_MAX_THRESHOLD",
    "auc_ab",
    "colorfulness",
    "pixel_weights",
    "psnr",
    "ssim",
]

#: Zhang et al. sweep the ab error threshold over 0..150 (Lab units) for the AuC.
AUC_MAX_THRESHOLD = 150

ArrayLike = np.ndarray | torch.Tensor


def _channel_last(x: ArrayLike, channels: int | None, name: str, fn: str) -> np.ndarray:
    """numpy (..., H, W, C) float64 from a numpy array (channel-last) or a tensor (channel-first).

    With ``channels=None`` the input is a map without a channel axis, (H, W) or (N, H, W).
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu()
        arr = (arr.float() if arr.dtype in (torch.float16, torch.bfloat16) else arr).numpy()
        if channels is not None:
            if arr.ndim not in (3, 4) or arr.shape[-3] != channels:
                raise ValueError(
                    f"{fn} expects {name} as a tensor of shape (N, {channels}, H, W) or "
                    f"({channels}, H, W), got {tuple(x.shape)}"
                )
            arr = np.moveaxis(arr, -3, -1)
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(
            f"{fn} expects {name} as a numpy array or torch tensor, got {type(x).__name__}"
        )
    if channels is None:
        if arr.ndim not in (2, 3):
            raise ValueError(f"{fn} expects {name} of shape (H, W) or (N, H, W), got {arr.shape}")
    elif arr.ndim not in (3, 4) or arr.shape[-1] != channels:
        raise ValueError(
            f"{fn} expects {name} of shape (H, W, {channels}) or (N, H, W, {channels}), "
            f"got {tuple(arr.shape)}"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{fn} expects float (or uint8) {name}, got {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _pair(
    pred: ArrayLike, true: ArrayLike, channels: int, what: str, fn: str
) -> tuple[np.ndarray, np.ndarray]:
    p = _channel_last(pred, channels, f"pred_{what}", fn)
    t = _channel_last(true, channels, f"true_{what}", fn)
    if p.shape != t.shape:
        raise ValueError(f"{fn}: pred_{what} {p.shape} and true_{what} {t.shape} differ in shape")
    return p, t


def _batched(x: np.ndarray, image_ndim: int) -> np.ndarray:
    return x[None] if x.ndim == image_ndim else x


def psnr(pred_rgb: ArrayLike, true_rgb: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` over all pixels and
    channels.

    Identical images have MSE 0 and give ``math.inf`` (not an error); a batch containing one then
    averages to inf as well. Typical colorization values on natural photos: 20-30 dB.

    Args:
        pred_rgb, true_rgb: RGB, ``(H, W, 3)`` or ``(N, H, W, 3)`` (see the module doc for tensors).
        data_range: the value range of the images (1.0 for [0, 1]).

    Returns:
        dB in (-inf, inf]; the mean over images for a batch.
    """
    p, t = _pair(pred_rgb, true_rgb, 3, "rgb", "psnr")
    mse = ((_batched(p, 3) - _batched(t, 3)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10 * np.log10(data_range**2 / mse)
    return float(np.mean(values))


def ssim(pred_rgb: ArrayLike, true_rgb: ArrayLike, data_range: float = 1.0) -> float:
    """Structural similarity (``skimage.metrics.structural_similarity``, colour channels averaged).

    scikit-image defaults: a 7x7 uniform window (shrunk to the largest odd size that fits images
    smaller than 7 pixels; at least 3 pixels are needed), ``data_range`` as given.

    Args:
        pred_rgb, true_rgb: RGB, ``(H, W, 3)`` or ``(N, H, W, 3)``.
        data_range: the value range of the images (1.0 for [0, 1]).

    Returns:
        SSIM in [-1, 1], 1 for identical images; the mean over images for a batch.
    """
    p, t = _pair(pred_rgb, true_rgb, 3, "rgb", "ssim")
    p, t = _batched(p, 3), _batched(t, 3)
    side = min(p.shape[1], p.shape[2])
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {p.shape[1:3]}")
    win = min(7, side if side % 2 else side - 1)
    return float(
        np.mean(
            [
                structural_similarity(a, b, channel_axis=-1, data_range=data_range, win_size=win)
                for a, b in zip(p, t, strict=True)
            ]
        )
    )


def colorfulness(rgb: ArrayLike) -> float:
    """Colourfulness metric M of Hasler & Süsstrunk (2003), on the 0..255 scale.

    ``rg = R - G``, ``yb = (R + G) / 2 - B`` with R, G, B in 0..255 (float [0, 1] input is scaled
    by 255); ``M = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2)`` with population
    standard deviations over the pixels. 0 for a gray image; natural photos score about 15-110
    (the paper's scale: 33 "moderately", 59 "quite", 82 "highly colourful").

    Args:
        rgb: RGB, ``(H, W, 3)`` or ``(N, H, W, 3)``.

    Returns:
        M >= 0; the mean over images for a batch.
    """
    x = _batched(_channel_last(rgb, 3, "rgb", "colorfulness"), 3) * 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = (r - g).reshape(len(x), -1)
    yb = (0.5 * (r + g) - b).reshape(len(x), -1)
    std = np.sqrt(rg.var(axis=1) + yb.var(axis=1))
    mean = np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    return float(np.mean(std + 0.3 * mean))


def _auc_one(err: np.ndarray, w: np.ndarray | None, max_t: int) -> float:
    err = err.ravel()
    w = np.ones_like(err) if w is None else w.ravel().astype(np.float64)
    total = w.sum()
    if not total > 0:
        raise ValueError("auc_ab: the pixel weights sum to 0")
    # err <= t  <=>  ceil(err) <= t for integer t: one weighted histogram gives the whole curve.
    first_t = np.minimum(np.ceil(err), max_t + 1).astype(np.int64)
    within = np.cumsum(np.bincount(first_t, weights=w, minlength=max_t + 2)[: max_t + 1]) / total
    # trapezoid over t = 0..max_t, divided by max_t: a perfect prediction scores exactly 1
    return float((within.sum() - 0.5 * (within[0] + within[-1])) / max_t)


def auc_ab(
    pred_ab: ArrayLike,
    true_ab: ArrayLike,
    weights: ArrayLike | None = None,
    max_threshold: int = AUC_MAX_THRESHOLD,
) -> float:
    """Zhang et al.'s AuC: area under the curve "fraction of pixels with ab error <= t", t = 0..150.

    The error is the L2 distance in the ab plane (Lab units). The curve is sampled at integer
    thresholds 0..``max_threshold``, integrated with the trapezoid rule and divided by
    ``max_threshold``, so the result is in [0, 1] (1 = every pixel exact). With ``weights`` the
    fraction is weighted per pixel; with ``pixel_weights(true_ab, rebalance_weights(prior))`` this
    is the class-rebalanced AuC of the paper. For the all-gray prediction the paper reports a raw
    AuC of about 0.89 on ImageNet; the rebalanced score is much lower, since saturated pixels weigh
    more.

    Args:
        pred_ab, true_ab: ``(H, W, 2)`` or ``(N, H, W, 2)`` numpy, or ``(N, 2, H, W)`` tensors.
        weights: non-negative per-pixel weights ``(H, W)`` / ``(N, H, W)``, or None for uniform.
        max_threshold: the largest threshold, in Lab units.

    Returns:
        AuC in [0, 1]; the mean over images for a batch.
    """
    p, t = _pair(pred_ab, true_ab, 2, "ab", "auc_ab")
    p, t = _batched(p, 3), _batched(t, 3)
    err = np.sqrt(((p - t) ** 2).sum(-1))  # (N, H, W)
    w = None
    if weights is not None:
        w = _batched(_channel_last(weights, None, "weights", "auc_ab"), 2)
        if w.shape != err.shape:
            raise ValueError(f"auc_ab: weights {w.shape} do not match the ab maps {err.shape}")
    return float(
        np.mean(
            [_auc_one(err[i], None if w is None else w[i], max_threshold) for i in range(len(err))]
        )
    )


def pixel_weights(true_ab: ArrayLike, bin_weights: ArrayLike) -> np.ndarray:
    """Per-pixel rebalancing weights: the weight of the bin nearest to each pixel's true ab.

    Args:
        true_ab: ``(H, W, 2)`` / ``(N, H, W, 2)`` numpy or ``(N, 2, H, W)`` tensor, Lab units.
        bin_weights: ``(313,)``, e.g. ``bttf.models.bins.rebalance_weights(prior)``.

    Returns:
        numpy float64 ``(H, W)`` or ``(N, H, W)`` (matching ``true_ab``).
    """
    from bttf.models.bins import Q, encode_nearest

    bw = np.asarray(
        bin_weights.detach().cpu() if isinstance(bin_weights, torch.Tensor) else bin_weights,
        dtype=np.float64,
    )
    if bw.shape != (Q,):
        raise ValueError(f"pixel_weights expects bin_weights of shape ({Q},), got {bw.shape}")
    ab = _channel_last(true_ab, 2, "true_ab", "pixel_weights")
    single = ab.ndim == 3
    idx = encode_nearest(torch.from_numpy(np.moveaxis(_batched(ab, 3), -1, 1).astype(np.float32)))
    out = bw[idx.numpy()]
    return out[0] if single else out
