"""Decode stage: a film's frames as their luma (Y) plane, with every frame's own timestamp.

The engine never sees RGB for a video: the Y plane is what the output keeps bit for bit, and
the model's lightness is derived from it. Pixel formats are handled as follows:

- planar YUV, NV12/NV21/NV16/NV24 and gray, 8-bit or 9–16-bit little-endian: plane 0 *is* Y and
  is taken as it is (no conversion at all);
- other YUV layouts (packed `yuyv422`, `uyvy422`, big-endian, `p010`…): converted by swscale to
  planar `yuv420p` (8-bit sources) or `yuv444p10le`/`12le`/`16le` (deeper ones), which moves Y
  without changing it;
- RGB, palette and Bayer formats (GIF, PNG sequences, QuickTime Animation…): there is no Y to
  keep, so Y is computed from R'G'B' with the output's matrix (BT.601 below 720 lines, else
  BT.709) in limited range, 8-bit.

Colour range follows the source: the `yuvj*` formats, gray formats and frames tagged full
("pc"/JPEG) are full range, everything else limited ("tv"/MPEG).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bttf.errors import BadInputError
from bttf.pipeline.media import open_input

log = logging.getLogger(__name__)

# av's integer codes (AVColorRange / AVColorSpace).
RANGE_UNSPECIFIED, RANGE_TV, RANGE_PC = 0, 1, 2
SPACE_BT709, SPACE_UNSPECIFIED, SPACE_BT470BG, SPACE_SMPTE170M, SPACE_BT2020NCL = 1, 2, 5, 6, 9

_PLANAR_Y = {
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
    "yuv411p", "yuvj411p", "yuv410p", "yuva420p", "yuva422p", "yuva444p",
    "nv12", "nv21", "nv16", "nv24", "nv42", "gray",
}  # fmt: skip
_HIGH_DEPTH_PREFIXES = ("yuv420p", "yuv422p", "yuv444p", "yuv440p", "yuva420p", "yuva422p",
                        "yuva444p", "gray")  # fmt: skip


def _direct_bits(name: str) -> int | None:
    """Bit depth of formats whose plane 0 is a plain Y array, else None."""
    if name in _PLANAR_Y:
        return 8
    if name.endswith("le"):
        for prefix in _HIGH_DEPTH_PREFIXES:
            rest = name[len(prefix) :]
            if name.startswith(prefix) and rest[:-2].isdigit():
                return int(rest[:-2])
    return None


def matrix_for(colorspace: int, height: int) -> int:
    """The YCbCr matrix to use: the source's tag when it names one, else by picture height."""
    if colorspace in (SPACE_BT709, SPACE_BT470BG, SPACE_SMPTE170M, SPACE_BT2020NCL):
        return colorspace
    return SPACE_BT709 if height >= 720 else SPACE_SMPTE170M


#: (Kr, Kb) of each matrix.
KR_KB = {
    SPACE_BT709: (0.2126, 0.0722),
    SPACE_BT470BG: (0.299, 0.114),
    SPACE_SMPTE170M: (0.299, 0.114),
    SPACE_BT2020NCL: (0.2627, 0.0593),
}


@dataclass(frozen=True)
class VideoInfo:
    """What the engine needs to know about the input film (from its container and 1st frame)."""

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate
    frames: int | None  # the container's count, or an estimate from duration × rate
    duration: float | None  # seconds
    start: Fraction  # seconds: the first frame's time
    end: Fraction | None  # seconds: where the video stream ends (its last frame's end)
    codec: str
    pix_fmt: str  # the decoder's output format
    bits: int  # bit depth of the Y plane the engine gets
    full_range: bool
    colorspace: int  # matrix used for chroma (a tag of the source, or chosen by height)
    color_primaries: int
    color_trc: int
    sample_aspect_ratio: Fraction | None
    display_matrix: tuple[int, ...] | None  # 9 int32 (FFmpeg layout) or None
    rotation: int  # degrees counter-clockwise, from the display matrix
    n_audio: int
    format_name: str


@dataclass
class SourceFrame:
    """One decoded frame: its Y plane and timing (pts and duration in `time_base` units)."""

    index: int
    y: np.ndarray  # (H, W) uint8, or uint16 holding `bits`-bit values
    pts: int
    duration: int
    time_base: Fraction


def _plane_array(plane: av.video.plane.VideoPlane, dtype: np.dtype) -> np.ndarray:
    item = np.dtype(dtype).itemsize
    a = np.frombuffer(plane, dtype=dtype)
    return a.reshape(plane.height, plane.line_size // item)[:, : plane.width]


def frame_full_range(frame: av.VideoFrame) -> bool:
    name = frame.format.name
    if frame.color_range == RANGE_PC:
        return True
    if frame.color_range == RANGE_TV:
        return False
    return name.startswith(("yuvj", "gray"))


def luma_plane(frame: av.VideoFrame) -> tuple[np.ndarray, int, bool]:
    """Y plane of a decoded frame as a new array: (y, bits, full_range). See the module notes."""
    name = frame.format.name
    bits = _direct_bits(name)
    if bits is not None:
        dtype = np.uint8 if bits == 8 else np.dtype("<u2")
        return _plane_array(frame.planes[0], dtype).copy(), bits, frame_full_range(frame)
    fmt = frame.format
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or not fmt.components[0].is_luma:
        rgb = frame.to_ndarray(format="rgb24").astype(np.float32)
        kr, kb = KR_KB[matrix_for(frame.colorspace, frame.height)]
        y = rgb[..., 0] * kr + rgb[..., 1] * (1.0 - kr - kb) + rgb[..., 2] * kb
        y = 16.0 + y * (219.0 / 255.0)
        return np.clip(np.rint(y), 0, 255).astype(np.uint8), 8, False
    depth = fmt.components[0].bits
    target = "yuv420p" if depth <= 8 else f"yuv444p{min(16, max(10, depth))}le"
    converted = frame.reformat(format=target)
    converted.color_range = frame.color_range
    y, b, _ = luma_plane(converted)
    return y, b, frame_full_range(frame)


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    for sd in frame.side_data:
        if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            m = tuple(int(v) for v in np.frombuffer(bytes(sd), dtype="<i4")[:9])
            identity = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
            return None if m == identity else m
    return None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.VideoStream:
    cover_art = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & cover_art]
    if not streams:
        what = "an audio-only file" if container.streams.audio else "not a video"
        raise BadInputError(f"{path} is {what}: it has no video stream to colorize")
    return streams[0]


