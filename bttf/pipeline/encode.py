"""Encode stage: write the colorized film with the source's luma, timing, audio and tags.

Each output frame is built from planes: Y is the source's Y plane as it was decoded (same
values, same range; only re-quantized when the output's bit depth differs), Cb/Cr come from the
engine at the chroma plane's size. Nothing goes through a full-resolution RGB image.

What is kept from the source: every frame's timestamp (variable frame rate included) and
duration, the time base, the frame rate, the sample aspect ratio, the display matrix (rotation),
the colour range, primaries and transfer tags, container and stream metadata, and every audio
stream — copied packet for packet when the output container accepts the codec, otherwise
re-encoded (AAC, or the container's own default when it takes no AAC) with a notice in the log.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import platform
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bttf.errors import BadInputError
from bttf.pipeline.decode import RANGE_PC, RANGE_TV, VideoInfo
from bttf.pipeline.media import open_input

log = logging.getLogger(__name__)

#: Output pixel formats: planar YUV, 8 or 10 bit. (name -> (chroma x shift, y shift, bits))
OUTPUT_PIX_FMTS = {
    "yuv420p": (1, 1, 8),
    "yuv422p": (1, 0, 8),
    "yuv444p": (0, 0, 8),
    "yuv420p10le": (1, 1, 10),
    "yuv422p10le": (1, 0, 10),
    "yuv444p10le": (0, 0, 10),
}

_SKIP_METADATA = {
    "encoder",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "duration",
    "rotate",
    "vendor_id",
}


def copy_metadata(src: dict[str, str], dst: dict[str, str]) -> None:
    for k, v in src.items():
        if k.lower() not in _SKIP_METADATA:
            dst[k] = v


def convert_depth(y: np.ndarray, bits_in: int, bits_out: int) -> np.ndarray:
    """Re-quantize integer code values between bit depths (exact when widening)."""
    if bits_in == bits_out:
        return y
    if bits_out > bits_in:
        return (y.astype(np.uint16) << (bits_out - bits_in)).astype(np.uint16)
    shift = bits_in - bits_out
    v = (y.astype(np.uint32) + (1 << (shift - 1))) >> shift
    out_dtype = np.uint8 if bits_out <= 8 else np.uint16
    return np.minimum(v, (1 << bits_out) - 1).astype(out_dtype)


@functools.lru_cache(maxsize=1)
def cpu_has_avx512() -> bool:
    """Whether this CPU runs the AVX-512 code x264 picks for itself (F, CD, BW, DQ, VL)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
        return {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= set(flags)
    except OSError:  # not Linux: ask torch, which tests the same flags and the OS's support
        import torch

        return torch.backends.cpu.get_cpu_capability() == "AVX512"


#: Container flags for every file bttf writes: Matroska and WebM otherwise write random
#: segment and track UIDs, so two identical runs would give different files.
OUTPUT_OPTIONS = {"fflags": "+bitexact"}


def open_output(path: str | Path) -> av.container.OutputContainer:
    """`av.open(path, "w")` with `OUTPUT_OPTIONS` (the suffix picks the container)."""
    return av.open(str(path), "w", options=dict(OUTPUT_OPTIONS))


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str = "yuv420p"

    def options(self) -> dict[str, str]:
        """The encoder's options. libx264 on an AVX-512 CPU is held to AVX2 code: its AVX-512
        code reads uninitialised memory (two identical runs gave frames up to 15 levels apart;
        MALLOC_PERTURB_ changes its output), which costs x264 about 10 % of its speed."""
        opts = {}
        if self.crf is not None:
            opts["crf"] = str(self.crf)
        if self.preset:
            opts["preset"] = self.preset
        if self.codec == "libx264" and cpu_has_avx512():
            opts["x264-params"] = "asm=avx2"
        if self.codec == "libx265":
            # x265 prints to stderr itself. info=0: no SEI naming its build, CPU flags and log
            # level, so the file does not depend on them (nor on -v)
            opts["x265-params"] = f"info=0:log-level={'info' if _verbose() else 'error'}"
        return opts


def _verbose() -> bool:
    """-v (INFO logging): encoder libraries may then talk below an error."""
    return log.isEnabledFor(logging.INFO)


def hush_encoder(codec: str) -> None:
    """Encoder libraries that print to stderr themselves say nothing below an error unless -v.

    x265 is told by its options (`EncodeSettings.options`); SVT-AV1 only reads SVT_LOG from
    the environment (left alone when the user set it).
    """
    if codec == "libsvtav1" and "SVT_LOG" not in os.environ:
        os.environ["SVT_LOG"] = "3" if _verbose() else "1"  # 1 error, 3 info


def _try_open(settings: EncodeSettings, width: int, height: int, time_base: Fraction) -> str | None:
    """None when the encoder opens with these settings, else FFmpeg's reason."""
    try:
        ctx = av.CodecContext.create(settings.codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, settings.pix_fmt
        ctx.time_base = time_base
        ctx.framerate = Fraction(24)  # SVT-AV1 takes 1 / time_base otherwise: 90000 fps
        ctx.options = settings.options()
        ctx.open()
        with contextlib.suppress(Exception):
            ctx.close()
    except av.FFmpegError as e:
        return str(e)
    return None


def plan_encode(
    settings: EncodeSettings, width: int, height: int, time_base: Fraction
) -> tuple[int, int]:
    """Check the encoder accepts the settings and return the size to encode at.

    Odd sizes are kept when the encoder can (ffv1, VP9 …). H.264/HEVC 4:2:0 cannot represent an
    odd width or height at all (their cropping works in whole chroma samples), so those are
    padded by one row/column repeating the edge, with a warning.
    """
    if settings.pix_fmt not in OUTPUT_PIX_FMTS:
        raise BadInputError(
            f"--pix-fmt {settings.pix_fmt} is not supported; choose one of "
            + ", ".join(OUTPUT_PIX_FMTS)
        )
    try:
        codec = av.codec.Codec(settings.codec, "w")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError, ValueError) as e:
        raise BadInputError(f"--codec {settings.codec} is not an encoder this PyAV has") from e
    if codec.type != "video":
        raise BadInputError(f"--codec {settings.codec} is not a video encoder")
    hush_encoder(settings.codec)
    reason = _try_open(settings, width, height, time_base)
    if reason is None:
        return width, height
    sx, sy, _ = OUTPUT_PIX_FMTS[settings.pix_fmt]
    pw, ph = -(-width // (1 << sx)) << sx, -(-height // (1 << sy)) << sy
    if (pw, ph) != (width, height) and _try_open(settings, pw, ph, time_base) is None:
        log.warning(
            "%s cannot encode %s at the odd size %dx%d; padding to %dx%d (the extra row/column "
            "repeats the edge; use --pix-fmt yuv444p to keep the size)",
            settings.codec,
            settings.pix_fmt,
            width,
            height,
            pw,
            ph,
        )
        return pw, ph
    raise BadInputError(
        f"the encoder {settings.codec} refuses --pix-fmt {settings.pix_fmt} --crf {settings.crf} "
        f"--preset {settings.preset} at {width}x{height} ({reason}); check those options"
    )


def _can_copy(format_name: str, stream: av.audio.AudioStream) -> bool:
    """Whether the output format accepts this audio stream as it is (a header dry run)."""
    try:
        with av.open(io.BytesIO(), "w", format=format_name) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False


@dataclass
class _AudioTrack:
    src: av.audio.AudioStream
    dst: av.audio.AudioStream
    copy: bool
    resampler: av.AudioResampler | None = None
    decoder: av.CodecContext | None = None
    next_pts: int | None = None


@dataclass
class AudioRemux:
    """Audio streams of the source, read by a second demuxer so they can be muxed in step with
    the video (the muxer interleaves by timestamp; the video arrives later than its audio)."""

    src: Path
    out: av.container.OutputContainer
    tracks: list[_AudioTrack] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._in = open_input(self.src)
        fmt = self.out.format.name.split(",")[0]
        for s in self._in.streams.audio:
            cc = s.codec_context
            if cc is None or cc.codec is None or not cc.sample_rate:
                name = cc.name if cc is not None else "unknown codec"
                self.notices.append(f"audio stream #{s.index} ({name}) is unusable; dropped")
                continue
            if _can_copy(fmt, s):
                dst = self.out.add_stream_from_template(s)
                track = _AudioTrack(s, dst, copy=True)
            else:
                supported = self.out.supported_codecs
                codec = "aac" if "aac" in supported else self.out.default_audio_codec
                if not codec or codec == "none":
                    self.notices.append(f"{fmt} cannot hold audio; audio stream #{s.index} dropped")
                    continue
                rate = s.codec_context.sample_rate
                channels = max(1, s.codec_context.layout.nb_channels)
                # The standard layout for the channel count ("1 channels" -> mono): AAC needs one.
                layout = {
                    1: "mono",
                    2: "stereo",
                    3: "2.1",
                    4: "quad",
                    5: "5.0",
                    6: "5.1",
                    7: "6.1",
                    8: "7.1",
                }.get(channels, "stereo")
                dst = self.out.add_stream(codec, rate=rate)
                dst.layout = layout
                # AAC allows at most 6144 bits per channel per 1024 samples.
                dst.bit_rate = min(96_000 * channels, 5 * rate * channels)
                fmt_out = dst.codec_context.codec.audio_formats[0].name
                resampler = av.AudioResampler(format=fmt_out, layout=layout, rate=rate)
                track = _AudioTrack(s, dst, copy=False, resampler=resampler)
                self.notices.append(
                    f"{fmt} cannot hold {s.codec_context.name} audio as it is; "
                    f"audio stream #{s.index} re-encoded to {codec}"
                )
            copy_metadata(s.metadata, dst.metadata)
            dst.disposition = s.disposition
            self.tracks.append(track)
        for n in self.notices:
            log.warning(n)
        self._by_index = {t.src.index: t for t in self.tracks}
        self._packets = None
        self._held: av.Packet | None = None
        self._past_end: set[int] = set()  # streams whose packets reached the window's end
        self._from: Fraction | None = None
        self._end: Fraction | None = None
        self._shift = Fraction(0)

    def start(self, t_from: Fraction | None, t_end: Fraction | None, shift: Fraction) -> None:
        """Keep packets starting in [t_from, t_end) (source seconds), moved earlier by `shift`."""
        self._from, self._end, self._shift = t_from, t_end, shift
        if not self.tracks:
            return
        if t_from:
            with contextlib.suppress(av.FFmpegError):
                self._in.seek(int(t_from * av.time_base), backward=True)
        self._packets = self._in.demux([t.src for t in self.tracks])

    def _next(self) -> av.Packet | None:
        if self._held is not None:
            p, self._held = self._held, None
            return p
        if self._packets is None:
            return None
        for p in self._packets:
            if p.stream.index in self._by_index and p.size:
                return p
        self._packets = None
        return None

    def mux_until(self, t: Fraction | None) -> None:
        """Mux the audio that plays before output time `t` (seconds; None: all that is left)."""
        while (p := self._next()) is not None:
            ts = p.dts if p.dts is not None else p.pts
            when = None if ts is None else ts * p.time_base
            if when is not None and self._end is not None and when >= self._end:
                self._past_end.add(p.stream.index)
                if len(self._past_end) == len(self.tracks):
                    self._packets = None  # every stream is past the window: stop reading
                    return
                continue
            if when is not None and self._from is not None and when < self._from:
                continue
            if t is not None and when is not None and when - self._shift > t:
                self._held = p
                return
            self._mux(p)

    def _mux(self, p: av.Packet) -> None:
        track = self._by_index[p.stream.index]
        off = round(self._shift / p.time_base)
        if track.copy:
            if p.pts is not None:
                p.pts -= off
            if p.dts is not None:
                p.dts -= off
            if p.duration and not 0 < p.duration * p.time_base < 60:
                p.duration = 0  # a damaged index; muxers refuse it, and infer one when unset
            p.stream = track.dst
            self.out.mux(p)
            return
        for frame in p.decode():
            if track.next_pts is None:
                track.next_pts = round(((frame.pts or 0) - off) * p.time_base * frame.sample_rate)
            for rf in track.resampler.resample(frame):
                rf.pts = None
                self._encode(track, rf)

    def _encode(self, track: _AudioTrack, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts = track.next_pts
            frame.time_base = Fraction(1, frame.sample_rate)
            track.next_pts += frame.samples
        for q in track.dst.encode(frame):
            self.out.mux(q)

    def finish(self) -> None:
        self.mux_until(None)
        for track in self.tracks:
            if not track.copy and track.next_pts is not None:
                for rf in track.resampler.resample(None):
                    self._encode(track, rf)
                self._encode(track, None)

    def close(self) -> None:
        self._packets = None
        self._in.close()


class VideoWriter:
    """Write frames given as planes (Y from the source, Cb/Cr from the engine) to `path`.

    Use from one thread: `write()` for each frame in order, then `finish()`; `close()` always.
    """

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        settings: EncodeSettings,
        size: tuple[int, int],
        *,
        audio: bool = True,
    ):
        self.info = info
        self.settings = settings
        self.width, self.height = size
        sx, sy, self.bits = OUTPUT_PIX_FMTS[settings.pix_fmt]
        self.chroma_size = (-(-self.height // (1 << sy)), -(-self.width // (1 << sx)))  # (h, w)
        try:
            self.out = open_output(path)
        except (av.FFmpegError, ValueError) as e:
            raise BadInputError(
                f"cannot write {path} ({e}); use a known suffix such as .mp4, .mkv or .mov"
            ) from e
        try:
            self._setup_video()
            self.audio = AudioRemux(info.path, self.out) if audio and info.n_audio else None
        except BaseException:
            self.out.close()
            raise
        self._durations: dict[int, int] = {}
        self._shift_pts: int | None = None

    def _setup_video(self) -> None:
        info, st = self.info, self.settings
        if st.codec not in self.out.supported_codecs and av.codec.Codec(st.codec, "w").name not in (
            self.out.supported_codecs
        ):
            raise BadInputError(
                f"the {self.out.format.name} container cannot hold {st.codec} video; "
                f"pick another --codec or another output suffix"
            )
        hush_encoder(st.codec)
        vs = self.out.add_stream(st.codec, rate=info.rate or 24, options=st.options())
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, st.pix_fmt
        vs.time_base = info.time_base
        cc = vs.codec_context
        cc.time_base = info.time_base
        if info.rate:
            cc.framerate = info.rate
        cc.color_range = RANGE_PC if info.full_range else RANGE_TV
        cc.colorspace = info.colorspace
        if info.color_primaries not in (0, 2):
            cc.color_primaries = info.color_primaries
        if info.color_trc not in (0, 2):
            cc.color_trc = info.color_trc
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        if info.display_matrix is not None:
            vs.set_display_matrix(info.display_matrix)
        with open_input(info.path) as src:
            copy_metadata(src.metadata, self.out.metadata)
            if src.streams.video:
                copy_metadata(src.streams.video[0].metadata, vs.metadata)
            others = [s for s in src.streams if s.type not in ("video", "audio")]
            if others:
                log.info(
                    "%d %s stream(s) of the source are not carried over",
                    len(others),
                    "/".join(sorted({s.type for s in others})),
                )
        self.video = vs

    def start(self, t_from: Fraction | None, t_end: Fraction | None, shift_pts: int) -> None:
        """Set the time window: output timestamps are source timestamps minus `shift_pts`."""
        self._shift_pts = shift_pts
        if self.audio is not None:
            self.audio.start(t_from, t_end, shift_pts * self.info.time_base)

    def _frame(self, y: np.ndarray, bits: int, cb: np.ndarray, cr: np.ndarray) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, self.settings.pix_fmt)
        y = convert_depth(y, bits, self.bits)
        h, w = y.shape
        if (h, w) != (self.height, self.width):
            y = np.pad(y, ((0, self.height - h), (0, self.width - w)), mode="edge")
        dtype = np.uint8 if self.bits == 8 else np.dtype("<u2")
        for plane, data in zip(frame.planes, (y, cb, cr)):
            item = np.dtype(dtype).itemsize
            dst = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // item)
            dst[:, : plane.width] = data
        frame.color_range = RANGE_PC if self.info.full_range else RANGE_TV
        frame.colorspace = self.info.colorspace
        return frame

    def write(
        self, y: np.ndarray, bits: int, cb: np.ndarray, cr: np.ndarray, pts: int, duration: int
    ) -> None:
        """Encode one frame; `pts`/`duration` in the source's time base."""
        if self._shift_pts is None:
            self.start(None, None, 0)
        frame = self._frame(y, bits, cb, cr)
        frame.pts = pts - self._shift_pts
        frame.time_base = self.info.time_base
        frame.duration = duration
        self._durations[frame.pts] = duration
        self._mux_video(self.video.encode(frame))

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for p in packets:
            if not p.duration and p.pts in self._durations:
                p.duration = self._durations[p.pts]
            self._durations.pop(p.pts, None)
            if self.audio is not None and p.dts is not None:
                self.audio.mux_until(p.dts * p.time_base)
            self.out.mux(p)

    def finish(self) -> None:
        """Flush the encoder and the remaining audio, and close the file."""
        self._mux_video(self.video.encode(None))
        if self.audio is not None:
            self.audio.finish()
        self.close()

    def close(self) -> None:
        if self.audio is not None:
            self.audio.close()
            self.audio = None
        if self.out is not None:
            out, self.out = self.out, None
            out.close()
