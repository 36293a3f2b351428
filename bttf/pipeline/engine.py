"""The streaming engine: colorize a film while keeping its own luma, in one loop.

    decode (thread) -> prepare -> model -> colour (stabilize, annealed mean) -> chroma -> encode
                                                                               (thread)

Each stage has one job and one output type (`bttf.pipeline.stages`); where the frames go is the
sink (`bttf.pipeline.resume`): one output file for a short film, closed resumable segments in a
work folder for a film longer than `segment_frames` (or with `resume`). That is the only thing
that differs between them; `_stream` is the loop both run.

The model sees lightness L at render size (short side `render_size`, rounded to the model's
stride) and predicts ab; the chroma planes are built at the output's chroma plane size: ab is
upsampled to it, combined with that size's L into Lab, converted to R'G'B' and then to Cb/Cr
with the output's matrix (the source's tag, else BT.601 below 720 lines and BT.709 from 720)
and range. The output frame is Y = the source's Y plane, untouched, plus those Cb/Cr planes.

Threads (CPU): decode and encode beside the model (bounded queues, so memory does not grow
with the film's length); the colour stage on a thread of its own, one batch behind the model
(the stabilizer's fusion adds +2-9% wall time at 360p there, +15-18% on the model's thread);
the chroma stage on another. On a GPU the colour and chroma stages run inline, the model under
bf16/fp16 autocast in channels_last, and a batch that runs out of memory is split in halves and
retried; no frame is ever written uncoloured.

Seams: `colorize_video` takes an already built `colorizer` and `stabilizer`, and a `progress`
callback (called on the model's thread after every batch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from bttf.errors import BadInputError
from bttf.pipeline.bars import Bars, find_bars
from bttf.pipeline.config import ColorizeConfig, ColorizeStats, ProgressCallback
from bttf.pipeline.decode import VideoInfo, probe_video
from bttf.pipeline.encode import OUTPUT_PIX_FMTS, EncodeSettings, plan_encode
from bttf.pipeline.fields import FieldChroma, FieldPreparer, by_fields
from bttf.pipeline.media import (
    Consumer,
    Producer,
    check_input,
    check_output,
    is_image_path,
    output_errors,
)
from bttf.pipeline.resume import FileSink, SegmentSink, Sink, Target
from bttf.pipeline.segments import DEFAULT_SEGMENT_FRAMES
from bttf.pipeline.shared import Share, SharedSink
from bttf.pipeline.stages import (
    ChromaStage,
    ColourStage,
    ModelStage,
    PreparedFrame,
    Preparer,
    model_input,
    render_dims,
    square_render,
)
from bttf.runtime import resolve_device, share_heap, torch_threads

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Set-up


def build_colorizer(config: ColorizeConfig, device: torch.device):
    """The `Colorizer` the config names, in eval mode on `device`."""
    from bttf.models import Colorizer

    if config.weights is not None and not Path(config.weights).is_file():
        raise BadInputError(f"--weights {config.weights} is not a file; check the path")
    colorizer = Colorizer.create(
        name=config.model,
        weights=config.weights,
        temperature=config.temperature,
        top_k=config.top_k,
        unsure=config.unsure,
        saturation=config.saturation,
    )
    return prepare_colorizer(colorizer, device)


def prepare_colorizer(colorizer, device: torch.device):
    """`colorizer` in eval mode on `device`, in the memory layout the engine runs it in."""
    colorizer = colorizer.eval().to(device)
    if device.type in ("cuda", "cpu"):
        colorizer = colorizer.to(memory_format=torch.channels_last)
    return colorizer


def build_stabilizer(config: ColorizeConfig):
    """The `Stabilizer` the config asks for, or None (`temporal` off)."""
    if not config.temporal:
        return None
    from bttf.pipeline.temporal import Stabilizer

    if config.temporal_strength is None:
        return Stabilizer()
    return Stabilizer(strength=config.temporal_strength)


def model_name(colorizer) -> str:
    return getattr(getattr(colorizer, "spec", None), "name", type(colorizer).__name__)


def _expected_frames(info: VideoInfo, start: float | None, duration: float | None) -> int | None:
    if info.frames is None:
        return None
    if start is None and duration is None:
        return info.frames
    if not info.rate:
        return None
    total = float(info.duration) if info.duration else info.frames / float(info.rate)
    span = max(0.0, total - (start or 0.0))
    if duration is not None:
        span = min(span, duration)
    return max(0, round(span * float(info.rate)))


def _reached_end(info: VideoInfo, reached: float | None) -> bool:
    """Whether the frames read (the last ends at source second `reached`) reach the film's
    declared end: a variable-rate film with a pause has fewer frames than its duration times
    its rate, and is not truncated for it."""
    if reached is None or info.duration is None:
        return False
    slack = 2 / float(info.rate) if info.rate else 0.1
    return reached >= float(info.start) + info.duration - slack


def _input_notices(
    info: VideoInfo,
    config: ColorizeConfig,
    total: int | None,
    done: int,
    repeated: int,
    dropped: int,
    read: _Timing | None = None,
) -> list[str]:
    """What the user should hear about the input after a run (also logged as warnings)."""
    out = []
    reached, leading = (read.reached, read.leading) if read else (None, 0)
    if leading:  # (counted among the sink's repeated frames)
        s = "s" if leading != 1 else ""
        out.append(
            f"the first {leading} frame{s} of {info.path} cannot be decoded: the film starts "
            "without a keyframe (as a cut without re-encoding leaves it) or its first one is "
            "damaged; the first frame that decodes is shown in their place"
        )
        repeated -= leading
    if repeated:
        out.append(
            f"{repeated} damaged frame{'s' if repeated != 1 else ''} of {info.path} "
            "replaced by the last good one"
        )
    if dropped:
        out.append(
            f"{dropped} damaged frame{'s' if dropped != 1 else ''} of {info.path} "
            "left out (the previous frame lasts over each)"
        )
    short = total and done + dropped < total - max(2, total // 100)
    if config.duration is None and short and not _reached_end(info, reached):
        out.append(
            f"{info.path} declares about {total} frames but only {done + dropped} could "
            "be read: it may be truncated"
        )
    return out


def _job_settings(
    src: Path,
    info: VideoInfo,
    config: ColorizeConfig,
    settings: EncodeSettings,
    colorizer,
    model_hw,
    stabilized: bool,
    size,
    bars: Bars | None = None,
) -> dict:
    """Everything a resumed run must share with the one it continues (see segments.py); the
    encoder's `settings` as resolved (the codec OUTPUT's suffix picked, the pixel format the
    source did, when not given)."""
    from bttf import __version__
    from bttf.pipeline.segments import input_fingerprint, model_digest

    c = config
    job = {
        "bttf": __version__,
        "input": input_fingerprint(src),
        "model": model_name(colorizer),
        "weights": model_digest(colorizer),
        "render": list(model_hw),
        "batch_size": c.batch_size,
        "temperature": getattr(colorizer, "temperature", c.temperature),
        "top_k": getattr(colorizer, "top_k", c.top_k),
        "unsure": getattr(colorizer, "unsure", None),
        "temporal": stabilized,
        "temporal_strength": c.temporal_strength,
        "codec": settings.codec,
        "crf": c.crf,
        "preset": c.preset,
        "pix_fmt": settings.pix_fmt,
        "size": list(size),
    }
    saturation = getattr(colorizer, "saturation", 1.0)
    if saturation != 1.0:  # absent at 1, so the work folders of earlier runs keep resuming
        job["saturation"] = saturation
    if bars:  # (absent otherwise, as below)
        job["bars"] = bars.as_list()
    if by_fields(info, c.fields):  # (absent otherwise, as below)
        job["fields"] = True
    if square_render(colorizer, c.render_square):  # (absent otherwise, as keyframes below)
        job["render_square"] = True
    if c.keyframes is not None:  # (absent otherwise: earlier runs' work folders stay valid)
        from bttf.pipeline.keyframes import folder_digest

        job["keyframes"] = folder_digest(c.keyframes)
    return job


def _all_notices(
    sink, info: VideoInfo, config: ColorizeConfig, total, done: int, read: _Timing | None = None
) -> list[str]:
    """The sink's notices and `_input_notices` (logged as warnings); `total` None under torchrun,
    where a rank reads only its share."""
    notices = list(sink.notices)
    for n in _input_notices(info, config, total, done, sink.repeated, sink.dropped, read):
        log.warning("%s", n)
        notices.append(n)
    return notices


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Stages:
    """The stages of one run, built by `colorize_video`."""

    prepare: Preparer
    model: ModelStage
    colour: ColourStage
    chroma: ChromaStage | FieldChroma
    batch_size: int
    overlap: bool  # CPU: colour and chroma on threads of their own


class _Lane:
    """`fn` on one thread of its own beside the caller, one call at a time (`overlap`), or
    inline; either way `submit` returns a Future. Submitting waits for the previous call, so
    at most one batch is in the lane while the caller works on the next."""

    def __init__(self, fn: Callable, overlap: bool) -> None:
        self.fn = fn
        self.pending: Future | None = None
        self.pool = None
        if overlap:
            # a new thread starts with OpenMP's default team: give it the engine's size
            self.pool = ThreadPoolExecutor(
                1,
                thread_name_prefix="bttf-colour",
                initializer=torch.set_num_threads,
                initargs=(torch.get_num_threads(),),
            )

    def submit(self, *args) -> Future:
        if self.pool is None:
            done: Future = Future()
            done.set_result(self.fn(*args))
            return done
        self.wait()
        self.pending = self.pool.submit(self.fn, *args)
        return self.pending

    def wait(self) -> None:
        """The pending call done (its error, if any, is raised where its result is taken)."""
        if self.pending is not None:
            with contextlib.suppress(Exception):
                self.pending.result()
            self.pending = None

    def close(self) -> None:
        self.wait()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


class _NoFrames(Exception):
    """The range held no frame (the caller says which)."""


@dataclass
class _Timing:
    model_s: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0
    reached: float | None = None  # source second where the last frame read ends
    leading: int = 0  # frames shown as the first that decodes, which came after them
    good: bool = False  # a frame that decoded has been read


def _prepared(
    sink: Sink, prepare: Preparer, timing: _Timing
) -> Iterator[tuple[str, PreparedFrame]]:
    """The sink's source ("warm" and "frame" items), each frame prepared for the model."""
    source = sink.source()
    with contextlib.closing(source):
        for kind, f in source:
            timing.reached = float((f.pts + f.duration) * f.time_base)
            if not timing.good:
                timing.leading += f.repeated
                timing.good = not f.repeated
            yield kind, prepare(f)


