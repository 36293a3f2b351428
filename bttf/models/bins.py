"""The 313-bin ab codec of Zhang, Isola & Efros, "Colorful Image Colorization" (ECCV 2016).

The ab plane is quantised on a grid of step 10; the 313 cells that sRGB colours reach are the
classes of the colorization head. This module turns ab images into class targets (``soft_encode``,
``encode_nearest``), estimates the class prior and the rebalancing weights used by the loss
(``estimate_prior``, ``rebalance_weights``), and turns class logits back into ab
(``annealed_mean``).

Shapes: ab images are ``(N, 2, H, W)`` (a, b in Lab units, about [-110, 110]); class maps are
``(N, 313, H, W)`` with the class index in ``AB_BINS`` order.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bttf.errors import BadInputError

__all__ = [
    "AB_BINS",
    "AB_BINS_NP",
    "SOFT_SIGMA",
    "Q",
    "annealed_mean",
    "check_unsure",
    "encode_nearest",
    "estimate_prior",
    "imagenet_prior",
    "load_reference_prior",
    "normalized_entropy",
    "rebalance_weights",
    "smooth_prior",
    "soft_encode",
    "soft_encode_topk",
]

Q = 313
#: Width (ab units) of the Gaussian a soft-encoded target spreads over its nearest bins (the paper's).
SOFT_SIGMA = 5.0

# The bin table of richzhang/colorization resources/pts_in_hull.npy, written out rather than
# recomputed from a gamut test so that class indices can never drift from the released models.
# For a = -90, -80, ..., 100: the b values run from lo to hi (inclusive) in steps of 10.
_B_RANGES: tuple[tuple[int, int], ...] = (
    (50, 90),
    (20, 90),
    (0, 90),
    (-20, 90),
    (-30, 100),
    (-40, 100),
    (-50, 100),
    (-50, 100),
    (-60, 100),
    (-70, 100),
    (-80, 90),
    (-80, 90),
    (-90, 90),
    (-100, 90),
    (-100, 80),
    (-110, 80),
    (-110, 80),
    (-110, 70),
    (-110, 70),
    (-90, 0),
)


def _bin_table() -> np.ndarray:
    rows = [
        (a, b)
        for a, (lo, hi) in zip(range(-90, 101, 10), _B_RANGES, strict=True)
        for b in range(lo, hi + 1, 10)
    ]
    table = np.array(rows, dtype=np.float32)
    assert table.shape == (Q, 2)  # a broken constant above, not user input
    return table


#: The 313 bin centres (a, b), sorted by a then b: numpy (313, 2) float32, read-only.
AB_BINS_NP: np.ndarray = _bin_table()
AB_BINS_NP.flags.writeable = False
#: The same centres as a CPU tensor (313, 2) float32. Row index = class index.
AB_BINS: Tensor = torch.from_numpy(AB_BINS_NP.copy())

# Elements of the (pixels x 313) distance matrix, or of a logits chunk, worked on at once:
# bounds temporary memory (2**23 float32 = 32 MiB; 2**26 = 256 MiB) whatever the batch size.
_KNN_CHUNK_ELEMENTS = 2**23
_DECODE_CHUNK_ELEMENTS = 2**26
# On CPU, logits chunks of at most 2**18 values (1 MiB of float32) stay in a core's L2 cache through
# the decoder's passes (scale, softmax, GEMM): 3.5x faster than one 2**26 chunk for 8 frames of
# 64x112 logits, same numbers (benchmarks/README.md).
_DECODE_CHUNK_ELEMENTS_CPU = 2**18


@functools.lru_cache(maxsize=16)
def _bins_on(device: torch.device, dtype: torch.dtype) -> Tensor:
    # cached tensors must not be inference tensors, or a later training step cannot use them
    with torch.inference_mode(False):
        return AB_BINS.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _bins_t_on(device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):
        return AB_BINS.T.contiguous().to(device=device, dtype=dtype)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_chunk(chunk_elements: int, fn: str) -> None:
    if (
        isinstance(chunk_elements, bool)
        or not isinstance(chunk_elements, numbers.Integral)
        or chunk_elements < 1
    ):
        raise ValueError(
            f"{fn}: chunk_elements must be an integer >= 1 or None, got {chunk_elements!r}"
        )


def _check_map(x: Tensor, channels: int, name: str, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{fn} expects {name} of shape (N, {channels}, H, W), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point {name} tensor, got {x.dtype}")


def _knn(
    ab_flat: Tensor, k: int, chunk_elements: int = _KNN_CHUNK_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """The k nearest bins of each ab point: (P, 2) -> indices (P, k) long, squared distances (P, k).

    Works in pixel chunks so the (chunk, 313) distance matrix (at most `chunk_elements` values,
    at least one pixel) stays small.
    """
    bins = _bins_on(ab_flat.device, ab_flat.dtype)
    bins_sq = (bins * bins).sum(1)
    n = ab_flat.shape[0]
    idx = torch.empty(n, k, dtype=torch.long, device=ab_flat.device)
    d2 = torch.empty(n, k, dtype=ab_flat.dtype, device=ab_flat.device)
    step = max(1, chunk_elements // Q)
    for s in range(0, n, step):
        x = ab_flat[s : s + step]
        # |x|^2 is the same for every bin of a pixel, so the ranking needs only |c|^2 - 2 x.c
        # (one GEMM, one temporary); exact distances are recomputed below for the k kept.
        score = torch.addmm(bins_sq, x, bins.T, alpha=-2)
        if k == 1:
            sel = score.argmin(1, keepdim=True)
        else:
            sel = score.topk(k, dim=1, largest=False, sorted=False).indices
        idx[s : s + step] = sel
        d2[s : s + step] = ((bins[sel] - x[:, None]) ** 2).sum(-1)
    return idx, d2


def _flatten_ab(ab: Tensor) -> Tensor:
    return ab.to(_work_dtype(ab.dtype)).permute(0, 2, 3, 1).reshape(-1, 2)


def soft_encode_topk(
    ab: Tensor, k: int = 5, sigma: float = SOFT_SIGMA, *, chunk_elements: int | None = None
) -> tuple[Tensor, Tensor]:
    """Sparse soft encoding: the k nearest bins of each pixel and their Gaussian weights.

    The dense ``soft_encode`` is this scattered into zeros; a loss can use it directly
    (``-(w * log_softmax(logits).gather(1, idx)).sum(1)``) and skip the 313-channel target.

    Args:
        ab: ``(N, 2, H, W)`` float, a and b in Lab units.
        k: number of nearest bins, 1..313.
        sigma: Gaussian width in ab units.
        chunk_elements: at most this many values of the (pixels x 313) distance matrix are
            worked on at once (at least one pixel), bounding temporary memory whatever the
            batch size; None is the default, 2**23 (32 MiB of float32). The result is the same.

    Returns:
        ``idx`` ``(N, k, H, W)`` long bin indices and ``w`` ``(N, k, H, W)`` weights (float32, or
        float64 for float64 input) that sum to 1 over dim 1.
    """
    _check_map(ab, 2, "ab", "soft_encode")
    if not 1 <= k <= Q:
        raise ValueError(f"soft_encode: k must be in 1..{Q}, got {k}")
    if not sigma > 0:
        raise ValueError(f"soft_encode: sigma must be > 0, got {sigma}")
    if chunk_elements is None:
        chunk_elements = _KNN_CHUNK_ELEMENTS
    else:
        _check_chunk(chunk_elements, "soft_encode")
    n, _, h, w = ab.shape
    idx, d2 = _knn(_flatten_ab(ab), k, chunk_elements)
    # shift by the nearest distance so far-out-of-gamut pixels do not underflow to 0/0
    weights = torch.exp(-(d2 - d2.min(1, keepdim=True).values) / (2 * sigma**2))
    weights = weights / weights.sum(1, keepdim=True)
    return (
        idx.view(n, h, w, k).permute(0, 3, 1, 2),
        weights.view(n, h, w, k).permute(0, 3, 1, 2),
    )


def soft_encode(
    ab: Tensor, k: int = 5, sigma: float = SOFT_SIGMA, *, chunk_elements: int | None = None
) -> Tensor:
    """Soft-encode ab into a distribution over the 313 bins (the training target of Zhang et al.).

    Each pixel puts Gaussian weights ``exp(-d^2 / 2 sigma^2)`` on its ``k`` nearest bins, normalised
    to sum to 1; all other bins get 0. The paper uses k = 5, sigma = 5; the released Caffe training
    layer (``NNEncLayer`` in ``caffe_traininglayers.py``) used k = 10.

    Args:
        ab: ``(N, 2, H, W)`` float, a and b in Lab units; any device.
        k: number of nearest bins, 1..313.
        sigma: Gaussian width in ab units.
        chunk_elements: as in ``soft_encode_topk``: the distance matrix's values worked on at
            once (None: the default).

    Returns:
        ``(N, 313, H, W)`` in the input's dtype, summing to 1 over dim 1.
    """
    idx, weights = soft_encode_topk(ab, k, sigma, chunk_elements=chunk_elements)
    n, _, h, w = ab.shape
    out = torch.zeros(n, Q, h, w, dtype=weights.dtype, device=ab.device)
    out.scatter_(1, idx, weights)
    return out.to(ab.dtype)


def encode_nearest(ab: Tensor) -> Tensor:
    """Index of the nearest bin of each pixel (hard quantisation).

    Args:
        ab: ``(N, 2, H, W)`` float, a and b in Lab units; any device.

    Returns:
        ``(N, H, W)`` long in [0, 313).
    """
    _check_map(ab, 2, "ab", "encode_nearest")
    n, _, h, w = ab.shape
    idx, _ = _knn(_flatten_ab(ab), 1)
    return idx.view(n, h, w)


@functools.lru_cache(maxsize=4)
def _smoothing_kernel(sigma: float) -> Tensor:
    with torch.inference_mode(False):
        return _gaussian_kernel(sigma)


def _gaussian_kernel(sigma: float) -> Tensor:
    c = AB_BINS.double()
    k = torch.exp(-(torch.cdist(c, c) ** 2) / (2 * sigma**2))
    # column-normalised: each bin spreads all of its mass over its neighbours, none leaves the gamut
    return k / k.sum(0, keepdim=True)


def smooth_prior(prior: Tensor | np.ndarray, sigma: float = 5.0) -> Tensor:
    """Smooth a distribution over the bins with a Gaussian of width ``sigma`` in ab space.

    Each bin's mass is spread over the bin centres with weights ``exp(-d^2 / 2 sigma^2)``
    (normalised per source bin), then the result is renormalised to sum to 1.

    Args:
        prior: ``(313,)`` non-negative.
        sigma: Gaussian width in ab units (> 0).

    Returns:
        ``(313,)`` float64 on the CPU, summing to 1.
    """
    p = _as_prior(prior, "smooth_prior")
    if not sigma > 0:
        raise ValueError(f"smooth_prior: sigma must be > 0, got {sigma}")
    out = _smoothing_kernel(float(sigma)) @ p
    return out / out.sum()


def _as_prior(prior: Tensor | np.ndarray, fn: str) -> Tensor:
    p = torch.as_tensor(prior).detach().to("cpu", torch.float64)
    if p.shape != (Q,):
        raise ValueError(f"{fn} expects a prior of shape ({Q},), got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"{fn}: the prior must be finite, non-negative and not all zero")
    return p / p.sum()


def estimate_prior(ab_batches: Iterable[Tensor], sigma: float = 5.0) -> Tensor:
    """Empirical probability of each bin over a data set, smoothed like Zhang et al.'s prior.

    Counts the nearest bin of every pixel of every batch, normalises, then ``smooth_prior``.

    Args:
        ab_batches: iterable of ``(N, 2, H, W)`` ab tensors (any device, any N, H, W).
        sigma: smoothing width in ab units.

    Returns:
        ``(313,)`` float32 on the CPU, summing to 1.
    """
    counts = torch.zeros(Q, dtype=torch.float64)
    for ab in ab_batches:
        idx = encode_nearest(ab)
        counts += torch.bincount(idx.flatten(), minlength=Q).cpu().double()
    if counts.sum() == 0:
        raise ValueError("estimate_prior: the batches held no pixels")
    return smooth_prior(counts, sigma).float()


def rebalance_weights(
    prior: Tensor | np.ndarray, lam: float = 0.5, sigma: float = 5.0, smooth: bool = False
) -> Tensor:
    """Class-rebalancing weights of Zhang et al.: ``w ∝ ((1 - lam) * p + lam / Q) ** -1``.

    Normalised so that the expected weight under the prior is 1: ``sum(p * w) == 1``. Rare
    (saturated) colours get large weights, common desaturated ones small weights.

    Args:
        prior: ``(313,)`` bin probabilities (normalised here). Zhang's ``prior_probs.npy`` and
            ``estimate_prior`` are already smoothed; pass ``smooth=True`` for a raw histogram.
        lam: mixing weight of the uniform distribution, in [0, 1] (0.5 in the paper).
        sigma: smoothing width, used only when ``smooth`` is true.
        smooth: smooth the prior with ``smooth_prior(prior, sigma)`` first.

    Returns:
        ``(313,)`` float32 on the CPU, positive.
    """
    p = _as_prior(prior, "rebalance_weights")
    if not 0 <= lam <= 1:
        raise ValueError(f"rebalance_weights: lam must be in [0, 1], got {lam}")
    if smooth:
        p = smooth_prior(p, sigma)
    w = 1.0 / ((1 - lam) * p + lam / Q)
    if not torch.isfinite(w).all():
        raise ValueError("rebalance_weights: lam = 0 needs a prior with no empty bin")
    return (w / (p * w).sum()).float()


def load_reference_prior(path: str | Path) -> Tensor:
    """Load a bin prior saved as a ``.npy`` of shape (313,), e.g. Zhang's ``prior_probs.npy``.

    bttf ships Zhang's ImageNet prior (``imagenet_prior()``); this reads another one, and
    training estimates its own with ``estimate_prior``.

    Returns:
        ``(313,)`` float32 on the CPU, normalised to sum to 1.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BadInputError(
            f"cannot read the bin prior {path}: {e}; give a .npy array of shape ({Q},), "
            "or let training estimate the prior from its data"
        ) from e
    try:
        return _as_prior(arr, "load_reference_prior").float()
    except ValueError as e:
        raise BadInputError(f"{path} is not a usable bin prior: {e}") from e


