"""One film shared out by segments among the ranks of a torchrun job (RANK, WORLD_SIZE set).

Every rank decodes the film from its start (so each knows the film's frame count and every
segment boundary without seeking), colorizes only the segments `k` with `k % WORLD_SIZE == RANK`
that no earlier run finished, each after the stabilizer's warm-up on the `WARMUP_FRAMES` frames
before it, exactly as a one-process run with the same `segment_frames` does; so the joined film
is frame for frame that run's. The shared work folder (`.OUTPUT.bttf-work/`) holds:

    shared.json           the settings (and their hash) of the job
    seg-00003.mp4         a closed segment (renamed into place once flushed) ...
    seg-00003.json        ... and its facts (frames, pts, run id), written atomically after it
    lock                  every rank holds it shared: a one-process run on OUTPUT is refused
    run-<ID>.lock         the ranks of run ID hold it shared: another run's ranks are refused
                          (ID: TORCHELASTIC_RUN_ID, MASTER_ADDR, MASTER_PORT)
    generation            drawn by rank 0 of a run (the other ranks wait for it): segments of
                          another generation are an interrupted run's (taken only with --resume)
    rank-<GEN>-<r>.lock   rank r holds it while it works: rank 0 sees a rank that died

Rank 0, after its own segments, waits for every segment's `.json`, then joins them (with the
source's audio) into OUTPUT and removes the folder; the other ranks exit when their share is
done. A rank that dies leaves its closed segments: rank 0 says which rank stopped, and the same
command with --resume redoes only the missing segments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bttf.errors import BadInputError, BttfError
from bttf.pipeline.decode import SourceFrame, read_frames, to_fraction
from bttf.pipeline.resume import SegmentWriter
from bttf.pipeline.segments import (
    Segment,
    join_segments,
    keeps_time_base,
    segment_job,
    settings_hash,
    work_dir_for,
)

if TYPE_CHECKING:
    from typing import Self

    from bttf.pipeline.resume import Target

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SETTINGS = "shared.json"


@dataclass(frozen=True)
class Share:
    """This process's place in a torchrun job: `rank` of `world`, GPU `local_rank`, `run_id`."""

    rank: int
    world: int
    local_rank: int
    run_id: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Share | None:
        """From torchrun's variables; None for a single process (WORLD_SIZE unset or 1)."""
        from bttf.pipeline.batch import dist_env

        env = os.environ if env is None else env
        rank, world, local = dist_env(env)
        if world == 1:
            return None
        raw = "-".join(
            env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
        )
        run_id = re.sub(r"[^A-Za-z0-9_.-]", "_", raw.strip("-")) or "local"
        return cls(rank, world, local, run_id)

    def device(self, name: str) -> str:
        """`name`, with `auto` made the GPU LOCAL_RANK when there is one."""
        if name.strip().lower() != "auto":
            return name
        import torch

        if not torch.cuda.is_available():
            return name
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


