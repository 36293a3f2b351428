"""Encode stage: write the colorized film with the source's luma, timing, audio and tags.

Each output frame is built from planes: Y is the source's Y plane as it was decoded (same
values, same range; only re-quantized when the output's bit depth differs), Cb/Cr come from the
engine at the chroma plane's size. Nothing goes through a full-resolution RGB image.

What is kept from the source: every frame's timestamp (variable frame rate included) and
duration, the time base, the frame rate, the sample aspect ratio, the display matrix (rotation),
the colour range, primaries and transfer tags, container and stream metadata, and the audio,
subtitle and attachment streams and chapters, by the rule per container in
`bttf.pipeline.streams`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bttf.errors import BadInputError
from bttf.pipeline.decode import FIELD_ORDERS, RANGE_PC, RANGE_TV, VideoInfo, interlaced
from bttf.pipeline.media import open_input
from bttf.pipeline.streams import StreamRemux, copy_metadata

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


def _encoder_formats(codec: str) -> set[str]:
    try:
        return {f.name for f in av.codec.Codec(codec, "w").video_formats or ()}
    except (av.codec.codec.UnknownCodecError, av.FFmpegError, ValueError):
        return set()  # (plan_encode names the unknown codec)


def output_pix_fmt(codec: str, bits: int, source_pix_fmt: str) -> str:
    """The output's pixel format when none is asked for.

    An 8-bit source: yuv420p, as players expect. A deeper one (ProRes, 10-bit HEVC …): 10 bits,
    in the source's chroma subsampling when the encoder takes it (yuv422p10le for ProRes
    4:2:2), else another 10-bit format it takes; 8 bits only when it takes none. An encoder
    that takes no yuv420p (ProRes) gets the first of `OUTPUT_PIX_FMTS` it takes.
    """
    formats = _encoder_formats(codec)
    if bits > 8:
        sub = next((k for k in ("444", "422") if k in source_pix_fmt), "420")
        order = [f"yuv{sub}p10le", "yuv420p10le", "yuv422p10le", "yuv444p10le"]
        found = next((f for f in order if f in formats), None)
        if found:
            return found
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return next((f for f in OUTPUT_PIX_FMTS if f in formats), "yuv420p")


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


#: The video encoder an output suffix gets when none is asked for (else libx264).
SUFFIX_CODECS = {".webm": "libvpx-vp9"}
#: libvpx's cpu-used for x264's preset names (libvpx's "good" deadline takes 0..5; 0 slowest).
VP9_SPEEDS = {
    "ultrafast": 5,
    "superfast": 5,
    "veryfast": 5,
    "faster": 5,
    "fast": 4,
    "medium": 4,
    "slow": 2,
    "slower": 1,
    "veryslow": 0,
    "placebo": 0,
}


def codec_for(dst: str | Path, codec: str | None = None) -> str:
    """The video encoder for OUTPUT `dst`: `codec` when given, else the suffix's (VP9 for
    .webm, libx264 for the rest). A .gif is refused: GIFs are `bttf gif`'s job."""
    d = Path(dst)
    if d.suffix.lower() == ".gif":
        raise BadInputError(
            f"OUTPUT {d} is a GIF; make it with `bttf gif INPUT -o {d.name}` (palette, frame "
            "rate and width for GIFs), or give OUTPUT a film suffix (.mp4, .mkv, .webm, .mov)"
        )
    return codec or SUFFIX_CODECS.get(d.suffix.lower(), "libx264")


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str = "yuv420p"

    def options(self) -> dict[str, str]:
        """The encoder's options. libx264 on an AVX-512 CPU is held to AVX2 code: its AVX-512
        code reads uninitialised memory (two identical runs gave frames up to 15 levels apart;
        MALLOC_PERTURB_ changes its output), which costs x264 about 10 % of its speed.

        CRF 0 is lossless (Y bit-exact): x264 is lossless at CRF 0 only at 8 bits (at 10 bits
        its Y moved by up to 2 levels), so above 8 bits it gets QP 0; x265 is lossless only
        when told so (at CRF 0 its Y moved by up to 2 levels at 8 bits, 8 at 10 bits)."""
        opts = {}
        if self.crf is not None:
            opts["crf"] = str(self.crf)
        if self.codec in ("libvpx-vp9", "libvpx"):
            return {**opts, **self._vpx_options()}
        if self.preset:
            opts["preset"] = self.preset
        deep = OUTPUT_PIX_FMTS.get(self.pix_fmt, (0, 0, 8))[2] > 8
        if self.codec == "libx264" and self.crf == 0 and deep:
            del opts["crf"]
            opts["qp"] = "0"
        if self.codec == "libx264" and cpu_has_avx512():
            opts["x264-params"] = "asm=avx2"
        if self.codec == "libx265":
            # x265 prints to stderr itself. info=0: no SEI naming its build, CPU flags and log
            # level, so the file does not depend on them (nor on -v)
            params = f"info=0:log-level={'info' if _verbose() else 'error'}"
            opts["x265-params"] = params + (":lossless=1" if self.crf == 0 else "")
        return opts

    def _vpx_options(self) -> dict[str, str]:
        """libvpx: constant quality (a CRF with no bitrate cap), the preset as cpu-used (a
        number is taken as it is), one frame's rows on several threads."""
        opts = {"deadline": "good", "row-mt": "1"}
        if self.crf is not None:
            opts["b"] = "0"
        if self.preset:
            speed = VP9_SPEEDS.get(self.preset, self.preset)
            opts["cpu-used"] = str(speed)
        return opts


