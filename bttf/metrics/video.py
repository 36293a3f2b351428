"""Temporal-consistency metrics for colorized video: warping error and CDC.

Warping error (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018): for each
pair of consecutive frames (t, t+1), frame t+1 of the *output* is warped back onto frame t with
optical flow computed on the *input* (gray) frames; the error is the squared RGB difference (RGB
in [0, 1]) averaged over the non-occluded pixels and the three channels, as in the authors'
released evaluation code; the video's value is the mean over frame pairs. Occlusions come from
the forward-backward check of `bttf.pipeline.flow.consistent_mask`.
Flow method: OpenCV DIS, preset "medium" — NOT FlowNet2 as in Lai et al., so the numbers are
comparable between runs of this code, not with published tables.

CDC, colour distribution consistency (Liu et al., "Temporally Consistent Video Colorization with
Deep Feature Propagation and Self-regularization Learning", 2021): per-channel 256-bin histograms
of each frame, the Jensen-Shannon divergence (natural log) between frames t and t+d averaged
over frames and over R, G, B, then averaged over d in {1, 2, 4}.

Lower is better for both; a ground-truth colour video has non-zero values of its own (things
move, light changes), which `evaluate_video` reports for reference when given the truth.

`evaluate_video` also measures the colour statistics of `bttf.metrics.colour` (mean a*, b*,
strongly coloured share, hue shares, JS divergence to the ImageNet prior) on the same pass.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from bttf.errors import BadInputError
from bttf.pipeline.cuts import iter_frames
from bttf.pipeline.flow import FlowEstimator, consistent_mask, warp

if TYPE_CHECKING:
    from bttf.metrics.colour import ColourStats

log = logging.getLogger(__name__)

FLOW_METHOD = "OpenCV DIS (preset medium) on the gray input frames"
CDC_DILATIONS = (1, 2, 4)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> uint8 (H, W) luma (BT.601, as a decoder's gray output)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@dataclass
class FlowPair:
    """Flow from frame t to frame t+1 (on the input's gray frames) and its trusted-pixel mask."""

    flow: np.ndarray  # (H, W, 2) float32, t -> t+1
    valid: np.ndarray  # (H, W) bool, not occluded, not on a motion boundary, in the frame


def flow_pair(a: np.ndarray, b: np.ndarray, estimator: FlowEstimator) -> FlowPair:
    """The FlowPair between gray frames a (t) and b (t+1)."""
    fw = estimator(a, b)
    bw = estimator(b, a)
    return FlowPair(fw, consistent_mask(fw, bw))


def pair_flows(grays: Sequence[np.ndarray], preset: str = "medium") -> list[FlowPair]:
    """FlowPairs for every consecutive pair of gray uint8 frames."""
    est = FlowEstimator(preset)
    return [flow_pair(grays[i], grays[i + 1], est) for i in range(len(grays) - 1)]


def pair_warping_error(a: np.ndarray, b: np.ndarray, pair: FlowPair) -> float:
    """Lai et al.'s error between uint8 RGB frames a (t) and b (t+1): b warped onto a."""
    if a.shape != b.shape or a.shape[:2] != pair.flow.shape[:2]:
        raise ValueError(f"frame and flow shapes differ: {a.shape}, {b.shape}, {pair.flow.shape}")
    wb = warp(b.astype(np.float32) / 255.0, pair.flow)
    sq = (wb - a.astype(np.float32) / 255.0) ** 2
    n = int(pair.valid.sum())
    if n == 0:  # as in Lai et al.'s code: everything occluded -> average over all pixels
        return float(sq.mean())
    return float(sq[pair.valid].sum() / (n * sq.shape[-1]))


def warping_error(
    frames: Sequence[np.ndarray],
    grays: Sequence[np.ndarray] | None = None,
    pairs: Sequence[FlowPair] | None = None,
) -> float:
    """Mean warping error of uint8 RGB frames (T, H, W, 3); flow from `grays` (default: their luma).

    Pass `pairs` (from `pair_flows`) to reuse one flow computation for several outputs.
    """
    if len(frames) < 2:
        return 0.0
    if pairs is None:
        pairs = pair_flows(grays if grays is not None else [rgb_to_gray(f) for f in frames])
    if len(pairs) != len(frames) - 1:
        raise ValueError(
            f"{len(frames)} frames need {len(frames) - 1} flow pairs, got {len(pairs)}"
        )
    return float(
        np.mean([pair_warping_error(frames[i], frames[i + 1], p) for i, p in enumerate(pairs)])
    )


def channel_histograms(rgb: np.ndarray) -> np.ndarray:
    """(3, 256) float64: each channel's 256-bin histogram of a uint8 (H, W, 3) frame (sums 1)."""
    h = np.stack([np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)])
    return h / h.sum(axis=1, keepdims=True)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (nats) along the last axis of two histograms summing to 1."""
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(x > 0, x * np.log(x / m), 0.0)
        return t.sum(-1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def cdc(frames: Iterable[np.ndarray], dilations: Sequence[int] = CDC_DILATIONS) -> float:
    """Colour distribution consistency of uint8 RGB frames (Liu et al. 2021); 0 when still."""
    acc = _CdcAccumulator(dilations)
    for f in frames:
        acc.update(f)
    return acc.value()


class _CdcAccumulator:
    def __init__(self, dilations: Sequence[int] = CDC_DILATIONS) -> None:
        self.dilations = tuple(dilations)
        self._hists: deque[np.ndarray] = deque(maxlen=max(self.dilations) + 1)
        self._sums = {d: 0.0 for d in self.dilations}
        self._counts = {d: 0 for d in self.dilations}

    def update(self, rgb: np.ndarray) -> None:
        h = channel_histograms(rgb)
        self._hists.append(h)
        for d in self.dilations:
            if len(self._hists) > d:
                self._sums[d] += float(js_divergence(self._hists[-1 - d], h).mean())
                self._counts[d] += 1

    def value(self) -> float:
        per_d = [self._sums[d] / self._counts[d] for d in self.dilations if self._counts[d]]
        return float(np.mean(per_d)) if per_d else 0.0


@dataclass
class VideoMetrics:
    """What `evaluate_video` measures; truth-based fields are None without a truth video."""

    frames: int
    warping_error: float
    cdc: float
    flow_method: str = FLOW_METHOD
    psnr: float | None = None
    ssim: float | None = None
    colorfulness: float | None = None
    truth_warping_error: float | None = None
    truth_cdc: float | None = None
    truth_colorfulness: float | None = None
    notes: list[str] = field(default_factory=list)
    colour: ColourStats | None = None  # None when colour statistics were not asked for
    truth_colour: ColourStats | None = None

    def to_dict(self) -> dict:
        colour, truth_colour = self.colour, self.truth_colour
        d = asdict(replace(self, colour=None, truth_colour=None))
        d["colour"] = colour.to_dict() if colour is not None else None
        d["truth_colour"] = truth_colour.to_dict() if truth_colour is not None else None
        return d


def _resized_truth(true_rgb: np.ndarray, rgb: np.ndarray, notes: list[str] | None) -> np.ndarray:
    """The truth frame at the output's size (area resize where they differ; said in `notes`)."""
    if true_rgb.shape == rgb.shape:
        return true_rgb
    if notes is not None:
        notes.append(
            f"truth {true_rgb.shape[1]}x{true_rgb.shape[0]} resized to the "
            f"output's {rgb.shape[1]}x{rgb.shape[0]}"
        )
    return cv2.resize(true_rgb, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_AREA)


