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

Damaged input: every packet is decoded on its own, so a frame the decoder rejects does not end
the film. A frame is *lost* when its packet's timestamp never comes out of the decoder (an
error, or a frame silently dropped) — found by comparing the timestamps sent with those that
come out, which works with frame threading and B-frame reordering. `read_frames(on_error=...)`
then repeats the last good frame at the lost frame's timestamp ("repeat"), lets the previous
frame last over its time ("skip"), or stops with a BadInputError ("fail"). A container that
cannot be read further, and a declared picture larger than `MAX_SIDE`/`MAX_PIXELS`, are always
BadInputErrors.
"""

from __future__ import annotations

import bisect
import heapq
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

#: What `read_frames` does with a frame that cannot be decoded (see the module notes).
DECODE_ERROR_POLICIES = ("repeat", "skip", "fail")
#: The largest picture accepted, checked on the declared size before any frame is decoded:
#: 16384 pixels a side and 8192 x 8192 in all (8K DCI scans fit; a damaged header does not).
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
#: Packets read while looking for the first frame that decodes, before giving up.
_FIRST_FRAME_PACKETS = 1000
#: Damaged frames logged one by one before only counting them.
_LOG_DAMAGED = 5

# av's integer codes (AVColorRange / AVColorSpace).
RANGE_TV, RANGE_PC = 1, 2
SPACE_BT709, SPACE_UNSPECIFIED, SPACE_BT470BG, SPACE_SMPTE170M, SPACE_BT2020NCL = 1, 2, 5, 6, 9

_PLANAR_Y = {
    "yuv420p",
    "yuvj420p",
    "yuv422p",
    "yuvj422p",
    "yuv444p",
    "yuvj444p",
    "yuv440p",
    "yuvj440p",
    "yuv411p",
    "yuvj411p",
    "yuv410p",
    "yuva420p",
    "yuva422p",
    "yuva444p",
    "nv12",
    "nv21",
    "nv16",
    "nv24",
    "nv42",
    "gray",
}
_HIGH_DEPTH_PREFIXES = (
    "yuv420p",
    "yuv422p",
    "yuv444p",
    "yuv440p",
    "yuva420p",
    "yuva422p",
    "yuva444p",
    "gray",
)


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
    other_streams: tuple[str, ...] = ()  # types of the streams that are neither video nor audio
    field_order: int = 0  # AVFieldOrder: 0 unknown, 1 progressive, 2 tt, 3 bb, 4 tb, 5 bt
    # HDR10 static metadata of the first frame, in x264's and x265's notation: the mastering
    # display "G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)" and the content light level "MaxCLL,MaxFALL"
    mastering_display: str | None = None
    content_light: str | None = None

    @property
    def interlaced(self) -> bool:
        """Whether the source says it is interlaced (a field order other than progressive)."""
        return interlaced(self.field_order)

    @property
    def top_field_first(self) -> bool:
        """Whether the top field is shown first (a source that names no field order: top first,
        as HD and most PAL material)."""
        return FIELD_ORDERS.get(self.field_order, True)


#: Interlaced field orders (AVFieldOrder) -> whether the top field is displayed first.
FIELD_ORDERS = {2: True, 3: False, 4: False, 5: True}  # tt, bb, tb, bt


def interlaced(field_order: int) -> bool:
    """Whether AVFieldOrder `field_order` is an interlaced one."""
    return field_order in FIELD_ORDERS


@dataclass
class SourceFrame:
    """One decoded frame: its Y plane and timing (pts and duration in `time_base` units).

    `repeated`: the frame at this time was lost and this is the last good one shown again;
    `dropped`: lost frames right after this one whose time it now covers (policy "skip").
    """

    index: int
    y: np.ndarray  # (H, W) uint8, or uint16 holding `bits`-bit values
    pts: int
    duration: int
    time_base: Fraction
    repeated: bool = False
    dropped: int = 0


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


def _field_order(cc: av.codec.context.CodecContext, first: av.VideoFrame) -> int:
    """The stream's AVFieldOrder; for interlaced frames whose decoder names no order (DV
    does not), bottom field first for DV (its standard, NTSC and PAL alike), else top first."""
    order = cc.field_order if cc.field_order in range(6) else 0
    if order == 0 and first.interlaced_frame:
        return 3 if cc.name == "dvvideo" else 2
    return order


def _units(num: int, den: int, unit: int) -> int:
    return round(int(num) * unit / int(den)) if den else 0


def hdr_metadata(frame: av.VideoFrame) -> tuple[str | None, str | None]:
    """A frame's HDR10 static metadata in x264's and x265's notation (see `VideoInfo`):
    chromaticities in 1/50000, luminance in 1/10000 cd/m2; None where the frame has none."""
    display = light = None
    for sd in frame.side_data:
        if sd.type == av.sidedata.sidedata.Type.MASTERING_DISPLAY_METADATA:
            v = np.frombuffer(bytes(sd), dtype="<i4")
            if len(v) < 22 or not (v[20] and v[21]):  # has_primaries, has_luminance
                continue
            (rx, ry, gx, gy, bx, by, wx, wy), lum = (
                [_units(v[2 * k], v[2 * k + 1], 50000) for k in range(8)],
                [_units(v[2 * k], v[2 * k + 1], 10000) for k in (9, 8)],  # max, min
            )
            display = f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({lum[0]},{lum[1]})"
        elif sd.type == av.sidedata.sidedata.Type.CONTENT_LIGHT_LEVEL:
            v = np.frombuffer(bytes(sd), dtype="<u4")
            if len(v) >= 2:
                light = f"{v[0]},{v[1]}"
    return display, light


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
    usable = [s for s in streams if s.codec_context is not None]
    if not usable:
        raise BadInputError(f"{path} has a video stream in a codec this PyAV cannot decode")
    return usable[0]


def check_size(width: int, height: int, path: Path) -> None:
    """BadInputError when a declared picture size is absurd (a damaged header, or a trap)."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise BadInputError(
            f"{path} declares a {width}x{height} picture, more than bttf handles (at most "
            f"{MAX_SIDE} pixels a side, {MAX_PIXELS // 1_000_000} megapixels); the file is "
            "probably damaged"
        )