def interlaced_options(codec: str, options: dict[str, str], field_order: int) -> dict[str, str]:
    """`options` for an interlaced encode in `field_order` (progressive/unknown: unchanged):
    interlaced DCT and motion estimation, and for x264 the field that is shown first."""
    if not interlaced(field_order):
        return options
    opts = {**options, "flags": "+ildct+ilme"}
    if codec == "libx264":
        tff = "tff=1" if FIELD_ORDERS[field_order] else "bff=1"
        params = opts.get("x264-params")
        opts["x264-params"] = f"{params}:{tff}" if params else tff
    return opts


def hdr_options(codec: str, options: dict[str, str], info: VideoInfo) -> dict[str, str]:
    """`options` carrying the source's HDR10 static metadata (mastering display, content light
    level) into the stream, for the encoders that write it (x264, x265); else unchanged."""
    key = {"libx264": "x264-params", "libx265": "x265-params"}.get(codec)
    names = {"libx264": ("mastering-display", "cll"), "libx265": ("master-display", "max-cll")}
    if key is None or not (info.mastering_display or info.content_light):
        return options
    extra = [
        f"{name}={value}"
        for name, value in zip(names[codec], (info.mastering_display, info.content_light))
        if value
    ]
    params = options.get(key)
    return {**options, key: ":".join([params, *extra] if params else extra)}


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


def _try_open(
    settings: EncodeSettings, width: int, height: int, time_base: Fraction, field_order: int = 0
) -> str | None:
    """None when the encoder opens with these settings, else FFmpeg's reason."""
    try:
        ctx = av.CodecContext.create(settings.codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, settings.pix_fmt
        ctx.time_base = time_base
        ctx.framerate = Fraction(24)  # SVT-AV1 takes 1 / time_base otherwise: 90000 fps
        ctx.options = interlaced_options(settings.codec, settings.options(), field_order)
        ctx.open()
        with contextlib.suppress(Exception):
            ctx.close()
    except av.FFmpegError as e:
        return str(e)
    return None


def plan_encode(
    settings: EncodeSettings,
    width: int,
    height: int,
    time_base: Fraction,
    field_order: int = 0,
) -> tuple[int, int]:
    """Check the encoder accepts the settings and return the size to encode at.

    Odd sizes are kept when the encoder can (ffv1, VP9 …). H.264/HEVC 4:2:0 cannot represent an
    odd width or height at all (their cropping works in whole chroma samples), so those are
    padded by one row/column repeating the edge, with a warning. Interlaced (`field_order`),
    each field needs whole chroma rows: x264 4:2:0 takes heights in fours, so 50 rows become
    52, the extra rows repeating the last row of their own field.
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
    reason = _try_open(settings, width, height, time_base, field_order)
    if reason is None:
        return width, height
    sx, sy, _ = OUTPUT_PIX_FMTS[settings.pix_fmt]
    sy += interlaced(field_order)  # interlaced: whole chroma rows in each field
    pw, ph = -(-width // (1 << sx)) << sx, -(-height // (1 << sy)) << sy
    if (pw, ph) != (width, height) and _try_open(settings, pw, ph, time_base, field_order) is None:
        log.warning(
            "%s cannot encode %s%s at %dx%d; padding to %dx%d (the extra rows/columns repeat "
            "the edge; use --pix-fmt yuv444p%s to keep the size)",
            settings.codec,
            "interlaced " if interlaced(field_order) else "",
            settings.pix_fmt,
            width,
            height,
            pw,
            ph,
            " or --codec ffv1" if interlaced(field_order) else "",
        )
        return pw, ph
    raise BadInputError(
        f"the encoder {settings.codec} refuses --pix-fmt {settings.pix_fmt} --crf {settings.crf} "
        f"--preset {settings.preset} at {width}x{height} ({reason}); check those options"
    )


class VideoWriter:
    """Write frames given as planes (Y from the source, Cb/Cr from the engine) to `path`.

    Use from one thread: `write()` for each frame in order, then `finish()`; `close()` always.
    `name`: what error messages call the file (the user's OUTPUT, when `path` is a temporary one).
    """

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        settings: EncodeSettings,
        size: tuple[int, int],
        *,
        audio: bool = True,
        streams: bool = True,
        name: Path | None = None,
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
                f"cannot write {name or path} ({e}); use a known suffix such as .mp4, .mkv or .mov"
            ) from e
        try:
            self._setup_video()
            # the source's audio, subtitles, attachments and chapters (`self.audio` for short)
            self.audio = (
                StreamRemux(info.path, self.out, audio=audio, subtitles=streams)
                if audio or streams
                else None
            )
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
        options = interlaced_options(st.codec, st.options(), info.field_order)
        options = hdr_options(st.codec, options, info)
        vs = self.out.add_stream(st.codec, rate=info.rate or 24, options=options)
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, st.pix_fmt
        vs.time_base = info.time_base
        cc = vs.codec_context
        cc.time_base = info.time_base
        if info.rate:
            cc.framerate = info.rate
        if info.interlaced:  # kept, so players deinterlace (no combing)
            cc.field_order = info.field_order
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
            # interlaced: a padded row repeats the last row of its own field (reflect: row h
            # is row h - 2, row h + 1 is row h - 3)
            mode = "reflect" if self.info.interlaced and h > 3 else "edge"
            y = np.pad(y, ((0, self.height - h), (0, 0)), mode=mode)
            y = np.pad(y, ((0, 0), (0, self.width - w)), mode="edge")
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
