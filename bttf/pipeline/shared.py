"""Films shared out by segments among the ranks of a torchrun job (RANK, WORLD_SIZE set).

Segment `k` of a film belongs to rank `(k + offset) % WORLD_SIZE`: for one film `offset` is 0;
for a folder it is the number of segments of the films before it (`bttf.pipeline.batch`), so a
long film is shared by every rank and the ranks stay busy alike. A rank colorizes its segments
that no earlier run finished, each after the stabilizer's warm-up on the `WARMUP_FRAMES` frames
before it, exactly as a one-process run with the same `segment_frames` does; so the joined film
is frame for frame that run's. Every rank reads the frames' timestamps from the packets
(`decode.frame_times`, no decoding), so all know the film's frame count and every boundary, and
decodes only its own segments (a seek to the keyframe before each warm-up); a film whose packets
cannot say (or with `on_decode_error` other than "repeat") is decoded from its start by every
rank. The shared work folder (`.OUTPUT.bttf-work/`) holds:

    shared.json           the settings (and their hash) of the job
    seg-00003.mp4         a closed segment (renamed into place once flushed) ...
    seg-00003.json        ... and its facts (frames, pts, run id), written atomically after it
    lock                  every rank holds it shared: a one-process run on OUTPUT is refused
    run-<ID>.lock         the ranks of run ID hold it shared: another run's ranks are refused
                          (ID: TORCHELASTIC_RUN_ID, MASTER_ADDR, MASTER_PORT)
    generation            drawn by rank 0 of a run (the other ranks wait for it): segments of
                          another generation are an interrupted run's (taken only with --resume)
    rank-<GEN>-<r>.lock   rank r holds it while it works: rank 0 sees a rank that died
    failed-<GEN>-<r>.txt  rank r failed on this film (its one-line reason): the others stop it

Rank 0, after its own segments, waits for every segment's `.json`, then joins them (with the
source's audio) into OUTPUT and removes the folder; the other ranks exit when their share is
done. A rank that dies leaves its closed segments: rank 0 says which rank stopped, and the same
command with --resume redoes only the missing segments. A rank that fails leaves a `failed-`
file, so rank 0 gives the film up with its reason instead of waiting. Waiting for a rank that
has not come (rank 0 to open the folder, another rank to check in) ends after `Share.wait_s`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bttf.errors import BadInputError, BttfError
from bttf.files import fsync_file
from bttf.pipeline.decode import (
    FrameIndex,
    SourceFrame,
    frame_times,
    read_frames,
    to_fraction,
)
from bttf.pipeline.ranks import RankFolder, Share, noted, write_json
from bttf.pipeline.resume import SegmentWriter
from bttf.pipeline.segments import (
    Segment,
    join_segments,
    keeps_time_base,
    segment_job,
    settings_hash,
)

if TYPE_CHECKING:
    from typing import Self

    from bttf.pipeline.resume import Target

log = logging.getLogger(__name__)

__all__ = ["SETTINGS", "Share", "SharedSink"]

SETTINGS = "shared.json"


class SharedSink(RankFolder):
    """This rank's segments (`share.owner(k) == rank`) of a film in the shared work folder;
    rank 0 joins.

    The engine's loop uses it as it uses a `SegmentSink` (see `bttf.pipeline.resume`).
    """

    empty_ok = True  # a rank may have no segment left to do
    resumed_frames = 0
    first_segment = 0

    def __init__(
        self,
        target: Target,
        *,
        job: dict[str, Any],
        segment_frames: int,
        stabilized: bool,
        resume: bool,
        share: Share,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__(target.dst, share, poll_s)
        self.target = target
        self.segment_frames = segment_frames
        self.warmup, self.job = segment_job(job, segment_frames, stabilized)
        self.hash = settings_hash(self.job)
        self.resume = resume
        self.notices: list[str] = []
        self.encode_s = 0.0
        self.done: dict[int, Segment] = {}  # closed segments, by index (earlier runs' too)
        self.mine: list[Segment] = []  # those this process closed
        self.film_frames: int | None = None  # known from the packets, or at the source's end
        self.first_pts: int | None = None
        self.decoded = 0  # frames this rank decoded (its segments, warm-ups, from keyframes)
        self.relative = True
        self._order: deque[int] = deque()  # segments the source started, for the encode thread
        self._segment: SegmentWriter | None = None
        self._seg = 0  # the index of the segment being written
        self._ok = False

    # --- open, leave ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.path.mkdir(exist_ok=True)
        try:
            self._lock()
            self._settings()
            self._adopt()
            probe = self.path / f"probe-{self.share.rank}{self.target.dst.suffix}"
            self.relative = keeps_time_base(probe, self._probe)
            self._check_in()
            self._stop_if_failed()
        except BaseException as e:
            self._give_up(e)
            self._unlock()
            raise
        return self

    def _give_up(self, exc: BaseException) -> None:
        """Leave this rank's failure note; rank 0 then waits for every rank to come (each sees
        the note and stops), so none waits for a rank 0 that has left."""
        self._fail(str(exc) or type(exc).__name__)
        noted(exc)
        if self.share.rank == 0 and self.generation and isinstance(exc, Exception):
            with contextlib.suppress(BttfError):
                self._await_ranks("to hear that rank 0 gave the film up")

    def _settings(self) -> None:
        if (self.path / "manifest.json").exists():
            raise BadInputError(
                f"{self.path} holds the work of a one-process run; finish it without torchrun "
                "(--resume), or delete that folder to start over"
            )
        p = self.path / SETTINGS
        try:
            old = json.loads(p.read_text())
        except FileNotFoundError:
            write_json(p, {"hash": self.hash, "settings": self.job})
            return
        except (OSError, ValueError) as e:
            raise BadInputError(f"{p} is unreadable ({e}); delete {self.path} to start over") from e
        if old.get("hash") != self.hash:
            was = old.get("settings") or {}
            diffs = [k for k in sorted(set(was) | set(self.job)) if was.get(k) != self.job.get(k)]
            raise BadInputError(
                f"{self.path} was started with other settings ({', '.join(diffs[:4])}); run with "
                "the same options and input to resume, or delete that folder to start over"
            )

    def _adopt(self) -> None:
        """The closed segments of this run's ranks and (with --resume) of earlier runs."""
        fields = set(Segment.__dataclass_fields__)
        foreign = 0
        for p in sorted(self.path.glob("seg-*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                raw = json.loads(p.read_text())
                seg = Segment(**{k: v for k, v in raw.items() if k in fields})
                f = self.path / seg.file
                if f.is_file() and f.stat().st_size == seg.size:
                    if raw.get("run") != self.generation:
                        foreign += seg.frames
                    self.done[int(raw["index"])] = seg
        if foreign and not self.resume:
            raise BadInputError(
                f"{self.path} holds {foreign} colorized frames of an interrupted run; add "
                "--resume to continue it, or delete that folder to start over"
            )
        if foreign:
            log.info(
                "rank %d: resuming %s (%d segments done)",
                self.share.rank,
                self.path,
                len(self.done),
            )

    def _probe(self, out):
        t = self.target
        vs = out.add_stream(t.settings.codec, rate=t.info.rate or 24, options=t.settings.options())
        vs.width, vs.height, vs.pix_fmt = *t.size, t.settings.pix_fmt
        vs.time_base = vs.codec_context.time_base = t.info.time_base
        return vs

    def __exit__(self, exc_type, exc: BaseException | None, tb: object) -> None:
        if self._segment is not None:
            with contextlib.suppress(Exception):
                self._segment.writer.close()
            self._segment = None
        if exc is not None:
            self._give_up(exc)
        self._unlock()
        if exc_type is None and self._ok and self.share.rank == 0:
            shutil.rmtree(self.path, ignore_errors=True)
        elif exc_type is not None and self.done:
            log.warning(
                "rank %d: %d segments are kept in %s: run the same command with --resume to finish",
                self.share.rank,
                len(self.done),
                self.path,
            )

    # --- the stream ----------------------------------------------------------------------------

    def owns(self, k: int) -> bool:
        return self.share.owner(k) == self.share.rank and k not in self.done

    def source(self) -> Iterator[tuple[str, SourceFrame]]:
        """This rank's segments as ("frame", f), each after its warm-up frames as ("warm", f):
        decoded from a seek before each run of them when the packets give every frame's
        timestamp, else from the film's start."""
        t = self.target
        index = None
        if t.on_decode_error == "repeat":
            index = frame_times(t.info, t.start, t.duration)
        if index is None:
            yield from self._whole_source()
        elif index.pts:
            yield from self._seek_source(index)
        log.info(
            "rank %d: decoded %d frames (the film has %s)",
            self.share.rank,
            self.decoded,
            self.film_frames,
        )

    def _whole_source(self) -> Iterator[tuple[str, SourceFrame]]:
        t, n = self.target, self.segment_frames
        frames = read_frames(t.info, t.start, t.duration, on_error=t.on_decode_error)
        i = -1
        with contextlib.closing(frames):
            for i, f in enumerate(frames):
                self.decoded += 1
                if self.first_pts is None:
                    self.first_pts = f.pts
                k, at = divmod(i, n)
                if self.owns(k):
                    if at == 0:
                        self._stop_if_failed()
                        self._order.append(k)
                    yield "frame", f
                elif at >= n - self.warmup and self.owns(k + 1):
                    yield "warm", f
        self.film_frames = i + 1

    def _seek_source(self, index: FrameIndex) -> Iterator[tuple[str, SourceFrame]]:
        """Each run of consecutive segments of this rank after its warm-up: from a seek, or on
        from where the decoder is when the seek would land no later (a long GOP)."""
        times, n = index.pts, self.segment_frames
        self.film_frames, self.first_pts = len(times), times[0]
        runs: list[list[int]] = []
        for k in range(-(-len(times) // n)):
            if self.owns(k):
                if runs and runs[-1][-1] == k - 1:
                    runs[-1].append(k)
                else:
                    runs.append([k])
        frames, at = None, None  # the open decoder, the pts of the last frame it gave
        try:
            for run in runs:
                lo = max(0, run[0] * n - self.warmup)
                if frames is not None and index.key_before(times[lo]) > at:
                    frames.close()
                    frames = None
                frames = yield from self._span(
                    times, lo, run[0] * n, min(len(times), (run[-1] + 1) * n), frames
                )
                at = times[min(len(times), (run[-1] + 1) * n) - 1]
        finally:
            if frames is not None:
                frames.close()

    def _span(self, times: list[int], lo: int, first: int, hi: int, frames):
        """Frames `lo`..`first` - 1 as warm-up and `first`..`hi` - 1 as this rank's, from
        `frames` (an open decoder before frame `lo`), else from the keyframe before frame `lo`
        (further back when the seek lands after it). Returns the decoder, still open."""
        t, info, n = self.target, self.target.info, self.segment_frames
        back = Fraction(0)
        while True:
            seek = times[lo] * info.time_base - back
            from_start = lo == 0 or seek <= info.start + (to_fraction(t.start) or 0)
            go_on = frames is not None
            if not go_on:
                frames = read_frames(
                    info,
                    t.start,
                    t.duration,
                    on_error=t.on_decode_error,
                    seek=None if from_start else seek,
                )
            i = lo
            for f in frames:
                self.decoded += 1
                if f.pts < times[lo] and i == lo:
                    continue
                if f.pts != times[i]:
                    break
                if i >= first and (i - first) % n == 0:
                    self._stop_if_failed()
                    self._order.append(i // n)
                yield ("warm" if i < first else "frame"), f
                i += 1
                if i == hi:
                    return frames
            frames.close()
            frames = None
            if i > lo or from_start or go_on:
                at = float(times[min(i, hi - 1)] * info.time_base - info.start)
                raise BttfError(
                    f"{info.path}: the frame at {at:.3f} s is not where its packet said; run it "
                    "in one process (without torchrun)"
                )
            back = max(2 * back, Fraction(self.warmup + 2) / (info.rate or 24))

    def _stop_if_failed(self) -> None:
        """Another rank failed on this film: no use colorizing more of it."""
        why = self.failure()
        if why is not None:
            raise BttfError(f"{self.dst} was given up: {why}")

    def write(self, f: SourceFrame, cb: np.ndarray, cr: np.ndarray) -> None:
        if self._segment is None:
            self._seg = self._order.popleft()
            shift = self.first_pts if self.target.start is not None else 0
            path = self._file(self._seg, partial=True)
            self._segment = SegmentWriter(path, self.target, f, f.pts if self.relative else shift)
        self._segment.write(f, cb, cr)

    def _file(self, k: int, partial: bool = False) -> Path:
        return self.path / f"seg-{k:05d}{'.partial' if partial else ''}{self.target.dst.suffix}"

    def close_segment(self, _k: int) -> None:
        """Make this rank's current segment durable, then list it (its `.json`)."""
        s, self._segment = self._segment, None
        s.writer.finish()
        k, partial, final = self._seg, self._file(self._seg, True), self._file(self._seg)
        fsync_file(partial)
        os.replace(partial, final)
        seg = Segment(
            final.name,
            s.frames,
            s.first_pts,
            s.end_pts,
            final.stat().st_size,
            s.repeated,
            s.dropped,
        )
        write_json(
            self.path / f"seg-{k:05d}.json", asdict(seg) | {"index": k, "run": self.generation}
        )
        self.done[k] = seg
        self.mine.append(seg)

    def end(self) -> None:
        """Nothing to record: each segment's `.json` says it is closed."""

    # --- the join (rank 0) ---------------------------------------------------------------------

    @property
    def segments(self) -> int:
        return len(self.done) if self._ok and self.share.rank == 0 else len(self.mine)

    @property
    def repeated(self) -> int:
        return sum(s.repeated for s in self.mine)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.mine)

    def complete(self) -> None:
        """Rank 0: wait for every rank's segments and join them into OUTPUT; others: done."""
        if self.share.rank != 0:
            self._ok = True
            return
        if not self.film_frames:
            raise BadInputError(f"no frames of {self.target.info.path} fall in the range")
        count = -(-self.film_frames // self.segment_frames)
        self._wait(count)
        self._join([self.done[k] for k in range(count)])
        self._ok = True

    def _wait(self, count: int) -> None:
        """Until every segment's `.json` is there and every rank has checked in; BttfError when
        a rank failed (its note), when a segment's rank is gone without it, or when a rank has
        not come after `wait_s`."""
        fields = set(Segment.__dataclass_fields__)
        since = time.monotonic()
        while True:
            missing = [k for k in range(count) if k not in self.done]
            for k in missing:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    raw = json.loads((self.path / f"seg-{k:05d}.json").read_text())
                    self.done[k] = Segment(**{a: b for a, b in raw.items() if a in fields})
            missing = [k for k in missing if k not in self.done]
            why = self.failure()
            if why is not None:
                raise BttfError(
                    f"{self.dst} was given up: {why} (the closed segments are kept: fix that, "
                    "then run the same command with --resume)"
                )
            absent = self._absent()
            if not missing and not absent:
                return
            if absent and time.monotonic() - since > self.share.wait_s:
                raise self._timeout(absent[0], f"{len(missing)} segments missing")
            if missing:
                k = missing[0]
                r = self.share.owner(k)
                if self._gone(r) and not (self.path / f"seg-{k:05d}.json").exists():
                    raise BttfError(
                        f"rank {r} stopped before finishing segment {k} of "
                        f"{self.dst}; run the same command with --resume to finish it"
                    )
            time.sleep(self.poll_s)

    def _join(self, segs: list[Segment]) -> None:
        t, info = self.target, self.target.info
        shift = self.first_pts if t.start is not None else 0
        t_end = None
        if t.duration is not None:
            t_end = info.start + (to_fraction(t.start) or 0) + to_fraction(t.duration)
        t_from = Fraction(self.first_pts) * info.time_base if t.start is not None else None
        offsets = [s.first_pts - shift for s in segs] if self.relative else None
        tmp = self.path / f"final.partial{t.dst.suffix}"
        try:
            self.notices.extend(
                join_segments(
                    [self.path / s.file for s in segs],
                    tmp,
                    info,
                    audio=t.audio,
                    t_from=t_from,
                    t_end=t_end,
                    shift_pts=shift,
                    offsets=offsets,
                )
            )
            os.replace(tmp, t.dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