def _packets(
    container: av.container.InputContainer, stream: av.video.VideoStream, path: Path
) -> Iterator[av.Packet]:
    """The stream's packets (then a flush packet); a container read error is a BadInputError."""
    it = container.demux(stream)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except av.FFmpegError as e:
            raise BadInputError(
                f"{path} cannot be read any further ({e}); the file is damaged or incomplete"
            ) from e
        yield packet


def _decode(packet: av.Packet) -> tuple[list[av.VideoFrame], av.FFmpegError | None]:
    try:
        return packet.decode(), None
    except av.FFmpegError as e:
        return [], e


def _first_frame(
    container: av.container.InputContainer, stream: av.video.VideoStream, path: Path
) -> tuple[av.VideoFrame, int | None]:
    """The first frame that decodes, and the earliest timestamp of the packets sent until then
    (earlier than the frame's when the film's first frames are damaged)."""
    error = None
    earliest = None
    for n, packet in enumerate(_packets(container, stream, path)):
        if packet.size and packet.pts is not None and not packet.is_discard:
            earliest = packet.pts if earliest is None else min(earliest, packet.pts)
        frames, e = _decode(packet)
        error = e or error
        if frames:
            return frames[0], earliest
        if n >= _FIRST_FRAME_PACKETS:
            break
    if error is not None:
        raise BadInputError(f"{path} cannot be decoded ({error}); is the file complete?")
    raise BadInputError(f"{path} has a video stream without any frame")


