"""The streaming engine: colorize a film (or a still image) while keeping its own luma.

    decode (thread) -> batch -> Colorizer.predict -> Stabilizer (optional) -> Colorizer.decode
        -> chroma planes -> encode (thread)

The decode thread yields each frame's Y plane, plus two small gray images made from it: one at
the model's render size (short side `render_size`, rounded to the model's stride) and one at the
output's chroma plane size. The model sees lightness L = luma_to_l(gray) at render size and
predicts ab. The chroma planes are then built at the chroma plane's own resolution: ab is
upsampled to it, combined with that resolution's L into Lab, converted to R'G'B' and then to
Cb/Cr with the output's matrix (the source's tag, else BT.601 below 720 lines and BT.709 from
720) and range (the source's). The output frame is Y = the source's Y plane, untouched, plus
those Cb/Cr planes: only chroma comes from the model, as DeOldify's post-processing does.

Queues between the threads are bounded (a few batches), so memory does not grow with the
film's length. On CUDA, the model runs under bf16/fp16 autocast in channels_last, and a batch
that runs out of memory is split in halves and retried; no frame is ever written uncoloured.

A film longer than `segment_frames` is written in closed segments in a work folder beside the
output, so an interrupted run continues with `resume` (see `bttf.pipeline.segments`); a shorter
one is encoded in one go. A damaged frame is repeated, skipped or fatal (`on_decode_error`,
see `bttf.pipeline.decode`), and counted in the summary.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from bttf.errors import BadInputError, BttfError
from bttf.pipeline.decode import (
    DECODE_ERROR_POLICIES,
    KR_KB,
    SourceFrame,
    VideoInfo,
    probe_video,
    read_frames,
    to_fraction,
)
from bttf.pipeline.encode import OUTPUT_PIX_FMTS, EncodeSettings, VideoWriter, plan_encode
from bttf.pipeline.media import (
    Consumer,
    Producer,
    atomic_output,
    check_input,
    check_output,
    is_image_path,
    output_errors,
    read_gray_image,
)
from bttf.pipeline.segments import DEFAULT_SEGMENT_FRAMES
from bttf.runtime import (
    TRIM_EVERY,
    cpu_autocast_dtype,
    is_oom,
    resolve_device,
    share_heap,
    torch_threads,
    trim_heap,
)

log = logging.getLogger(__name__)

#: `progress(done, total)`: frames written so far and the expected total (None if unknown).
ProgressCallback = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ColorizeConfig:
    """Every option of `bttf colorize` (see `bttf colorize --help`).

    model / weights: the colorizer: a registered name (`default` when neither is given), and/or
        a weights file (a bttf .safetensors names its own model, so it is enough alone).
    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N", "mps".
    render_size: short side (pixels) the model works at, rounded to its stride; None = the
        model's own (256 for the shipped models).
    batch_size: frames per model call (halved automatically on CUDA out-of-memory).
    temperature, top_k: decoding of 313-bin models (annealed mean; lower is more saturated).
    temporal: fuse predictions across frames with `bttf.pipeline.temporal.Stabilizer`.
    temporal_strength: 0..1, how much of the previous frames the stabilizer keeps where the
        optical flow is trusted (0 = frame by frame); None = its measured default.
    codec, crf, preset, pix_fmt: the video encoder (crf/preset are passed when not None).
    start, duration: seconds, like ffmpeg's -ss and -t (output timestamps then start at 0).
    audio: keep the source's audio streams.
    overwrite: replace an existing output file.
    threads: torch CPU threads (None: all cores but one, leaving room for decode/encode).
    on_decode_error: a frame that cannot be decoded is "repeat"ed (the last good frame at its
        time), "skip"ped (the previous frame lasts over it) or "fail"s the run.
    segment_frames: a film with more frames is written in closed segments of this many frames
        in a work folder beside the output, which `resume` continues; 0 = never.
    resume: continue the interrupted run of the same output with the same settings (starts
        afresh when there is nothing to continue; forces segments).
    """

    model: str | None = None
    weights: str | Path | None = None
    device: str = "auto"
    render_size: int | None = None
    batch_size: int = 8
    temperature: float = 0.38
    top_k: int | None = None
    temporal: bool = True
    temporal_strength: float | None = None
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str = "yuv420p"
    start: float | None = None
    duration: float | None = None
    audio: bool = True
    overwrite: bool = False
    threads: int | None = None
    on_decode_error: str = "repeat"
    segment_frames: int = DEFAULT_SEGMENT_FRAMES
    resume: bool = False

    def __post_init__(self) -> None:
        def bad(what: str) -> BadInputError:
            return BadInputError(f"invalid option: {what}")

        if self.batch_size < 1:
            raise bad(f"batch_size must be at least 1, got {self.batch_size}")
        if self.render_size is not None and not 16 <= self.render_size <= 4096:
            raise bad(f"render_size must be in 16..4096, got {self.render_size}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise bad(f"temperature must be > 0, got {self.temperature}")
        if self.start is not None and not (math.isfinite(self.start) and self.start >= 0):
            raise bad(f"start must be >= 0 seconds, got {self.start}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise bad(f"duration must be > 0 seconds, got {self.duration}")
        if self.temporal_strength is not None and not 0.0 <= self.temporal_strength <= 1.0:
            raise bad(f"temporal_strength must be in 0..1, got {self.temporal_strength}")
        if self.threads is not None and self.threads < 1:
            raise bad(f"threads must be at least 1, got {self.threads}")
        if self.pix_fmt not in OUTPUT_PIX_FMTS:
            raise bad(f"pix_fmt {self.pix_fmt!r}; choose one of {', '.join(OUTPUT_PIX_FMTS)}")
        if self.on_decode_error not in DECODE_ERROR_POLICIES:
            raise bad(
                f"on_decode_error {self.on_decode_error!r}; choose one of "
                f"{', '.join(DECODE_ERROR_POLICIES)}"
            )
        if self.segment_frames < 0:
            raise bad(f"segment_frames must be 0 (off) or more, got {self.segment_frames}")
        if self.resume and self.segment_frames == 0:
            raise bad("resume needs segments; give segment_frames > 0")

    def encode_settings(self) -> EncodeSettings:
        return EncodeSettings(
            codec=self.codec, crf=self.crf, preset=self.preset, pix_fmt=self.pix_fmt
        )


@dataclass(frozen=True)
class ColorizeStats:
    """What a run did. Stage times overlap (decode and encode run beside the model)."""

    output: Path
    frames: int
    seconds: float
    decode_s: float
    model_s: float  # the model stage: model, stabilizer, chroma planes (on CPU, 2 threads)
    encode_s: float
    model: str
    device: str
    render_size: tuple[int, int]  # (h, w) the model saw
    batch_size: int  # the batch size at the end (smaller after an out-of-memory retry)
    size: tuple[int, int]  # (w, h) of the output
    notices: tuple[str, ...] = field(default=())
    stabilize_s: float = 0.0  # the part of model_s the stabilizer took
    repeated: int = 0  # damaged frames shown as the last good one (--on-decode-error repeat)
    dropped: int = 0  # damaged frames left out (--on-decode-error skip)
    resumed_frames: int = 0  # frames an earlier, interrupted run had done
    segments: int = 0  # closed segments the film was written in (0: in one go)

    @property
    def fps(self) -> float:
        """Frames colorized by this run per second."""
        return (self.frames - self.resumed_frames) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: frames, time, speed, time per stage, and damaged or resumed frames."""
        stab = f" (stabilizer {self.stabilize_s:.1f} s)" if self.stabilize_s else ""
        extra = ""
        if self.resumed_frames:
            extra += f"; {self.resumed_frames} resumed from an earlier run"
        if self.repeated:
            extra += f"; {self.repeated} damaged frame{'s' if self.repeated != 1 else ''} repeated"
        if self.dropped:
            extra += f"; {self.dropped} damaged frame{'s' if self.dropped != 1 else ''} skipped"
        return (
            f"{self.frames} frame{'s' if self.frames != 1 else ''} in {self.seconds:.1f} s "
            f"({self.fps:.1f} fps) — decode {self.decode_s:.1f} s, model {self.model_s:.1f} s"
            f"{stab}, encode {self.encode_s:.1f} s [{self.model} on {self.device}, "
            f"{self.render_size[1]}x{self.render_size[0]}]{extra}"
        )


