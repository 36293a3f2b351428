"""The engine's stages between decode and encode, each with one job and one output type:

    SourceFrame --Preparer--> PreparedFrame          (decode thread)
    [PreparedFrame] --ModelStage--> raw output       (model thread: logits or ab, model layout)
    raw output --ColourStage--> ab                   (stabilizer, annealed mean, orientation)
    ab --ChromaStage--> Cb, Cr planes                (at the output's chroma size)

`ColourStage` is the one home of "raw output -> ab": the stabilizer fuses the raw output (and,
for 313-bin models without top-k, decodes the annealed mean in its own pass); otherwise the
annealed mean runs here; the result is turned back to the film's stored orientation. Which of
these happens is decided once, when the stage is built.

`colorize_gray` runs a colorizer on one still gray image at its render size, the way the engine
does: used by stills, `bttf compare` and `bttf eval`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from bttf.errors import BttfError
from bttf.pipeline.bars import Bars, fill_bars
from bttf.pipeline.decode import KR_KB, SourceFrame, VideoInfo
from bttf.runtime import TRIM_EVERY, autocast_dtype, is_oom, trim_heap

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Sizes and gray levels


def render_dims(
    height: int, width: int, short: int, stride: int, square: bool = False
) -> tuple[int, int]:
    """(h, w) for the model: short side `short` rounded to `stride`, aspect kept (to stride);
    `square`: (s, s), the frame squashed or stretched to it (as DeOldify's own pipeline)."""
    s = max(stride, round(short / stride) * stride)
    if square:
        return s, s
    if height <= width:
        return s, max(stride, round(width * s / height / stride) * stride)
    return max(stride, round(height * s / width / stride) * stride), s


def square_render(colorizer, square: bool | None) -> bool:
    """The render shape a run uses: `square` when given, else the colorizer's own default
    (`ModelSpec.render_square`; aspect kept for a colorizer that names none)."""
    if square is None:
        return bool(getattr(colorizer, "render_square", False))
    return square


def gray_lut(bits: int, full_range: bool) -> np.ndarray:
    """Code value of a `bits`-bit Y plane -> full-range 8-bit gray (the model's view of it)."""
    v = np.arange(1 << bits, dtype=np.float64)
    if full_range:
        g = v * 255.0 / ((1 << bits) - 1)
    else:
        g = (v / (1 << (bits - 8)) - 16.0) * 255.0 / 219.0
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def resize_plane(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """`img` (H, W) at (h, w): area averaging when shrinking, bilinear when growing (OpenCV)."""
    if img.shape[:2] == hw:
        return img
    down = hw[0] <= img.shape[0] and hw[1] <= img.shape[1]
    interpolation = cv2.INTER_AREA if down else cv2.INTER_LINEAR
    return cv2.resize(img, (hw[1], hw[0]), interpolation=interpolation)


# ---------------------------------------------------------------------------------------------
# Prepare (decode thread)


@dataclass
class PreparedFrame:
    """A decoded frame and the two gray images the later stages need."""

    frame: SourceFrame
    small: np.ndarray  # uint8 (h, w) gray at render size, upright (the model's orientation)
    chroma: np.ndarray  # uint8 (ch, cw) gray at the chroma plane size, as stored


class Preparer:
    """SourceFrame -> PreparedFrame. `rotate_k` quarter turns make the stored frame upright;
    the film's black `bars` (`bttf.pipeline.bars`) are filled in the gray the model sees."""

    def __init__(
        self,
        info: VideoInfo,
        render_hw: tuple[int, int],
        rotate_k: int,
        chroma_hw: tuple[int, int],
        bars: Bars | None = None,
    ) -> None:
        self.info = info
        self.render_hw = render_hw
        self.rotate_k = rotate_k
        self.chroma_hw = chroma_hw
        self.bars = bars
        self.lut = gray_lut(info.bits, info.full_range)

    def luma(self, f: SourceFrame) -> np.ndarray:
        """The frame's Y plane at the film's size (a frame of another size is resized)."""
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
            y = f.y = resize_plane(y, (info.height, info.width))
        return y

    def model_luma(self, y: np.ndarray) -> np.ndarray:
        """The Y plane the model's gray is made from: `y`, its black bars filled."""
        return fill_bars(y, self.bars) if self.bars else y

    def __call__(self, f: SourceFrame) -> PreparedFrame:
        y = self.luma(f)
        small = self.lut[resize_plane(self.model_luma(y), self.render_hw)]
        if self.rotate_k:
            small = np.ascontiguousarray(np.rot90(small, self.rotate_k))
        return PreparedFrame(f, small, self.lut[resize_plane(y, self.chroma_hw)])


def model_input(batch: list[PreparedFrame]) -> np.ndarray:
    """The gray images the model sees for `batch`: (N, h, w) uint8, one a frame; (2N, h, w)
    when each frame is split in its two fields (`bttf.pipeline.fields`), first field first."""
    if batch[0].small.ndim == 2:
        return np.stack([p.small for p in batch])
    return np.concatenate([p.small for p in batch])


# ---------------------------------------------------------------------------------------------
# Model (model thread)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    # no copy of a batch's logits (72 MB for 8 frames at 360p) when it came in one piece
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class ModelStage:
    """Gray frames -> the colorizer's raw output, under the device's autocast, in chunks of at
    most `max_batch` frames, halving it when the device runs out of memory."""

    def __init__(self, colorizer, device: torch.device, batch_size: int) -> None:
        from bttf.color import L_LUT

        self.colorizer = colorizer
        self.device = device
        self.max_batch = batch_size
        self.amp = autocast_dtype(device)
        self.lut = L_LUT.to(device)
        self._calls = 0

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def lightness(self, gray: torch.Tensor) -> torch.Tensor:
        """uint8 gray (N, h, w) on the device -> L (N, 1, h, w) in [0, 100]."""
        return self.lut[gray.long()].unsqueeze(1)

    def split(self, n: int, fn: Callable[[int, int], object]) -> list:
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

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        """L (n, 1, h, w) on the device -> the raw output, float32, in one piece."""
        if self.device.type in ("cuda", "cpu"):
            L = L.contiguous(memory_format=torch.channels_last)
        # in the model's own layout: the decoder and the stabilizer take NCHW or channels_last
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                return self.colorizer.predict(L).float()
        return self.colorizer.predict(L).float()

    @torch.inference_mode()
    def run(self, small: np.ndarray) -> torch.Tensor:
        """uint8 gray (N, h, w) at render size -> raw output (N, C, h', w'), float32."""
        L = self.lightness(self.to_device(small))
        return _cat(self.split(len(small), lambda i, j: self.predict(L[i:j])))

    def __call__(self, small: np.ndarray) -> torch.Tensor:
        """`run` for the engine's next batch (on the CPU, the heap is trimmed every few)."""
        self._calls += 1
        if self.device.type == "cpu" and self._calls % TRIM_EVERY == 0:
            trim_heap()
        return self.run(small)


# ---------------------------------------------------------------------------------------------
# Colour: raw output -> ab


class ColourStage:
    """Raw model output -> ab (N, 2, h', w') in the film's stored orientation.

    With a stabilizer, the raw output of consecutive batches is fused along the optical flow
    (`bttf.pipeline.temporal`); `plan` starts a batch's flow work beside the model. For 313-bin
    models the annealed mean is decoded in the stabilizer's pass when it can (no top-k), else
    here after it, frame by frame on the CPU (each frame's logits stay in the cache).
    """

    def __init__(self, colorizer, device: torch.device, stabilizer=None, rotate_k: int = 0):
        self.colorizer = colorizer
        self.device = device
        self.stabilizer = stabilizer
        self.rotate_k = rotate_k
        self.bins = colorizer.output == "bins"
        # 313-bin models without top-k: the stabilizer decodes in its own pass
        self.fused_decode = stabilizer is not None and self.bins and colorizer.top_k is None
        self.decoding: dict = {}  # the stabilizer's decoding arguments, when it decodes
        if self.fused_decode:
            self.decoding["temperature"] = colorizer.temperature
            if getattr(colorizer, "unsure", None) is not None:
                self.decoding["unsure"] = colorizer.unsure
        self.stabilize_s = 0.0

    def plan(self, small: np.ndarray, out_hw: tuple[int, int] | None):
        """The stabilizer's flow work for the batch `small`, started now (None without one)."""
        if self.stabilizer is None or out_hw is None:
            return None
        return self.stabilizer.plan(small, out_hw)

    @torch.inference_mode()
    def __call__(self, small: np.ndarray, out: torch.Tensor, plan=None) -> torch.Tensor:
        if self.stabilizer is not None:
            t0 = time.perf_counter()
            plan = plan or self.stabilizer.plan(small, tuple(out.shape[-2:]))
            out = self.stabilizer(small, out, self.colorizer.output, plan, **self.decoding)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stabilize_s += time.perf_counter() - t0
        if self.rotate_k:
            out = torch.rot90(out, -self.rotate_k, dims=(2, 3))
        if not self.bins or self.fused_decode:
            return out
        step = 1 if self.device.type == "cpu" else len(out)
        return torch.cat(
            [self.colorizer.decode_bins(out[k : k + step]) for k in range(0, len(out), step)]
        )

    def restart(self, warmup: list[PreparedFrame], model: ModelStage, batch_size: int) -> None:
        """Reset the stabilizer and run it over `warmup` (the frames before a segment), so a
        segment starts in the same state whether the run was interrupted before it or not."""
        if self.stabilizer is None:
            return
        self.stabilizer.reset()
        for i in range(0, len(warmup), batch_size):
            small = model_input(warmup[i : i + batch_size])
            out = model.run(small)
            t0 = time.perf_counter()
            with torch.inference_mode():
                self.stabilizer(small, out, self.colorizer.output)
            self.stabilize_s += time.perf_counter() - t0

    def close(self) -> None:
        if self.stabilizer is not None and hasattr(self.stabilizer, "close"):
            self.stabilizer.close()


# ---------------------------------------------------------------------------------------------
# Chroma: ab -> Cb, Cr


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


class ChromaStage:
    """ab at model resolution -> Cb, Cr planes (N, ch, cw) of the output: ab resized to the
    chroma plane size, times the colorizer's saturation, and combined with that size's L (see
    `chroma_planes`). A `guide` (`bttf.pipeline.keyframes.KeyframeGuide`) blends the keyframes'
    colour into ab there, after the saturation: a restorer's colour is kept as painted. The
    film's black `bars` (widths of the frame `frame_hw`) get no colour: ab is 0 in every chroma
    sample wholly inside one, whatever the model painted there."""

    def __init__(
        self,
        model: ModelStage,
        matrix: int,
        full_range: bool,
        bits: int,
        guide=None,
        bars: Bars | None = None,
        frame_hw: tuple[int, int] | None = None,
    ) -> None:
        self.model = model
        self.fmt = (matrix, full_range, bits)
        self.guide = guide
        # a colorizer built outside bttf may not have one: its colours as they are
        self.saturate = getattr(model.colorizer, "saturate", lambda ab: ab)
        self.bars = bars if bars and frame_hw else None
        self.frame_hw = frame_hw

    @torch.inference_mode()
    def __call__(
        self, batch: list[PreparedFrame], ab: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        model, bits = self.model, self.fmt[2]
        gchroma = model.to_device(np.stack([p.chroma for p in batch]))
        size = tuple(gchroma.shape[-2:])

        def planes(i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
            # on CPU frame by frame: a frame's planes stay in the cache through every step
            step = 1 if model.device.type == "cpu" else j - i
            cbs, crs = [], []
            for k in range(i, j, step):
                abk = model.colorizer.resize_ab(ab[k : k + step].float(), size)
                abk = self.saturate(abk)
                if self.guide is not None:
                    abk = self.guide.apply(batch[k : k + step], abk)
                if self.bars is not None:
                    abk = self.uncolour_bars(abk)
                cb, cr = chroma_planes(model.lightness(gchroma[k : k + step]), abk, *self.fmt)
                cbs.append(cb.cpu())
                crs.append(cr.cpu())
            return torch.cat(cbs), torch.cat(crs)

        parts = model.split(len(batch), planes)
        cb = torch.cat([p[0] for p in parts]).numpy()
        cr = torch.cat([p[1] for p in parts]).numpy()
        if bits > 8:
            cb, cr = cb.astype(np.uint16), cr.astype(np.uint16)
        return cb, cr

    def uncolour_bars(self, ab: torch.Tensor) -> torch.Tensor:
        """ab (n, 2, ch, cw) with 0 in the chroma samples wholly inside the bars (the plane may
        be a frame's or a field's: the bars are scaled from the frame to it)."""
        (h, w), (ch, cw), b = self.frame_hw, ab.shape[-2:], self.bars
        top, bottom = b.top * ch // h, b.bottom * ch // h
        left, right = b.left * cw // w, b.right * cw // w
        ab = ab.clone()
        ab[..., :top, :] = 0
        ab[..., ch - bottom :, :] = 0
        ab[..., :, :left] = 0
        ab[..., :, cw - right :] = 0
        return ab

    def close(self) -> None:
        if self.guide is not None:
            self.guide.close()


# ---------------------------------------------------------------------------------------------
# Stills


def _predict_decode(colorizer, L: torch.Tensor, device: torch.device, size) -> torch.Tensor:
    """L (N, 1, h, w) at render size -> ab (N, 2, *size), as the engine runs the model."""
    stage = ModelStage(colorizer, device, len(L))
    L = L.to(device)
    out = _cat(stage.split(len(L), lambda i, j: stage.predict(L[i:j])))
    return colorizer.decode(out, size)


@torch.inference_mode()
def colorize_gray(
    colorizer,
    gray: np.ndarray,
    device: torch.device,
    render_size: int | None = None,
    square: bool | None = None,
) -> torch.Tensor:
    """Run `colorizer` on one gray image the way the engine does and return ab (1, 2, H, W).

    `gray` (H, W) float32 or uint8 on the 0..255 scale; it is resized to the render size (short
    side `render_size`, else the colorizer's own, rounded to its stride; a square of that side
    when `square`, None: the colorizer's default, `square_render`) before the model, under
    the device's autocast, and the decoded ab is resized back to (H, W) bilinearly.
    """
    from bttf.color import luma_to_l

    h, w = gray.shape
    short = render_size or colorizer.render_size
    rh, rw = render_dims(h, w, short, colorizer.stride, square_render(colorizer, square))
    small = luma_to_l(torch.from_numpy(resize_plane(gray, (rh, rw))).float())
    return _predict_decode(colorizer, small[None, None], device, (h, w))


@torch.inference_mode()
def colorize_l(
    colorizer,
    L: torch.Tensor,
    device: torch.device,
    render_size: int | None = None,
    size: tuple[int, int] | None = None,
    square: bool | None = None,
) -> torch.Tensor:
    """Run `colorizer` on lightness L (N, 1, H, W) in [0, 100] the way the engine does: each
    image resized to the render size (`resize_plane`; a square when `square`, None: the
    colorizer's default), the model under the device's autocast, ab decoded and resized to
    `size` (default (H, W)). Returns ab (N, 2, *size) on `device`.
    Used by `bttf eval` and `bttf compare`."""
    h, w = L.shape[-2:]
    short = render_size or colorizer.render_size
    rh, rw = render_dims(h, w, short, colorizer.stride, square_render(colorizer, square))
    if (rh, rw) != (h, w):
        planes = [resize_plane(x[0].numpy(), (rh, rw)) for x in L.float().cpu()]
        L = torch.from_numpy(np.stack(planes))[:, None]
    return _predict_decode(colorizer, L, device, size or (h, w))
