"""Keyframe-guided colour: frames coloured by hand steer the colour of their shot.

The workflow: `export_keyframes` writes one gray PNG per shot (named by the film's frame index,
`000123.png`); the user colours some of them in any editor; `load_keyframes` checks the folder
up front; `KeyframeGuide` carries each keyframe's colour through its shot, forwards and
backwards, and the chroma stage blends it over the model's prediction.

Only the keyframe's chroma is used (Lab ab: the editor may have changed the brightness); the
output keeps the film's own luma, so at a keyframe the output is the keyframe's ab on the film's
Y plane, at full chroma resolution.

Propagation (per keyframe, computed from the keyframe and the film alone, so a resumed run or a
segment gets the same guide as an uninterrupted run): the film is decoded a second time, gray
and small (`grid` = the render size), by one decoder moving forwards (`GrayWindow`: a keyframe
every shot still decodes the film once), over at most `MAX_SPAN` frames each side of the
keyframe; from the keyframe outwards, each frame's displacement back to the keyframe is a DIS
optical flow (`bttf.pipeline.flow`) straight to the keyframe (down to the grid's own size, not
DIS's usual half) that starts from the last frame's displacement composed with a quick flow
between the two neighbours (composed flows alone drift; a flow to the keyframe alone loses
large motion), so the keyframe's colour is sampled once (no blur from warping colour again and
again). The cuts of the window (`CutDetector` fed from its first frame) stop the propagation at
the shot's edges. The tracks run on a thread of their own beside the model: the forward one
streams a few frames ahead of the run; the backward one (the frames before a keyframe need it)
starts before the run reaches its window. Per frame the guide keeps the displacement, float16 at
half the grid size (~115 KB a frame at a 256x456 render size).

At the flow's size (or the chroma plane's, where that is smaller: 4:2:0 output at low
resolutions), brought to the chroma plane's size after, per pixel p of a frame with gray level
l(p):

    key_ab = s * match_key(p + d(p)) + (1 - s) * grid_key(p + d(p), l(p))
    ab     = c * key_ab + (1 - c) * model_ab

where match_key is the keyframe's colour around the tracked point, weighted by how well the
keyframe's luma there matches the frame's around p (`match_colour`: a track a pixel or two off at
an edge takes the colour of the right side), and grid_key is a bilateral grid of the keyframe's
colour (cells of 24 render pixels x 16 gray levels): the colour of keyframe pixels of that gray
level near the tracked point, which stays right where the track is lost (water, spray, things
turning) far longer than the tracked colour (on DAVIS, +1 to +3 dB 30 frames from the key). Each is
weighted by the inverse of the square error expected of it: s = e_grid / (e_track + e_grid), where
e_track = 0.1 x the luma drift (keyframe luma at the tracked point against l(p), mean square over
5x5 pixels) and e_grid = the spread of the keyframe colours the grid averages there + 30 (on DAVIS
+0.06 dB over trusting the track by the drift alone). c = the grid's evidence (keyframe pixels
behind it) x a mild decay per frame from the key. Where two keyframes reach a frame, each pixel
takes the one with the higher c. At the keyframe itself: its ab at the chroma plane's size, c = 1.
(The carried colour is smooth at the flow's size, as colour in film is: on DAVIS, +0.1 dB over
working at the chroma plane's size, and cheaper.)
Memory, flat in the film's length: the guides of the keyframes whose window holds the current
frame, and the gray frames (grid size) from the current frame to the furthest a track has read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from bttf.errors import BadInputError
from bttf.pipeline.cuts import CutDetector
from bttf.pipeline.decode import VideoInfo, probe_video, read_frames
from bttf.pipeline.flow import FlowEstimator, resize_flow, warp
from bttf.pipeline.media import check_input, is_image_path, read_rgb_image
from bttf.pipeline.stages import gray_lut, resize_plane

log = logging.getLogger(__name__)

GRAY_CHROMA = 4.0  # 99th percentile of ab chroma below this: a gray image (as training data)
MAX_SPAN = 150  # frames each side of a keyframe its colour may reach
PREFETCH = 96  # frames before its window a keyframe's backward track starts
LEAD = 24  # frames the forward tracks run ahead of the run
CHUNK = 8  # frames a track runs before the guide's thread turns to another
SEEK_GAP = 48  # frames: a frame further past what was decoded is sought
DECAY = 0.999  # confidence kept per frame away from the keyframe
DRIFT_BOX = 5  # flow pixels: the square the luma drift (mean square) is taken over
DRIFT_COST = 0.1  # the tracked colour's expected square error (ab) per unit of that drift
SPREAD_FLOOR = 30.0  # ab^2: the least square error expected of the grid's colour
MATCH_RADIUS = 2  # flow pixels: how far around the tracked point its colour is looked for
MATCH_PATCH = 3  # flow pixels: the square of luma that decides how well a point matches
MATCH_TOLERANCE = 10.0  # gray levels (RMS over that square): a worse match weighs far less
MATCH_SPREAD = 2.0  # flow pixels: offsets further from the tracked point weigh less
GRID_SCALE = 1  # the flow works at the render size / this
STEP_PRESET = "ultrafast"  # DIS preset of the flow between neighbours (a first guess only)
# the flow to the keyframe: DIS "medium" down to the grid's own size, patches every 4 pixels
# there, 20 descent steps (not 25), no variational refinement (on DAVIS: +0.2 dB over the
# preset's half size, 1.4x its CPU; 20 steps as good as 25, 10% less CPU)
KEY_FLOW = {
    "preset": "medium",
    "finest_scale": 0,
    "patch_stride": 4,
    "gradient_descent_iterations": 20,
    "variational_refinement_iterations": 0,
}
GRID_CELL = 24  # flow pixels: cell of the keyframe's bilateral colour grid
GRID_BINS = 16  # gray levels of the grid
MIN_COUNT = 1.0  # keyframe pixels of the grid behind full confidence
ASPECT_TOLERANCE = 0.01  # relative difference of aspect ratios still taken as the same


def film_index(info: VideoInfo, pts: int) -> int:
    """The film's own frame index (0 = its first frame) of the frame at `pts`."""
    rate = info.rate or Fraction(24)
    return round((Fraction(pts) * info.time_base - info.start) * rate)


