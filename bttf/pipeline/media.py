"""Helpers shared by the pipeline stages: opening inputs, the output file's life cycle, and the
background threads that run decoding and encoding beside the model.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import av
import numpy as np

from bttf.errors import BadInputError, BttfError, OutputExistsError

log = logging.getLogger(__name__)

T = TypeVar("T")

# The one set of media suffixes (lower case): `colorize`, `compare`, `gif`, folder batches, cut
# detection on frame folders and `bttf prepare` all take a file by these.

#: Suffixes read and written as still images (everything else is treated as a film). Not .pgm:
#: it holds gray only, so a colorized image cannot be written back into it.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm"})

#: Suffixes taken as films when a folder is searched (a file named directly may have any other).
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".m2v",
        ".ts",
        ".m2ts",
        ".mts",
        ".vob",
        ".wmv",
        ".asf",
        ".flv",
        ".ogv",
        ".3gp",
        ".mxf",
        ".dv",
        ".y4m",
        ".nut",
    }
)


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether `path` names a still image by its suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether `path` names a film by its suffix (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_image(path: str | os.PathLike, flags: int | None = None) -> np.ndarray:
    """Decode the image file `path` with OpenCV: the one place bttf reads a still or a frame.

    `flags` are cv2.IMREAD_* flags; the default, IMREAD_ANYDEPTH | IMREAD_ANYCOLOR, keeps the
    file as it is: (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, in uint8, uint16 or float32.
    Any path works (the bytes are read by numpy, so non-ASCII names too). Raises BadInputError
    (one line) for a file OpenCV cannot decode and for pixels other than 8/16-bit or float.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise BadInputError(f"cannot read {path} ({e.strerror or e})") from e
    return decode_image(data, path, flags)


def decode_image(
    data: bytes | np.ndarray, name: str | os.PathLike, flags: int | None = None
) -> np.ndarray:
    """`read_image` for a file's bytes already in memory (`name` is for the error message)."""
    import cv2

    if flags is None:
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise BadInputError(f"{name} is not an image OpenCV can read; check the file")
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise BadInputError(f"{name} has {img.dtype} pixels; convert it to 8 or 16 bit")
    return img


def read_gray_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A still image as gray levels on the 0..255 scale (float32 (H, W)) and its bit depth
    (8, or 16 for 16-bit and float files; a float file's [0, 1] is clipped)."""
    import cv2

    img = read_image(path)
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.dtype == np.uint8:
        return img.astype(np.float32), 8
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 257.0, 16
    return np.clip(img.astype(np.float32), 0, 1) * 255.0, 16


def read_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """An image as float32 RGB (H, W, 3) in [0, 1]: gray files give R = G = B, alpha is dropped."""
    import cv2

    img = read_image(path)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype, 1.0)
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.clip(img, 0.0, 1.0)


def check_input(path: str | os.PathLike) -> Path:
    """The input as a Path; BadInputError when it does not exist or is not a file."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p} does not exist; check the path of INPUT")
    if not p.is_file():
        raise BadInputError(f"{p} is not a file; give a video or image file as INPUT")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise BadInputError(f"cannot read {p} ({e.strerror})") from e
    if size == 0:
        raise BadInputError(f"{p} is empty (0 bytes); is the copy or download complete?")
    return p


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a media file with PyAV, turning its errors into one-line BadInputErrors."""
    p = check_input(path)
    try:
        # A damaged tag is no reason to refuse the film: undecodable bytes become U+FFFD.
        return av.open(str(p), mode="r", metadata_errors="replace")
    except av.error.EOFError as e:
        raise BadInputError(f"{p} ends before its first frame; is the file complete?") from e
    except av.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        if _unfinished_mp4(p):  # an MP4/MOV being written has no index (moov) until the end
            raise BadInputError(
                f"{p} cannot be read yet ({reason}) and changed in the last minute: is it still "
                "being written? Run again once it is complete"
            ) from e
        raise BadInputError(f"{p} is not a video or image PyAV can read ({reason})") from e


def _unfinished_mp4(p: Path, seconds: float = 60.0) -> bool:
    """An MP4/MOV (its first box is ftyp, free, wide or mdat) changed in the last `seconds`."""
    try:
        with open(p, "rb") as f:
            head = f.read(8)
        recent = time.time() - p.stat().st_mtime < seconds
    except OSError:
        return False
    return recent and head[4:8] in (b"ftyp", b"free", b"wide", b"mdat")


def check_output(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool) -> Path:
    """Validate OUTPUT before any work: not INPUT itself, not existing unless `overwrite`."""
    s, d = Path(src), Path(dst)
    if d.resolve() == s.resolve() or (d.exists() and s.exists() and os.path.samefile(s, d)):
        raise BadInputError(f"OUTPUT {d} is INPUT itself; choose another output path with -o")
    if d.is_dir():
        raise BadInputError(f"OUTPUT {d} is a folder; give a file name such as {d / 'out.mp4'}")
    if d.exists() and not overwrite:
        raise OutputExistsError(f"{d} already exists; pass --overwrite to replace it")
    if not d.parent.is_dir():
        if any(p.exists() and not p.is_dir() for p in d.parents):
            raise BadInputError(f"cannot write {d}: a part of its folder is a file, not a folder")
        raise BadInputError(f"the folder {d.parent} does not exist; create it first")
    if not d.suffix:
        raise BadInputError(
            f"OUTPUT {d} has no suffix; add one (.mp4, .mkv, .png …) to pick a format"
        )
    check_writable(d.parent)
    return d


def check_writable(folder: Path) -> None:
    """BadInputError unless a file can be created in `folder` (tried, then removed)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".bttf-probe-", dir=folder)
    except OSError as e:
        raise BadInputError(
            f"cannot write in {folder} ({e.strerror}); choose another output folder"
        ) from e
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


#: errno values that mean the disk (or the quota) is full.
_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextlib.contextmanager
def output_errors(dst: Path) -> Iterator[None]:
    """Turn the OSErrors of writing `dst` into one-line BttfErrors that say what to do.

    A full disk is a BttfError (exit 1); a folder that became unwritable a BadInputError.
    """
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            raise BttfError(
                f"the disk is full: cannot write {dst} ({e.strerror}); free some "
                "space and run again"
            ) from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BadInputError(
                f"cannot write {dst} ({e.strerror}); choose another output folder"
            ) from e
        if isinstance(e, av.FFmpegError):
            raise _refused(dst, e) from e
        raise
    except av.FFmpegError as e:
        raise _refused(dst, e) from e


def _refused(dst: Path, e: av.FFmpegError) -> BadInputError:
    # What reaches here is data of the input the muxer will not take (damaged timestamps).
    return BadInputError(
        f"cannot write {dst}: the muxer refused data from the input ({e}); "
        "the input is probably damaged (try --no-audio)"
    )


# ---------------------------------------------------------------------------------------------
# Background stages. The main thread runs the model; decoding and encoding run beside it in
# daemon threads joined by bounded queues, so memory does not grow with the film's length.

_END = object()
_POLL_S = 0.1


class Producer(Generic[T]):
    """Run an iterable in a daemon thread; iterate the Producer to receive its items.

    The queue is bounded, so the thread stays at most `maxsize` items ahead. An exception in
    the thread is re-raised on the consuming thread; `close()` (also on `with` exit) stops the
    thread and joins it. `busy_s` is the time the thread spent producing items.
    """

    def __init__(self, source: Iterable[T], *, maxsize: int = 8, name: str = "producer"):
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"bttf-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            it = iter(self._source)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.busy_s += time.perf_counter() - t0
                if not self._put(item):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consuming thread
            self._error = e
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._put(_END)

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    break
                continue
            if item is _END:
                break
            yield item
        self._thread.join()
        if self._error is not None:
            raise self._error

    def is_alive(self) -> bool:
        """True while the producing thread runs (False once the source is done or `close()`d)."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)

    def __enter__(self) -> Producer[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(Generic[T]):
    """Feed items to `handle` in a daemon thread through a bounded queue.

    `put()` blocks while the queue is full and re-raises the thread's exception as soon as it
    fails. `finish()` waits for every item to be handled (then runs `on_finish` in the thread);
    `abort()` drops what is queued and joins. `busy_s` is the time spent in `handle`.
    """

    def __init__(
        self,
        handle: Callable[[T], None],
        *,
        on_finish: Callable[[], None] | None = None,
        maxsize: int = 8,
        name: str = "consumer",
    ):
        self._handle = handle
        self._on_finish = on_finish
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"bttf-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                try:
                    item = self._queue.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                t0 = time.perf_counter()
                if item is _END:
                    if self._on_finish is not None:
                        self._on_finish()
                    self.busy_s += time.perf_counter() - t0
                    return
                self._handle(item)
                self.busy_s += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - handed to the producing thread
            self._error = e

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        while True:
            self._raise_if_failed()
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} stopped unexpectedly")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.put(_END)  # type: ignore[arg-type]
        self._thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        self._abort.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)