def _video_span(container: av.container.InputContainer, video_start: float) -> float:
    """Seconds from the video's first frame to the container's end, for a stream that names no
    duration of its own. The container's duration spans all its streams (audio may start before
    the video); Matroska's counts from time 0, the others' from the earliest stream's start."""
    origin = 0.0
    if "matroska" not in container.format.name and container.start_time is not None:
        origin = container.start_time / av.time_base
    return max(0.0, origin + container.duration / av.time_base - video_start)


def probe_video(path: str | Path) -> VideoInfo:
    """Open `path`, check it has a decodable video stream, and describe it."""
    p = Path(path)
    with open_input(p) as container:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        check_size(cc.width, cc.height, p)
        first, earliest = _first_frame(container, stream, p)
        check_size(first.width, first.height, p)
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        start_pts = first.pts if first.pts is not None else (stream.start_time or 0)
        if earliest is not None and first.pts is not None:
            start_pts = min(start_pts, earliest)
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = _video_span(container, float(start_pts * tb))
        else:
            duration = None
        frames = stream.frames or None
        end = None
        if stream.duration:
            end = Fraction((stream.start_time or 0) + stream.duration) * tb
        if frames is None and duration and rate:
            frames = max(1, round(duration * rate))
        _, bits, full = luma_plane(first)
        colorspace = first.colorspace if first.colorspace != SPACE_UNSPECIFIED else cc.colorspace
        matrix = _display_matrix(first)
        hdr = hdr_metadata(first)
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
            other_streams=tuple(
                s.type for s in container.streams if s.type not in ("video", "audio")
            ),
            field_order=_field_order(cc, first),
            mastering_display=hdr[0],
            content_light=hdr[1],
        )


def to_fraction(seconds: float | None) -> Fraction | None:
    return None if seconds is None else Fraction(seconds).limit_denominator(1_000_000)


class _Timeline:
    """Decoded frames -> SourceFrames inside the [t_start, t_end) window: a frame's duration is
    the time to the next one; the last one's reaches the stream's end when that is known."""

    def __init__(self, info: VideoInfo, t_start: Fraction, t_end: Fraction | None, step: int):
        self.info, self.t_start, self.t_end, self.step = info, t_start, t_end, step
        self.tb = info.time_base
        self.pending: SourceFrame | None = None
        self.index = 0
        self.done = False  # a frame at or past t_end came: stop decoding
        self.dropped_first = 0  # lost frames (skipped) before the first frame of the window

    def inside(self, pts: int) -> bool:
        t = pts * self.tb
        return t >= self.t_start and (self.t_end is None or t < self.t_end)

    def push(
        self, y: np.ndarray, pts: int, duration: int, repeated: bool = False
    ) -> list[SourceFrame]:
        t = pts * self.tb
        if t < self.t_start:
            return []
        out = []
        if self.pending is not None:
            self.pending.duration = pts - self.pending.pts
            out.append(self.pending)
            self.pending = None
        if self.t_end is not None and t >= self.t_end:
            self.done = True
            return out
        self.pending = SourceFrame(
            self.index, y, pts, duration, self.tb, repeated, self.dropped_first
        )
        self.dropped_first = 0
        self.index += 1
        return out

    def drop(self) -> None:
        if self.pending is not None:
            self.pending.dropped += 1
        else:
            self.dropped_first += 1

    def finish(self) -> list[SourceFrame]:
        f, self.pending = self.pending, None
        if f is None:
            return []
        end = self.info.end
        if end is not None and 0 < end / self.tb - f.pts <= 4 * self.step:
            f.duration = round(end / self.tb - f.pts)
        f.duration = f.duration or self.step
        return [f]


def _requantize(y: np.ndarray, bits: int, target: int) -> np.ndarray:
    """A frame whose depth differs from the film's (a damaged stream can switch): to `target`."""
    if target > bits:
        return (y.astype(np.uint16) << (target - bits)).astype(np.uint16)
    v = y.astype(np.uint32) >> (bits - target)
    return v.astype(np.uint8 if target <= 8 else np.uint16)


