"""Dense optical flow between gray frames, occlusion masks, and warping.

Shared by the temporal stabilizer (`bttf.pipeline.temporal`) and the temporal metrics
(`bttf.metrics.video`). The flow method is OpenCV's DIS (Kroeger et al. 2016): fast on
a CPU, good enough to carry colour from one frame to the next. Convention used everywhere here:

    flow = estimate_flow(src, dst)   # (H, W, 2) float32, (dx, dy) in pixels
    src[y, x] ~= dst[y + flow[y, x, 1], x + flow[y, x, 0]]
    warp(dst, flow) ~= src           # dst pulled back onto src's pixel grid

so to bring frame t-1 onto frame t, estimate the flow from t to t-1 and warp frame t-1 with it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


#: OpenCV's DIS fails on small or elongated pictures with motion (an assertion in its pyramid,
#: or a segmentation fault: 16x100, 24x512, 8x500, 16x1000 …); pictures with a side under
#: `_DIS_MIN_SIDE` or more than `_DIS_MAX_ASPECT` times longer than wide are edge-padded to a
#: shape it takes (checked for every preset, moving noise, sides 1 to 4000), flow cropped back.
_DIS_MIN_SIDE, _DIS_MAX_ASPECT = 32, 16


def _dis_shape(h: int, w: int) -> tuple[int, int]:
    return (
        max(h, _DIS_MIN_SIDE, -(-w // _DIS_MAX_ASPECT)),
        max(w, _DIS_MIN_SIDE, -(-h // _DIS_MAX_ASPECT)),
    )


class FlowEstimator:
    """OpenCV DIS optical flow on uint8 gray frames.

    `preset` is "ultrafast", "fast" or "medium" (slower, more accurate). `settings` override the
    preset's, by the name of DIS's setter in snake case: `finest_scale` (the pyramid level it
    stops at: 1, half size, in every preset; 0 is full size), `patch_stride`,
    `variational_refinement_iterations` … Not thread-safe: use one estimator per thread.
    """

    def __init__(self, preset: str = "fast", **settings: int) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(PRESETS)}")
        self.preset, self.settings = preset, settings
        self._dis = self._create()
        self._dis_init = None  # (the calls with a guess: see __call__)

    def _create(self) -> cv2.DISOpticalFlow:
        dis = cv2.DISOpticalFlow_create(PRESETS[self.preset])
        for name, value in self.settings.items():
            setter = "set" + name.title().replace("_", "")
            if not hasattr(dis, setter):
                raise ValueError(f"DIS has no setting {name!r}")
            getattr(dis, setter)(value)
        return dis

    def __call__(
        self, src: np.ndarray, dst: np.ndarray, init: np.ndarray | None = None
    ) -> np.ndarray:
        """Flow (H, W, 2) float32 from `src` to `dst` (uint8 (H, W)): src(p) ~ dst(p + flow(p)).
        `init`: a guess of it (H, W, 2) to refine (e.g. flows composed over several frames)."""
        if src.shape != dst.shape or src.ndim != 2:
            raise ValueError(
                f"expected two gray frames of equal shape (H, W), got {src.shape} and {dst.shape}"
            )
        # DIS starts from the flow it is given (at its coarsest scale) when there is one; a DIS
        # object given one starts its next call without one from it too (OpenCV 5.1), so the
        # calls with a guess have an object of their own
        dis = self._dis
        guess = None
        if init is not None:
            guess = np.array(init, np.float32, copy=True)
            if self._dis_init is None:
                self._dis_init = self._create()
            dis = self._dis_init
        h, w = src.shape
        shape = _dis_shape(h, w)
        if shape == (h, w):
            return dis.calc(_u8(src), _u8(dst), guess)
        pad = ((0, shape[0] - h), (0, shape[1] - w))
        src, dst = np.pad(_u8(src), pad, mode="edge"), np.pad(_u8(dst), pad, mode="edge")
        if guess is not None:
            guess = np.pad(guess, (*pad, (0, 0)), mode="edge")
        return np.ascontiguousarray(dis.calc(src, dst, guess)[:h, :w])


def _u8(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _sample_map(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    return xs, ys


def warp(img: np.ndarray, flow: np.ndarray, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Sample `img` (H, W) or (H, W, C<=4) at p + flow(p), bilinear, onto the flow's grid."""
    xs, ys = _sample_map(flow)
    return cv2.remap(img, xs, ys, interpolation=cv2.INTER_LINEAR, borderMode=border)


def in_bounds(flow: np.ndarray) -> np.ndarray:
    """Bool (H, W): where p + flow(p) falls inside the frame."""
    h, w = flow.shape[:2]
    xs, ys = _sample_map(flow)
    return (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)


def consistent_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """Bool (H, W) on `flow_fw`'s source grid: True where the flow can be trusted.

    `flow_fw` goes src -> dst and `flow_bw` dst -> src. A pixel is rejected (occluded or on a
    motion boundary) by the checks of Sundaram et al. 2010 as used by Ruder et al. 2016 and by
    Lai et al. 2018's warping-error code, with flows in pixels:
      |fw + bw(p + fw)|^2 > 0.01 (|fw|^2 + |bw(p + fw)|^2) + 0.5    (forward-backward mismatch)
      |grad fw|^2          > 0.01 |fw|^2 + 0.002                     (motion boundary)
    and where p + fw(p) leaves the frame. `unit`: how many pixels of the frame the flows were
    estimated on one grid step is (flows downscaled with `resize_flow` by a factor 1/unit keep
    these thresholds in the original pixels).
    """
    bw_at = warp(flow_bw, flow_fw)
    u, v = flow_fw[..., 0], flow_fw[..., 1]
    bu, bv = bw_at[..., 0], bw_at[..., 1]
    fw2 = u * u + v * v
    su, sv = u + bu, v + bv
    u2 = unit * unit
    # (elementwise on the two planes: numpy's sum over a last axis of 2 is slow)
    mismatch = su * su + sv * sv > 0.01 * (fw2 + bu * bu + bv * bv) + 0.5 / u2
    du_dy, du_dx = np.gradient(u)
    dv_dy, dv_dx = np.gradient(v)
    # the gradient is scale-free; |fw|^2 and the constant are in original pixels
    boundary = du_dx**2 + du_dy**2 + dv_dx**2 + dv_dy**2 > 0.01 * u2 * fw2 + 0.002
    return ~(mismatch | boundary) & in_bounds(flow_fw)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow (H, W, 2) resampled to `size` = (h, w) with vectors rescaled to the new pixel units."""
    h, w = size
    H, W = flow.shape[:2]
    if (h, w) == (H, W):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA if h < H else cv2.INTER_LINEAR)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out


def bilinear_taps(flow: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear warp by `flow` (H, W, 2) as 4 taps per pixel: row indices (4, H*W) int64
    into the flattened source (H*W, ...) and weights (4, H*W) float32. Sample points outside
    the frame are clamped to its edge (like `grid_sample` with padding "border")."""
    h, w = flow.shape[:2]
    xs, ys = _sample_map(flow)
    np.clip(xs, 0, w - 1, out=xs)
    np.clip(ys, 0, h - 1, out=ys)
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    idx = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]).reshape(4, -1)
    wts = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]).reshape(4, -1)
    return torch.from_numpy(idx), torch.from_numpy(wts.astype(np.float32))
