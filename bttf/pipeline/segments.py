"""Resumable runs: a film is colorized in closed segments kept in a work folder beside OUTPUT.

    .OUTPUT.bttf-work/
        manifest.json        the settings (and their hash) and the complete segments
        seg-00000.mp4 ...    video only, encoded as the final file will be (same container)
        seg-00003.partial.mp4   the segment being written; renamed when closed
        lock                 held (flock) by the run working in the folder

A segment is renamed into place only once it is flushed to disk, and the manifest is replaced
atomically after that, so whatever stops a run (Ctrl-C, SIGTERM, a crash, a kill, a power cut),
every segment the manifest lists is complete, and `--resume` continues after the last one.
At the end the segments are joined packet for packet — no re-encode: each segment starts with a
keyframe and already carries the output's timestamps — with the source's audio muxed in, into a
temporary file in the work folder that is then renamed to OUTPUT; the folder is removed.

Why a resumed film is frame for frame the uninterrupted one (same settings): both runs cut the
film at the same frames; model batches never straddle a segment boundary; and the temporal
stabilizer, which carries state from frame to frame, is reset at every segment start and warmed
up again on the `WARMUP_FRAMES` frames before it (their output is discarded). Warming up keeps
boundaries invisible in practice — the stabilizer forgets its past at 0.8 a frame, so after 16
frames what came before weighs under 3 % — while the reset makes both runs enter each segment
in the same state. What a resume must match is in the settings hash: the input (size and a
digest of its first and last MiB), the model's weights (a digest of every tensor), and every
option that changes pixels or timing. Device and threads are left out on purpose (a run
started on one GPU may finish on another): results then agree to float rounding, not bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from bttf.errors import BadInputError, BttfError
from bttf.files import fsync_dir, fsync_file, write_atomic
from bttf.pipeline.decode import VideoInfo

log = logging.getLogger(__name__)

try:  # POSIX; elsewhere runs are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: Frames a segment holds unless --segment-frames says otherwise (83 s at 24 fps).
DEFAULT_SEGMENT_FRAMES = 2000
#: Frames before a segment that re-warm the stabilizer (see the module notes).
WARMUP_FRAMES = 16
MANIFEST = "manifest.json"
_FORMAT = 1
_DIGEST_BYTES = 1 << 20


def segment_job(
    job: dict[str, Any], segment_frames: int, stabilized: bool
) -> tuple[int, dict[str, Any]]:
    """A segmented run's warm-up (frames before each segment the stabilizer sees again) and its
    settings, the segmentation included (they go into the settings hash)."""
    warmup = min(WARMUP_FRAMES, segment_frames) if stabilized else 0
    return warmup, {**job, "segment_frames": segment_frames, "warmup": warmup}


def work_dir_for(dst: str | os.PathLike) -> Path:
    """The work folder of OUTPUT `dst`: `.NAME.bttf-work` beside it."""
    d = Path(dst)
    return d.with_name(f".{d.name}.bttf-work")


def input_fingerprint(path: Path) -> dict[str, Any]:
    """Size and a digest of the first and last MiB: a copy matches, an edited file does not."""
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(_DIGEST_BYTES))
        if size > _DIGEST_BYTES:
            f.seek(max(_DIGEST_BYTES, size - _DIGEST_BYTES))
            h.update(f.read(_DIGEST_BYTES))
    return {"size": size, "digest": h.hexdigest()}


def model_digest(module: Any) -> str:
    """A digest of every tensor of a torch module's state dict (names, shapes, dtypes, bytes)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def keeps_time_base(
    path: Path, probe: Callable[[av.container.OutputContainer], av.video.VideoStream]
) -> bool:
    """Whether the container `path`'s suffix names keeps the time base `probe` gives its stream.

    It decides how segments carry time. MP4/MOV keep it, but store a first timestamp that is
    not 0 as an edit list in milliseconds, which rounds: there segments start at 0 and get
    their exact offset back when joined. Matroska rounds every timestamp to milliseconds: there
    segments carry the output's own timestamps, rounded exactly as the final file would be.
    """
    try:
        with av.open(str(path), "w") as out:
            stream = probe(out)
            wanted = stream.time_base
            out.start_encoding()
            return stream.time_base == wanted
    except (av.FFmpegError, ValueError):
        return True  # the container or encoder refuses: the segment writer says why, better
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Segment:
    """One closed segment: `frames` frames from source pts `first_pts` up to `end_pts`."""

    file: str
    frames: int
    first_pts: int
    end_pts: int  # the next frame's source pts (the last frame's pts + duration)
    size: int
    repeated: int = 0  # damaged frames shown as the previous good one
    dropped: int = 0  # damaged frames left out


