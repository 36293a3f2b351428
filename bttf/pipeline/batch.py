"""Batch jobs: colorize every film in a folder, past the ones that fail, into another folder.

    result = colorize_folder("reels/", "reels_color/", ColorizeConfig())
    for item in result.items: print(item.src.name, item.status, item.reason)

Films are found by suffix (`VIDEO_SUFFIXES`, not in subfolders, hidden files left out) and
taken in name order. Each goes to OUTDIR/<stem>.mp4 (two films with the same stem keep their
whole name: `a.mov.mp4`, `a.mkv.mp4`). A film whose output exists is skipped unless
`config.overwrite`; one that fails is reported with its one-line reason and the batch goes on.

Several processes share a library when started by torchrun (or with RANK and WORLD_SIZE set
by hand): they share out the segments of all the films (`bttf.pipeline.shared`), not whole films,
so one long film does not keep one process busy while the others wait. Every process probes every
film itself and plans alike (`plan_segments`): a film that cannot be probed fails on all of them;
the others go in name order, film f's segment k to rank (k + the segments of the films before f)
% N, and rank 0 joins each film once its segments are done. A process that fails on a film leaves
a note in its work folder, so rank 0 gives that film up (failed, with the reason) and goes on.
With `device="auto"` each uses GPU LOCAL_RANK.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bttf.errors import BadInputError, BttfError
from bttf.pipeline.media import VIDEO_SUFFIXES, is_video_path

log = logging.getLogger(__name__)


DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class BatchItem:
    """What happened to one film: `status` is "done", "skipped" or "failed"."""

    src: Path
    dst: Path
    status: str
    reason: str = ""  # why it was skipped or failed (one line)
    frames: int = 0
    seconds: float = 0.0
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    """The films this process was given (its shard) and what became of each."""

    items: tuple[BatchItem, ...]
    rank: int = 0
    world: int = 1
    total: int = 0  # films in the folder, all shards together
    shared: bool = False  # the processes shared the films' segments: rank 0 joins and reports

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def ok(self) -> bool:
        """No film failed."""
        return self.count(FAILED) == 0


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """The films directly in `folder`, by suffix, sorted by name; hidden files left out."""
    d = Path(folder)
    if not d.is_dir():
        raise BadInputError(f"{d} is not a folder")
    return sorted(
        (p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and is_video_path(p)),
        key=lambda p: p.name,
    )


def dist_env(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) without them."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise BadInputError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise BadInputError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world, local


def output_names(films: Sequence[Path], out_dir: Path, suffix: str = ".mp4") -> dict[Path, Path]:
    """OUTDIR/<stem><suffix> for each film; films sharing a stem keep their whole name."""
    stems: dict[str, int] = {}
    for f in films:
        stems[f.stem.lower()] = stems.get(f.stem.lower(), 0) + 1
    return {
        f: out_dir / f"{f.stem if stems[f.stem.lower()] == 1 else f.name}{suffix}" for f in films
    }


def film_config(config, src: Path):
    """`config` for the film `src` of a folder: its keyframes are `config.keyframes`/<stem>/
    (none when that folder is missing)."""
    if config.keyframes is None:
        return config
    folder = Path(config.keyframes) / src.stem
    return dataclasses.replace(config, keyframes=folder if folder.is_dir() else None)


def colorize_folder(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config=None,
    *,
    rank: int | None = None,
    world: int | None = None,
    local_rank: int | None = None,
    on_start: Callable[[int, int, Path], None] | None = None,
    on_done: Callable[[BatchItem], None] | None = None,
    progress_for: Callable[[Path], Callable[[int, int | None], None] | None] | None = None,
) -> BatchResult:
    """Colorize the films of `src_dir` into `out_dir` (created if missing) with `config`.

    Args:
        rank, world, local_rank: this process's place among `world` processes sharing the
            films' segments (module notes); default from the environment (`dist_env`).
        on_start(i, n, src): before the i-th (1-based) of the n films.
        on_done(item): after each film.
        progress_for(src): a `progress(done, total)` callback for that film, or None.

    Raises:
        BadInputError: `src_dir` is not a folder or holds no film; `out_dir` is `src_dir` or
            cannot be made. Failures of single films are in the result, not raised.
    """
    from bttf.pipeline.engine import ColorizeConfig
    from bttf.pipeline.media import check_writable

    config = config or ColorizeConfig()
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    films = find_videos(src_dir)
    if not films:
        raise BadInputError(
            f"{src_dir} holds no film (looked for {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    if out_dir.exists() and out_dir.resolve() == src_dir.resolve():
        raise BadInputError(f"OUTDIR {out_dir} is the input folder; choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"OUTDIR {out_dir} is a file; give a folder")
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise BadInputError(f"cannot make the folder {out_dir} ({e.strerror})") from e
    check_writable(out_dir)
    env_rank, env_world, env_local = dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world is None else world
    local_rank = env_local if local_rank is None else local_rank
    names = output_names(films, out_dir)
    run = (on_start, on_done, progress_for)
    if world > 1:
        from bttf.pipeline.shared import Share

        share = Share.from_env() or Share(rank, world, local_rank, "local")
        share = dataclasses.replace(share, rank=rank, world=world, local_rank=local_rank)
        items = _shared_films(films, names, config, share, *run)
        return BatchResult(tuple(items), rank=rank, world=world, total=len(films), shared=True)
    items = []
    for i, src in enumerate(films, 1):
        if on_start is not None:
            on_start(i, len(films), src)
        if names[src].exists() and not config.overwrite:
            item = BatchItem(src, names[src], SKIPPED, "output exists (--overwrite replaces it)")
        else:
            item = _colorize_one(src, names[src], config, progress_for)
        _finish(item, items, on_done)
    return BatchResult(tuple(items), rank=rank, world=world, total=len(films))


def _finish(item: BatchItem, items: list[BatchItem], on_done) -> None:
    if item.status == FAILED:
        log.info("%s failed: %s", item.src, item.reason)
    items.append(item)
    if on_done is not None:
        on_done(item)


def _colorize_one(src: Path, dst: Path, config, progress_for, share=None) -> BatchItem:
    """One film of the folder (this rank's segments of it under `share`); a failure is the
    item's reason, and under `share` a note in its work folder for the other ranks."""
    from bttf.pipeline.engine import colorize_video

    t0 = time.perf_counter()
    try:
        progress = progress_for(src) if progress_for is not None else None
        stats = colorize_video(src, dst, film_config(config, src), progress, share=share)
    except Exception as e:  # one film must not stop the library
        reason = str(e) if isinstance(e, BttfError) else f"{type(e).__name__}: {e}"
        if not isinstance(e, BttfError):
            log.debug("%s failed", src, exc_info=True)
        if share is not None:
            from bttf.pipeline.ranks import report_failure, was_noted

            if not was_noted(e):
                report_failure(dst, share, reason)
        return BatchItem(src, dst, FAILED, reason, seconds=time.perf_counter() - t0)
    note = ""
    if share is not None:
        own = f"{stats.segments} segment{'s' if stats.segments != 1 else ''}"
        note = f"joined {own} of all ranks" if share.rank == 0 else f"{own} here; rank 0 joins"
    return BatchItem(
        src,
        dst,
        DONE,
        note,
        frames=stats.frames,
        seconds=time.perf_counter() - t0,
        notices=stats.notices,
    )


def plan_segments(
    films: Sequence[Path], names: dict[Path, Path], config, world: int
) -> tuple[dict[Path, int], dict[Path, str]]:
    """The same plan on every rank: ({film: the `Share.offset` of its segment 0}, {film that
    cannot be probed: why}); films whose output exists (without `overwrite`) are in neither.
    Offsets count segments by the container's frame count (the same on every rank; exactness
    only balances the ranks better)."""
    from bttf.pipeline.decode import probe_video
    from bttf.pipeline.segments import DEFAULT_SEGMENT_FRAMES

    n = config.segment_frames or DEFAULT_SEGMENT_FRAMES
    offsets: dict[Path, int] = {}
    failed: dict[Path, str] = {}
    at = 0
    for src in films:
        if names[src].exists() and not config.overwrite:
            continue
        try:
            info = probe_video(src)
        except Exception as e:  # the film fails on every rank alike; the others go on
            log.debug("%s cannot be probed", src, exc_info=True)
            failed[src] = str(e) if isinstance(e, BttfError) else f"{type(e).__name__}: {e}"
            continue
        offsets[src] = at % world
        at += max(1, -(-(info.frames or 1) // n))
    return offsets, failed


def _shared_films(films, names, config, share, on_start, on_done, progress_for) -> list[BatchItem]:
    """Every film of the folder, this rank's segments of each (see the module notes)."""
    offsets, failed = plan_segments(films, names, config, share.world)
    items: list[BatchItem] = []
    for i, src in enumerate(films, 1):
        if on_start is not None:
            on_start(i, len(films), src)
        if src in failed:
            item = BatchItem(src, names[src], FAILED, failed[src])
        elif src not in offsets:
            item = BatchItem(src, names[src], SKIPPED, "output exists (--overwrite replaces it)")
        else:
            film_share = dataclasses.replace(share, offset=offsets[src])
            item = _colorize_one(src, names[src], config, progress_for, film_share)
        _finish(item, items, on_done)
    return items
