"""Where the engine's frames go: the only thing that differs between a short and a long film.

- `FileSink`: one output file, written beside OUTPUT and renamed on success.
- `SegmentSink`: closed segments in the work folder beside OUTPUT (`bttf.pipeline.segments`),
  joined into OUTPUT at the end; after an interruption it tells the engine where to go on
  (`source()`: the frames from the first unfinished segment on, after the stabilizer's warm-up
  frames before it).

A sink is used as a context manager by the engine's one loop (`bttf.pipeline.engine`):

    with sink:
        for kind, frame in sink.source(): ...        # ("warm" | "frame", SourceFrame)
        sink.write(frame, cb, cr)                    # the encode thread, in order
        sink.close_segment(k)                        # every `segment_frames` frames
        sink.end()                                   # the encode thread, after the last frame
        sink.complete()                              # the main thread: OUTPUT in place
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bttf.errors import BttfError
from bttf.files import atomic_output
from bttf.pipeline import segments as work_folder
from bttf.pipeline.decode import SourceFrame, VideoInfo, read_frames, to_fraction
from bttf.pipeline.encode import EncodeSettings, VideoWriter
from bttf.pipeline.segments import WorkDir, segment_job

if TYPE_CHECKING:
    from typing import Self  # 3.11+, for type checkers only

log = logging.getLogger(__name__)

Source = Iterator[tuple[str, SourceFrame]]


def _tagged(frames: Iterator[SourceFrame]) -> Source:
    with contextlib.closing(frames):
        for f in frames:
            yield "frame", f


def _nothing() -> Source:
    yield from ()


@dataclass(frozen=True)
class Target:
    """What both sinks write: OUTPUT, the source's facts, the encoder and the range."""

    dst: Path
    info: VideoInfo
    settings: EncodeSettings
    size: tuple[int, int]  # (w, h) encoded
    start: float | None
    duration: float | None
    audio: bool
    on_decode_error: str


