"""What each design choice of the engine is worth: (d) and (b) with one choice undone at a
time (`pipeline_modes.VARIANTS`), threads, batch and render sizes, and the per-frame cost of
the ways in and out of Lab.

    python benchmarks/pipeline_levers.py --frames 120    # or: pipeline.py --levers
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from pipeline_common import SIZES, clip_for, experiment_main, spawn
from pipeline_modes import VARIANTS, colorizer_for


def levers_bench(args: argparse.Namespace, tmp: Path) -> dict:
    """(d) and (b) with one design choice changed at a time, and per-frame costs of the paths
    in and out of Lab. Each row: what the code does now vs the alternative."""
    w, h = SIZES[args.size]
    clip = clip_for(args, tmp)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    d = "bttf-notemporal"
    rows: list[tuple[str, str, str, dict]] = []  # (lever, variant, mode, extra spawn args)
    rows.append(("engine as it is", "default", d, {}))
    for v, what in VARIANTS.items():
        rows.append((what, v, d, {"variant": v}))
    # (the "whole-decode" part of the old path was dropped with its variant, f6e8474; naming it
    # here stopped --levers at this row with "unknown variant")
    rows.append(("old CPU model path", "fp32,nchw", d, {"variant": "fp32,nchw"}))
    for t in sorted({1, cores}):
        rows.append(("torch threads", f"threads={t}", d, {"threads": t}))
    for bs in (1, 2, 4, 16):
        rows.append(("batch size", f"batch={bs}", d, {"batch": bs}))
    rows.append(("temporal on", "default", "bttf", {}))
    rows.append(("temporal on", f"threads={cores}", "bttf", {"threads": cores}))
    for t in sorted({1, cores}):
        rows.append(("model alone", f"threads={t}", "model", {"threads": t}))
    rows.append(("model alone, 1 thread", "compile", "model", {"threads": 1, "variant": "compile"}))
    # per-core efficiency of the model (one thread, as the engine runs it on 2 cores)
    one = {"threads": 1}
    rows.append(("model alone, 1 thread", "fp32", "model", {**one, "variant": "fp32"}))
    rows.append(("model alone, 1 thread", "fp32,nchw", "model", {**one, "variant": "fp32,nchw"}))
    for bs in (1, 2, 4):
        rows.append(("model alone, 1 thread", f"batch={bs}", "model", {**one, "batch": bs}))
    for rw in (320, 336, 352, 448, 464, 480):  # 336 = 16 * 21; 320, 448 = 64 * 5, 64 * 7
        variant = {**one, "render_hw": f"256x{rw}"}
        rows.append(("render size, 1 thread", f"256x{rw}", "model", variant))
    runs = []
    for lever, variant, mode, extra in rows:
        r = spawn(mode, clip, tmp, args, **extra)
        r.update(lever=lever, variant_label=variant)
        runs.append(r)
        if not args.json:
            print(
                f"{lever:42}{variant:24}{mode:16}{r['fps']:8.1f} fps{r['cpu_ms_per_frame']:8.1f}"
                f" CPU ms/frame{r['peak_mib']:7.0f} MiB",
                flush=True,
            )
    return {
        "size": args.size,
        "frames": args.frames,
        "runs": runs,
        "colour_paths_ms": colour_paths(w, h, args.model),
    }


def colour_paths(width: int, height: int, model: str | None, reps: int = 20) -> dict:
    """Per-frame cost (ms) of the two ways in and out of Lab, at this frame size, 1 frame."""
    import av
    import cv2
    import torch
    import torch.nn.functional as F

    from bttf.color import L_LUT, lab_to_rgb, rgb_to_lab
    from bttf.models import get_spec
    from bttf.pipeline.stages import chroma_planes, render_dims
    from bttf.pipeline.stages import resize_plane as _resize

    torch.set_num_threads(1)  # per-frame cost on one core
    spec = get_spec(model or "default")
    rh, rw = render_dims(height, width, spec.render_size, spec.stride)
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (height, width), dtype=np.uint8)
    i420 = np.concatenate([y.ravel(), np.full(height * width // 2, 128, np.uint8)])
    i420 = i420.reshape(height * 3 // 2, width)
    ab_small = torch.randn(1, 2, rh // 4, rw // 4) * 20
    lut = L_LUT

    def t(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return round(1000 * (time.perf_counter() - t0) / reps, 3)

    def l_lut():  # what the engine does: resize Y, then one table lookup at render size
        lut[torch.from_numpy(_resize(y, (rh, rw))).long()]

    def l_rgb():  # YUV -> RGB at full size, RGB -> Lab, take L, resize
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
        F.interpolate(lab[:, :1], size=(rh, rw), mode="area")

    ch, cw = (height + 1) // 2, (width + 1) // 2

    def out_planes():  # the engine: ab -> chroma plane size, Lab -> RGB -> CbCr there; Y reused
        ab = F.interpolate(ab_small, size=(ch, cw), mode="bilinear", align_corners=False)
        Lc = lut[torch.from_numpy(_resize(y, (ch, cw))).long()][None, None]
        cb, cr = chroma_planes(Lc, ab, 6, False, 8)
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data in zip(frame.planes, (y, cb[0].numpy(), cr[0].numpy())):
            dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            dst[:, : plane.width] = data

    def out_rgb():  # full size: ab -> full, Lab -> RGB, uint8, then swscale RGB -> yuv420p
        ab = F.interpolate(ab_small, size=(height, width), mode="bilinear", align_corners=False)
        L = lut[torch.from_numpy(y).long()][None, None]
        rgb = lab_to_rgb(torch.cat([L, ab], 1))[0]
        arr = (rgb * 255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")

    colorizer = colorizer_for(model)
    with torch.inference_mode():
        logits = colorizer.predict(torch.rand(1, 1, rh, rw) * 100).expand(8, -1, -1, -1)
    logits = logits.contiguous()
    Lc = torch.rand(8, 1, ch, cw) * 100

    def chroma_batch():  # decode + chroma planes on the batch of 8 at once
        with torch.inference_mode():
            chroma_planes(Lc, colorizer.decode(logits, (ch, cw)), 6, False, 8)

    def chroma_frames():  # the same, frame by frame (what the engine does on CPU)
        with torch.inference_mode():
            for k in range(8):
                chroma_planes(
                    Lc[k : k + 1], colorizer.decode(logits[k : k + 1], (ch, cw)), 6, False, 8
                )

    return {
        "L_lut_render_size": t(l_lut),
        "L_via_rgb_full_size": t(l_rgb),
        "out_chroma_planes_yuv420p": t(out_planes),
        "out_via_rgb_full_size": t(out_rgb),
        "chroma_stage_per_frame": round(t(chroma_frames) / 8, 3),
        "chroma_stage_batch_of_8": round(t(chroma_batch) / 8, 3),
    }


def report(r: dict, cond: dict) -> None:
    print("per-frame CPU ms (one core):", r["colour_paths_ms"])
    print(f"conditions: {cond}")


def main() -> None:
    experiment_main(__doc__, levers_bench, report)


if __name__ == "__main__":
    main()