class WorkDir:
    """The work folder of one OUTPUT: its lock, manifest and segments (see the module notes).

    Use `WorkDir.open(...)`; then `commit()` each closed segment, `finish()` after the last,
    and `remove()` once OUTPUT is in place (or `release()` to keep it for --resume).
    """

    def __init__(self, path: Path, dst: Path, suffix: str, settings: dict[str, Any]):
        self.path = path
        self.dst = dst
        self.suffix = suffix
        self.settings = settings
        self.hash = settings_hash(settings)
        self.segments: list[Segment] = []
        self.finished = False
        self.first_pts: int | None = None  # source pts of the first frame of the window
        self.shift_pts: int = 0  # output pts = source pts - shift_pts
        # Segments start at timestamp 0 and get their offset back when joined (True), or carry
        # the output's timestamps (False); see `keeps_time_base`.
        self.relative = True
        self._lock: int | None = None

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dst: Path,
        settings: dict[str, Any],
        resume: bool,
        probe: Callable[[av.container.OutputContainer], av.video.VideoStream],
    ) -> WorkDir:
        """Lock and read the work folder of `dst`, or start an empty one.

        `probe(container)` adds the video stream a segment will have to an open container; it
        is used once, to learn whether the container keeps the stream's time base (see
        `keeps_time_base`).

        Raises:
            BadInputError: the folder holds work of an interrupted run and `resume` is false;
                or its settings differ from `settings`; or another run holds its lock.
        """
        work = cls(work_dir_for(dst), dst, dst.suffix, settings)
        existed = work.path.is_dir()
        work.path.mkdir(exist_ok=True)
        try:
            work._acquire()
            if (work.path / "shared.json").exists():  # bttf.pipeline.shared's, not ours to clean
                raise BadInputError(
                    f"{work.path} holds the segments of a run under torchrun; rerun it the same "
                    "way with --resume, or delete that folder to start over"
                )
            manifest = work._read_manifest() if existed else None
            if manifest is not None and manifest.get("segments"):
                if not resume:
                    frames = sum(s["frames"] for s in manifest["segments"])
                    raise BadInputError(
                        f"{work.path} holds {frames} colorized frames of an interrupted run; "
                        "add --resume to continue it, or delete that folder to start over"
                    )
                work._adopt(manifest)
            elif resume:
                log.info("nothing to resume in %s; starting from the beginning", work.path)
            if not work.segments:
                work.relative = keeps_time_base(work.path / f"probe{work.suffix}", probe)
            work._clean()
            if not work.segments:
                work._write_manifest()
        except BaseException:
            work._unlock()  # what is there stays: it is refused, not ours to delete
            if not existed:
                shutil.rmtree(work.path, ignore_errors=True)
            raise
        return work

    def _acquire(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BadInputError(
                f"another bttf run is writing {self.dst} (it holds {self.path}); wait for it to "
                "end or stop it first"
            ) from None
        self._lock = fd

    def _read_manifest(self) -> dict[str, Any] | None:
        p = self.path / MANIFEST
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise BadInputError(f"{p} is unreadable ({e}); delete {self.path} to start over") from e
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise BadInputError(
                f"{p} is not a bttf work manifest; delete {self.path} to start over"
            )
        return data

    def _adopt(self, m: dict[str, Any]) -> None:
        if m.get("hash") != self.hash:
            old = m.get("settings") or {}
            diffs = [
                f"{k} {old.get(k)!r} -> {self.settings.get(k)!r}"
                for k in sorted(set(old) | set(self.settings))
                if old.get(k) != self.settings.get(k)
            ]
            shown = "; ".join(diffs[:4]) + (" …" if len(diffs) > 4 else "")
            raise BadInputError(
                f"{self.path} was started with other settings ({shown or 'another version'}); "
                "run with the same options and input to resume, or delete that folder to "
                "start over"
            )
        fields = set(Segment.__dataclass_fields__)
        for raw in m["segments"]:
            seg = Segment(**{k: v for k, v in raw.items() if k in fields})
            p = self.path / seg.file
            if not p.is_file() or p.stat().st_size != seg.size:
                log.warning("%s is missing or incomplete; resuming before it", p)
                break
            self.segments.append(seg)
        self.first_pts = m.get("first_pts")
        self.shift_pts = int(m.get("shift_pts", 0))
        self.relative = bool(m.get("relative", True))
        self.finished = bool(m.get("finished")) and len(self.segments) == len(m["segments"])

    def _clean(self) -> None:
        """Remove what is not a listed segment (partial files of a run that was killed)."""
        keep = {MANIFEST, "lock"} | {s.file for s in self.segments}
        for p in self.path.iterdir():
            if p.name not in keep:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()

    # --- state --------------------------------------------------------------------------------

    @property
    def frames_done(self) -> int:
        return sum(s.frames for s in self.segments)

    @property
    def resume_pts(self) -> int | None:
        """Source pts of the first frame still to do (None: start at the beginning)."""
        return self.segments[-1].end_pts if self.segments else None

    def segment_path(self, k: int, partial: bool = False) -> Path:
        return self.path / f"seg-{k:05d}{'.partial' if partial else ''}{self.suffix}"

    def final_path(self) -> Path:
        return self.path / f"final.partial{self.suffix}"

    def commit(
        self, k: int, frames: int, first_pts: int, end_pts: int, repeated: int = 0, dropped: int = 0
    ) -> Segment:
        """Make segment `k` (written at `segment_path(k, partial=True)`) durable and listed."""
        if k != len(self.segments):
            raise BttfError(f"segment {k} closed out of order (have {len(self.segments)})")
        partial, final = self.segment_path(k, partial=True), self.segment_path(k)
        fsync_file(partial)
        os.replace(partial, final)
        fsync_dir(self.path)
        seg = Segment(
            final.name, frames, first_pts, end_pts, final.stat().st_size, repeated, dropped
        )
        self.segments.append(seg)
        self._write_manifest()
        return seg

    def finish(self) -> None:
        """Record that the last segment is closed: a resume only has to join them."""
        self.finished = True
        self._write_manifest()

    def _write_manifest(self) -> None:
        data = {
            "format": _FORMAT,
            "output": self.dst.name,
            "hash": self.hash,
            "settings": self.settings,
            "first_pts": self.first_pts,
            "shift_pts": self.shift_pts,
            "relative": self.relative,
            "finished": self.finished,
            "segments": [asdict(s) for s in self.segments],
        }
        write_atomic(self.path / MANIFEST, json.dumps(data, indent=1), durable=True)

    # --- closing ------------------------------------------------------------------------------

    def release(self) -> None:
        """Unlock; keep the folder if it holds a segment, else remove it."""
        if not self.segments:
            self.remove()
            return
        with contextlib.suppress(OSError):
            self._clean()
        self._unlock()

    def remove(self) -> None:
        """Delete the folder (the job is done, or there was nothing to keep)."""
        self._unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def _unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None


def decode_timestamps(pts: list[int]) -> list[int]:
    """Decode timestamps for packets in decode order that have only presentation ones (what
    Matroska gives back): each packet gets the pts `d` places earlier in presentation order,
    with the smallest reorder depth `d` that keeps every dts <= its pts; the first `d` count
    down from the first pts one tick at a time."""
    order = sorted(pts)
    n = len(pts)
    for d in range(n + 1):
        if all(order[i - d] <= pts[i] for i in range(d, n)):
            break
    return [order[0] - (d - i) if i < d else order[i - d] for i in range(n)]


def _missing_dts(path: Path) -> list[int] | None:
    """`decode_timestamps` for a segment whose container did not keep them, else None."""
    with av.open(str(path)) as seg:
        stamps = [(p.pts, p.dts) for p in seg.demux(seg.streams.video[0]) if p.size]
    if all(d is not None for _, d in stamps) or any(p is None for p, _ in stamps):
        return None
    return decode_timestamps([p for p, _ in stamps])


def join_segments(
    paths: list[Path],
    dst: Path,
    info: VideoInfo,
    *,
    audio: bool,
    t_from: Fraction | None,
    t_end: Fraction | None,
    shift_pts: int,
    offsets: list[int] | None = None,
) -> list[str]:
    """Join the segment files into `dst` packet for packet, muxing the source's audio in.

    `offsets`: for segments that start at timestamp 0, each one's output start (in the
    source's time base, which their container kept); None when they carry output timestamps.
    A decode timestamp that would not increase across a boundary (an encoder's start-up delay)
    is moved just past the previous one. Audio is chosen and shifted as `VideoWriter` does
    (`t_from`, `t_end`: source seconds; `shift_pts`: in the video's time base). Returns the
    audio notices.
    """
    from bttf.pipeline.encode import open_output
    from bttf.pipeline.streams import StreamRemux, copy_metadata

    notices: list[str] = []
    out = open_output(dst)
    remux = None
    try:
        with av.open(str(paths[0])) as first:
            template = first.streams.video[0]
            vs = out.add_stream_from_template(template)
            vs.time_base = template.time_base
            vs.codec_context.framerate = info.rate or 24  # the template does not carry it
            extradata = template.codec_context.extradata
            copy_metadata(first.metadata, out.metadata)
            copy_metadata(template.metadata, vs.metadata)
        if info.display_matrix is not None:
            vs.set_display_matrix(info.display_matrix)
        remux = StreamRemux(info.path, out, audio=audio)  # and subtitles, attachments, chapters
        notices.extend(remux.notices)
        remux.start(t_from, t_end, shift_pts * info.time_base)
        last_dts: Fraction | None = None
        for k, path in enumerate(paths):
            with av.open(str(path)) as seg:
                s = seg.streams.video[0]
                if s.codec_context.extradata != extradata:
                    raise BttfError(
                        f"{path} was encoded with other encoder settings than the "
                        "first segment; delete the work folder and start over"
                    )
                dts_of = _missing_dts(path)
                off = 0
                if offsets is not None:
                    exact = offsets[k] * info.time_base / s.time_base
                    if exact.denominator != 1:
                        raise BttfError(
                            f"{path} does not keep the film's time base; delete "
                            "the work folder and start over"
                        )
                    off = int(exact)
                for i, p in enumerate(q for q in seg.demux(s) if q.size):
                    if dts_of is not None:
                        p.dts = dts_of[i]
                    if off:
                        if p.pts is not None:
                            p.pts += off
                        if p.dts is not None:
                            p.dts += off
                    if p.dts is not None:
                        dts = p.dts * p.time_base
                        if last_dts is not None and dts <= last_dts:
                            p.dts = int(last_dts / p.time_base) + 1
                            dts = p.dts * p.time_base
                        last_dts = dts
                        if remux is not None:
                            remux.mux_until(dts)
                    p.stream = vs
                    out.mux(p)
        if remux is not None:
            remux.finish()
    finally:
        if remux is not None:
            remux.close()
        out.close()
    return notices
