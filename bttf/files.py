"""Writing a file so that no reader ever sees half of it: `atomic_output`, `write_atomic`.

Every file bttf writes whole (films, images, weights, checkpoints, run logs, manifests) goes to a
hidden temporary name beside its destination and is renamed over it (`os.replace`: one step on one
file system) only once complete. On an error or an interrupt the temporary file is removed and the
destination is left as it was. The file gets the mode any file the user writes gets (0o666 less
the umask), whatever the writer chose (safetensors makes its files 0o600). `durable` also flushes
the file and its folder to disk before and after the rename, for records another process relies
on after a crash (resume manifests, the ranks' shared state).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(dst: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dst` (same suffix, so muxers and savers pick the same
    format); when the block ends without an error it is renamed over `dst`."""
    d = Path(dst)
    tmp = d.with_name(f".{d.stem}.partial-{secrets.token_hex(4)}{d.suffix}")
    try:
        yield tmp
        usual_mode(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, d)
        if durable:
            fsync_dir(d.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes, *, durable: bool = False) -> None:
    """`data` (text as UTF-8, or bytes) into `path` through `atomic_output`."""
    with atomic_output(path, durable=durable) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def usual_mode(path: str | os.PathLike) -> None:
    """Give `path` the mode a newly created file gets: 0o666 less the process's umask."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the platform allows."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
