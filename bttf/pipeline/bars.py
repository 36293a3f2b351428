"""Black bars: a film transferred into a wider or taller frame (pillarbox, letterbox) carries black
bands the model never saw in training, and they change how it colours the picture between them.

Measured with the default model (v3; offline, every 5th frame, statistics over the picture only):
Chaplin's 640×360 clip with its 72-pixel pillarbox bars is painted mean a* +10.1 with 43% of the
picture strongly coloured; the same frames with the bars filled by the picture mirrored across
its edges +6.9 and 26% (cropped away instead: +7.6 and 30%); Holland's +7.5 / 33% becomes +5.5 /
25%. Through `bttf colorize` (`benchmarks/films.py`, whole frames, the bars without colour):
Chaplin +7.5 → +5.2 and 31% → 18%, Holland +5.3 → +3.9.

So the engine finds the bars once per film (`find_bars`: frames spread over the run's range; a
band of rows or columns at an edge that stays black in every one of them) and fills them in the
gray the model sees (`fill_bars`). Only the model's input changes: the output keeps the film's
own luma, black in the bars, and `ChromaStage` gives them no colour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

log = logging.getLogger(__name__)

#: Gray level (full-range 8-bit, the model's view) a bar's rows or columns stay at or below, on
#: average, in every sampled frame: digital black is 0, a scan's black border some units above.
BLACK = 16
#: Frames sampled, spread evenly over the run's range (`_samples`): a range of at most WALK
#: frames is decoded in one pass; a longer one is sought, at most FORWARD frames decoded a sample.
SAMPLES = 24
WALK = 1500
FORWARD = 250
#: A band narrower than this share of the frame's side is not a bar (a scan's ragged edge).
MIN_SHARE = 0.02
#: The picture between the bars must keep at least this share of each side, else none is
#: filled (a film that is dark in every sample is not all bars).
MIN_PICTURE = 0.4


@dataclass(frozen=True)
class Bars:
    """Widths in pixels of the black bands at each edge of the stored frame (0: none)."""

    top: int
    bottom: int
    left: int
    right: int

    def __bool__(self) -> bool:
        return any((self.top, self.bottom, self.left, self.right))

    def as_list(self) -> list[int]:
        return [self.top, self.bottom, self.left, self.right]


def bars_in(grays: list[np.ndarray]) -> Bars | None:
    """The bars common to `grays` (uint8 (H, W) frames of one film, full-range gray), or None.

    A row or column is black when its mean stays <= `BLACK` in every frame; a bar is the run of
    black ones from an edge, kept when at least `MIN_SHARE` of the side, and only while the
    picture keeps `MIN_PICTURE` of each side."""
    if not grays:
        return None
    h, w = grays[0].shape
    rows = np.max([g.mean(axis=1) for g in grays], axis=0) <= BLACK
    cols = np.max([g.mean(axis=0) for g in grays], axis=0) <= BLACK

    def edge(black: np.ndarray) -> int:
        lit = np.flatnonzero(~black)
        n = len(black) if lit.size == 0 else int(lit[0])
        return n if n >= MIN_SHARE * len(black) else 0

    bars = Bars(edge(rows), edge(rows[::-1]), edge(cols), edge(cols[::-1]))
    if h - bars.top - bars.bottom < MIN_PICTURE * h or w - bars.left - bars.right < MIN_PICTURE * w:
        return None
    return bars or None


def fill_bars(y: np.ndarray, bars: Bars) -> np.ndarray:
    """`y` (H, W) with its bars replaced by the picture mirrored across its edges (a new array)."""
    h, w = y.shape
    picture = y[bars.top : h - bars.bottom, bars.left : w - bars.right]
    return np.pad(picture, ((bars.top, bars.bottom), (bars.left, bars.right)), mode="symmetric")


def find_bars(info, start: float | None = None, duration: float | None = None) -> Bars | None:
    """The film's bars (`bars_in`) from `SAMPLES` frames spread over the run's range (`start`,
    `duration` as `bttf colorize` takes them), or None. A film that cannot be sampled (neither
    a duration nor a frame count, a failed seek or decode) has none: the run then sees the
    frames as they are."""
    import av

    from bttf.pipeline.decode import luma_plane
    from bttf.pipeline.stages import gray_lut

    t0 = info.start + Fraction(start or 0)
    last = info.end
    if last is None and info.frames and info.rate:  # no duration in the container: estimated
        last = info.start + info.frames / info.rate
    end = last if duration is None else t0 + Fraction(duration)
    if last is not None and end is not None:
        end = min(end, last)
    if end is None or end <= t0:
        return None
    grays = []
    try:
        with av.open(str(info.path)) as container:
            for frame in _samples(container, info, t0, end):
                y, bits, full = luma_plane(frame)
                if y.shape != (info.height, info.width):
                    return None
                grays.append(gray_lut(bits, full)[y])
    except (av.FFmpegError, OSError) as e:
        log.info("%s: black bars not looked for (%s)", info.path, e)
        return None
    bars = bars_in(grays)
    if bars:
        log.info(
            "%s: black bars (top, bottom, left, right) %s px, filled for the model",
            info.path,
            bars.as_list(),
        )
    return bars


def _samples(container, info, t0: Fraction, end: Fraction):
    """`SAMPLES` frames spread over [t0, end): a short range (`WALK` frames or fewer) decoded in
    one pass, every n-th frame kept; a longer one by a seek per sample, each taking the keyframe
    it lands on, or where those repeat (few keyframes) the frame at its time, decoding at most
    `FORWARD` frames further."""
    from bttf.pipeline.decode import _video_stream

    stream = _video_stream(container, info.path)  # the one the engine decodes
    tb = info.time_base
    count = (end - t0) * info.rate if info.rate else None
    if count is not None and count <= WALK:
        stream.thread_type = "AUTO"
        if t0 > info.start:
            container.seek(int(t0 / tb), stream=stream, backward=True)
        every, i = max(1, int(count) // SAMPLES), 0
        for frame in container.decode(stream):
            t = None if frame.pts is None else frame.pts * tb
            if t is not None and t < t0:
                continue
            if t is not None and t >= end:
                return
            if i % every == 0:
                yield frame
            i += 1
        return
    seen: set[int] = set()
    for k in range(SAMPLES):
        pts = int((t0 + (end - t0) * Fraction(2 * k + 1, 2 * SAMPLES)) / tb)
        container.seek(pts, stream=stream, backward=True)
        for i, frame in enumerate(container.decode(stream)):
            if frame.pts is None or i > FORWARD:
                break
            if frame.pts not in seen and (i == 0 or frame.pts >= pts or i == FORWARD):
                seen.add(frame.pts)
                yield frame
                break