def evaluate_video(
    output: str | Path,
    truth: str | Path | None = None,
    max_frames: int | None = None,
    fps: float = 24.0,
    progress: Callable[[int], None] | None = None,
    colour_step: int | None = 5,
) -> VideoMetrics:
    """Warping error and CDC of a colorized video (file or folder of frames), streaming.

    With `truth` (the colour original, same frames), flow is computed on the truth's luma (the
    gray input the colorizer saw) and PSNR / SSIM / colourfulness are averaged over frames; the
    truth's own warping error and CDC are given for reference. Without it, flow is computed on
    the output's luma (a colorizer keeps the input's lightness).

    On the same pass, `colour` (and `truth_colour`) get the colour statistics of
    `bttf.metrics.colour` over every `colour_step`-th frame; None skips them.
    """
    est = FlowEstimator("medium")
    notes: list[str] = []
    out_iter = iter_frames(output, gray=False, fps=fps, max_frames=max_frames)
    truth_iter = (
        iter_frames(truth, gray=False, fps=fps, max_frames=max_frames)
        if truth is not None
        else iter(())
    )
    quality = _quality_metrics() if truth is not None else None
    colour_out = colour_truth = None
    if colour_step is not None:
        from bttf.metrics.colour import ColourAccumulator

        colour_out, colour_truth = ColourAccumulator(colour_step), ColourAccumulator(colour_step)

    cdc_out, cdc_truth = _CdcAccumulator(), _CdcAccumulator()
    we_out: list[float] = []
    we_truth: list[float] = []
    psnrs: list[float] = []
    ssims: list[float] = []
    colf: list[float] = []
    colf_truth: list[float] = []
    prev: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
    n = 0
    for item_out, item_truth in zip_longest(out_iter, truth_iter):
        if item_out is None:
            notes.append(f"the truth has more frames; compared the first {n}")
            break
        rgb = item_out[1]
        true_rgb = None
        if truth is not None:
            if item_truth is None:
                notes.append(f"the output has more frames than the truth; compared the first {n}")
                break
            true_rgb = _resized_truth(item_truth[1], rgb, notes if n == 0 else None)
        gray = rgb_to_gray(true_rgb if true_rgb is not None else rgb)
        if prev is not None:
            p_rgb, p_gray, p_true = prev
            if p_rgb.shape != rgb.shape:
                raise BadInputError(
                    f"{output}: frame {n} is {rgb.shape[1]}x{rgb.shape[0]}, the "
                    f"previous one {p_rgb.shape[1]}x{p_rgb.shape[0]}"
                )
            pair = flow_pair(p_gray, gray, est)
            we_out.append(pair_warping_error(p_rgb, rgb, pair))
            if true_rgb is not None:
                we_truth.append(pair_warping_error(p_true, true_rgb, pair))
        cdc_out.update(rgb)
        if colour_out is not None:
            colour_out.add(rgb)
        if true_rgb is not None:
            if colour_truth is not None:
                colour_truth.add(true_rgb)
            cdc_truth.update(true_rgb)
            psnr, ssim, colourfulness = quality
            psnrs.append(float(psnr(rgb, true_rgb)))
            ssims.append(float(ssim(rgb, true_rgb)))
            colf.append(float(colourfulness(rgb)))
            colf_truth.append(float(colourfulness(true_rgb)))
        prev = (rgb, gray, true_rgb)
        n += 1
        if progress is not None:
            progress(n)
    if n == 0:
        raise BadInputError(f"{output} holds no frames")
    m = VideoMetrics(
        frames=n,
        warping_error=float(np.mean(we_out)) if we_out else 0.0,
        cdc=cdc_out.value(),
        notes=notes,
        colour=colour_out.stats if colour_out is not None else None,
    )
    if truth is not None:
        m.psnr = float(np.mean(psnrs))
        m.ssim = float(np.mean(ssims))
        m.colorfulness = float(np.mean(colf))
        m.truth_warping_error = float(np.mean(we_truth)) if we_truth else 0.0
        m.truth_cdc = cdc_truth.value()
        m.truth_colorfulness = float(np.mean(colf_truth))
        if colour_truth is not None:
            m.truth_colour = colour_truth.stats
    return m


def _quality_metrics() -> tuple[Callable, Callable, Callable]:
    """psnr, ssim, colourfulness on uint8 (H, W, 3) RGB frames, from bttf.metrics.image."""
    from bttf.metrics import image as tm

    def to_float(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32) / 255.0

    return (
        lambda a, b: tm.psnr(to_float(a), to_float(b)),
        lambda a, b: tm.ssim(to_float(a), to_float(b)),
        lambda a: tm.colorfulness(to_float(a)),
    )