def _flock(path: Path, mode: int) -> int | None:
    """An fd of `path` holding flock `mode` (non-blocking), or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=1))


class SharedSink:
    """The segments `k % world == rank` of a film in the shared work folder; rank 0 joins.

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
        self.target = target
        self.segment_frames = segment_frames
        self.warmup, self.job = segment_job(job, segment_frames, stabilized)
        self.hash = settings_hash(self.job)
        self.resume = resume
        self.share = share
        self.poll_s = poll_s
        self.path = work_dir_for(target.dst)
        self.notices: list[str] = []
        self.encode_s = 0.0
        self.done: dict[int, Segment] = {}  # closed segments, by index (earlier runs' too)
        self.mine: list[Segment] = []  # those this process closed
        self.film_frames: int | None = None  # known once the source has run to the end
        self.first_pts: int | None = None
        self.relative = True
        self._fds: list[int] = []
        self.generation = ""  # this run's id in the folder (a uuid the first rank draws)
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
        except BaseException:
            self._unlock()
            raise
        return self

    def _lock(self) -> None:
        """Share `lock` with the ranks of this run, refuse another run, learn the generation
        (ranks > 0 wait here until rank 0 has opened the folder)."""
        busy = f"another bttf run is writing {self.target.dst} (it holds {self.path})"
        fd = _flock(self.path / "lock", fcntl.LOCK_SH if fcntl else 0)
        if fd is None:
            raise BadInputError(f"{busy}; wait for it to end or stop it first")
        self._fds.append(fd)
        waited = False
        while True:
            setup = os.open(self.path / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(setup, fcntl.LOCK_EX)  # one rank at a time, for a moment
                if self._join_run(busy):
                    break
            finally:
                os.close(setup)
            if not waited:
                log.info("rank %d: waiting for rank 0 to open %s", self.share.rank, self.path)
                waited = True
            time.sleep(self.poll_s)

    def _check_in(self) -> None:
        """Hold this rank's lock: the last step of opening (rank 0 joins only once every rank
        has it, so none comes to a folder already joined and removed)."""
        name = f"rank-{self.generation}-{self.share.rank}.lock"
        fd = _flock(self.path / name, fcntl.LOCK_EX if fcntl else 0)
        if fd is None:
            raise BadInputError(f"rank {self.share.rank} of this run is already running")
        self._fds.append(fd)

    def _join_run(self, busy: str) -> bool:
        """Drop other runs' locks nobody holds (runs that are gone), refuse a live other run;
        rank 0 starts this run's generation and holds its run lock to the end; a rank > 0 joins
        once rank 0 holds it (False: not yet). Under `setup.lock`."""
        me = self.path / f"run-{self.share.run_id}.lock"
        for other in self.path.glob("run-*.lock"):
            if other == me:
                continue
            fd = _flock(other, fcntl.LOCK_EX if fcntl else 0)
            if fd is None:
                raise BadInputError(f"{busy}, run {other.name[4:-5]}; wait for it or stop it")
            with contextlib.suppress(OSError):
                other.unlink()
            os.close(fd)
        gen = self.path / "generation"
        fd = _flock(me, fcntl.LOCK_EX if fcntl else 0)
        if self.share.rank == 0:
            if fd is None:
                raise BadInputError(
                    f"{busy}: processes of an earlier run with the same torchrun id "
                    f"({self.share.run_id}) are still alive; stop them first"
                )
            _write_text(gen, uuid.uuid4().hex)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            if fd is not None:  # nobody holds it: rank 0 has not come yet
                os.close(fd)
                return False
            fd = _flock(me, fcntl.LOCK_SH if fcntl else 0)
            if fd is None:  # pragma: no cover - its holders share it
                return False
        self._fds.append(fd)
        self.generation = gen.read_text().strip()
        return True

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
            _write_json(p, {"hash": self.hash, "settings": self.job})
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

    def __exit__(self, exc_type, *exc: object) -> None:
        if self._segment is not None:
            with contextlib.suppress(Exception):
                self._segment.writer.close()
            self._segment = None
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

    def _unlock(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    # --- the stream ----------------------------------------------------------------------------

    def owns(self, k: int) -> bool:
        return k % self.share.world == self.share.rank and k not in self.done

    def source(self) -> Iterator[tuple[str, SourceFrame]]:
        """This rank's segments as ("frame", f), each after its warm-up frames as ("warm", f)."""
        t, n = self.target, self.segment_frames
        frames = read_frames(t.info, t.start, t.duration, on_error=t.on_decode_error)
        i = -1
        with contextlib.closing(frames):
            for i, f in enumerate(frames):
                if self.first_pts is None:
                    self.first_pts = f.pts
                k, at = divmod(i, n)
                if self.owns(k):
                    if at == 0:
                        self._order.append(k)
                    yield "frame", f
                elif at >= n - self.warmup and self.owns(k + 1):
                    yield "warm", f
        self.film_frames = i + 1

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
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
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
        _write_json(
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
        """Until every segment's `.json` is there and every rank has opened the folder;
        BttfError when a segment's rank is gone without it."""
        fields = set(Segment.__dataclass_fields__)
        while True:
            missing = [k for k in range(count) if k not in self.done]
            for k in missing:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    raw = json.loads((self.path / f"seg-{k:05d}.json").read_text())
                    self.done[k] = Segment(**{a: b for a, b in raw.items() if a in fields})
            missing = [k for k in missing if k not in self.done]
            rank_locks = (
                self.path / f"rank-{self.generation}-{r}.lock" for r in range(self.share.world)
            )
            if not missing and all(p.exists() for p in rank_locks):
                return
            if not missing:
                time.sleep(self.poll_s)
                continue
            k = missing[0]
            if self._gone(k % self.share.world) and not (self.path / f"seg-{k:05d}.json").exists():
                raise BttfError(
                    f"rank {k % self.share.world} stopped before finishing segment {k} of "
                    f"{self.target.dst}; run the same command with --resume to finish it"
                )
            time.sleep(self.poll_s)

    def _gone(self, rank: int) -> bool:
        """Rank `rank` of this run started and no longer holds its lock."""
        p = self.path / f"rank-{self.generation}-{rank}.lock"
        if not p.exists():
            return False  # not started yet
        fd = _flock(p, fcntl.LOCK_EX if fcntl else 0)
        if fd is None:
            return False
        os.close(fd)
        return True

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