#: Zhang et al.'s ImageNet prior, stored as float32 beside this module.
PRIOR_FILE = Path(__file__).with_name("zhang_prior.npy")


@functools.lru_cache(maxsize=1)
def _imagenet_prior() -> Tensor:
    with torch.inference_mode(False):
        return load_reference_prior(PRIOR_FILE)


def imagenet_prior() -> Tensor:
    """Zhang et al.'s empirical ImageNet probability of each of the 313 bins.

    ``resources/prior_probs.npy`` of richzhang/colorization (already smoothed with the σ = 5
    Gaussian of the soft targets; peak 0.201 at (0, 0)), shipped as float32 in
    ``bttf/models/zhang_prior.npy``. Data of "Colorful Image Colorization", Copyright (c) 2016,
    Richard Zhang, Phillip Isola, Alexei A. Efros; BSD-2-Clause.

    Returns:
        ``(313,)`` float32 on the CPU, in ``AB_BINS`` order, summing to 1 (a fresh copy).
    """
    return _imagenet_prior().clone()


Unsure = tuple[float, float]


def check_unsure(unsure: Unsure | None, fn: str = "annealed_mean") -> Unsure | None:
    """`unsure` as a checked (lo, hi) pair of floats, 0 <= lo < hi <= 1, or None."""
    if unsure is None:
        return None
    try:
        lo, hi = (float(v) for v in unsure)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: unsure must be a pair (lo, hi) or None, got {unsure!r}") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"{fn}: unsure needs 0 <= lo < hi <= 1, got ({lo}, {hi})")
    return lo, hi