def _seek(container, stream, target: Fraction, info: VideoInfo) -> None:
    """Seek to the keyframe at or before `target` seconds (a stream that cannot: from the start)."""
    try:
        container.seek(int(target / info.time_base), stream=stream, backward=True)
    except av.FFmpegError:
        log.info("%s cannot seek; decoding from the beginning", info.path)


def _report_damaged(
    info: VideoInfo,
    pts: int,
    on_error: str,
    error: Exception | None,
    log_it: bool,
    first: bool = False,
) -> None:
    """A frame that cannot be decoded: BadInputError under "fail", else a warning (if `log_it`).
    `first`: no frame has decoded yet (a film that starts without a keyframe: frames before
    its first keyframe refer to pictures it does not hold)."""
    when = float(pts * info.time_base - info.start)
    reason = str(error) if error is not None else "the decoder dropped it"
    if first:
        reason += "; it comes before the first frame that decodes: the film starts without a "
        reason += "keyframe, as a cut without re-encoding leaves it, or its first one is damaged"
    if on_error == "fail":
        raise BadInputError(
            f"{info.path}: the frame at {when:.3f} s cannot be decoded ({reason}); pass "
            "--on-decode-error repeat or skip to go past damaged frames"
        )
    if log_it:
        if on_error == "repeat":
            then = "the first frame that decodes is shown" if first else "the previous frame is"
            then += " in its place" if first else " shown again"
        else:
            then = "it is left out" if first else "the previous frame lasts over it"
        log.warning(
            "%s: the frame at %.3f s cannot be decoded (%s); %s", info.path, when, reason, then
        )


def _increasing_pts(pts: int | None, last_pts: int | None, step: int) -> int:
    """The frame's timestamp, or the previous one plus a frame's duration where it is missing or
    does not increase (the encoder needs increasing timestamps)."""
    if pts is not None and (last_pts is None or pts > last_pts):
        return pts
    if pts is not None:
        log.warning("frame timestamp %s does not increase; using %s", pts, last_pts + step)
    return last_pts + step if last_pts is not None else 0