def _shot_cuts(info: VideoInfo) -> tuple[list[int], int]:
    """First frame of every shot (film indices) and the number of frames."""
    lut = gray_lut(info.bits, info.full_range)
    det = CutDetector()
    starts: list[int] = []
    n = 0
    for f in read_frames(info, on_error="repeat"):
        i = film_index(info, f.pts)
        if det.feed(lut[f.y]) or not starts:
            starts.append(i)
        n = i + 1
    return starts, n


def _write_png(path: Path, gray: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    if not ok:
        raise BadInputError(f"cannot encode {path} as PNG")
    buf.tofile(path)


def export_keyframes(
    film: str | Path,
    out_dir: str | Path,
    at: str = "first",
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write one keyframe per shot of `film` into `out_dir`: its gray (the film's own luma, as
    the model sees it: full-range 8 bit) as an RGB PNG at full resolution, in the stored
    orientation, named by the film's frame index (`000123.png`). `at`: the shot's "first" or
    "middle" frame. Shots come from `bttf.pipeline.cuts.CutDetector`. Returns the files written.

    Raises BadInputError for an unreadable film, or an `out_dir` that is a file or already
    holds images (unless `overwrite`); nothing is written then.
    """
    if at not in ("first", "middle"):
        raise BadInputError(f"--at must be 'first' or 'middle', got {at!r}")
    film, out_dir = check_input(film), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir} is a file; give a folder for the keyframes")
    if out_dir.is_dir() and not overwrite and any(is_image_path(f) for f in out_dir.iterdir()):
        raise BadInputError(f"{out_dir} already holds images; give an empty folder or --overwrite")
    info = probe_video(film)
    starts, n = _shot_cuts(info)
    if not starts:
        raise BadInputError(f"{film} has no frame that can be decoded")
    ends = [*starts[1:], n]
    wanted = starts if at == "first" else [(s + e - 1) // 2 for s, e in zip(starts, ends)]
    todo = set(wanted)
    lut = gray_lut(info.bits, info.full_range)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot make the folder {out_dir} ({e.strerror})") from e
    written: list[Path] = []
    try:
        for f in read_frames(info, on_error="repeat"):
            i = film_index(info, f.pts)
            if i in todo:
                todo.discard(i)
                path = out_dir / f"{i:06d}.png"
                _write_png(path, lut[f.y])
                written.append(path)
                if progress is not None:
                    progress(len(written))
            if not todo:
                break
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


# ---------------------------------------------------------------------------------------------
# Loading and checking a keyframe folder


@dataclass(frozen=True)
class Keyframes:
    """A checked keyframe folder: film frame index -> image file, and a digest of the files."""

    folder: Path
    files: dict[int, Path]
    digest: str


def image_ab(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The Lab ab (h, w, 2) float32 of an image file, resized to `size` = (h, w) if given."""
    from bttf.color import rgb_to_lab

    rgb = torch.from_numpy(read_rgb_image(path)).permute(2, 0, 1)
    ab = rgb_to_lab(rgb)[1:].permute(1, 2, 0).contiguous().numpy()
    if size is not None and ab.shape[:2] != tuple(size):
        ab = resize_plane(ab, tuple(size))
    return ab


def _check_keyframe(path: Path, info: VideoInfo) -> None:
    ab = image_ab(path)
    h, w = ab.shape[:2]
    want, got = info.width / info.height, w / h
    if abs(got / want - 1.0) > ASPECT_TOLERANCE:
        raise BadInputError(
            f"keyframe {path} is {w}x{h}, not the film's aspect ratio ({info.width}x"
            f"{info.height}); crop or pad it to the film's shape"
        )
    chroma = np.hypot(ab[::4, ::4, 0], ab[::4, ::4, 1])
    if float(np.percentile(chroma, 99)) < GRAY_CHROMA:
        raise BadInputError(f"keyframe {path} has no colour (it is gray); colour it or remove it")


def load_keyframes(folder: str | Path, info: VideoInfo) -> Keyframes:
    """Check the keyframe folder for the film `info` and list it (see the module notes).

    Every image file must be named by a frame index of the film (`000123.png`, `123.jpg`),
    within the film, with the film's aspect ratio (another size is resized), and in colour.
    Other files are ignored. Raises a one-line BadInputError otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"--keyframes {folder} is not a folder; give the folder of keyframes")
    files: dict[int, Path] = {}
    for f in sorted(folder.iterdir()):
        if not is_image_path(f) or f.name.startswith("."):
            continue
        if not f.stem.isdigit():
            raise BadInputError(
                f"keyframe {f} is not named by a frame index; name it like 000123{f.suffix}"
            )
        i = int(f.stem)
        if i in files:
            raise BadInputError(f"keyframes {files[i]} and {f} are both frame {i}; keep one")
        if info.frames is not None and i >= info.frames:
            raise BadInputError(
                f"keyframe {f} is frame {i}, past the end of {info.path} ({info.frames} frames)"
            )
        files[i] = f
    if not files:
        raise BadInputError(f"--keyframes {folder} holds no images named by a frame index")
    for f in files.values():
        _check_keyframe(f, info)
    return Keyframes(folder, files, keyframes_digest(files))


def keyframes_digest(files: dict[int, Path]) -> str:
    """sha256 of the keyframes' indices and bytes (part of a resume's settings)."""
    h = hashlib.sha256()
    for i in sorted(files):
        h.update(f"{i}:".encode())
        h.update(files[i].read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Propagation


@dataclass
class _Guide:
    """One keyframe's reach: per film index, the displacement to the keyframe (gh, gw, 2),
    float16 at half the flow's size, in its pixels (None: the keyframe itself), and what the
    blend samples. `back` and `ahead` are its tracks still to run (the guide's thread runs
    them); `reach`, `open`, `more`, `last` are the run's view of the forward one."""

    index: int
    frames: dict[int, np.ndarray | None]
    grid: torch.Tensor  # the keyframe's bilateral grid (`colour_grid`)
    key: np.ndarray  # float32 (h, w, 3) the film's luma and the keyframe's ab at the flow's size
    last: int  # the last frame it may reach (its window's end until the forward track ends)
    back: Iterator | None = None
    ahead: Iterator | None = None
    reach: int = 0  # the forward track has reached this frame
    open: bool = True  # ... and may go further
    more: Future | None = None  # the forward track's next stretch, being run
    key_at: np.ndarray | None = None  # `key` at the working size (`key` itself at the flow's)


class ShotCuts:
    """Which frames start a shot, by a `CutDetector` fed in order from frame `first` (so the
    answer depends on the keyframe's window alone), as far as asked. `gray_at(i)`: frame i
    (uint8), None where there is none."""

    def __init__(self, gray_at: Callable[[int], np.ndarray | None], first: int) -> None:
        self.gray_at, self.fed = gray_at, first - 1
        self.detector = CutDetector()
        self.starts: set[int] = set()

    def __call__(self, i: int) -> bool:
        while self.fed < i and (g := self.gray_at(self.fed + 1)) is not None:
            self.fed += 1
            if self.detector.feed(g):
                self.starts.add(self.fed)
        return i in self.starts


def propagate(
    gray_at: Callable[[int], np.ndarray | None],
    key: int,
    step: int,
    step_flow: FlowEstimator,
    key_flow: FlowEstimator,
    is_cut: Callable[[int], bool],
) -> Iterator[tuple[int, np.ndarray]]:
    """From frame `key` in direction `step` (+1 or -1): (index, displacement to the keyframe
    (h, w, 2) float32) per frame, until a cut (`is_cut(i)`: frame i starts a shot) or a frame
    `gray_at` does not give (uint8 frames of one size, None past the window). Per frame: the
    last frame's displacement composed with the flow to it (`step_flow`) is the guess a flow
    straight to the keyframe (`key_flow`) starts from: composed flows alone drift (a small
    bias per step adds up), a flow to the keyframe alone loses large motion."""
    key_u8 = prev = gray_at(key)
    h, w = prev.shape
    disp = np.zeros((h, w, 2), np.float32)
    i = key + step
    while (g := gray_at(i)) is not None:
        if is_cut(i if step > 0 else i + 1):
            return
        fw = step_flow(g, prev)  # this frame -> the one nearer the keyframe
        disp = key_flow(g, key_u8, warp(disp, fw) + fw)
        yield i, disp
        prev = g
        i += step


def colour_grid(gray: np.ndarray, ab: np.ndarray) -> torch.Tensor:
    """A bilateral grid of the keyframe's colour: sums of a, b, a count, a^2 + b^2 over cells
    of `GRID_CELL` pixels and `GRID_BINS` gray levels, smoothed, (1, 4, bins, gy, gx) float32.
    `gray` uint8 (h, w) and `ab` (h, w, 2) at one size."""
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w]
    cell = (
        np.rint(gray.astype(np.float32) * (GRID_BINS - 1) / 255).astype(np.int64),
        np.rint(yy / GRID_CELL).astype(np.int64),
        np.rint(xx / GRID_CELL).astype(np.int64),
    )
    sums = np.zeros((4, GRID_BINS, h // GRID_CELL + 2, w // GRID_CELL + 2), np.float32)
    square = ab[..., 0] ** 2 + ab[..., 1] ** 2
    for c, v in enumerate((ab[..., 0], ab[..., 1], np.ones((h, w), np.float32), square)):
        np.add.at(sums[c], cell, v)
    for axis in (1, 2, 3):  # a [1, 2, 1] blur along each axis, edges repeated
        p = np.pad(sums, [(1, 1) if d == axis else (0, 0) for d in range(4)], mode="edge")
        lo, mid, hi = (np.take(p, range(o, o + sums.shape[axis]), axis=axis) for o in (0, 1, 2))
        sums = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return torch.from_numpy(sums.astype(np.float32))[None]


def slice_grid(
    grid: torch.Tensor, x: np.ndarray, y: np.ndarray, gray: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid's mean ab (H, W, 2) at positions `x`, `y` (in the grid's source pixels) for
    the gray levels `gray` (H, W), how many keyframe pixels it averages (H, W), and their
    spread about that mean (mean square distance in ab, (H, W))."""
    import torch.nn.functional as F

    gy, gx = grid.shape[-2:]
    coords = np.stack(
        [
            x * (2.0 / GRID_CELL / (gx - 1)) - 1.0,
            y * (2.0 / GRID_CELL / (gy - 1)) - 1.0,
            gray * np.float32(2.0 / 255.0) - 1.0,
        ],
        axis=-1,
        dtype=np.float32,
    )
    out = F.grid_sample(
        grid,
        torch.from_numpy(coords)[None, None],
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )[0, :, 0].numpy()
    count = out[2]
    mean = np.stack([out[0], out[1]], axis=-1) / np.maximum(count, 1e-3)[..., None]
    spread = out[3] / np.maximum(count, 1e-3) - (mean**2).sum(axis=-1)
    return mean, count, np.maximum(spread, 0.0)


def match_colour(
    key_gray: np.ndarray, gray: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The keyframe's colour at the tracked points, from the points around each that match it
    best: its a and b planes averaged over the offsets o at most `MATCH_RADIUS` steps away
    (|o_x| + |o_y|), each weighted by exp(-(RMS of key_gray - gray over a `MATCH_PATCH` square
    at p + o)^2 / MATCH_TOLERANCE^2 - |o|^2 / MATCH_SPREAD^2). `key_gray`, `a`, `b`: the
    keyframe's luma and colour warped onto the frame, `gray` the frame's luma (float32
    (h, w) each). A track a pixel or two off at an edge so takes its colour from the right
    side of it (on DAVIS: +0.2 dB)."""
    r = MATCH_RADIUS
    h, w = gray.shape
    key_u8, gray_u8 = cv2.convertScaleAbs(key_gray), cv2.convertScaleAbs(gray)  # (rounded)
    pad = [cv2.copyMakeBorder(c, r, r, r, r, cv2.BORDER_REPLICATE) for c in (key_u8, a, b)]
    # -(difference / tolerance)^2 by difference, floored (exp of far less: slow denormals)
    square = np.maximum(-((np.arange(256, dtype=np.float32) / MATCH_TOLERANCE) ** 2), -30.0)
    box = np.full((MATCH_PATCH, MATCH_PATCH), 1.0 / MATCH_PATCH**2, np.float32)
    sums = [np.zeros((h, w), np.float32) for _ in range(3)]  # a, b, weight
    diff = np.empty((h, w), np.uint8)
    err = np.empty((h, w), np.float32)
    weight = np.empty((h, w), np.float32)
    for dy in range(-r, r + 1):
        for dx in range(abs(dy) - r, r - abs(dy) + 1):
            at = (slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
            cv2.absdiff(pad[0][at], gray_u8, diff)
            near = -(dx * dx + dy * dy) / MATCH_SPREAD**2
            cv2.filter2D(cv2.LUT(diff, square), -1, box, err, delta=near)
            cv2.exp(err, weight)
            cv2.accumulateProduct(weight, pad[1][at], sums[0])
            cv2.accumulateProduct(weight, pad[2][at], sums[1])
            cv2.accumulate(weight, sums[2])
    return cv2.divide(sums[0], sums[2]), cv2.divide(sums[1], sums[2])


class GrayWindow:
    """The film's gray frames at `size` (h, w) for the keyframes' tracks: one decoder moving
    forwards, so overlapping windows (a keyframe every shot) decode the film once; it seeks
    only when asked for a frame well past (or behind) what it has. `forget` drops the frames
    no track needs any more. One thread only."""

    def __init__(self, info: VideoInfo, size: tuple[int, int], on_error: str):
        self.info, self.size, self.on_error = info, size, on_error
        self.lut = gray_lut(info.bits, info.full_range)
        self.frames: dict[int, np.ndarray] = {}
        self.missing: set[int] = set()  # frames the film does not have (passed, or past its end)
        self._frames: Iterator | None = None
        self._pos = -1  # the last frame decoded
        self.decoded = 0  # frames decoded (a frame sought again counts again)

    def get(self, i: int) -> np.ndarray | None:
        """Frame i, uint8 at `size`; None where the film has none."""
        if i in self.frames or i in self.missing:
            return self.frames.get(i)
        if self._frames is None or i > self._pos + SEEK_GAP or i <= self._pos:
            self.close()
            rate = self.info.rate or Fraction(24)
            # half a frame early: a frame's timestamp may be rounded to just before i / rate
            self._frames = read_frames(self.info, (i - 0.5) / rate, on_error=self.on_error)
            self._pos = i - 1
        while self._pos < i:
            f = next(self._frames, None)
            if f is None:
                self.missing.update(range(self._pos + 1, i + 1))
                break
            j = film_index(self.info, f.pts)
            self.decoded += 1
            if j <= self._pos:
                continue
            self.missing.update(range(self._pos + 1, j))
            self.frames[j] = resize_plane(self.lut[f.y], self.size)
            self._pos = j
        return self.frames.get(i)

    def forget(self, below: int) -> None:
        for i in [i for i in self.frames if i < below]:
            del self.frames[i]
        self.missing = {i for i in self.missing if i >= below}

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()  # (closes the container)
            self._frames = None


class KeyframeGuide:
    """Blends the keyframes' colour over the model's ab in the chroma stage (module notes).

    `grid` = (h, w): the size the flow works at (stored orientation). `apply` must see the
    frames of a run in order. The tracks run on a thread of their own, ahead of the run: a
    keyframe's backward track (the frames before it need it) starts `PREFETCH` frames before
    its window, in stretches of `CHUNK` frames between the forward tracks' stretches, which
    stay `LEAD` frames ahead of the frame the run is on. Nothing starts before the first
    `apply`; `close` stops the thread.
    """

    def __init__(
        self,
        keyframes: Keyframes,
        info: VideoInfo,
        grid: tuple[int, int],
        on_error: str = "repeat",
        span: int = MAX_SPAN,
    ) -> None:
        self.keys = keyframes
        self.info = info
        self.grid = grid
        self.span = span
        # (the guide's thread only)
        self.step_flow = FlowEstimator(STEP_PRESET)
        self.key_flow = FlowEstimator(**KEY_FLOW)
        self.store = (max(4, grid[0] // 2), max(4, grid[1] // 2))
        self.active: dict[int, _Guide] = {}
        self.order = sorted(keyframes.files)
        self.next = 0  # the first keyframe of `order` whose guide is not started yet
        self.window = GrayWindow(info, grid, on_error)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bttf-keyframes")
        self.pending: dict[int, Future[_Guide]] = {}
        self._floor = 0  # frames below this one no track needs
        self._xy: list[np.ndarray] | None = None  # pixel coordinates at the working size

    def _window(self, k: int) -> tuple[int, int]:
        hi = k + self.span
        if self.info.frames is not None:
            hi = min(hi, self.info.frames - 1)
        return max(0, k - self.span), hi

    # --- on the guide's thread

    def _start(self, k: int, done: Future) -> None:
        """Keyframe k's guide: its grid, its tracks; then its backward track (`_back`)."""
        try:
            lo, hi = self._window(k)
            self.window.forget(self._floor)

            def gray_at(i: int) -> np.ndarray | None:
                return self.window.get(i) if lo <= i <= hi else None

            cuts = ShotCuts(gray_at, lo)
            cuts(k)  # (decodes lo..k)
            gray = gray_at(k)
            if gray is None:
                raise BadInputError(
                    f"keyframe {self.keys.files[k]}: frame {k} of {self.info.path} cannot be found"
                )
            ab = image_ab(self.keys.files[k], self.grid)
            key = np.dstack([gray.astype(np.float32), ab])
            g = _Guide(k, {k: None}, colour_grid(gray, ab), key, last=hi, reach=k)
            g.back = propagate(gray_at, k, -1, self.step_flow, self.key_flow, cuts)
            g.ahead = propagate(gray_at, k, 1, self.step_flow, self.key_flow, cuts)
            self._back(g, done)
        except BaseException as e:  # noqa: BLE001 (raised on the run's thread, by `result`)
            done.set_exception(e)

    def _back(self, g: _Guide, done: Future) -> None:
        """A stretch of g's backward track; the rest is queued behind the other tracks'."""
        try:
            for n, (i, disp) in enumerate(g.back, 1):
                g.frames[i] = self._kept(disp)
                if n == CHUNK:
                    self._pool.submit(self._back, g, done)
                    return
            log.info("keyframe %d reaches back to frame %d", g.index, min(g.frames))
            done.set_result(g)
        except BaseException as e:  # noqa: BLE001 (raised on the run's thread, by `result`)
            done.set_exception(e)

    def _ahead(self, g: _Guide, upto: int) -> tuple[int, bool]:
        """Run g's forward track up to frame `upto`: (the frame reached, whether it goes on)."""
        self.window.forget(self._floor)
        for i, disp in g.ahead:
            g.frames[i] = self._kept(disp)
            if i >= upto:
                return i, True
        log.info("keyframe %d reaches frame %d", g.index, max(g.frames))
        return max(g.frames), False

    def _kept(self, disp: np.ndarray) -> np.ndarray:
        # at half size: a displacement field is smooth, and 4x less memory
        return resize_flow(disp, self.store).astype(np.float16)

    # --- on the run's thread

    def _schedule(self, i: int) -> None:
        """Start the guides of the keyframes whose window begins by frame i + `PREFETCH`
        (keyframes in order, so their windows start in order: a film's thousands of keyframes
        cost nothing per frame)."""
        while self.next < len(self.order) and self._window(self.order[self.next])[0] <= (
            i + PREFETCH
        ):
            k = self.order[self.next]
            self.next += 1
            if i <= self._window(k)[1]:  # (a run that starts later skips what it passed)
                self.pending[k] = done = Future()
                self._floor = min(self._floor, self._window(k)[0])  # (before it starts)
                self._pool.submit(self._start, k, done)

    def _follow(self, g: _Guide, i: int) -> None:
        """g's forward track past frame i (or ended), and its next stretch started."""
        if g.more is not None and (g.more.done() or g.reach < i):
            g.reach, g.open = g.more.result()
            g.more = None
        while g.open and g.reach < i:
            g.reach, g.open = self._pool.submit(self._ahead, g, i + CHUNK).result()
        if not g.open:
            g.last = g.reach
        elif g.more is None and g.reach < i + LEAD:
            g.more = self._pool.submit(self._ahead, g, g.reach + CHUNK)

    def _guides_at(self, i: int) -> list[_Guide]:
        for k in [k for k, g in self.active.items() if g.last < i]:
            del self.active[k]  # frames come in order: never needed again
        self._schedule(i)
        self._floor = min([i, *(self._window(k)[0] for k in self.pending)])
        for k in sorted(self.pending):
            if self._window(k)[0] > i:
                break
            self.active[k] = self.pending.pop(k).result()  # (its exception, if it failed)
        for g in self.active.values():
            self._follow(g, i)
        return [g for g in self.active.values() if i in g.frames]

    def close(self) -> None:
        """Stop the guide's thread (work not started is dropped) and its decoder."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        self.window.close()

    def _sample(self, g: _Guide, i: int, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The keyframe's ab (h, w, 2) brought onto frame `i` (gray float32 (h, w) at the
        working size: the flow's, or the chroma plane's where that is smaller), and the
        confidence in it (h, w)."""
        disp = g.frames[i]
        h, w = gray.shape
        gh, gw = disp.shape[:2]
        if self._xy is None or self._xy[0].shape != gray.shape:
            self._xy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        if g.key_at is None or g.key_at.shape[:2] != gray.shape:
            g.key_at = resize_plane(g.key, (h, w))
        dx, dy = cv2.split(cv2.resize(disp.astype(np.float32), (w, h)))
        x, y = cv2.scaleAdd(dx, w / gw, self._xy[0]), cv2.scaleAdd(dy, h / gh, self._xy[1])
        key_gray, key_a, key_b = cv2.split(
            cv2.remap(
                g.key_at, x, y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        )
        # the keyframe's colour at the tracked point (from the best-matching points around
        # it), and the colour of keyframe pixels of this gray level near that point, each
        # weighted by the inverse of the square error expected of it: the tracked colour's
        # grows with the luma drift there, the grid's is the spread of the colours it averages
        tracked = match_colour(key_gray, gray, key_a, key_b)
        near_a, near_b, count, spread = self._slice(g.grid, x, y, gray)
        drift = cv2.subtract(key_gray, gray)
        drift2 = cv2.boxFilter(cv2.multiply(drift, drift), -1, (DRIFT_BOX, DRIFT_BOX))
        near_err = cv2.add(spread, SPREAD_FLOOR)
        sharp = near_err / cv2.scaleAdd(drift2, DRIFT_COST, near_err)
        key_ab = cv2.merge([n + sharp * (t - n) for t, n in zip(tracked, (near_a, near_b))])
        conf = np.clip(count * (1.0 / MIN_COUNT), 0.0, 1.0) * DECAY ** abs(i - g.index)
        return key_ab, conf

    def _slice(
        self, grid: torch.Tensor, x: np.ndarray, y: np.ndarray, gray: np.ndarray
    ) -> list[np.ndarray]:
        """`slice_grid` at most at half the flow's size (its cells are `GRID_CELL` flow pixels
        wide) for positions `x`, `y` at `gray`'s size, brought to that size: the planes of its
        mean a and b, count and spread."""
        h, w = gray.shape
        sh, sw = min(h, self.store[0]), min(w, self.store[1])
        x, y, gray = (cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA) for a in (x, y, gray))
        mean, count, spread = slice_grid(grid, x * (self.grid[1] / w), y * (self.grid[0] / h), gray)
        return cv2.split(cv2.resize(np.dstack([mean, count, spread]), (w, h)))

    def apply(self, batch: list, ab: torch.Tensor) -> torch.Tensor:
        """ab (N, 2, h, w) at the chroma size of `batch` (`PreparedFrame`s, gray at that size),
        with the keyframes' colour blended in: at a keyframe, its ab; elsewhere the guides'
        colour and confidence at the flow's size, or the chroma plane's where that is smaller
        (each pixel from the most confident guide), brought to the chroma size."""
        for j, p in enumerate(batch):
            i = film_index(self.info, p.frame.pts)
            guides = self._guides_at(i)
            if not guides:
                continue
            size = p.chroma.shape
            at_key = [g for g in guides if g.frames[i] is None]
            if at_key:
                key = image_ab(self.keys.files[at_key[0].index], size).transpose(2, 0, 1)
                ab[j] = torch.from_numpy(np.ascontiguousarray(key)).to(ab)
                continue
            work = size if size[0] <= self.grid[0] and size[1] <= self.grid[1] else self.grid
            gray = resize_plane(p.chroma, work).astype(np.float32)
            key_ab, conf = self._sample(guides[0], i, gray)
            for g in guides[1:]:
                other_ab, other = self._sample(g, i, gray)
                better = other > conf
                key_ab = np.where(better[..., None], other_ab, key_ab)
                conf = np.maximum(conf, other)
            key_ab, conf = (resize_plane(a, size) for a in (key_ab, conf))
            k_ab = torch.from_numpy(np.ascontiguousarray(key_ab.transpose(2, 0, 1))).to(ab)
            ab[j] += torch.from_numpy(conf).to(ab) * (k_ab - ab[j])
        return ab


def keyframe_guide(
    folder: str | Path, info: VideoInfo, render_hw: tuple[int, int], on_error: str = "repeat"
) -> KeyframeGuide:
    """The checked keyframe folder's guide for the film `info`, at the render size `render_hw`
    (stored orientation) / `GRID_SCALE`."""
    grid = (max(8, render_hw[0] // GRID_SCALE), max(8, render_hw[1] // GRID_SCALE))
    return KeyframeGuide(load_keyframes(folder, info), info, grid, on_error)


def folder_digest(folder: str | Path) -> str:
    """`keyframes_digest` of the images named by a frame index in `folder`."""
    files = {
        int(f.stem): f
        for f in Path(folder).iterdir()
        if is_image_path(f) and f.stem.isdigit() and not f.name.startswith(".")
    }
    return keyframes_digest(files)


def retime_keyframes(
    keys: Keyframes, rate: float, start: float, fps: float, frames: int, folder: Path
) -> Path | None:
    """Copies of `keys` (of a film at `rate` fps) named by their frame index in a clip of it
    taken from `start` seconds at `fps` (`frames` long), in `folder`; None when none falls in
    the clip. (`bttf gif` colorizes such a clip.)"""
    import shutil

    placed: set[int] = set()
    for k, path in sorted(keys.files.items()):
        j = round((k / rate - start) * fps)
        if 0 <= j < frames and j not in placed:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / f"{j:06d}{path.suffix}")
            placed.add(j)
    return folder if placed else None
