"""Batch jobs: colorize every film in a folder, past the ones that fail, into another folder.

    result = colorize_folder("reels/", "reels_color/", ColorizeConfig())
    for item in result.items: print(item.src.name, item.status, item.reason)

Films are found by suffix (`VIDEO_SUFFIXES`, not in subfolders, hidden files left out) and
taken in name order. Each goes to OUTDIR/<stem>.mp4 (two films with the same stem keep their
whole name: `a.mov.mp4`, `a.mkv.mp4`). A film whose output exists is skipped unless
`config.overwrite`; one that fails is reported with its one-line reason and the batch goes on.

Several processes share a library when started by torchrun (or with RANK and WORLD_SIZE set
by hand): process r of N takes films r, r + N, r + 2N … of the sorted list, so they never write
the same file; with `device="auto"` each uses GPU LOCAL_RANK.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bttf.errors import BadInputError, BttfError
from bttf.pipeline.media import VIDEO_SUFFIXES, is_video_path

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Items r, r + N, r + 2N … for process `rank` of `world` (N): a disjoint, balanced share."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(items[rank::world])


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
        rank, world, local_rank: this process's share (see `shard`); default from the
            environment (`dist_env`).
        on_start(i, n, src): before the i-th (1-based) of this process's n films.
        on_done(item): after each film.
        progress_for(src): a `progress(done, total)` callback for that film, or None.

    Raises:
        BadInputError: `src_dir` is not a folder or holds no film; `out_dir` is `src_dir` or
            cannot be made. Failures of single films are in the result, not raised.
    """
    from bttf.pipeline.engine import ColorizeConfig, colorize_video
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
    mine = shard(films, rank, world)
    if world > 1 and config.device.strip().lower() == "auto":
        import torch

        if torch.cuda.is_available():
            config = dataclasses.replace(
                config, device=f"cuda:{local_rank % torch.cuda.device_count()}"
            )
    items = []
    for i, src in enumerate(mine, 1):
        dst = names[src]
        if on_start is not None:
            on_start(i, len(mine), src)
        t0 = time.perf_counter()
        if dst.exists() and not config.overwrite:
            item = BatchItem(src, dst, SKIPPED, "output exists (--overwrite replaces it)")
        else:
            try:
                progress = progress_for(src) if progress_for is not None else None
                stats = colorize_video(src, dst, film_config(config, src), progress)
                item = BatchItem(
                    src,
                    dst,
                    DONE,
                    frames=stats.frames,
                    seconds=time.perf_counter() - t0,
                    notices=stats.notices,
                )
            except BttfError as e:
                item = BatchItem(src, dst, FAILED, str(e), seconds=time.perf_counter() - t0)
            except Exception as e:  # one film must not stop the library
                log.debug("%s failed", src, exc_info=True)
                item = BatchItem(
                    src, dst, FAILED, f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0
                )
        if item.status == FAILED:
            log.info("%s failed: %s", src, item.reason)
        items.append(item)
        if on_done is not None:
            on_done(item)
    return BatchResult(tuple(items), rank=rank, world=world, total=len(films))