# ---------------------------------------------------------------------------------------------
# Device, model and sizes


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
    )
    colorizer = colorizer.eval().to(device)
    if device.type in ("cuda", "cpu"):
        colorizer = colorizer.to(memory_format=torch.channels_last)
    return colorizer


def render_dims(height: int, width: int, short: int, stride: int) -> tuple[int, int]:
    """(h, w) for the model: short side `short` rounded to `stride`, aspect kept (to stride)."""
    s = max(stride, round(short / stride) * stride)
    if height <= width:
        return s, max(stride, round(width * s / height / stride) * stride)
    return max(stride, round(height * s / width / stride) * stride), s


def gray_lut(bits: int, full_range: bool) -> np.ndarray:
    """Code value of a `bits`-bit Y plane -> full-range 8-bit gray (the model's view of it)."""
    v = np.arange(1 << bits, dtype=np.float64)
    if full_range:
        g = v * 255.0 / ((1 << bits) - 1)
    else:
        g = (v / (1 << (bits - 8)) - 16.0) * 255.0 / 219.0
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == hw:
        return img
    down = hw[0] <= img.shape[0] and hw[1] <= img.shape[1]
    return cv2.resize(
        img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR
    )


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    # no copy of a batch's logits (72 MB for 8 frames at 360p) when it came in one piece
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# ---------------------------------------------------------------------------------------------
# The model stage


