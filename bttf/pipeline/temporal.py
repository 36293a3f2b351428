"""Temporal stabilization of per-frame colorization: flow-guided recursive fusion of predictions.

A per-frame colorizer picks its colours afresh on every frame, so they flicker. The `Stabilizer`
sits between `Colorizer.predict` and `Colorizer.decode` in the streaming engine and, frame by
frame, carries the previous frame's *fused* prediction forward along the optical flow and blends
it with the current one:

    p_t   = (1 - a) * softmax(logits_t) + a * warp(p_{t-1})      (313-bin models, "mixture")
    ab_t  = (1 - a) * ab_t               + a * warp(ab_{t-1})    (models that output ab)
    a     = strength * confidence

and returns log p_t in place of the logits, so the engine decodes it with the annealed mean as
usual (softmax(log p / T) = p^(1/T) / Z). Blending distributions rather than decoded colours
keeps two plausible modes (a red or a blue car) from averaging to gray: the annealed mean picks
the dominant mode of the mixture. `fusion="product"` blends the logits instead (a geometric
mixture, product of experts): cheaper, but it does average disagreeing modes, and measured worse
where a per-frame model flips between modes (benchmarks/temporal.py).

The confidence falls to zero where the flow cannot be trusted: the forward-backward check
(occlusions, motion boundaries, pixels that came from outside the frame) and the luma check
(the previous gray frame warped onto the current one must match it, up to a global exposure
change, which old film has plenty of). Flow is OpenCV DIS on the gray frames (at render size /
`flow_scale`); the checks run at twice the prediction's resolution and the warp at the
prediction's resolution (the flow is downscaled). The flow work of a batch runs on a helper
thread while the tensor work of the previous frames proceeds.

The tensor work is pixel-major: each pixel's 313 values are one contiguous row (fastcolor writes
its logits that way), the bilinear warp is one weighted gather of four rows per pixel
(`flow.bilinear_taps` fed to `embedding_bag`), and on the CPU a frame goes a few hundred pixels
at a time so that every pass runs in the cache. Against `grid_sample` over 313 planes and a
softmax across them, that is 2-3x less time per frame.

Scene cuts reset the state (`bttf.pipeline.cuts.CutDetector`), so no colour crosses a cut: the
first frame of every shot is exactly the per-frame prediction.

The filter is causal: each batch comes back fused at once, as the engine expects. A look-ahead
(bidirectional window) would need a delay line in the engine and a second warp per frame, while
the cost of the one warp is already the stabilizer's limit; the causal filter alone removes most
of the flicker (see benchmarks/temporal.py).
"""

from __future__ import annotations

import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bttf.models import bins
from bttf.pipeline.cuts import CutDetector, CutParams
from bttf.pipeline.flow import FlowEstimator, bilinear_taps, consistent_mask, resize_flow, warp

log = logging.getLogger(__name__)

# Flow (in prediction pixels) below which a frame counts as still and the warp is skipped: the
# state then lags the content by at most _STILL * a / (1 - a) pixels (0.18 at strength 0.9).
_STILL = 0.02

DEFAULT_STRENGTH = 0.9
Fusion = Literal["mixture", "product"]


@dataclass(frozen=True)
class StabilizerParams:
    """Knobs of the stabilizer; the defaults are the measured ones (benchmarks/temporal.py)."""

    strength: float = DEFAULT_STRENGTH  # 0 = per-frame, 1 = keep the past wherever flow is trusted
    fusion: Fusion = "mixture"
    flow_preset: str = "fast"  # DIS preset: "ultrafast", "fast" or "medium"
    flow_scale: int = 2  # estimate the flow at render size / flow_scale
    luma_tolerance: float = 20.0  # gray levels: warped-previous vs current mismatch scale
    detect_cuts: bool = True
    cut_params: CutParams | None = None


