"""What a run of the engine is asked to do (`ColorizeConfig`) and what it did (`ColorizeStats`).

The options are checked here, when the config is built, so every caller (the CLI, the Python API,
`bttf gif`, folder mode) gets the same one-line errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bttf.errors import BadInputError
from bttf.models.bins import check_unsure
from bttf.models.colorizer import check_saturation
from bttf.pipeline.decode import DECODE_ERROR_POLICIES, VideoInfo
from bttf.pipeline.encode import OUTPUT_PIX_FMTS, EncodeSettings, codec_for, output_pix_fmt
from bttf.pipeline.segments import DEFAULT_SEGMENT_FRAMES

#: `progress(done, total)`: frames written so far and the expected total (None if unknown).
ProgressCallback = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ColorizeConfig:
    """Every option of `bttf colorize` (see `bttf colorize --help`).

    model / weights: the colorizer: a registered name (`default` when neither is given), and/or
        a weights file (a bttf .safetensors names its own model, so it is enough alone).
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N", "mps".
    render_size: short side (pixels) the model works at, rounded to its stride; None = the
        model's own (256 for the shipped models).
    render_square: True: the model sees a square of side render_size (the frame squashed or
        stretched to it, as DeOldify's own pipeline does), its colour stretched back to the
        frame; False: the frame's aspect kept; None = the model's own default
        (`ModelSpec.render_square`, aspect kept for every registered model).
    batch_size: frames per model call (halved automatically on CUDA out-of-memory).
    temperature, top_k: decoding of 313-bin models (annealed mean; lower is more saturated).
    unsure: "auto" (the model's default), "off", or (lo, hi): where the model is unsure (its
        normalised entropy from lo to hi) the temperature rises to 1, muting colours it cannot
        settle (`bttf.models.bins.annealed_mean`).
    saturation: "auto" (the model's own, 1 unless it was measured to need more) or a gain >= 0
        on the model's ab: above 1 more colour, below 1 less, 0 gray (`Colorizer.saturate`;
        keyframes keep their own colour).
    temporal: fuse predictions across frames with `bttf.pipeline.temporal.Stabilizer`.
    temporal_strength: 0..1, how much of the previous frames the stabilizer keeps where the
        optical flow is trusted (0 = frame by frame); None = its measured default.
    codec, crf, preset, pix_fmt: the video encoder (crf/preset are passed when not None; for
        VP9 the preset becomes libvpx's cpu-used); codec None: OUTPUT's suffix picks it
        (libvpx-vp9 for .webm, else libx264); pix_fmt None: by the source
        (`bttf.pipeline.encode.output_pix_fmt`: yuv420p for 8-bit sources, 10-bit output for
        deeper ones where the encoder takes it).
    start, duration: seconds, like ffmpeg's -ss and -t (output timestamps then start at 0).
    audio: keep the source's audio streams.
    overwrite: replace an existing output file.
    threads: torch CPU threads (None: all cores but one, leaving room for decode/encode).
    on_decode_error: a frame that cannot be decoded is "repeat"ed (the last good frame at its
        time), "skip"ped (the previous frame lasts over it) or "fail"s the run.
    segment_frames: a film with more frames is written in closed segments of this many frames
        in a work folder beside the output, which `resume` continues; 0 = never.
    resume: continue the interrupted run of the same output with the same settings (starts
        afresh when there is nothing to continue; forces segments).
    keyframes: a folder of frames coloured by hand, named by the film's frame index
        (`bttf.pipeline.keyframes`): their colour is carried through their shots.
    fields: colour an interlaced film field by field (`bttf.pipeline.fields`), so what moves
        between the two fields of a frame keeps its colour; None = when the source says it is
        interlaced; True also for a source flagged progressive (top field first unless it
        names an order); False = whole frames.
    fill_bars: fill the film's black bars (letterbox, pillarbox) in the gray the model sees
        (`bttf.pipeline.bars`), so they do not sway its colour; the output keeps them black.
    """

    model: str | None = None
    weights: str | Path | None = None
    device: str = "auto"
    render_size: int | None = None
    batch_size: int = 8
    temperature: float = 0.38
    top_k: int | None = None
    unsure: tuple[float, float] | str | None = "auto"
    saturation: float | str = "auto"
    temporal: bool = True
    temporal_strength: float | None = None
    codec: str | None = None
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str | None = None
    start: float | None = None
    duration: float | None = None
    audio: bool = True
    overwrite: bool = False
    threads: int | None = None
    on_decode_error: str = "repeat"
    segment_frames: int = DEFAULT_SEGMENT_FRAMES
    resume: bool = False
    keyframes: Path | None = None
    fields: bool | None = None
    render_square: bool | None = None
    fill_bars: bool = True

    def __post_init__(self) -> None:
        def bad(what: str) -> BadInputError:
            return BadInputError(f"invalid option: {what}")

        if self.batch_size < 1:
            raise bad(f"batch_size must be at least 1, got {self.batch_size}")
        if self.render_size is not None and not 16 <= self.render_size <= 4096:
            raise bad(f"render_size must be in 16..4096, got {self.render_size}")
        for name in ("render_square", "fields"):
            value = getattr(self, name)
            if not (value is None or isinstance(value, bool)):
                raise bad(f"{name} must be True, False or None, got {value!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise bad(f"temperature must be > 0, got {self.temperature}")
        if not isinstance(self.unsure, str):
            try:
                check_unsure(self.unsure, "unsure")
            except ValueError as e:
                raise bad(str(e)) from None
        elif self.unsure not in ("auto", "off"):
            raise bad(f"unsure must be 'auto', 'off' or (lo, hi), got {self.unsure!r}")
        try:
            check_saturation(self.saturation)
        except ValueError as e:
            raise bad(str(e)) from None
        if self.start is not None and not (math.isfinite(self.start) and self.start >= 0):
            raise bad(f"start must be >= 0 seconds, got {self.start}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise bad(f"duration must be > 0 seconds, got {self.duration}")
        if self.temporal_strength is not None and not 0.0 <= self.temporal_strength <= 1.0:
            raise bad(f"temporal_strength must be in 0..1, got {self.temporal_strength}")
        if self.threads is not None and self.threads < 1:
            raise bad(f"threads must be at least 1, got {self.threads}")
        if self.pix_fmt is not None and self.pix_fmt not in OUTPUT_PIX_FMTS:
            raise bad(f"pix_fmt {self.pix_fmt!r}; choose one of {', '.join(OUTPUT_PIX_FMTS)}")
        if self.on_decode_error not in DECODE_ERROR_POLICIES:
            raise bad(
                f"on_decode_error {self.on_decode_error!r}; choose one of "
                f"{', '.join(DECODE_ERROR_POLICIES)}"
            )
        if self.segment_frames < 0:
            raise bad(f"segment_frames must be 0 (off) or more, got {self.segment_frames}")
        if self.resume and self.segment_frames == 0:
            raise bad("resume needs segments; give segment_frames > 0")

    def encode_settings(
        self, dst: str | Path | None = None, info: VideoInfo | None = None
    ) -> EncodeSettings:
        """The encoder for OUTPUT `dst`: `codec`, or the one its suffix picks (VP9 for .webm,
        else libx264; a .gif is refused with a pointer to `bttf gif`); `pix_fmt`, or the one
        the source `info` calls for (yuv420p without one)."""
        codec = codec_for(dst, self.codec) if dst is not None else self.codec or "libx264"
        pix_fmt = self.pix_fmt
        if pix_fmt is None:
            pix_fmt = output_pix_fmt(codec, info.bits, info.pix_fmt) if info else "yuv420p"
        return EncodeSettings(codec=codec, crf=self.crf, preset=self.preset, pix_fmt=pix_fmt)


@dataclass(frozen=True)
class ColorizeStats:
    """What a run did. Stage times overlap (decode and encode run beside the model)."""

    output: Path
    frames: int
    seconds: float
    decode_s: float
    model_s: float  # the model stage: model, stabilizer, chroma planes (on CPU, 2 threads)
    encode_s: float
    model: str
    device: str
    render_size: tuple[int, int]  # (w, h) the model saw
    batch_size: int  # the batch size at the end (smaller after an out-of-memory retry)
    size: tuple[int, int]  # (w, h) of the output
    notices: tuple[str, ...] = field(default=())
    stabilize_s: float = 0.0  # the part of model_s the stabilizer took
    repeated: int = 0  # damaged frames shown as the last good one (--on-decode-error repeat)
    dropped: int = 0  # damaged frames left out (--on-decode-error skip)
    resumed_frames: int = 0  # frames an earlier, interrupted run had done
    segments: int = 0  # closed segments the film was written in (0: in one go)

    @property
    def fps(self) -> float:
        """Frames colorized by this run per second."""
        return (self.frames - self.resumed_frames) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: frames, time, speed, time per stage, and damaged or resumed frames."""
        stab = f" (stabilizer {self.stabilize_s:.1f} s)" if self.stabilize_s else ""
        extra = ""
        if self.resumed_frames:
            extra += f"; {self.resumed_frames} resumed from an earlier run"
        if self.repeated:
            extra += f"; {self.repeated} damaged frame{'s' if self.repeated != 1 else ''} repeated"
        if self.dropped:
            extra += f"; {self.dropped} damaged frame{'s' if self.dropped != 1 else ''} skipped"
        return (
            f"{self.frames} frame{'s' if self.frames != 1 else ''} in {self.seconds:.1f} s "
            f"({self.fps:.1f} fps) — decode {self.decode_s:.1f} s, model {self.model_s:.1f} s"
            f"{stab}, encode {self.encode_s:.1f} s [{self.model} on {self.device}, "
            f"{self.render_size[0]}x{self.render_size[1]}]{extra}"
        )
