"""How the ranks of a torchrun job meet in a work folder (`bttf.pipeline.shared` is the rest).

`Share`: this process's place in the job, from torchrun's variables. `RankFolder`: the locks,
the generation rank 0 draws, each rank's check-in, the failure notes, and the waits for a rank
that has not come (at most `Share.wait_s`); see `bttf.pipeline.shared` for the folder's files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bttf.errors import BadInputError, BttfError
from bttf.files import write_atomic
from bttf.pipeline.segments import work_dir_for

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Seconds a rank waits for another that has not come (BTTF_SHARE_TIMEOUT changes it).
DEFAULT_WAIT_S = 600.0


@dataclass(frozen=True)
class Share:
    """This process's place in a torchrun job: `rank` of `world`, GPU `local_rank`, `run_id`;
    `offset`: the place of the film's segment 0 in the run's order (see the module notes);
    `wait_s`: how long to wait for a rank that has not come."""

    rank: int
    world: int
    local_rank: int
    run_id: str
    offset: int = 0
    wait_s: float = DEFAULT_WAIT_S

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
        wait = env.get("BTTF_SHARE_TIMEOUT", str(DEFAULT_WAIT_S))
        try:
            wait_s = float(wait)
        except ValueError:
            wait_s = -1.0
        if not wait_s > 0:
            raise BadInputError(f"BTTF_SHARE_TIMEOUT={wait} must be a number of seconds above 0")
        return cls(rank, world, local, run_id, wait_s=wait_s)

    def owner(self, k: int) -> int:
        """The rank that colorizes segment `k` of the film."""
        return (k + self.offset) % self.world

    def device(self, name: str) -> str:
        """`name`, with `auto` made the GPU LOCAL_RANK when there is one."""
        if name.strip().lower() != "auto":
            return name
        import torch

        if not torch.cuda.is_available():
            return name
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


def flock(path: Path, mode: int) -> int | None:
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1), durable=True)


class RankFolder:
    """The ranks' meeting in one work folder: the locks, the generation, the check-ins and the
    failure notes (see the module notes)."""

    def __init__(self, dst: Path, share: Share, poll_s: float) -> None:
        self.dst = dst
        self.path = work_dir_for(dst)
        self.share = share
        self.poll_s = poll_s
        self.generation = ""  # this run's id in the folder (a uuid rank 0 draws)
        self._fds: list[int] = []

    def _lock(self) -> None:
        """Share `lock` with the ranks of this run, refuse another run, learn the generation
        (ranks > 0 wait here until rank 0 has opened the folder, at most `wait_s`)."""
        busy = f"another bttf run is writing {self.dst} (it holds {self.path})"
        fd = flock(self.path / "lock", fcntl.LOCK_SH if fcntl else 0)
        if fd is None:
            raise BadInputError(f"{busy}; wait for it to end or stop it first")
        self._fds.append(fd)
        since, logged = time.monotonic(), False
        while True:
            setup = os.open(self.path / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(setup, fcntl.LOCK_EX)  # one rank at a time, for a moment
                if self._join_run(busy):
                    break
            finally:
                os.close(setup)
            waited = time.monotonic() - since
            if not logged:
                log.info("rank %d: waiting for rank 0 to open %s", self.share.rank, self.path)
                logged = True
            if waited > self.share.wait_s:
                raise BttfError(
                    f"rank {self.share.rank} waited {waited:.0f} s for rank 0 of run "
                    f"{self.share.run_id} to open {self.path}; start every rank of the run "
                    "(the same MASTER_ADDR/MASTER_PORT), then run the same command with --resume"
                )
            time.sleep(self.poll_s)

    def _join_run(self, busy: str) -> bool:
        """Drop other runs' locks nobody holds (runs that are gone), refuse a live other run;
        rank 0 starts this run's generation and holds its run lock to the end; a rank > 0 joins
        once rank 0 holds it (False: not yet). Under `setup.lock`."""
        me = self.path / f"run-{self.share.run_id}.lock"
        for other in self.path.glob("run-*.lock"):
            if other == me:
                continue
            fd = flock(other, fcntl.LOCK_EX if fcntl else 0)
            if fd is None:
                raise BadInputError(f"{busy}, run {other.name[4:-5]}; wait for it or stop it")
            with contextlib.suppress(OSError):
                other.unlink()
            os.close(fd)
        gen = self.path / "generation"
        fd = flock(me, fcntl.LOCK_EX if fcntl else 0)
        if self.share.rank == 0:
            if fd is None:
                raise BadInputError(
                    f"{busy}: processes of an earlier run with the same torchrun id "
                    f"({self.share.run_id}) are still alive; stop them first"
                )
            for old in self.path.glob("failed-*.txt"):  # earlier runs' (the generation is new)
                with contextlib.suppress(OSError):
                    old.unlink()
            write_atomic(gen, uuid.uuid4().hex, durable=True)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            if fd is not None:  # nobody holds it: rank 0 has not come yet
                os.close(fd)
                return False
            fd = flock(me, fcntl.LOCK_SH if fcntl else 0)
            if fd is None:  # pragma: no cover - its holders share it
                return False
        self._fds.append(fd)
        self.generation = gen.read_text().strip()
        return True

    def _check_in(self) -> None:
        """Hold this rank's lock: the last step of opening (rank 0 joins only once every rank
        has it, so none comes to a folder already joined and removed)."""
        name = f"rank-{self.generation}-{self.share.rank}.lock"
        fd = flock(self.path / name, fcntl.LOCK_EX if fcntl else 0)
        if fd is None:
            raise BadInputError(f"rank {self.share.rank} of this run is already running")
        self._fds.append(fd)

    def _unlock(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _absent(self) -> list[int]:
        """The ranks that have neither checked in nor left a failure note yet."""
        gen = self.generation
        return [
            r
            for r in range(self.share.world)
            if not (self.path / f"rank-{gen}-{r}.lock").exists()
            and not (self.path / f"failed-{gen}-{r}.txt").exists()
        ]

    def _gone(self, rank: int) -> bool:
        """Rank `rank` of this run started and no longer holds its lock."""
        p = self.path / f"rank-{self.generation}-{rank}.lock"
        if not p.exists():
            return False  # not started yet
        fd = flock(p, fcntl.LOCK_EX if fcntl else 0)
        if fd is None:
            return False
        os.close(fd)
        return True

    def _fail(self, reason: str) -> None:
        """Leave this rank's failure note (for rank 0 and the ranks still at work)."""
        if self.generation:
            with contextlib.suppress(OSError):
                name = f"failed-{self.generation}-{self.share.rank}.txt"
                write_atomic(self.path / name, " ".join(reason.split()), durable=True)

    def failure(self) -> str | None:
        """'rank r failed: reason' when a rank of this run left a failure note."""
        for p in sorted(self.path.glob(f"failed-{self.generation}-*.txt")):
            with contextlib.suppress(OSError, ValueError):
                return f"rank {int(p.stem.rsplit('-', 1)[1])} failed: {p.read_text().strip()}"
        return None

    def _await_ranks(self, what: str) -> None:
        """Until every rank has checked in; BttfError after `wait_s` (rank 0 only)."""
        since = time.monotonic()
        while absent := self._absent():
            if time.monotonic() - since > self.share.wait_s:
                raise self._timeout(absent[0], what)
            time.sleep(self.poll_s)

    def _timeout(self, rank: int, what: str) -> BttfError:
        return BttfError(
            f"rank 0 waited {self.share.wait_s:g} s for rank {rank} of run {self.share.run_id} "
            f"to start on {self.dst} ({what}); start every rank of the run, then run the same "
            "command with --resume"
        )


def report_failure(dst: Path, share: Share, reason: str, poll_s: float = 0.2) -> None:
    """Rank `share.rank` failed on the film `dst` before it opened its work folder: check in
    with a failure note, so rank 0 gives the film up instead of waiting for this rank (and rank
    0 waits for the others to come, so none waits for it). Best effort: errors are logged."""
    folder = RankFolder(dst, share, poll_s)
    try:
        folder.path.mkdir(exist_ok=True)
        folder._lock()
        folder._fail(reason)
        folder._check_in()
        if share.rank == 0:
            folder._await_ranks("to hear that rank 0 failed")
    except (OSError, BttfError) as e:
        log.warning("rank %d: could not note the failure on %s (%s)", share.rank, dst, e)
    finally:
        folder._unlock()


def noted(exc: BaseException) -> None:
    """Mark `exc` as left in a work folder's failure note (see `was_noted`)."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.bttf_share_noted = True  # type: ignore[attr-defined]


def was_noted(exc: BaseException) -> bool:
    """Whether a `SharedSink` left `exc` as this rank's failure note (else the caller should
    `report_failure`)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the error, or what it was raised from
        if seen is None:
            return False
        if getattr(seen, "bttf_share_noted", False):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