def chroma_planes(
    L: torch.Tensor, ab: torch.Tensor, matrix: int, full_range: bool, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cb, Cr code values (N, h, w) (uint8, or int32 above 8 bits) from Lab.

    L (N, 1, h, w) in [0, 100] and ab (N, 2, h, w) in Lab units; Lab -> sRGB (clipped to the
    gamut) -> Cb/Cr with the `matrix`'s (Kr, Kb), quantized in the given range and depth.
    A neutral ab (0, 0) gives exactly the mid code (128 at 8 bits).
    """
    from bttf.color import lab_to_rgb

    rgb = lab_to_rgb(torch.cat([L.float(), ab.float()], dim=1))
    r, g, b = rgb.unbind(1)
    kr, kb = KR_KB[matrix]
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - y) / (2.0 * (1.0 - kb))
    cr = (r - y) / (2.0 * (1.0 - kr))
    top = (1 << bits) - 1
    mid = float(1 << (bits - 1))
    scale = float(top) if full_range else 224.0 * (1 << (bits - 8))
    out = []
    for c in (cb, cr):
        q = torch.round(mid + scale * c).clamp_(0, top)
        out.append(q.to(torch.uint8 if bits == 8 else torch.int32))
    return out[0], out[1]


# CPU: fuse a batch on the stabilizer's own thread while the model predicts the next (the
# stabilizer adds +2-9% wall time at 360p, against +15-18% on the model's thread). False runs
# the fusion inline; the output is identical either way (tests/test_temporal.py).
ASYNC_FUSION = True


@dataclass
class _Prepared:
    frame: SourceFrame
    small: np.ndarray  # uint8 (h, w) gray at render size (model orientation)
    chroma: np.ndarray  # uint8 (ch, cw) gray at the chroma plane size


class _ModelStage:
    """Runs batches through predict -> stabilizer -> decode -> chroma, splitting on OOM."""

    def __init__(
        self, colorizer, device: torch.device, batch_size: int, stabilizer=None, rotate_k: int = 0
    ):
        self.colorizer = colorizer
        self.device = device
        self.max_batch = batch_size
        self.stabilizer = stabilizer
        self.rotate_k = rotate_k
        self.stabilize_s = 0.0
        self._calls = 0  # batches run
        self._out_hw: tuple[int, int] | None = None  # the model's output size, once known
        self._fusion: ThreadPoolExecutor | None = None  # CPU: the stabilizer's own thread
        self._fused: Future | None = None  # its last job
        self.amp = None
        if device.type == "cuda":
            self.amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "cpu":
            self.amp = cpu_autocast_dtype()
        from bttf.color import L_LUT

        self.lut = L_LUT.to(device)

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _split(self, n: int, fn: Callable[[int, int], object]) -> list:
        """fn(i, j) over [0, n) in chunks of at most `max_batch`, halving it on out-of-memory."""
        outs, i = [], 0
        while i < n:
            j = min(n, i + self.max_batch)
            try:
                outs.append(fn(i, j))
                i = j
            except Exception as e:
                if not is_oom(e):
                    raise
                if j - i == 1:
                    raise BttfError(
                        "out of memory with a batch of 1 frame; lower --render-size or use "
                        "--device cpu"
                    ) from e
                self.max_batch = max(1, (j - i) // 2)
                log.warning(
                    "out of memory with %d frames a batch; retrying with %d", j - i, self.max_batch
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return outs

    def _predict(self, L: torch.Tensor) -> torch.Tensor:
        if self.device.type in ("cuda", "cpu"):
            L = L.contiguous(memory_format=torch.channels_last)
        # in the model's own layout: the decoder and the stabilizer take NCHW or channels_last
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                return self.colorizer.predict(L).float()
        return self.colorizer.predict(L).float()

    @torch.inference_mode()
    def restart(self, warmup: list[_Prepared], batch_size: int) -> None:
        """Reset the stabilizer and run it over `warmup` (the frames before a segment), so a
        segment starts in the same state whether the run was interrupted before it or not."""
        if self.stabilizer is None:
            return
        self.drain()
        self.stabilizer.reset()
        for batch in _batched(warmup, batch_size):
            small = np.stack([p.small for p in batch])
            L = self.lut[self._to_device(small).long()].unsqueeze(1)
            out = _cat(self._split(len(batch), lambda i, j, L=L: self._predict(L[i:j])))
            t0 = time.perf_counter()
            self.stabilizer(small, out, self.colorizer.output)
            self.stabilize_s += time.perf_counter() - t0

    @torch.inference_mode()
    def __call__(self, batch: list[_Prepared]) -> torch.Tensor:
        """The model's raw output for `batch`, stabilized, in the output's orientation: the
        step on the model's thread (`chroma` makes the planes from it)."""
        self._calls += 1
        if self.device.type == "cpu" and self._calls % TRIM_EVERY == 0:
            trim_heap()
        small = np.stack([p.small for p in batch])
        gray = self._to_device(small)
        L = self.lut[gray.long()].unsqueeze(1)
        plan = None
        if self.stabilizer is not None and self._out_hw is not None:
            plan = self.stabilizer.plan(small, self._out_hw)  # its flow work beside the model's
        out = _cat(self._split(len(batch), lambda i, j: self._predict(L[i:j])))
        self._out_hw = tuple(out.shape[-2:])
        if self.stabilizer is None:
            return self._orient(out)
        plan = plan or self.stabilizer.plan(small, self._out_hw)
        if self.device.type == "cpu" and ASYNC_FUSION:
            # on its own thread, beside the model's next batch; `chroma` waits for it
            if self._fusion is None:
                # (a new thread starts with OpenMP's default team: give it the engine's size)
                self._fusion = ThreadPoolExecutor(
                    1,
                    thread_name_prefix="bttf-fuse",
                    initializer=torch.set_num_threads,
                    initargs=(torch.get_num_threads(),),
                )
            if self._fused is not None:  # one batch's logits fusing, one predicting: no more
                self._fused.result()
            self._fused = self._fusion.submit(self._stabilize, small, out, plan)
            return self._fused
        return self._stabilize(small, out, plan)

    def _stabilize(self, small: np.ndarray, out: torch.Tensor, plan) -> torch.Tensor:
        with torch.inference_mode():
            t0 = time.perf_counter()
            # 313-bin models: the stabilizer decodes the annealed mean in its own pass
            t = self.colorizer.temperature
            decode = self.colorizer.output == "bins" and self.colorizer.top_k is None
            out = self.stabilizer(small, out, self.colorizer.output, plan, t if decode else None)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stabilize_s += time.perf_counter() - t0
            return self._orient(out)

    def _orient(self, out: torch.Tensor) -> torch.Tensor:
        return torch.rot90(out, -self.rotate_k, dims=(2, 3)) if self.rotate_k else out

    def drain(self) -> None:
        """Wait for the stabilizer's pending work (before touching its state), then let its
        thread go."""
        if self._fused is not None:
            with contextlib.suppress(Exception):  # its error reaches the chroma thread
                self._fused.result()
            self._fused = None
        if self._fusion is not None:
            self._fusion.shutdown(wait=True)
            self._fusion = None
        if self.stabilizer is not None and hasattr(self.stabilizer, "close"):
            self.stabilizer.close()

    @torch.inference_mode()
    def chroma(
        self, batch: list[_Prepared], out: torch.Tensor, matrix: int, full_range: bool, bits: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cb, Cr planes (N, ch, cw) of `batch` from the output of `self(batch)` (a tensor, or
        the future of one). Touches no state but the batch size on out-of-memory, so on CPU it
        may run beside the next call."""
        if isinstance(out, Future):
            out = out.result()
        gchroma = self._to_device(np.stack([p.chroma for p in batch]))
        size = tuple(gchroma.shape[-2:])

        def chroma(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
            # on CPU frame by frame: a frame's planes stay in the cache through every step
            step = 1 if self.device.type == "cpu" else j - i
            cbs, crs = [], []
            for k in range(i, j, step):
                ab = self.colorizer.decode(out[k : k + step].float(), size)
                Lc = self.lut[gchroma[k : k + step].long()].unsqueeze(1)
                cb, cr = chroma_planes(Lc, ab, matrix, full_range, bits)
                cbs.append(cb.cpu())
                crs.append(cr.cpu())
            return torch.cat(cbs), torch.cat(crs)

        parts = self._split(len(batch), chroma)
        cb = torch.cat([p[0] for p in parts]).numpy()
        cr = torch.cat([p[1] for p in parts]).numpy()
        if bits > 8:
            cb, cr = cb.astype(np.uint16), cr.astype(np.uint16)
        return cb, cr


_BATCH, _PASS = "batch", "pass"


class _Colourer:
    """The chroma half of the model stage: `put_batch` turns a batch's model output into Cb/Cr
    planes and hands its frames to `emit` as `item(frame, cb, cr)`; `put` hands any other item
    on in order.

    On CPU this runs on its own thread beside the model's next batch: on a few cores the model's
    thread is otherwise the engine's bottleneck (benchmarks/README.md). On a GPU it runs inline.
    `busy_s` is the time spent making planes.
    """

    def __init__(
        self,
        stage: _ModelStage,
        emit: Callable[[object], None],
        item: Callable[[SourceFrame, np.ndarray, np.ndarray], object],
        matrix: int,
        full_range: bool,
        bits: int,
        depth: int,
    ) -> None:
        self.stage, self.emit, self.item = stage, emit, item
        self.fmt = (matrix, full_range, bits)
        self.busy_s = 0.0
        self._thread = None
        if stage.device.type == "cpu":
            self._thread = Consumer(self._handle, maxsize=depth, name="chroma")

    def _handle(self, job: tuple) -> None:
        if job[0] == _BATCH:
            _, batch, out = job
            t0 = time.perf_counter()
            cb, cr = self.stage.chroma(batch, out, *self.fmt)
            self.busy_s += time.perf_counter() - t0
            for k, p in enumerate(batch):
                self.emit(self.item(p.frame, cb[k], cr[k]))
        else:
            self.emit(job[1])

    def _put(self, job: tuple) -> None:
        if self._thread is None:
            self._handle(job)
        else:
            self._thread.put(job)

    def put_batch(self, batch: list[_Prepared], out: torch.Tensor) -> None:
        self._put((_BATCH, batch, out))

    def put(self, item: object) -> None:
        self._put((_PASS, item))

    def finish(self) -> None:
        """Wait until every batch is coloured and handed on."""
        if self._thread is not None:
            self._thread.finish()

    def abort(self) -> None:
        if self._thread is not None:
            self._thread.abort()


def _make_stabilizer(enabled: bool, strength: float | None = None):
    if not enabled:
        return None
    try:
        from bttf.pipeline.temporal import Stabilizer
    except ModuleNotFoundError as e:
        if e.name != "bttf.pipeline.temporal":
            raise
        log.info("bttf.pipeline.temporal is not installed; colorizing frame by frame")
        return None
    return Stabilizer() if strength is None else Stabilizer(strength=strength)


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


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


def _no_frames(src: Path, config: ColorizeConfig) -> BadInputError:
    return BadInputError(
        f"no frames of {src} fall in --start {config.start} --duration {config.duration}; "
        "check the range"
    )


def _model_name(colorizer) -> str:
    return getattr(getattr(colorizer, "spec", None), "name", type(colorizer).__name__)


class _Preparer:
    """SourceFrame -> _Prepared: the gray images the model (render size, model orientation) and
    the chroma stage (chroma plane size) need."""

    def __init__(
        self, info: VideoInfo, render_hw: tuple[int, int], rotate_k: int, chroma_hw: tuple[int, int]
    ) -> None:
        self.info = info
        self.render_hw = render_hw
        self.rotate_k = rotate_k
        self.chroma_hw = chroma_hw
        self.lut = gray_lut(info.bits, info.full_range)

    def __call__(self, f: SourceFrame) -> _Prepared:
        info, y = self.info, f.y
        if y.shape != (info.height, info.width):
            log.warning(
                "frame %d is %dx%d, not %dx%d; resized",
                f.index,
                y.shape[1],
                y.shape[0],
                info.width,
                info.height,
            )
            y = f.y = _resize(y, (info.height, info.width))
        small = self.lut[_resize(y, self.render_hw)]
        if self.rotate_k:
            small = np.ascontiguousarray(np.rot90(small, self.rotate_k))
        return _Prepared(f, small, self.lut[_resize(y, self.chroma_hw)])


def _input_notices(
    info: VideoInfo,
    config: ColorizeConfig,
    total: int | None,
    done: int,
    repeated: int,
    dropped: int,
) -> list[str]:
    """What the user should hear about the input after a run (also logged as warnings)."""
    out = []
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
    if config.duration is None and total and done + dropped < total - max(2, total // 100):
        out.append(
            f"{info.path} declares about {total} frames but only {done + dropped} could "
            "be read: it may be truncated"
        )
    if info.other_streams:
        kinds = ", ".join(sorted(set(info.other_streams)))
        out.append(f"{len(info.other_streams)} {kinds} stream(s) of {info.path} not carried over")
    return out


@dataclass
class _Job:
    """What `colorize_video` set up, handed to the segmented engine."""

    src: Path
    dst: Path
    info: VideoInfo
    config: ColorizeConfig
    settings: EncodeSettings
    size: tuple[int, int]  # (w, h) encoded
    device: torch.device
    colorizer: object
    stage: _ModelStage
    prepare: _Preparer
    model_hw: tuple[int, int]
    total: int | None
    progress: ProgressCallback | None
    t_begin: float


def _job_settings(job: _Job, segment_frames: int, warmup: int) -> dict:
    """Everything a resumed run must share with the one it continues (see segments.py)."""
    from bttf import __version__
    from bttf.pipeline.segments import input_fingerprint, model_digest

    c = job.config
    return {
        "bttf": __version__,
        "input": input_fingerprint(job.src),
        "model": _model_name(job.colorizer),
        "weights": model_digest(job.colorizer),
        "render": list(job.model_hw),
        "batch_size": c.batch_size,
        "temperature": c.temperature,
        "top_k": c.top_k,
        "temporal": job.stage.stabilizer is not None,
        "temporal_strength": c.temporal_strength,
        "codec": c.codec,
        "crf": c.crf,
        "preset": c.preset,
        "pix_fmt": c.pix_fmt,
        "size": list(job.size),
        "start": c.start,
        "duration": c.duration,
        "segment_frames": segment_frames,
        "warmup": warmup,
    }


def _resume_source(
    info: VideoInfo,
    config: ColorizeConfig,
    target_pts: int,
    first_pts: int | None,
    warmup: int,
    work_path: Path,
) -> Iterator[tuple[str, SourceFrame]]:
    """The film from source pts `target_pts` on, as ("frame", f), after its `warmup` frames
    before it as ("warm", f).

    Seeks a little before the target and checks it landed early enough to see every warm-up
    frame (or the first frame of the range); else seeks further back, at worst decoding from
    the start of the range. Ends at once when the range ended exactly at the target.
    """
    tb = info.time_base
    t_start = info.start + (to_fraction(config.start) or 0)
    back = Fraction(warmup + 2) / (info.rate or 24)
    while True:
        seek = target_pts * tb - back
        from_start = seek <= t_start
        frames = read_frames(
            info,
            config.start,
            config.duration,
            on_error=config.on_decode_error,
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
                f"{info.path} where the interrupted run stopped; delete {work_path} to start over"
            )
        back *= 4


def _tagged(frames: Iterator[SourceFrame]) -> Iterator[tuple[str, SourceFrame]]:
    with contextlib.closing(frames):
        for f in frames:
            yield "frame", f


class _SegmentSink:
    """The encode thread's side of a segmented run: frames into the open segment; "close"
    makes it durable (WorkDir.commit); "finish" marks the film done."""

    def __init__(self, job: _Job, work) -> None:
        self.job = job
        self.work = work
        self.writer: VideoWriter | None = None
        self.frames = self.repeated = self.dropped = 0
        self.first_pts = self.end_pts = 0

    def __call__(self, item: tuple) -> None:
        kind = item[0]
        if kind == "frame":
            _, f, cb, cr = item
            if self.writer is None:
                self._open(f)
            self.writer.write(f.y, self.job.info.bits, cb, cr, f.pts, f.duration)
            self.frames += 1
            self.repeated += f.repeated
            self.dropped += f.dropped
            self.end_pts = f.pts + f.duration
        elif kind == "close":
            self.writer.finish()
            self.writer = None
            self.work.commit(
                item[1], self.frames, self.first_pts, self.end_pts, self.repeated, self.dropped
            )
        elif kind == "finish":
            self.work.finish()

    def _open(self, f: SourceFrame) -> None:
        work, job = self.work, self.job
        if work.first_pts is None:
            work.first_pts = f.pts
            work.shift_pts = f.pts if job.config.start is not None else 0
        k = len(work.segments)
        self.writer = VideoWriter(
            work.segment_path(k, partial=True), job.info, job.settings, job.size, audio=False
        )
        self.writer.start(None, None, f.pts if work.relative else work.shift_pts)
        self.frames = self.repeated = self.dropped = 0
        self.first_pts = f.pts

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None


def _colorize_segmented(job: _Job) -> ColorizeStats:
    """`colorize_video` for a film written in segments (see `bttf.pipeline.segments`)."""
    from bttf.pipeline.segments import WARMUP_FRAMES, WorkDir, join_segments

    config, info, stage = job.config, job.info, job.stage
    n_seg = config.segment_frames or DEFAULT_SEGMENT_FRAMES
    warmup = min(WARMUP_FRAMES, n_seg) if stage.stabilizer is not None else 0

    def probe(out):  # the stream a segment has, for WorkDir to see what the container does
        vs = out.add_stream(
            job.settings.codec, rate=info.rate or 24, options=job.settings.options()
        )
        vs.width, vs.height, vs.pix_fmt = *job.size, job.settings.pix_fmt
        vs.time_base = vs.codec_context.time_base = info.time_base
        return vs

    work = WorkDir.open(job.dst, _job_settings(job, n_seg, warmup), config.resume, probe)
    resumed = work.frames_done
    done = resumed
    t_model = decode_s = encode_s = 0.0
    notices: list[str] = []
    bits_out = OUTPUT_PIX_FMTS[config.pix_fmt][2]
    ok = False
    try:
        if resumed:
            log.info(
                "resuming %s after %d frames (%d segments)", job.dst, resumed, len(work.segments)
            )
        if not work.finished:
            if work.resume_pts is None:
                source = _tagged(
                    read_frames(
                        info, config.start, config.duration, on_error=config.on_decode_error
                    )
                )
            else:
                source = _resume_source(
                    info, config, work.resume_pts, work.first_pts, warmup, work.path
                )

            def prepared() -> Iterator[tuple[str, _Prepared]]:
                with contextlib.closing(source):
                    for kind, f in source:
                        yield kind, job.prepare(f)

            depth = 2 * config.batch_size
            sink = _SegmentSink(job, work)
            with torch_threads(job.device, config.threads):
                producer = Producer(prepared(), maxsize=depth, name="decode")
                consumer = Consumer(sink, maxsize=depth, name="encode")
                colourer = _Colourer(
                    stage,
                    consumer.put,
                    lambda f, cb, cr: ("frame", f, cb, cr),
                    info.colorspace,
                    info.full_range,
                    bits_out,
                    1,
                )
                ring: deque[_Prepared] = deque(maxlen=warmup)
                k = len(work.segments)
                in_seg = 0
                batch: list[_Prepared] = []

                def run(batch: list[_Prepared]) -> None:
                    nonlocal t_model, done
                    t0 = time.perf_counter()
                    out = stage(batch)
                    t_model += time.perf_counter() - t0
                    colourer.put_batch(batch, out)
                    ring.extend(batch)
                    done += len(batch)
                    if job.progress is not None:
                        job.progress(done, job.total)

                try:
                    if job.progress is not None:
                        job.progress(done, job.total)
                    for kind, p in producer:
                        if kind == "warm":
                            ring.append(p)
                            continue
                        if in_seg == 0 and k > 0:
                            t0 = time.perf_counter()
                            stage.restart(list(ring), config.batch_size)
                            t_model += time.perf_counter() - t0
                        batch.append(p)
                        in_seg += 1
                        if len(batch) == config.batch_size or in_seg == n_seg:
                            run(batch)
                            batch = []
                        if in_seg == n_seg:
                            colourer.put(("close", k))
                            k += 1
                            in_seg = 0
                    if batch:
                        run(batch)
                    if in_seg:
                        colourer.put(("close", k))
                    if done == 0:
                        raise _no_frames(job.src, config)
                    colourer.put(("finish",))
                    colourer.finish()
                    consumer.finish()
                except BaseException:
                    consumer.abort()
                    colourer.abort()
                    raise
                finally:
                    producer.close()
                    stage.drain()
                    sink.close()
            decode_s, encode_s = producer.busy_s, consumer.busy_s
            t_model += colourer.busy_s
        t0 = time.perf_counter()
        tmp = work.final_path()
        t_end = None
        if config.duration is not None:
            t_end = info.start + (to_fraction(config.start) or 0) + to_fraction(config.duration)
        t_from = None
        if config.start is not None and work.first_pts is not None:
            t_from = Fraction(work.first_pts) * info.time_base
        try:
            offsets = None
            if work.relative:
                offsets = [s.first_pts - work.shift_pts for s in work.segments]
            notices.extend(
                join_segments(
                    [work.path / s.file for s in work.segments],
                    tmp,
                    info,
                    audio=config.audio,
                    t_from=t_from,
                    t_end=t_end,
                    shift_pts=work.shift_pts,
                    offsets=offsets,
                )
            )
            os.replace(tmp, job.dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        encode_s += time.perf_counter() - t0
        ok = True
    except BaseException:
        if work.segments:
            log.warning(
                "%d colorized frames are kept in %s: run the same command with --resume "
                "to continue",
                work.frames_done,
                work.path,
            )
        raise
    finally:
        if ok:
            work.remove()
        else:
            work.release()
    repeated = sum(s.repeated for s in work.segments)
    dropped = sum(s.dropped for s in work.segments)
    for n in _input_notices(info, config, job.total, done, repeated, dropped):
        log.warning("%s", n)
        notices.append(n)
    stats = ColorizeStats(
        output=job.dst,
        frames=work.frames_done,
        seconds=time.perf_counter() - job.t_begin,
        decode_s=decode_s,
        model_s=t_model,
        encode_s=encode_s,
        model=_model_name(job.colorizer),
        device=str(job.device),
        render_size=job.model_hw,
        batch_size=stage.max_batch,
        size=job.size,
        notices=tuple(notices),
        stabilize_s=stage.stabilize_s,
        repeated=repeated,
        dropped=dropped,
        resumed_frames=resumed,
        segments=len(work.segments),
    )
    log.info("%s", stats.summary())
    return stats


# ---------------------------------------------------------------------------------------------
# Public API


def colorize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
    progress: ProgressCallback | None = None,
) -> ColorizeStats:
    """Colorize the film `src` into `dst` (its suffix picks the container).

    The output keeps the source's Y plane, frame count, every timestamp and duration, frame
    rate, audio (copied when the container allows), rotation and colour tags; see the module
    notes. The file appears at `dst` only when complete (written beside it, then renamed).

    Raises:
        BadInputError: unreadable input, bad options, existing output without `overwrite`.
        BttfError: other failures (e.g. out of memory at batch size 1).
    """
    config = config or ColorizeConfig()
    t_begin = time.perf_counter()
    share_heap()
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
    settings = config.encode_settings()
    enc_w, enc_h = plan_encode(settings, info.width, info.height, info.time_base)
    device = resolve_device(config.device)
    colorizer = build_colorizer(config, device)
    short = config.render_size or colorizer.render_size
    rotate_k = (info.rotation // 90) % 4 if info.rotation % 90 == 0 else 0
    rh, rw = render_dims(info.height, info.width, short, colorizer.stride)
    model_hw = (rw, rh) if rotate_k % 2 else (rh, rw)
    total = _expected_frames(info, config.start, config.duration)
    stabilizer = _make_stabilizer(config.temporal, config.temporal_strength)
    stage = _ModelStage(colorizer, device, config.batch_size, stabilizer, rotate_k)
    log.info(
        "%s: %dx%d %s, %s frames; model %s at %dx%d on %s",
        src,
        info.width,
        info.height,
        info.pix_fmt,
        total,
        _model_name(colorizer),
        model_hw[1],
        model_hw[0],
        device,
    )
    sx, sy, _ = OUTPUT_PIX_FMTS[settings.pix_fmt]
    prepare = _Preparer(info, (rh, rw), rotate_k, (-(-enc_h // (1 << sy)), -(-enc_w // (1 << sx))))
    long_film = config.segment_frames and (total is None or total > config.segment_frames)
    if config.resume or long_film:
        job = _Job(
            src,
            dst,
            info,
            config,
            settings,
            (enc_w, enc_h),
            device,
            colorizer,
            stage,
            prepare,
            model_hw,
            total,
            progress,
            t_begin,
        )
        with output_errors(dst):
            return _colorize_segmented(job)

    done = 0
    t_model = 0.0
    notices: list[str] = []
    damaged = [0, 0]  # repeated, dropped
    with output_errors(dst), torch_threads(device, config.threads), atomic_output(dst) as tmp:
        writer = VideoWriter(tmp, info, settings, (enc_w, enc_h), audio=config.audio)
        if writer.audio is not None:
            notices.extend(writer.audio.notices)

        t_start = info.start + (to_fraction(config.start) or 0)
        t_end = None if config.duration is None else t_start + to_fraction(config.duration)
        started = False

        def write(item: tuple[SourceFrame, np.ndarray, np.ndarray]) -> None:
            nonlocal started
            f, cb, cr = item
            if not started:
                if config.start is not None:
                    writer.start(Fraction(f.pts) * f.time_base, t_end, f.pts)
                else:
                    writer.start(None, t_end, 0)
                started = True
            writer.write(f.y, info.bits, cb, cr, f.pts, f.duration)
            damaged[0] += f.repeated
            damaged[1] += f.dropped

        def prepared() -> Iterator[_Prepared]:
            frames = read_frames(
                info, config.start, config.duration, on_error=config.on_decode_error
            )
            with contextlib.closing(frames):
                for f in frames:
                    yield prepare(f)

        depth = 2 * config.batch_size
        producer = Producer(prepared(), maxsize=depth, name="decode")
        consumer = Consumer(write, on_finish=writer.finish, maxsize=depth, name="encode")
        colourer = _Colourer(
            stage,
            consumer.put,
            lambda f, cb, cr: (f, cb, cr),
            info.colorspace,
            info.full_range,
            writer.bits,
            1,
        )
        try:
            if progress is not None:
                progress(0, total)
            for batch in _batched(producer, config.batch_size):
                t0 = time.perf_counter()
                out = stage(batch)
                t_model += time.perf_counter() - t0
                colourer.put_batch(batch, out)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if done == 0:
                raise _no_frames(src, config)
            colourer.finish()
            consumer.finish()
        except BaseException:
            consumer.abort()
            colourer.abort()
            raise
        finally:
            producer.close()
            stage.drain()
            with contextlib.suppress(Exception):
                writer.close()
    for n in _input_notices(info, config, total, done, *damaged):
        log.warning("%s", n)
        notices.append(n)
    stats = ColorizeStats(
        output=dst,
        frames=done,
        seconds=time.perf_counter() - t_begin,
        decode_s=producer.busy_s,
        model_s=t_model + colourer.busy_s,
        encode_s=consumer.busy_s,
        model=_model_name(colorizer),
        device=str(device),
        render_size=model_hw,
        batch_size=stage.max_batch,
        size=(enc_w, enc_h),
        notices=tuple(notices),
        stabilize_s=stage.stabilize_s,
        repeated=damaged[0],
        dropped=damaged[1],
    )
    log.info("%s", stats.summary())
    return stats


_IMWRITE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
}
_SIXTEEN_BIT_SUFFIXES = {".png", ".tif", ".tiff"}


def colorize_image(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
) -> ColorizeStats:
    """Colorize the still image `src` into `dst` (its suffix picks the format: jpg, png, tiff,
    bmp, webp). The output's Lab lightness is the input's: L of every pixel is kept, only
    a and b come from the model (16-bit input stays 16-bit in png/tiff)."""
    from bttf.color import lab_to_rgb, luma_to_l

    config = config or ColorizeConfig()
    t_begin = time.perf_counter()
    src = check_input(src)
    dst = check_output(src, dst, config.overwrite)
    if not is_image_path(dst):
        raise BadInputError(
            f"{src} is an image; give OUTPUT an image suffix (.png, .jpg, .tif), not {dst.suffix}"
        )
    t0 = time.perf_counter()
    gray, bits = read_gray_image(src)
    t_decode = time.perf_counter() - t0
    device = resolve_device(config.device)
    colorizer = build_colorizer(config, device)
    h, w = gray.shape
    short = config.render_size or colorizer.render_size
    rh, rw = render_dims(h, w, short, colorizer.stride)
    t0 = time.perf_counter()
    with torch_threads(device, config.threads), torch.inference_mode():
        stage = _ModelStage(colorizer, device, 1)
        small = luma_to_l(torch.from_numpy(_resize(gray, (rh, rw)))).to(device)
        out = stage._split(1, lambda i, j: stage._predict(small[None, None]))[0]
        ab = colorizer.decode(out, (h, w))
        L = luma_to_l(torch.from_numpy(gray)).to(device)[None, None]
        rgb = lab_to_rgb(torch.cat([L, ab.float()], dim=1))[0].permute(1, 2, 0).cpu().numpy()
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    if bits > 8 and dst.suffix.lower() in _SIXTEEN_BIT_SUFFIXES:
        pixels = np.rint(rgb * 65535.0).astype(np.uint16)
    else:
        pixels = np.rint(rgb * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(
        dst.suffix.lower(),
        np.ascontiguousarray(pixels[..., ::-1]),
        _IMWRITE_PARAMS.get(dst.suffix.lower(), []),
    )
    if not ok:
        raise BttfError(f"OpenCV could not encode {dst.suffix} images; use .png or .jpg")
    with atomic_output(dst) as tmp:
        tmp.write_bytes(buf.tobytes())
    return ColorizeStats(
        output=dst,
        frames=1,
        seconds=time.perf_counter() - t_begin,
        decode_s=t_decode,
        model_s=t_model,
        encode_s=time.perf_counter() - t0,
        model=_model_name(colorizer),
        device=str(device),
        render_size=(rh, rw),
        batch_size=1,
        size=(w, h),
    )


def colorize(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
    progress: ProgressCallback | None = None,
) -> ColorizeStats:
    """`colorize_image` when `src` has an image suffix, else `colorize_video`."""
    if is_image_path(src):
        return colorize_image(src, dst, config)
    return colorize_video(src, dst, config, progress)