def _encode(sink: Sink, item: tuple) -> None:
    """The encode thread's job: a frame's planes into the sink, or a segment closed."""
    if item[0] == "frame":
        sink.write(*item[1:])
    else:
        sink.close_segment(item[1])


def _stream(
    stages: _Stages,
    sink: Sink,
    progress: ProgressCallback | None,
    total: int | None,
    timing: _Timing,
) -> int:
    """Decode -> prepare -> model -> colour -> chroma -> encode the sink's source into the sink;
    returns the frames written, counting those an interrupted run had written."""
    s = stages
    n_seg, bs = sink.segment_frames, s.batch_size
    depth = 2 * bs

    def colour_to_chroma(item: tuple) -> None:
        if item[0] == "batch":
            _, batch, ab = item
            t0 = time.perf_counter()
            cb, cr = s.chroma(batch, ab.result())
            chroma_busy[0] += time.perf_counter() - t0
            for k, p in enumerate(batch):
                encoder.put(("frame", p.frame, cb[k], cr[k]))
        else:
            encoder.put(item)

    chroma_busy = [0.0]
    producer = Producer(_prepared(sink, s.prepare, timing), maxsize=depth, name="decode")
    encoder = Consumer(partial(_encode, sink), on_finish=sink.end, maxsize=depth, name="encode")
    chroma = Consumer(colour_to_chroma, maxsize=1, name="chroma") if s.overlap else None
    to_chroma = chroma.put if chroma is not None else colour_to_chroma
    lane = _Lane(s.colour, s.overlap)
    ring: deque[PreparedFrame] = deque(maxlen=sink.warmup)
    done = sink.resumed_frames
    k, in_seg = sink.first_segment, 0
    out_hw: tuple[int, int] | None = None
    batch: list[PreparedFrame] = []

    def run(batch: list[PreparedFrame]) -> None:
        nonlocal done, out_hw
        t0 = time.perf_counter()
        small = model_input(batch)
        plan = s.colour.plan(small, out_hw)  # its flow work beside the model's
        out = s.model(small)
        out_hw = tuple(out.shape[-2:])
        if plan is None:  # the first batch: planned here, so batches are planned in order
            plan = s.colour.plan(small, out_hw)
        to_chroma(("batch", batch, lane.submit(small, out, plan)))
        timing.model_s += time.perf_counter() - t0
        ring.extend(batch)
        done += len(batch)
        if progress is not None:
            progress(done, total)

    try:
        if progress is not None:
            progress(done, total)
        for kind, p in producer:
            if kind == "warm":
                ring.append(p)
                continue
            if in_seg == 0 and ring and s.colour.stabilizer is not None:  # (segment 0: empty)
                t0 = time.perf_counter()
                lane.wait()  # the stabilizer's state is the lane's until then
                s.colour.restart(list(ring), s.model, bs)
                timing.model_s += time.perf_counter() - t0
            batch.append(p)
            in_seg += 1
            if len(batch) == bs or in_seg == n_seg:
                run(batch)
                batch = []
            if in_seg == n_seg:
                to_chroma(("close", k))
                k, in_seg = k + 1, 0
        if batch:
            run(batch)
        if in_seg and n_seg:
            to_chroma(("close", k))
        if done == 0 and not getattr(sink, "empty_ok", False):  # (a rank may have no share)
            raise _NoFrames
        if chroma is not None:
            chroma.finish()
        encoder.finish()
    except BaseException:
        encoder.abort()
        if chroma is not None:
            chroma.abort()
        raise
    finally:
        producer.close()
        lane.close()
        s.colour.close()
        s.chroma.close()
        timing.decode_s += producer.busy_s
        timing.encode_s += encoder.busy_s
        timing.model_s += chroma_busy[0]
    return done