def normalized_entropy(logits: Tensor, dim: int = 1) -> Tensor:
    """Entropy of softmax(logits) along `dim`, divided by log(313): 0 for a certain pixel, 1 for
    a uniform one (the size of `dim` kept as 1)."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    p = torch.softmax(x, dim)
    h = torch.logsumexp(x, dim, keepdim=True) - (p * x).sum(dim, keepdim=True)
    return h / math.log(Q)


def _unsure_inv_t(h_norm: Tensor, inv_t: float, unsure: Unsure) -> Tensor:
    """Per-pixel 1/T for normalised entropies `h_norm`: the colorizer's T up to `lo`, rising
    linearly to 1 (the plain mean, which hedges between the candidate colours) at `hi`."""
    lo, hi = unsure
    t0 = 1.0 / inv_t
    a = ((h_norm - lo) * (1.0 / (hi - lo))).clamp_(0.0, 1.0)
    return a.mul_(max(t0, 1.0) - t0).add_(t0).reciprocal_()


def _decode_slices(n: int, h: int, w: int, limit: int) -> list[tuple[slice, slice]]:
    """(batch, row) slices whose logits chunks hold at most `limit` values."""
    per_image = Q * h * w
    if n * per_image <= limit:
        return [(slice(0, n), slice(0, h))]
    if per_image <= limit:
        step = limit // per_image
        return [(slice(i, i + step), slice(0, h)) for i in range(0, n, step)]
    rows = max(1, limit // (Q * w))
    return [(slice(i, i + 1), slice(r, r + rows)) for i in range(n) for r in range(0, h, rows)]


def annealed_mean(
    logits: Tensor,
    temperature: float = 0.38,
    top_k: int | None = None,
    *,
    unsure: Unsure | None = None,
    chunk_elements: int | None = None,
) -> Tensor:
    """Decode class logits into ab with Zhang et al.'s annealed mean.

    Per pixel: p = softmax(logits); optionally keep the ``top_k`` most probable bins and
    renormalise; re-temper ``p_T ∝ exp(log p / T)``; return the expectation of the bin centres
    under ``p_T``. T = 1 gives the mean, T -> 0 the mode (as does ``top_k=1``); the paper uses 0.38.

    With ``unsure=(lo, hi)`` the temperature is per pixel: T where the normalised entropy of p
    (``normalized_entropy``) is at most ``lo``, rising linearly to 1 at ``hi``. A pixel whose
    model hesitates between colours then gets their mean, a muted colour, instead of a vivid
    guess; a confident pixel keeps Zhang's vivid decoding.

    The softmax runs in float32 (float64 for float64 input) whatever the input dtype, and the
    work is chunked over images and rows so temporaries stay below ~256 MiB.

    Args:
        logits: ``(N, 313, H, W)`` unnormalised class scores (any device, any float dtype).
        temperature: T > 0.
        top_k: keep only the k most probable bins per pixel (1..313), or None for all.
        unsure: ``(lo, hi)`` normalised entropies, 0 <= lo < hi <= 1, or None (T everywhere).
        chunk_elements: at most this many logits are worked on at once (whole images, else
            rows of one image; at least one row); None is the default, 2**26 (2**18 on the CPU,
            where a chunk then stays in a core's L2 cache). Pixel-major (channels_last) CPU
            logits without ``top_k`` go pixel by pixel and ignore it. The result is the same.

    Returns:
        ``(N, 2, H, W)`` ab in the input's dtype, inside the convex hull of ``AB_BINS``.
    """
    _check_map(logits, Q, "logits", "annealed_mean")
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"annealed_mean: temperature must be > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= Q:
        raise ValueError(f"annealed_mean: top_k must be in 1..{Q} or None, got {top_k}")
    if chunk_elements is not None:
        _check_chunk(chunk_elements, "annealed_mean")
    unsure = check_unsure(unsure)
    n, _, h, w = logits.shape
    wd = _work_dtype(logits.dtype)
    inv_t = 1.0 / temperature
    if top_k is None and logits.device.type == "cpu" and is_pixel_major(logits):
        return _annealed_mean_pixels(logits, inv_t, wd, unsure).to(logits.dtype)
    out = torch.empty(n, 2, h, w, dtype=wd, device=logits.device)
    limit = chunk_elements
    if limit is None:
        limit = _DECODE_CHUNK_ELEMENTS
        if logits.device.type == "cpu":
            limit = min(limit, _DECODE_CHUNK_ELEMENTS_CPU)
    for bs, rs in _decode_slices(n, h, w, limit):
        # softmax(log_softmax(x) / T) == softmax(x / T): log_softmax only shifts each pixel's
        # scores by a constant, so the one softmax below does both steps.
        x = logits[bs, :, rs].to(wd)
        x = x * (inv_t if unsure is None else _unsure_inv_t(normalized_entropy(x), inv_t, unsure))
        if top_k is None:
            p = torch.softmax(x, dim=1)
            # (2, 313) @ (n, 313, h*w): one batched GEMM, no permute copy
            ab = torch.matmul(_bins_t_on(logits.device, wd), p.flatten(2))
            out[bs, :, rs] = ab.view(p.shape[0], 2, *p.shape[2:])
        else:
            vals, idx = torch.topk(x, top_k, dim=1)  # same order as logits: 1/T > 0
            p = torch.softmax(vals, dim=1)  # renormalised over the k, re-tempered (shift-free)
            bins = _bins_on(logits.device, wd)
            out[bs, 0, rs] = (p * bins[:, 0][idx]).sum(1)
            out[bs, 1, rs] = (p * bins[:, 1][idx]).sum(1)
    return out.to(logits.dtype)


def is_pixel_major(x: Tensor) -> bool:
    """True when the channels of each pixel of (N, C, H, W) `x` lie next to each other in memory
    (channels_last): per-pixel work over the 313 bins then reads contiguous rows."""
    return x.permute(0, 2, 3, 1).is_contiguous()


@functools.lru_cache(maxsize=16)
def _bins_sum_on(device: torch.device, dtype: torch.dtype) -> Tensor:
    """(3, 313): the bin centres a, b and a row of ones, so one GEMM gives sum p*a, sum p*b and
    sum p (as (3, 313) x (313, m): on the CPU twice as fast as (m, 313) x (313, 3))."""
    with torch.inference_mode(False):
        sums = torch.cat([AB_BINS, torch.ones(Q, 1)], 1).t()
        return sums.to(device=device, dtype=dtype).contiguous()


# Pixels per step of the CPU's pixel-major passes: a (256, 313) float32 block is 320 KB, so a
# step's few blocks stay in a core's L2 cache through all its passes.
PIXEL_STEP = 256


def _annealed_mean_pixels(
    logits: Tensor, inv_t: float, wd: torch.dtype, unsure: Unsure | None = None
) -> Tensor:
    """`annealed_mean` of pixel-major CPU logits: rows of 313 scores, PIXEL_STEP pixels a step.
    Returns (N, 2, H, W) channels_last."""
    n, q, h, w = logits.shape
    x = logits.permute(0, 2, 3, 1).reshape(n * h * w, q)  # a view
    out = torch.empty(n * h * w, 2, dtype=wd)
    step = min(PIXEL_STEP, x.shape[0])
    scratch = torch.empty(step, q, dtype=wd)
    for s in range(0, x.shape[0], step):
        annealed_mean_rows(x[s : s + step], inv_t, out[s : s + step], scratch, unsure=unsure)
    return out.view(n, h, w, 2).permute(0, 3, 1, 2)


def _unsure_rows(x: Tensor, inv_t: float, t: Tensor, probs: bool, unsure: Unsure) -> None:
    """`annealed_mean_rows`' weights with a temperature per row, into `t`: the entropy comes
    from the same pass that exponentiates (logits) or takes the log (probabilities)."""
    if probs:
        torch.log(x.clamp_min(1e-30), out=t)  # log p
        h = -(x * t).sum(1, keepdim=True)
    else:
        mx = x.amax(1, keepdim=True)
        torch.sub(x, mx, out=t).exp_()  # e = exp(x - max); p = e / sum(e)
        s = t.sum(1, keepdim=True)
        h = s.log() + mx - (t * x).sum(1, keepdim=True) / s
        torch.sub(x, mx, out=t)  # log p up to a constant per row
    inv = _unsure_inv_t(h * (1.0 / math.log(Q)), inv_t, unsure)
    t.mul_(inv).exp_()


def annealed_mean_rows(
    x: Tensor,
    inv_t: float,
    out: Tensor,
    scratch: Tensor | None = None,
    probs: bool = False,
    unsure: Unsure | None = None,
) -> None:
    """The annealed mean of rows of scores `x` (m, 313) at temperature 1/inv_t, written into
    `out` (m, 2): p = exp((x - max) / T), one GEMM for sum p*a, sum p*b and sum p, divide.
    `x` holds logits or log-probabilities, or with `probs` probabilities (then p = x ** (1/T),
    as exp(log(x) / T): no max is needed, x <= 1). `scratch`: an (at least m, 313) buffer.
    `unsure`: a temperature per row, as in `annealed_mean` (`unsure` already checked)."""
    m = x.shape[0]
    t = torch.empty_like(x) if scratch is None else scratch[:m]
    if unsure is not None:
        _unsure_rows(x, inv_t, t, probs, unsure)
    elif probs:
        torch.log(x, out=t).mul_(inv_t).exp_()
    else:
        torch.add(x.amax(1, keepdim=True).mul_(-inv_t), x, alpha=inv_t, out=t).exp_()
    acc = torch.mm(_bins_sum_on(x.device, x.dtype), t.t())  # (3, m)
    torch.div(acc[:2], acc[2:], out=out.t())
