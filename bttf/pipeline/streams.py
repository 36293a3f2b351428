"""The source's streams other than its picture, in the output: audio, subtitles, attachments,
chapters, and their language and title tags.

The rule per container (the README's table):

- audio: copied packet for packet when the container takes the codec (a dry run muxes one real
  packet and writes the trailer), except PCM into MP4, re-encoded to AAC (FFmpeg would write
  `ipcm`, which QuickTime, browsers and most players do not play); MOV and MKV keep PCM. What
  a container refuses is re-encoded: WebM to Opus, the others to AAC (or the container's own
  default when it takes no AAC).
- subtitles: copied when the container takes them (MKV: all; MP4: mov_text and DVD bitmaps);
  text subtitles it does not take are converted to its text format (mov_text in MP4/MOV, ASS
  in MKV, WebVTT in WebM); bitmap subtitles it does not take are dropped with a notice.
- attachments (fonts of ASS subtitles, cover images): MKV only. Chapters: MKV, WebM, MP4, MOV.
- anything dropped is named in a notice (also logged as a warning).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from bttf.errors import BadInputError
from bttf.pipeline.media import open_input

log = logging.getLogger(__name__)

_SKIP_METADATA = {
    "encoder",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "duration",
    "rotate",
    "vendor_id",
    "filename",
    "mimetype",
}
_TEXT_SUB, _BITMAP_SUB = 1 << 17, 1 << 16  # AV_CODEC_PROP_TEXT_SUB / _BITMAP_SUB
#: Containers whose muxer writes chapters (FFmpeg format names).
_CHAPTER_FORMATS = {"matroska", "webm", "mp4", "mov", "ipod"}
#: The standard layout for a channel count ("2 channels" -> stereo): AAC and MP4 need one.
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def copy_metadata(src: dict[str, str], dst: dict[str, str]) -> None:
    """Tags (language, title, …) from `src` to `dst`, less those the muxer writes itself."""
    for k, v in src.items():
        if k.lower() not in _SKIP_METADATA and not k.upper().startswith("DURATION"):
            dst[k] = v


def _first_packet(src: Path, index: int) -> av.Packet | None:
    with open_input(src) as c, contextlib.suppress(av.FFmpegError):
        for p in c.demux(c.streams[index]):
            if p.size:
                return p
    return None


def can_copy(format_name: str, stream: av.stream.Stream, packet: av.Packet | None) -> bool:
    """Whether the container takes `stream` as it is: a header, `packet` and the trailer
    written to memory (some muxers refuse only then: MP4's PCM with an unnamed layout)."""
    try:
        with av.open(io.BytesIO(), "w", format=format_name) as probe:
            dst = probe.add_stream_from_template(stream)
            probe.start_encoding()
            if packet is not None:
                packet.stream = dst
                packet.pts = packet.dts = 0
                probe.mux(packet)
        return True
    except (av.FFmpegError, ValueError, TypeError):
        return False


def chapter_track(s: av.stream.Stream, container: av.container.InputContainer) -> bool:
    """Whether the data stream `s` is the text track MP4/MOV keeps chapters in."""
    fmt = container.format.name
    return "mp4" in fmt and s.name == "bin_data" and bool(container.chapters())


def _is_text_subtitle(stream: av.stream.Stream) -> bool:
    cc = stream.codec_context
    return bool(cc is not None and cc.codec is not None and cc.codec.properties & _TEXT_SUB)


@dataclass
class _Track:
    src: av.stream.Stream
    dst: av.stream.Stream
    kind: str  # "copy", "audio" (decoded and re-encoded) or "text" (subtitles converted)
    resampler: av.AudioResampler | None = None
    next_pts: int | None = None


@dataclass
class StreamRemux:
    """Audio and subtitle streams of the source, read by a second demuxer so they can be muxed
    in step with the video (the muxer interleaves by timestamp; the video arrives later than
    its audio); attachments and chapters. `audio`/`subtitles`: carry those streams at all."""

    src: Path
    out: av.container.OutputContainer
    audio: bool = True
    subtitles: bool = True
    tracks: list[_Track] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._in = open_input(self.src)
        self.fmt = self.out.format.name.split(",")[0]
        first_video = self._in.streams.video[0].index if self._in.streams.video else None
        for s in self._in.streams:
            if s.type == "audio" and self.audio:
                self._add_audio(s)
            elif s.type == "subtitle" and self.subtitles:
                self._add_subtitle(s)
            elif s.type == "attachment" and self.subtitles:
                self._add_attachment(s)
            elif s.type == "data" and chapter_track(s, self._in):
                pass  # MP4's chapters, carried as chapters
            elif s.type == "data" and "timecode" in s.metadata and self._timecode_kept(s):
                pass  # a QuickTime timecode track: MOV/MP4 write it again from the tag
            elif s.type == "data" or (s.type == "video" and s.index != first_video):
                what = s.metadata.get("handler_name") or getattr(s, "name", None) or "data"
                self.notices.append(f"{s.type} stream #{s.index} ({what}) not carried over")
        self._chapters = self._in.chapters() if self.subtitles else []
        if self._chapters and self.fmt not in _CHAPTER_FORMATS:
            self.notices.append(f"{len(self._chapters)} chapters dropped ({self.fmt} holds none)")
            self._chapters = []
        for n in self.notices:
            log.warning(n)
        self._by_index = {t.src.index: t for t in self.tracks}
        self._audio_tracks = {t.src.index for t in self.tracks if t.src.type == "audio"}
        self._packets = None
        self._held: av.Packet | None = None
        self._past_end: set[int] = set()  # streams whose packets reached the window's end
        self._from: Fraction | None = None
        self._end: Fraction | None = None
        self._shift = Fraction(0)

    def _timecode_kept(self, s: av.stream.Stream) -> bool:
        """The video stream's timecode tag (copied with its tags) makes MOV/MP4 write a timecode
        track again; other containers keep the tag only."""
        video = self._in.streams.video
        tagged = bool(video) and video[0].metadata.get("timecode") == s.metadata["timecode"]
        return tagged and self.fmt in ("mov", "mp4", "ipod")

    def _name(self, s: av.stream.Stream) -> str:
        cc = s.codec_context
        return (cc.name if cc is not None else None) or "unknown codec"

    def _finish_track(self, s: av.stream.Stream, dst: av.stream.Stream, kind: str, **kw) -> None:
        copy_metadata(s.metadata, dst.metadata)
        dst.disposition = s.disposition
        self.tracks.append(_Track(s, dst, kind, **kw))

    def _add_audio(self, s: av.audio.AudioStream) -> None:
        cc = s.codec_context
        if cc is None or cc.codec is None or not cc.sample_rate:
            self.notices.append(f"audio stream #{s.index} ({self._name(s)}) is unusable; dropped")
            return
        pcm_in_mp4 = cc.name.startswith("pcm_") and self.fmt in ("mp4", "ipod")
        if not pcm_in_mp4 and can_copy(self.fmt, s, _first_packet(self.src, s.index)):
            dst = self.out.add_stream_from_template(s)
            if cc.layout.name.endswith("channels") and cc.layout.nb_channels in _LAYOUTS:
                dst.codec_context.layout = _LAYOUTS[cc.layout.nb_channels]  # MP4/MOV need one
            self._finish_track(s, dst, "copy")
            return
        supported = self.out.supported_codecs
        if self.fmt == "webm":
            codec = "libopus" if _has_encoder("libopus") else "opus"
        else:
            codec = "aac" if "aac" in supported else self.out.default_audio_codec
        if not codec or codec == "none":
            self.notices.append(f"{self.fmt} cannot hold audio; audio stream #{s.index} dropped")
            return
        rate = cc.sample_rate
        rates = av.codec.Codec(codec, "w").audio_rates
        if rates and rate not in rates:
            rate = 48000 if 48000 in rates else max(rates)
        channels = max(1, cc.layout.nb_channels)
        layout = _LAYOUTS.get(channels, "stereo")
        dst = self.out.add_stream(codec, rate=rate)
        dst.layout = layout
        # AAC allows at most 6144 bits per channel per 1024 samples.
        dst.bit_rate = min(96_000 * channels, 5 * rate * channels)
        fmt_out = dst.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt_out, layout=layout, rate=rate)
        why = (
            "MP4 players do not play PCM"
            if pcm_in_mp4
            else f"{self.fmt} cannot hold {cc.name} audio as it is"
        )
        self.notices.append(f"{why}; audio stream #{s.index} re-encoded to {codec}")
        self._finish_track(s, dst, "audio", resampler=resampler)

    def _add_subtitle(self, s: av.subtitles.stream.SubtitleStream) -> None:
        name = self._name(s)
        if can_copy(self.fmt, s, _first_packet(self.src, s.index)):
            self._finish_track(s, self.out.add_stream_from_template(s), "copy")
            return
        supported = self.out.supported_codecs
        target = "mov_text" if "mov_text" in supported else self.out.default_subtitle_codec
        if not _is_text_subtitle(s) or not target or target == "none":
            kind = "text" if _is_text_subtitle(s) else "bitmap"
            self.notices.append(
                f"subtitle stream #{s.index} ({name}, {kind}) dropped: {self.fmt} cannot hold "
                "it (an .mkv OUTPUT keeps every subtitle)"
            )
            return
        dec = s.codec_context
        dec.open(strict=False)  # text decoders make their ASS header when opened
        dst = self.out.add_stream(target)
        dst.codec_context.subtitle_header = dec.subtitle_header
        dst.time_base = s.time_base
        self.notices.append(f"subtitle stream #{s.index} ({name}) converted to {target}")
        self._finish_track(s, dst, "text")

    def _add_attachment(self, s: av.stream.Stream) -> None:
        name = s.metadata.get("filename") or f"attachment-{s.index}"
        if self.fmt != "matroska":
            self.notices.append(f"attachment {name} dropped: only an .mkv OUTPUT holds attachments")
            return
        mimetype = getattr(s, "mimetype", None) or s.metadata.get("mimetype")
        self.out.add_attachment(name, mimetype or "application/octet-stream", s.data)

    def start(self, t_from: Fraction | None, t_end: Fraction | None, shift: Fraction) -> None:
        """Keep packets starting in [t_from, t_end) (source seconds), moved earlier by `shift`;
        chapters the same (cut to the window)."""
        self._from, self._end, self._shift = t_from, t_end, shift
        self._set_chapters()
        if not self.tracks:
            return
        if t_from:
            with contextlib.suppress(av.FFmpegError):
                self._in.seek(int(t_from * av.time_base), backward=True)
        self._packets = self._in.demux([t.src for t in self.tracks])

    def _set_chapters(self) -> None:
        kept = []
        lo, hi = self._from or Fraction(0), self._end
        for ch in self._chapters:
            tb = ch["time_base"] or Fraction(1, 1000)
            a, b = max(ch["start"] * tb, lo), ch["end"] * tb
            b = min(b, hi) if hi is not None else b
            if b > a:
                s, e = round((a - self._shift) / tb), round((b - self._shift) / tb)
                kept.append({**ch, "id": len(kept) + 1, "start": s, "end": e, "time_base": tb})
        if kept:
            self.out.set_chapters(kept)

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
        """Mux what plays before output time `t` (seconds; None: all that is left)."""
        while (p := self._next()) is not None:
            ts = p.dts if p.dts is not None else p.pts
            when = None if ts is None else ts * p.time_base
            if when is not None and self._end is not None and when >= self._end:
                self._past_end.add(p.stream.index)
                if self._past_end >= (self._audio_tracks or set(self._by_index)):
                    self._packets = None  # every (audio) stream is past the window: stop
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
        if track.kind == "audio":
            self._reencode(track, p, off)
            return
        if track.kind == "text":
            sub = track.src.codec_context.decode2(p)
            if sub is None:
                return
            q = track.dst.codec_context.encode_subtitle(sub)
            q.time_base, q.pts, q.dts, q.duration = p.time_base, p.pts, p.dts, p.duration
            p = q
        if p.pts is not None:
            p.pts -= off
        if p.dts is not None:
            p.dts -= off
        if p.duration and not 0 < p.duration * p.time_base < 60 and track.src.type == "audio":
            p.duration = 0  # a damaged index; muxers refuse it, and infer one when unset
        p.stream = track.dst
        try:
            self.out.mux(p)
        except av.FFmpegError as e:
            src = track.src
            at = f" at {float(p.pts * p.time_base):.3f} s" if p.pts is not None else ""
            raise BadInputError(
                f"the {self.fmt} muxer refused the {self._name(src)} {src.type} of stream "
                f"#{src.index}{at} ({e}); its timestamps may be damaged: leave it out "
                f"({'--no-audio' if src.type == 'audio' else 'remux the input'}) or write .mkv"
            ) from e

    def _reencode(self, track: _Track, p: av.Packet, off: int) -> None:
        for frame in p.decode():
            if track.next_pts is None:
                rate = track.resampler.rate or frame.sample_rate
                track.next_pts = round(((frame.pts or 0) - off) * p.time_base * rate)
            for rf in track.resampler.resample(frame):
                rf.pts = None
                self._encode(track, rf)

    def _encode(self, track: _Track, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts = track.next_pts
            frame.time_base = Fraction(1, frame.sample_rate)
            track.next_pts += frame.samples
        for q in track.dst.encode(frame):
            self.out.mux(q)

    def finish(self) -> None:
        self.mux_until(None)
        for track in self.tracks:
            if track.kind == "audio" and track.next_pts is not None:
                for rf in track.resampler.resample(None):
                    self._encode(track, rf)
                self._encode(track, None)

    def close(self) -> None:
        self._packets = None
        self._in.close()


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError, ValueError):
        return False
    return True
