"""Colour statistics of a colorized film: is there a colour cast, is it washed out?

    from bttf.metrics.colour import colour_stats, ColourStats
    s = colour_stats(rgb_frames)             # uint8 (H, W, 3) RGB frames, every 5th is measured
    s.mean_a, s.mean_b, s.strong_share, s.hue_shares["green"], s.js_prior
    pooled = ColourStats.pool([s1, s2])      # == stats over the films' frames together (or s1 + s2)

How a frame is measured: every `step`-th frame (0, step, 2 step, ...) is resized to `WIDTH`
(160) pixels wide (area interpolation, on sRGB in [0, 1]; height in proportion) and converted
to CIE Lab with `bttf.color.rgb_to_lab` (D65, as scikit-image's `rgb2lab`). Every pixel then
counts once in:

- the sums of a* and b* (-> `mean_a`, `mean_b`: a cast shows as a mean away from 0; a* < 0 is
  green, > 0 red; b* < 0 blue, > 0 yellow);
- "strongly coloured" when its chroma sqrt(a*² + b*²) exceeds `STRONG_CHROMA` (20 Lab units);
  those pixels are split by hue angle h = atan2(b*, a*) in degrees, [0, 360), into the sectors
  of `HUE_SECTORS` (boundaries put the sRGB named colours where a reader expects them: red
  (255,0,0) is at 40°, crimson 25°, pink 8°, hot pink 351°; orange 73°, skin tones 55–75°,
  yellow 103°; green 136°, olive drab 120°, sea green 153°; cyan and teal 196°, turquoise 185°;
  sky blue 235°, steel blue 263°, blue 306°; purple and magenta 328°):

      red             [340°, 45°)      i.e. -20° .. 45°
      orange/yellow   [45°, 105°)
      green           [105°, 180°)
      cyan            [180°, 225°)
      blue            [225°, 315°)
      purple/magenta  [315°, 340°)

- its nearest of Zhang et al.'s 313 ab bins (`bttf.models.bins.encode_nearest`); the film's
  normalised bin histogram is compared with Zhang et al.'s ImageNet prior
  (`bttf.models.bins.imagenet_prior`) by the Jensen-Shannon divergence in nats (natural log;
  0 = the same distribution, ln 2 ≈ 0.693 = disjoint). A gray film scores
  JS(one-hot at (0, 0), prior) ≈ 0.42. Colour photographs pooled by the hundred score 0.02–0.03
  (200 ImageNet samples 0.031, 200 COCO images 0.022) but one photograph alone about 0.24
  (median): one scene holds few colours, so compare a film with films, and pool many.

`ColourStats` keeps the raw counts and sums, not the ratios, so pooling several films (`pool`
or `+`) gives exactly the statistics of all their measured frames taken together, each pixel
weighing the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from bttf.color import rgb_to_lab
from bttf.models.bins import Q, encode_nearest, imagenet_prior

__all__ = [
    "HUE_SECTORS",
    "STEP",
    "STRONG_CHROMA",
    "WIDTH",
    "ColourAccumulator",
    "ColourStats",
    "colour_stats",
    "js_divergence",
]

#: Frames measured: every STEP-th (0, STEP, 2 STEP, ...) by default.
STEP = 5
#: Width in pixels each measured frame is resized to (area interpolation).
WIDTH = 160
#: Chroma (Lab units) above which a pixel counts as strongly coloured.
STRONG_CHROMA = 20.0
#: (name, start, end) of each hue sector in degrees of atan2(b*, a*) in [0, 360); red wraps.
HUE_SECTORS: tuple[tuple[str, float, float], ...] = (
    ("red", 340.0, 45.0),
    ("orange/yellow", 45.0, 105.0),
    ("green", 105.0, 180.0),
    ("cyan", 180.0, 225.0),
    ("blue", 225.0, 315.0),
    ("purple/magenta", 315.0, 340.0),
)
HUE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in HUE_SECTORS)
# Sector index of each whole degree: hue h falls in _SECTOR_OF_DEGREE[floor(h)] (boundaries
# are whole degrees).
_SECTOR_OF_DEGREE = np.array(
    [
        next(
            i
            for i, (_, lo, hi) in enumerate(HUE_SECTORS)
            if (lo <= d < hi if lo < hi else (d >= lo or d < hi))
        )
        for d in range(360)
    ],
    dtype=np.int64,
)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats between two histograms (normalised here), in [0, ln 2]."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


@dataclass(frozen=True, eq=False)
class ColourStats:
    """Raw colour counts of the measured frames of one film (or several, pooled).

    Derived numbers are properties: `mean_a`, `mean_b`, `strong_share`, `hue_shares`,
    `js_prior`. `a + b` and `ColourStats.pool([...])` add the counts: the pooled statistics are
    those of all the frames together.
    """

    frames: int = 0  # frames measured
    pixels: int = 0  # pixels measured (after the resize)
    sum_a: float = 0.0
    sum_b: float = 0.0
    strong: int = 0  # pixels with chroma > STRONG_CHROMA
    hue_counts: tuple[int, ...] = (0,) * len(HUE_SECTORS)  # strong pixels per HUE_SECTORS entry
    bin_counts: np.ndarray = field(default_factory=lambda: np.zeros(Q, np.int64))  # (313,)

    def __add__(self, other: ColourStats) -> ColourStats:
        if not isinstance(other, ColourStats):
            return NotImplemented
        return ColourStats(
            frames=self.frames + other.frames,
            pixels=self.pixels + other.pixels,
            sum_a=self.sum_a + other.sum_a,
            sum_b=self.sum_b + other.sum_b,
            strong=self.strong + other.strong,
            hue_counts=tuple(x + y for x, y in zip(self.hue_counts, other.hue_counts, strict=True)),
            bin_counts=self.bin_counts + other.bin_counts,
        )

    @classmethod
    def pool(cls, stats: Iterable[ColourStats]) -> ColourStats:
        """The statistics of several films' measured frames taken together (empty: no pixels)."""
        out = cls()
        for s in stats:
            out = out + s
        return out

    def _ratio(self, x: float, n: int) -> float:
        return x / n if n else float("nan")

    @property
    def mean_a(self) -> float:
        """Mean a* over the measured pixels (NaN when none)."""
        return self._ratio(self.sum_a, self.pixels)

    @property
    def mean_b(self) -> float:
        """Mean b* over the measured pixels (NaN when none)."""
        return self._ratio(self.sum_b, self.pixels)

    @property
    def strong_share(self) -> float:
        """Share of pixels (0..1) with chroma above STRONG_CHROMA."""
        return self._ratio(self.strong, self.pixels)

    @property
    def hue_shares(self) -> dict[str, float]:
        """Share (0..1) of each hue sector among the strongly coloured pixels (NaN when none)."""
        return {n: self._ratio(c, self.strong) for n, c in zip(HUE_NAMES, self.hue_counts)}

    @property
    def bin_histogram(self) -> np.ndarray:
        """(313,) float64: the share of pixels whose nearest ab bin is each bin."""
        total = self.bin_counts.sum()
        return self.bin_counts / total if total else np.full(Q, np.nan)

    @property
    def js_prior(self) -> float:
        """Jensen-Shannon divergence (nats) between the bin histogram and the ImageNet prior."""
        if not self.pixels:
            return float("nan")
        return js_divergence(self.bin_counts, imagenet_prior().double().numpy())

    def to_dict(self) -> dict:
        """The derived numbers, JSON-ready: NaN (nothing to divide by) becomes None; the 313
        counts are left out."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "frames_measured": self.frames,
            "pixels": self.pixels,
            "mean_a": num(self.mean_a),
            "mean_b": num(self.mean_b),
            "strong_share": num(self.strong_share),
            "hue_shares": {k: num(v) for k, v in self.hue_shares.items()},
            "js_prior": num(self.js_prior),
        }


def frame_lab(rgb: np.ndarray, width: int = WIDTH) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> Lab (3, h, width) float32, resized (area) to `width` pixels wide."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    height = max(1, round(h * width / w))
    x = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    x = cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA)
    return rgb_to_lab(torch.from_numpy(x).permute(2, 0, 1).contiguous())


def measure_frame(rgb: np.ndarray, width: int = WIDTH) -> ColourStats:
    """The ColourStats of one frame (uint8 (H, W, 3) RGB, or float in [0, 1])."""
    ab = frame_lab(rgb, width)[1:].double()
    a, b = ab[0], ab[1]
    chroma = torch.hypot(a, b)
    strong = chroma > STRONG_CHROMA
    hue = torch.rad2deg(torch.atan2(b[strong], a[strong])).remainder(360.0)
    sectors = _SECTOR_OF_DEGREE[hue.floor().long().clamp(0, 359).numpy()]
    bins = encode_nearest(ab[None].float())
    return ColourStats(
        frames=1,
        pixels=int(a.numel()),
        sum_a=float(a.sum()),
        sum_b=float(b.sum()),
        strong=int(strong.sum()),
        hue_counts=tuple(int(c) for c in np.bincount(sectors, minlength=len(HUE_SECTORS))),
        bin_counts=torch.bincount(bins.flatten(), minlength=Q).numpy().astype(np.int64),
    )


class ColourAccumulator:
    """Streaming form of `colour_stats`: `add(frame)` for every frame of a film, then `stats`.

    Only every `step`-th frame added (the first, then every `step`) is measured.
    """

    def __init__(self, step: int = STEP, width: int = WIDTH) -> None:
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.step, self.width = step, width
        self._seen = 0
        self._stats = ColourStats()

    def add(self, rgb: np.ndarray) -> None:
        if self._seen % self.step == 0:
            self._stats = self._stats + measure_frame(rgb, self.width)
        self._seen += 1

    @property
    def stats(self) -> ColourStats:
        return self._stats


def colour_stats(
    frames: Iterable[np.ndarray] | Sequence[np.ndarray], step: int = STEP, width: int = WIDTH
) -> ColourStats:
    """Colour statistics of a film's frames (see the module docstring for what is measured).

    Args:
        frames: uint8 (H, W, 3) RGB frames in order (any iterable: a generator streams).
        step: measure every `step`-th frame, starting with the first.
        width: width each measured frame is resized to.

    Returns:
        The raw counts as `ColourStats`; `frames == 0` when the iterable was empty.
    """
    acc = ColourAccumulator(step, width)
    for f in frames:
        acc.add(f)
    return acc.stats