def _first_frame(container: av.container.InputContainer, stream: av.video.VideoStream,
                 path: Path) -> av.VideoFrame:  # fmt: skip
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as e:
        raise BadInputError(f"{path} cannot be decoded ({e}); is the file complete?") from e
    raise BadInputError(f"{path} has a video stream without any frame")


def probe_video(path: str | Path) -> VideoInfo:
    """Open `path`, check it has a decodable video stream, and describe it."""
    p = Path(path)
    with open_input(p) as container:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        first = _first_frame(container, stream, p)
        cc = stream.codec_context
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        frames = stream.frames or None
        end = None
        if stream.duration:
            end = Fraction((stream.start_time or 0) + stream.duration) * tb
        if frames is None and duration and rate:
            frames = max(1, round(duration * rate))
        _, bits, full = luma_plane(first)
        start_pts = first.pts if first.pts is not None else (stream.start_time or 0)
        colorspace = first.colorspace if first.colorspace != SPACE_UNSPECIFIED else cc.colorspace
        matrix = _display_matrix(first)
        return VideoInfo(
            path=p,
            width=first.width,
            height=first.height,
            time_base=tb,
            rate=Fraction(rate) if rate else None,
            frames=frames,
            duration=duration,
            start=Fraction(start_pts) * tb,
            end=end,
            codec=cc.name,
            pix_fmt=first.format.name,
            bits=bits,
            full_range=full,
            colorspace=matrix_for(colorspace, first.height),
            color_primaries=first.color_primaries or cc.color_primaries,
            color_trc=first.color_trc or cc.color_trc,
            sample_aspect_ratio=cc.sample_aspect_ratio or stream.sample_aspect_ratio,
            display_matrix=matrix,
            rotation=first.rotation if matrix else 0,
            n_audio=len(container.streams.audio),
            format_name=container.format.name,
        )


def to_fraction(seconds: float | None) -> Fraction | None:
    return None if seconds is None else Fraction(seconds).limit_denominator(1_000_000)


def read_frames(
    info: VideoInfo, start: float | None = None, duration: float | None = None
) -> Iterator[SourceFrame]:
    """Decode the film's frames in order as `SourceFrame`s (run it in a background thread).

    `start`/`duration` mean what ffmpeg's `-ss`/`-t` mean: seconds from the first frame; frames
    before `start` are decoded (from the keyframe the seek lands on) and dropped, decoding stops
    at `start + duration`. Timestamps are the source's; a frame without one, or one that does
    not increase, gets the previous one plus a frame's duration so the encoder accepts it.
    A frame's duration is the time to the next frame (the last one's: to the stream's end).
    """
    t_start = info.start + (to_fraction(start) or 0)
    t_end = None if duration is None else t_start + to_fraction(duration)
    tb = info.time_base
    step = max(1, round(1 / (info.rate * tb))) if info.rate else 1
    with open_input(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        if start:
            try:
                container.seek(int(t_start / tb), stream=stream, backward=True)
            except av.FFmpegError:
                log.info("%s cannot seek; decoding from the beginning", info.path)
        index = 0
        pending: tuple[np.ndarray, int, int] | None = None  # y, pts, duration of the last frame
        last_pts: int | None = None
        try:
            for frame in container.decode(stream):
                pts = frame.pts
                if pts is None or (last_pts is not None and pts <= last_pts):
                    if pts is not None:
                        log.warning("frame timestamp %s does not increase; using %s", pts,
                                    last_pts + step)  # fmt: skip
                    pts = last_pts + step if last_pts is not None else 0
                last_pts = pts
                t = pts * tb
                if t < t_start:
                    continue
                if pending is not None:
                    y, ppts, _ = pending
                    yield SourceFrame(index, y, ppts, pts - ppts, tb)
                    index += 1
                    pending = None
                if t_end is not None and t >= t_end:
                    return
                y, _, _ = luma_plane(frame)
                pending = (y, pts, frame.duration or 0)
        except av.FFmpegError as e:
            raise BadInputError(f"{info.path} stops decoding at frame {index} ({e})") from e
        if pending is not None:
            y, ppts, pdur = pending
            if info.end is not None and 0 < info.end / tb - ppts <= 4 * step:
                pdur = round(info.end / tb - ppts)
            yield SourceFrame(index, y, ppts, pdur or step, tb)
