"""Hard scene-cut detection on luma.

A black-and-white film has no hue to compare, so shots are told apart by their lightness: a
small thumbnail of each frame is compared with the previous one by mean absolute difference
(MAD) and by the correlation of their gray-level histograms. The MAD threshold adapts to the
shot: a cut must stand out against the running median of the recent differences (a fast pan is
different from frame to frame all the time; a cut is different once), and shots shorter than
`min_scene_len` frames are not split again.

`CutDetector` is the streaming form (feed one gray frame, get a flag) used by the temporal
stabilizer; `detect_cuts(path)` runs it over a video file or a folder of frames.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from bttf.errors import BadInputError
from bttf.pipeline.media import IMAGE_SUFFIXES, is_image_path, read_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cut:
    """The first frame of a new shot: its index, its time in seconds, and how strong the cut was."""

    frame: int
    time: float
    mad: float  # mean absolute difference of the thumbnails, gray levels 0..255
    ratio: float  # mad / running median of the recent differences
    hist_corr: float  # histogram correlation with the previous frame, -1..1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CutParams:
    """Thresholds of the cut detector (defaults tuned on DAVIS clips, joined clips and pans)."""

    min_mad: float = 10.0  # absolute floor on the thumbnail MAD (gray levels)
    ratio: float = 3.0  # MAD must exceed ratio x the running median of recent MADs
    strong_ratio: float = 4.0  # ... and, unless it exceeds this, histograms must also disagree
    max_hist_corr: float = 0.9  # histogram correlation below which histograms "disagree"
    median_floor: float = 2.0  # lower bound on the running median (static shots, grain)
    window: int = 24  # how many recent differences the running median looks at
    min_scene_len: int = 8  # frames; no cut closer than this to the previous one
    thumb_width: int = 64
    hist_bins: int = 32


class CutDetector:
    """Streaming hard-cut detector: `feed(gray)` returns True when `gray` starts a new shot.

    Frames are uint8 (H, W) luma at any size (they are reduced to a `thumb_width`-wide
    thumbnail). The first frame never counts as a cut. `cuts` lists the `Cut`s found so far.
    """

    def __init__(self, params: CutParams | None = None, fps: float | None = None) -> None:
        self.params = params or CutParams()
        self.fps = fps
        self.cuts: list[Cut] = []
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new video, or a seek); `cuts` is kept."""
        self._prev_thumb: np.ndarray | None = None
        self._prev_hist: np.ndarray | None = None
        self._recent: deque[float] = deque(maxlen=self.params.window)
        self._since_cut = 0
        self._index = -1

    def _thumb(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if gray.ndim != 2:
            raise ValueError(f"expected a gray frame (H, W), got shape {gray.shape}")
        h, w = gray.shape
        tw = min(self.params.thumb_width, w)
        th = max(1, round(h * tw / w))
        small = cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([small], [0], None, [self.params.hist_bins], [0, 256])
        return small.astype(np.float32), hist

    def feed(self, gray: np.ndarray, time: float | None = None) -> bool:
        """Feed the next frame (uint8 (H, W)); True if it is the first frame of a new shot."""
        p = self.params
        self._index += 1
        thumb, hist = self._thumb(gray)
        prev_thumb, prev_hist = self._prev_thumb, self._prev_hist
        self._prev_thumb, self._prev_hist = thumb, hist
        self._since_cut += 1
        if prev_thumb is None or prev_thumb.shape != thumb.shape:
            self._since_cut = 1
            return False
        mad = float(np.abs(thumb - prev_thumb).mean())
        corr = float(cv2.compareHist(prev_hist, hist, cv2.HISTCMP_CORREL))
        baseline = max(float(np.median(self._recent)) if self._recent else 0.0, p.median_floor)
        ratio = mad / baseline
        is_cut = (
            self._since_cut > p.min_scene_len
            and mad >= p.min_mad
            and ratio >= p.ratio
            and (corr <= p.max_hist_corr or ratio >= p.strong_ratio)
        )
        if is_cut:
            if time is None:
                time = self._index / self.fps if self.fps else float(self._index)
            self.cuts.append(Cut(self._index, float(time), mad, ratio, corr))
            log.info(
                "cut at frame %d (mad %.1f, x%.1f median, hist corr %.2f)",
                self._index,
                mad,
                ratio,
                corr,
            )
            self._since_cut = 1
            # the new shot's own differences set its baseline
            self._recent.clear()
        else:
            self._recent.append(mad)
        return is_cut


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder of frames, in name order."""
    files = sorted(f for f in folder.iterdir() if is_image_path(f))
    if not files:
        raise BadInputError(f"{folder} holds no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def iter_frames(
    path: str | Path, gray: bool = True, fps: float = 24.0, max_frames: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time in seconds, frame) from a video file or a folder of images.

    Frames are uint8 (H, W) luma when `gray`, else (H, W, 3) RGB. A folder's frames are read in
    name order and timed at `fps`. Raises BadInputError for a missing or unreadable input.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path} does not exist; give a video file or a folder of frames")
    if path.is_dir():
        for i, f in enumerate(list_frame_files(path)):
            if max_frames is not None and i >= max_frames:
                return
            img = read_image(f, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
            yield i / fps, img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return
    yield from _iter_video(path, gray, max_frames)


def _iter_video(
    path: Path, gray: bool, max_frames: int | None
) -> Iterator[tuple[float, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise BadInputError(f"cannot open {path} as a video ({e}); check the file") from e
    with container:
        if not container.streams.video:
            raise BadInputError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 24)
        try:
            for i, frame in enumerate(container.decode(stream)):
                if max_frames is not None and i >= max_frames:
                    return
                t = float(frame.time) if frame.time is not None else i / rate
                yield t, frame.to_ndarray(format="gray" if gray else "rgb24")
        except av.error.FFmpegError as e:
            raise BadInputError(f"{path} is damaged or truncated ({e})") from e


def detect_cuts(
    path: str | Path,
    params: CutParams | None = None,
    fps: float = 24.0,
    progress: Callable[[int], None] | None = None,
) -> list[Cut]:
    """Hard cuts in a video file or a folder of frames (`fps` times a folder's frames).

    Returns one `Cut` per shot boundary (the first frame of each new shot), in order.
    `progress(frames_done)` is called now and then.
    """
    det = CutDetector(params, fps=fps)
    for i, (t, gray) in enumerate(iter_frames(path, gray=True, fps=fps)):
        det.feed(gray, time=t)
        if progress is not None and i % 50 == 0:
            progress(i + 1)
    return det.cuts