class FileSink:
    """The whole film into one file (`dst` appears only when complete)."""

    segment_frames = 0  # never closes a segment
    warmup = 0
    first_segment = 0
    resumed_frames = 0
    segments = 0

    def __init__(self, target: Target) -> None:
        self.target = target
        self.notices: list[str] = []
        self.repeated = self.dropped = 0
        self.encode_s = 0.0  # work after the stream (none here)
        self._stack = contextlib.ExitStack()
        self._writer: VideoWriter | None = None
        self._started = False

    def __enter__(self) -> Self:
        tmp = self._stack.enter_context(atomic_output(self.target.dst))
        t = self.target
        self._writer = VideoWriter(tmp, t.info, t.settings, t.size, audio=t.audio, name=t.dst)
        self._stack.callback(self._close_writer)
        if self._writer.audio is not None:
            self.notices.extend(self._writer.audio.notices)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def _close_writer(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()

    def source(self) -> Source:
        return _tagged(
            read_frames(
                self.target.info,
                self.target.start,
                self.target.duration,
                on_error=self.target.on_decode_error,
            )
        )

    def write(self, f: SourceFrame, cb: np.ndarray, cr: np.ndarray) -> None:
        if not self._started:
            t_end = None
            if self.target.duration is not None:
                t_end = self.target.info.start + (to_fraction(self.target.start) or 0)
                t_end += to_fraction(self.target.duration)
            if self.target.start is not None:
                self._writer.start(Fraction(f.pts) * f.time_base, t_end, f.pts)
            else:
                self._writer.start(None, t_end, 0)
            self._started = True
        self._writer.write(f.y, self.target.info.bits, cb, cr, f.pts, f.duration)
        self.repeated += f.repeated
        self.dropped += f.dropped

    def close_segment(self, k: int) -> None:  # pragma: no cover - segment_frames is 0
        raise AssertionError("a FileSink has no segments")

    def end(self) -> None:
        self._writer.finish()

    def complete(self) -> None:
        """Nothing to join: the file is renamed into place when the sink exits cleanly."""


class SegmentWriter:
    """One segment being written (Y untouched + chroma; no audio or other streams: the join
    carries them) and the counts its record needs. Used by `SegmentSink` and `shared.SharedSink`."""

    def __init__(self, path: Path, target: Target, f: SourceFrame, shift_pts: int) -> None:
        self.writer = VideoWriter(
            path, target.info, target.settings, target.size, audio=False, streams=False
        )
        self.writer.start(None, None, shift_pts)
        self.bits = target.info.bits
        self.frames = self.repeated = self.dropped = 0
        self.first_pts = self.end_pts = f.pts

    def write(self, f: SourceFrame, cb: np.ndarray, cr: np.ndarray) -> None:
        self.writer.write(f.y, self.bits, cb, cr, f.pts, f.duration)
        self.frames += 1
        self.repeated += f.repeated
        self.dropped += f.dropped
        self.end_pts = f.pts + f.duration


class SegmentSink:
    """The film in closed segments of `segment_frames` in the work folder, then joined.

    Opening it (`__enter__`) locks the work folder and reads what an interrupted run left
    (`resumed_frames`); leaving it on an error keeps the finished segments for `--resume`.
    """

    def __init__(
        self,
        target: Target,
        *,
        job: dict[str, Any],
        segment_frames: int,
        stabilized: bool,
        resume: bool,
    ) -> None:
        self.target = target
        self.segment_frames = segment_frames
        self.warmup, self.job = segment_job(job, segment_frames, stabilized)
        self.resume = resume
        self.notices: list[str] = []
        self.encode_s = 0.0
        self.work: WorkDir | None = None
        self._ok = False
        self._segment: SegmentWriter | None = None

    # --- the run's frame: open, leave ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.work = WorkDir.open(self.target.dst, self.job, self.resume, self._probe)
        self.resumed_frames = self.work.frames_done
        self.first_segment = len(self.work.segments)
        if self.resumed_frames:
            log.info(
                "resuming %s after %d frames (%d segments)",
                self.target.dst,
                self.resumed_frames,
                self.first_segment,
            )
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if self._segment is not None:
            with contextlib.suppress(Exception):
                self._segment.writer.close()
            self._segment = None
        work = self.work
        if exc_type is None and self._ok:
            work.remove()
            return
        if work.segments:
            log.warning(
                "%d colorized frames are kept in %s: run the same command with --resume "
                "to continue",
                work.frames_done,
                work.path,
            )
        work.release()

    def _probe(self, out):  # the stream a segment has, for WorkDir to see what the container does
        vs = out.add_stream(
            self.target.settings.codec,
            rate=self.target.info.rate or 24,
            options=self.target.settings.options(),
        )
        vs.width, vs.height, vs.pix_fmt = *self.target.size, self.target.settings.pix_fmt
        vs.time_base = vs.codec_context.time_base = self.target.info.time_base
        return vs

    @property
    def segments(self) -> int:
        return len(self.work.segments)

    @property
    def repeated(self) -> int:
        return sum(s.repeated for s in self.work.segments)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.work.segments)

    # --- the stream ---------------------------------------------------------------------------

    def source(self) -> Source:
        """Nothing when the film was finished; the frames after the last segment on resume."""
        work = self.work
        if work.finished:
            return _nothing()
        if work.resume_pts is None:
            return _tagged(
                read_frames(
                    self.target.info,
                    self.target.start,
                    self.target.duration,
                    on_error=self.target.on_decode_error,
                )
            )
        return self._resume_source(work.resume_pts, work.first_pts)

    def _resume_source(self, target_pts: int, first_pts: int | None) -> Source:
        """The film from source pts `target_pts` on, as ("frame", f), after its `warmup` frames
        before it as ("warm", f).

        Seeks a little before the target and checks it landed early enough to see every warm-up
        frame (or the first frame of the range); else seeks further back, at worst decoding from
        the start of the range. Ends at once when the range ended exactly at the target.
        """
        info, warmup = self.target.info, self.warmup
        tb = info.time_base
        t_start = info.start + (to_fraction(self.target.start) or 0)
        back = Fraction(warmup + 2) / (info.rate or 24)
        while True:
            seek = target_pts * tb - back
            from_start = seek <= t_start
            frames = read_frames(
                info,
                self.target.start,
                self.target.duration,
                on_error=self.target.on_decode_error,
                seek=None if from_start else seek,
            )
            ring: deque[SourceFrame] = deque(maxlen=warmup)
            first = None
            found = False
            with contextlib.closing(frames):
                for f in frames:
                    if first is None:
                        first = f.pts
                    if not found:
                        if f.pts < target_pts:
                            ring.append(f)
                            continue
                        if f.pts != target_pts or not (len(ring) == warmup or first == first_pts):
                            break  # landed too late: seek further back
                        found = True
                        for r in ring:
                            yield "warm", r
                    yield "frame", f
                else:
                    return  # done, or the range ended right where the interrupted run stopped
            if from_start:
                raise BttfError(
                    f"cannot find the frame at {float(target_pts * tb - info.start):.3f} s of "
                    f"{info.path} where the interrupted run stopped; delete {self.work.path} to "
                    "start over"
                )
            back *= 4

    def write(self, f: SourceFrame, cb: np.ndarray, cr: np.ndarray) -> None:
        if self._segment is None:
            self._segment = self._open(f)
        self._segment.write(f, cb, cr)

    def _open(self, f: SourceFrame) -> SegmentWriter:
        work = self.work
        if work.first_pts is None:
            work.first_pts = f.pts
            work.shift_pts = f.pts if self.target.start is not None else 0
        path = work.segment_path(len(work.segments), partial=True)
        return SegmentWriter(path, self.target, f, f.pts if work.relative else work.shift_pts)

    def close_segment(self, k: int) -> None:
        """Make segment `k` durable (WorkDir.commit)."""
        s, self._segment = self._segment, None
        s.writer.finish()
        self.work.commit(k, s.frames, s.first_pts, s.end_pts, s.repeated, s.dropped)

    def end(self) -> None:
        self.work.finish()

    def complete(self) -> None:
        """Join the segments, with the source's audio, into OUTPUT."""
        work, info = self.work, self.target.info
        t_end = None
        if self.target.duration is not None:
            t_end = (
                info.start
                + (to_fraction(self.target.start) or 0)
                + to_fraction(self.target.duration)
            )
        t_from = None
        if self.target.start is not None and work.first_pts is not None:
            t_from = Fraction(work.first_pts) * info.time_base
        offsets = None
        if work.relative:
            offsets = [s.first_pts - work.shift_pts for s in work.segments]
        tmp = work.final_path()
        try:
            self.notices.extend(
                work_folder.join_segments(
                    [work.path / s.file for s in work.segments],
                    tmp,
                    info,
                    audio=self.target.audio,
                    t_from=t_from,
                    t_end=t_end,
                    shift_pts=work.shift_pts,
                    offsets=offsets,
                )
            )
            os.replace(tmp, self.target.dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._ok = True


Sink = FileSink | SegmentSink