def read_frames(
    info: VideoInfo,
    start: float | None = None,
    duration: float | None = None,
    *,
    on_error: str = "fail",
    seek: Fraction | None = None,
) -> Iterator[SourceFrame]:
    """Decode the film's frames in order as `SourceFrame`s (run it in a background thread).

    `start`/`duration` mean what ffmpeg's `-ss`/`-t` mean: seconds from the first frame; frames
    before `start` are decoded (from the keyframe the seek lands on) and dropped, decoding stops
    at `start + duration`. Timestamps are the source's; a frame without one, or one that does
    not increase, gets the previous one plus a frame's duration so the encoder accepts it.
    A frame's duration is the time to the next frame (the last one's: to the stream's end).

    `on_error`: "repeat", "skip" or "fail" for a frame that cannot be decoded (module notes).
    `seek`: source seconds (as `VideoInfo.start`) to seek to, later than `start`, for a caller
    that resumes; frames from the keyframe before it come out and the caller drops what it does
    not need. A container that cannot be read further raises BadInputError.
    """
    if on_error not in DECODE_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {DECODE_ERROR_POLICIES}, got {on_error!r}")
    t_start = info.start + (to_fraction(start) or 0)
    t_end = None if duration is None else t_start + to_fraction(duration)
    tb = info.time_base
    step = max(1, round(1 / (info.rate * tb))) if info.rate else 1
    timeline = _Timeline(info, t_start, t_end, step)
    target = t_start if start else None
    if seek is not None and seek > t_start:
        target = seek
    with open_input(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        if target is not None:
            _seek(container, stream, target, info)
        sent: list[int] = []  # heap: timestamps of packets whose frame has not come out yet
        track = True  # off once a frame without a timestamp shows up
        last_pts: int | None = None
        last_y: np.ndarray | None = None
        waiting: list[int] = []  # lost before any good frame (repeat: shown as the first one)
        damaged = good = 0
        error: av.FFmpegError | None = None

        def emit(y: np.ndarray, pts: int, dur: int, repeated: bool = False) -> list[SourceFrame]:
            nonlocal last_pts
            last_pts = pts
            return timeline.push(y, pts, dur, repeated)

        def lose(q: int) -> list[SourceFrame]:
            nonlocal damaged
            if not timeline.inside(q) or (last_pts is not None and q <= last_pts):
                return []
            damaged += 1
            first = last_y is None
            _report_damaged(info, q, on_error, error, damaged <= _LOG_DAMAGED, first)
            if on_error == "skip":
                timeline.drop()
                return []
            if last_y is None:
                waiting.append(q)
                return []
            return emit(last_y, q, 0, repeated=True)

        for packet in _packets(container, stream, info.path):
            if track and packet.size and packet.pts is not None and not packet.is_discard:
                heapq.heappush(sent, packet.pts)
            frames, e = _decode(packet)
            if e is not None:
                error = e
                if on_error == "fail":
                    when = float((packet.pts or 0) * tb - info.start)
                    raise BadInputError(
                        f"{info.path}: the frame near {when:.3f} s cannot be decoded ({e}); pass "
                        "--on-decode-error repeat or skip to go past damaged frames"
                    )
            for frame in frames:
                pts = frame.pts
                if pts is None:
                    track = False
                    sent.clear()
                elif track:
                    while sent and sent[0] < pts:
                        yield from lose(heapq.heappop(sent))
                    while sent and sent[0] == pts:
                        heapq.heappop(sent)
                pts = _increasing_pts(pts, last_pts, step)
                y, bits, _ = luma_plane(frame)
                if bits != info.bits:
                    y = _requantize(y, bits, info.bits)
                good += 1
                for q in waiting:
                    yield from emit(y, q, 0, repeated=True)
                waiting.clear()
                last_y = y
                yield from emit(y, pts, frame.duration or 0)
                if timeline.done:
                    return
        while sent:
            yield from lose(heapq.heappop(sent))
        if good == 0 and damaged:
            raise BadInputError(f"none of the frames of {info.path} can be decoded ({error})")
        yield from timeline.finish()


@dataclass(frozen=True)
class FrameIndex:
    """`pts`: every frame's timestamp in order; `keys`: those of the keyframes, in order."""

    pts: list[int]
    keys: list[int]

    def key_before(self, pts: int) -> int:
        """The timestamp of the last keyframe at or before `pts` (a seek to `pts` lands there)."""
        i = bisect.bisect_right(self.keys, pts)
        return self.keys[i - 1] if i else (self.keys[0] if self.keys else pts)


def frame_times(
    info: VideoInfo, start: float | None = None, duration: float | None = None
) -> FrameIndex | None:
    """The pts of every frame `read_frames(info, start, duration)` gives, in order, and of the
    keyframes, read from the packets alone (no decoding: seconds for a feature film); None when
    the packets cannot say (one without a timestamp, or two with the same one): then only
    decoding can.

    A film whose frames are all decodable gives exactly these (a damaged frame shown again under
    "repeat" keeps its packet's timestamp; under "skip" it is left out, so callers must not use
    this then). Raises BadInputError when the container cannot be read.
    """
    t_start = info.start + (to_fraction(start) or 0)
    t_end = None if duration is None else t_start + to_fraction(duration)
    tb = info.time_base
    pts: list[int] = []
    keys: list[int] = []
    with open_input(info.path) as container:
        stream = _video_stream(container, info.path)
        for packet in _packets(container, stream, info.path):
            if not packet.size or packet.is_discard:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    pts.sort()
    if len(set(pts)) != len(pts):
        return None
    inside = [p for p in pts if p * tb >= t_start and (t_end is None or p * tb < t_end)]
    return FrameIndex(inside, sorted(keys))