class Stabilizer:
    """Stateful, flow-guided temporal fusion of a colorizer's raw output (see the module doc).

    Call it with consecutive batches of one video:
        fused = stabilizer(gray, out, output_kind)
    `gray`: uint8 (N, h, w) the frames at render size; `out`: (N, C, h', w') the model's raw output
    for them (logits over the 313 bins when `output_kind == "bins"`, ab when "ab"). Returns a
    tensor of the same shape, dtype and device: log-probabilities for "bins" (decode them like
    logits; -inf where a bin has underflowed to probability 0), ab for "ab". Call `reset()`
    before another video or after a seek. `cuts` lists the frame indices (counted since the
    last `reset()`) where a new shot began.
    """

    def __init__(self, params: StabilizerParams | None = None, **overrides) -> None:
        params = replace(params or StabilizerParams(), **overrides)
        if not 0.0 <= params.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {params.strength}")
        if params.fusion not in ("mixture", "product"):
            raise ValueError(f"fusion must be 'mixture' or 'product', got {params.fusion!r}")
        if params.flow_scale < 1 or params.luma_tolerance <= 0:
            raise ValueError("flow_scale must be >= 1 and luma_tolerance > 0")
        self.params = params
        self._flow = FlowEstimator(params.flow_preset)
        self._cut_detector = CutDetector(params.cut_params)
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new video starts at frame 0."""
        self.cuts: list[int] = []
        self._frame = 0
        self._cut_detector.reset()
        self._state: torch.Tensor | None = None  # (h' * w', C) fused probabilities/logits/ab
        self._spare: torch.Tensor | None = None  # the buffer the next state is written into
        self._out_shape: tuple[int, ...] | None = None
        self._prev_gray: np.ndarray | None = None
        self._planned = False  # a frame was planned since the reset

    def close(self) -> None:
        """Let the helper thread go (after its pending work); a later call starts another."""
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)

    def _executor(self) -> ThreadPoolExecutor:
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bttf-flow")
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def plan(self, gray: np.ndarray, size: tuple[int, int]) -> _Plan:
        """Detect the cuts in the next batch `gray` and start its flow work on the helper
        thread, so that it runs while the model predicts that batch; hand the result to the
        call that fuses that batch. Batches must be planned in order. `size` is the (h', w')
        the prediction will have (a wrong guess only costs time)."""
        gray = _as_u8(gray)
        return _Plan(gray, tuple(size), self._plan(gray, tuple(size)))

    def __call__(
        self,
        gray: np.ndarray,
        out: torch.Tensor,
        output_kind: str,
        plan: _Plan | None = None,
        temperature: float | None = None,
        unsure: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Fuse the batch `gray` (planned now, or by `plan()`) and return it (see the class
        doc). With a plan, this call only touches the fused state, so it may run on another
        thread than the planning, one batch behind it. With `temperature` (313-bin output),
        return ab (N, 2, h', w') instead: the fused distribution's annealed mean, decoded in
        the same pass (on the CPU, while each block is in the cache), with a temperature per
        pixel where `unsure` is given (`bins.annealed_mean`)."""
        if output_kind not in ("bins", "ab"):
            raise ValueError(f"output_kind must be 'bins' or 'ab', got {output_kind!r}")
        gray = _as_u8(gray)
        if gray.ndim != 3 or out.ndim != 4 or gray.shape[0] != out.shape[0]:
            raise ValueError(
                f"expected gray (N, h, w) and out (N, C, h', w') with the same N, got "
                f"{gray.shape} and {tuple(out.shape)}"
            )
        if plan is not None and plan.gray.shape != gray.shape:
            raise ValueError("the plan was made for other frames than this call's")
        if out.shape[0] == 0:
            return out
        size = (out.shape[-2], out.shape[-1])
        if self._out_shape != tuple(out.shape[1:]):
            self._state = None  # the prediction's shape changed: start afresh
            self._out_shape = tuple(out.shape[1:])
        if plan is None:
            jobs = self._plan(gray, size)
        elif plan.size != size:  # planned for another size: redo the flow work (its thread)
            pool = self._executor()
            jobs = [
                j if j is None else (pool.submit(self._confidence, j[1], j[2], size), *j[1:])
                for j in plan.jobs
            ]
        else:
            jobs = plan.jobs
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        inv_t = None if temperature is None or output_kind != "bins" else 1.0 / temperature
        unsure = bins.check_unsure(unsure, "Stabilizer")
        with torch.no_grad():
            return self._run(out, output_kind, jobs, inv_t, unsure)

    def _plan(self, gray: np.ndarray, size: tuple[int, int]) -> list[tuple | None]:
        """Per frame: None where it starts a shot (no fusion), else (future confidence, frame,
        previous frame)."""
        jobs: list[tuple | None] = []
        prev = self._prev_gray
        fresh = not self._planned or self.params.strength == 0.0
        self._planned = True
        pool = self._executor()
        for g in gray:
            cut = self.params.detect_cuts and self._cut_detector.feed(g)
            if cut:
                self.cuts.append(self._frame)
            self._frame += 1
            if cut or fresh or prev is None or prev.shape != g.shape:
                jobs.append(None)
            else:
                jobs.append((pool.submit(self._confidence, g, prev, size), g, prev))
            fresh = self.params.strength == 0.0
            prev = g
        self._prev_gray = gray[-1]
        return jobs

    def _run(
        self,
        out: torch.Tensor,
        kind: str,
        jobs: list[tuple | None],
        inv_t: float | None,
        unsure: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        n, c, h, w = out.shape
        mixture = kind == "bins" and self.params.fusion == "mixture"
        # pixel-major: each pixel's C values are one contiguous row (free for channels_last
        # output; one transpose otherwise)
        x = out.permute(0, 2, 3, 1).float().contiguous().view(n, h * w, c)
        result = torch.empty(n, h * w, c if inv_t is None else 2, device=x.device)
        for i, job in enumerate(jobs):
            taps = alpha = None
            if job is None or self._state is None:  # a shot starts: the per-frame prediction
                self._state = None
            else:
                future = job[0]
                conf, flow = future.result()
                alpha = torch.from_numpy(conf.reshape(-1, 1)).to(x.device)
                if float(np.abs(flow).max()) >= _STILL:  # else a still shot: warping only blurs
                    taps = tuple(t.to(x.device) for t in bilinear_taps(flow))
            new = self._spare
            if new is None or new.shape != x.shape[1:] or new.device != x.device:
                new = torch.empty_like(x[0])
            _fuse(x[i], self._state, new, taps, alpha, mixture, result[i], inv_t, unsure)
            self._spare, self._state = self._state, new  # two buffers, taking turns
        return result.view(n, h, w, -1).permute(0, 3, 1, 2).to(out.dtype)

    def _confidence(
        self, g: np.ndarray, prev: np.ndarray, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Trust in the warped previous frame (h', w') float32 in [0, strength], and the flow
        from the current frame to the previous one at `size` = (h', w'), in its pixels."""
        p = self.params
        h, w = size
        fs = p.flow_scale
        if fs > 1:
            dims = (max(w, g.shape[1] // fs), max(h, g.shape[0] // fs))
            g = cv2.resize(g, dims, interpolation=cv2.INTER_AREA)
            prev = cv2.resize(prev, dims, interpolation=cv2.INTER_AREA)
        fw = self._flow(g, prev)  # current -> previous: where each current pixel came from
        bw = self._flow(prev, g)
        # the checks run at twice the prediction's resolution: finer would be wasted work
        H, W = g.shape
        work = (min(H, 2 * h), min(W, 2 * w))
        unit = H * fs / work[0]  # render pixels per work pixel
        if work != (H, W):
            fw, bw = resize_flow(fw, work), resize_flow(bw, work)
            g = cv2.resize(g, work[::-1], interpolation=cv2.INTER_AREA)
            prev = cv2.resize(prev, work[::-1], interpolation=cv2.INTER_AREA)
        valid = consistent_mask(fw, bw, unit)
        diff = warp(prev.astype(np.float32), fw)
        diff -= g
        if valid.any():  # a global exposure change (film flicker) is not a disagreement
            diff -= float(np.median(diff[valid]))
        diff *= 1.0 / p.luma_tolerance
        conf = np.exp(-(diff * diff)) * valid
        conf = cv2.resize(conf.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        conf *= p.strength
        return conf, resize_flow(fw, size)


@dataclass(frozen=True)
class _Plan:
    """A batch's cut decisions and pending flow work (`Stabilizer.plan`)."""

    gray: np.ndarray
    size: tuple[int, int]
    jobs: list


def _as_u8(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    return gray if gray.dtype == np.uint8 else np.clip(gray, 0, 255).astype(np.uint8)


def _fuse(
    x: torch.Tensor,
    prev: torch.Tensor | None,
    new: torch.Tensor,
    taps: tuple[torch.Tensor, torch.Tensor] | None,
    alpha: torch.Tensor | None,
    mixture: bool,
    result: torch.Tensor,
    inv_t: float | None = None,
    unsure: tuple[float, float] | None = None,
) -> None:
    """One frame of the recursive fusion, pixel-major: `x` (P, C) the model's output,
    `prev` (P, C) the fused state of the previous frame (None: start a shot), `alpha` (P, 1)
    the weight of the warped past, `taps` the bilinear warp (`bilinear_taps`; None: no motion).
    Writes the new state into `new` (probabilities for a mixture, else the output's own space)
    and what the decoder gets into `result` (log-probabilities for a mixture); with `inv_t`
    (313-bin output), `result` is (P, 2): the fused distribution's annealed mean at T = 1/inv_t,
    computed while each step is still in the cache.

    On the CPU the frame goes `bins.PIXEL_STEP` pixels at a time, so each step's blocks stay in the
    cache through all its passes; on a GPU, in one piece.
    """
    p_all = x.shape[0]
    step = bins.PIXEL_STEP if x.device.type == "cpu" else p_all
    if not mixture:
        step = max(step, bins.PIXEL_STEP * bins.Q // x.shape[1])
    if prev is not None:
        keep = 1.0 - alpha  # (P, 1) weight of the current frame
        if taps is not None:
            idx, wts = taps  # as (P, 4): each pixel's 4 source rows and their weights times a
            idx, wts = idx.t().contiguous(), (wts.t() * alpha).contiguous()
    for s in range(0, p_all, step):
        e = min(p_all, s + step)
        xs, nw, rs = x[s:e], new[s:e], result[s:e]
        cs = torch.softmax(xs, 1) if mixture else xs
        if prev is None:
            nw.copy_(cs)
            if inv_t is None:
                rs.copy_(xs)
            else:
                bins.annealed_mean_rows(xs, inv_t, rs, unsure=unsure)
            continue
        if taps is None:  # a still shot: a * previous
            past = prev[s:e] * alpha[s:e]
        else:  # a * the bilinear warp of the previous: a weighted sum of 4 rows per pixel
            past = F.embedding_bag(idx[s:e], prev, per_sample_weights=wts[s:e], mode="sum")
        torch.addcmul(past, cs, keep[s:e], out=nw)  # + (1 - a) * current
        if inv_t is not None:
            bins.annealed_mean_rows(nw, inv_t, rs, probs=mixture, unsure=unsure)
        elif mixture:
            torch.log(nw, out=rs)
        else:
            rs.copy_(nw)