# ---------------------------------------------------------------------------------------------
# Public API


def _open_input(src, dst, config: ColorizeConfig) -> tuple[Path, Path, VideoInfo]:
    """The checked input and output paths and the input's stream facts."""
    src = check_input(src)
    dst = check_output(src, dst, config.overwrite)
    if is_image_path(dst):
        raise BadInputError(
            f"{src} is a film but OUTPUT {dst} is an image; give OUTPUT a video suffix (.mp4, .mkv)"
        )
    info = probe_video(src)
    if config.start is not None and info.duration is not None and config.start >= info.duration:
        raise BadInputError(
            f"--start {config.start:g} is past the end of {src} ({info.duration:.2f} s)"
        )
    return src, dst, info


def _build_stages(
    info: VideoInfo,
    config: ColorizeConfig,
    settings: EncodeSettings,
    size: tuple[int, int],
    colorizer,
    stabilizer,
    device: torch.device,
    overlap: bool,
    bars: Bars | None = None,
) -> tuple[_Stages, tuple[int, int]]:
    """The run's stages, and the (h, w) the model sees (upright); `bars`: the film's black
    bars, filled in what the model sees."""
    short = config.render_size or colorizer.render_size
    rotate_k = (info.rotation // 90) % 4 if info.rotation % 90 == 0 else 0
    square = square_render(colorizer, config.render_square)
    rh, rw = render_dims(info.height, info.width, short, colorizer.stride, square)
    model_hw = (rw, rh) if rotate_k % 2 else (rh, rw)
    sx, sy, bits_out = OUTPUT_PIX_FMTS[settings.pix_fmt]
    chroma_hw = (-(-size[1] // (1 << sy)), -(-size[0] // (1 << sx)))
    model = ModelStage(colorizer, device, config.batch_size)
    guide = None
    if config.keyframes is not None:
        from bttf.pipeline.keyframes import keyframe_guide

        # the keyframes' grid keeps the frame's aspect, whatever shape the model sees
        grid_hw = render_dims(info.height, info.width, short, colorizer.stride)
        guide = keyframe_guide(config.keyframes, info, grid_hw, config.on_decode_error)
    prepare = Preparer(info, (rh, rw), rotate_k, chroma_hw, bars)
    chroma = ChromaStage(
        model, info.colorspace, info.full_range, bits_out, guide, bars, (info.height, info.width)
    )
    if by_fields(info, config.fields):  # interlaced: each frame's two fields coloured apart
        top = info.top_field_first
        log.info(
            "%s: coloured field by field, %s field first", info.path, "top" if top else "bottom"
        )
        prepare = FieldPreparer(info, (rh, rw), rotate_k, chroma_hw, top, bars)
        chroma = FieldChroma(chroma, chroma_hw[0], top)
    stages = _Stages(
        prepare=prepare,
        model=model,
        colour=ColourStage(colorizer, device, stabilizer, rotate_k),
        chroma=chroma,
        batch_size=config.batch_size,
        overlap=overlap and device.type == "cpu",
    )
    return stages, model_hw


def _make_sink(
    src: Path,
    dst: Path,
    info: VideoInfo,
    config: ColorizeConfig,
    settings: EncodeSettings,
    size: tuple[int, int],
    total: int | None,
    colorizer,
    model_hw: tuple[int, int],
    stabilizer,
    share: Share | None = None,
    bars: Bars | None = None,
) -> Sink | SharedSink:
    """One output file for a short film; closed, resumable segments for a long one (or --resume);
    under torchrun (`share`), this rank's segments in the shared work folder."""
    target = Target(
        dst,
        info,
        settings,
        size,
        start=config.start,
        duration=config.duration,
        audio=config.audio,
        on_decode_error=config.on_decode_error,
    )
    long_film = config.segment_frames and (total is None or total > config.segment_frames)
    if not (config.resume or long_film or share):
        return FileSink(target)
    kind = partial(SharedSink, share=share) if share else SegmentSink
    return kind(
        target,
        job=_job_settings(
            src, info, config, settings, colorizer, model_hw, stabilizer is not None, size, bars
        ),
        segment_frames=config.segment_frames or DEFAULT_SEGMENT_FRAMES,
        stabilized=stabilizer is not None,
        resume=config.resume,
    )


def colorize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
    progress: ProgressCallback | None = None,
    *,
    colorizer=None,
    stabilizer=None,
    overlap: bool = True,
    share: Share | None = None,
) -> ColorizeStats:
    """Colorize the film `src` into `dst` (its suffix picks the container).

    The output keeps the source's Y plane, frame count, every timestamp and duration, frame
    rate, audio (copied when the container allows), rotation and colour tags; see the module
    notes. The file appears at `dst` only when complete (written beside it, then renamed).

    Args:
        config: the options (`ColorizeConfig()` when None).
        progress: `progress(done, total)` after every batch, on the model's thread; an
            exception it raises stops the run as any other error would (segments kept).
        colorizer: an already built `Colorizer` (or a module with its contract) to use instead
            of the one `config.model` / `config.weights` name.
        stabilizer: an already built `Stabilizer` to use instead of the one `config.temporal`
            and `config.temporal_strength` describe (only when `config.temporal` is on).
        overlap: on the CPU, run the colour and chroma stages on threads of their own beside
            the model (False: inline on the model's thread). The output is the same either way.
        share: this process's rank under torchrun (`Share.from_env()`): the ranks share the
            segments, rank 0 joins them and the others write no OUTPUT (`bttf.pipeline.shared`).

    Raises:
        BadInputError: unreadable input, bad options, existing output without `overwrite`.
        BttfError: other failures (e.g. out of memory at batch size 1).
    """
    config = config or ColorizeConfig()
    t_begin = time.perf_counter()
    share_heap()
    src, dst, info = _open_input(src, dst, config)
    settings = config.encode_settings(dst, info)
    size = plan_encode(settings, info.width, info.height, info.time_base, info.field_order)
    device = resolve_device(share.device(config.device) if share else config.device)
    built = colorizer is None
    colorizer = build_colorizer(config, device) if built else prepare_colorizer(colorizer, device)
    if stabilizer is None or not config.temporal:
        stabilizer = build_stabilizer(config)
    bars = find_bars(info, config.start, config.duration) if config.fill_bars else None
    stages, model_hw = _build_stages(
        info, config, settings, size, colorizer, stabilizer, device, overlap, bars
    )
    total = _expected_frames(info, config.start, config.duration)
    log.info(
        "%s: %dx%d %s, %s frames; model %s at %dx%d on %s",
        src,
        info.width,
        info.height,
        info.pix_fmt,
        total,
        model_name(colorizer),
        model_hw[1],
        model_hw[0],
        device,
    )
    sink = _make_sink(
        src, dst, info, config, settings, size, total, colorizer, model_hw, stabilizer, share, bars
    )

    timing = _Timing()
    with output_errors(dst), sink:
        try:
            with torch_threads(device, config.threads):
                done = _stream(stages, sink, progress, total, timing)
        except _NoFrames:
            raise BadInputError(
                f"no frames of {src} fall in --start {config.start} --duration "
                f"{config.duration}; check the range"
            ) from None
        t0 = time.perf_counter()
        sink.complete()
        timing.encode_s += time.perf_counter() - t0
    notices = _all_notices(sink, info, config, None if share else total, done, timing)
    stats = ColorizeStats(
        output=dst,
        frames=done,
        seconds=time.perf_counter() - t_begin,
        decode_s=timing.decode_s,
        model_s=timing.model_s,
        encode_s=timing.encode_s,
        model=model_name(colorizer),
        device=str(device),
        render_size=(model_hw[1], model_hw[0]),
        batch_size=stages.model.max_batch,
        size=size,
        notices=tuple(notices),
        stabilize_s=stages.colour.stabilize_s,
        repeated=sink.repeated,
        dropped=sink.dropped,
        resumed_frames=sink.resumed_frames,
        segments=sink.segments,
    )
    log.info("%s", stats.summary())
    return stats


def colorize(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
    progress: ProgressCallback | None = None,
) -> ColorizeStats:
    """`colorize_image` when `src` has an image suffix, else `colorize_video`."""
    if is_image_path(src):
        from bttf.pipeline.image import colorize_image

        return colorize_image(src, dst, config)
    return colorize_video(src, dst, config, progress)
