"""Odd films a new user may have, made with PyAV: tiny and elongated pictures, one frame, no
keyframe first, audio only, a video stream with no frame (#21, "go on as a new user would")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import bttf
from bttf.pipeline import ColorizeConfig

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}


def film(path: Path, width: int, height: int, frames: int = 4, codec: str = "ffv1") -> Path:
    """A moving diagonal pattern (the stabilizer's optical flow has motion to find)."""
    pix = "yuv444p" if codec == "ffv1" else "yuv420p"
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = width, height, pix
        for i in range(frames):
            y = (np.arange(width)[None, :] * 7 + np.arange(height)[:, None] * 3 + 5 * i) % 200
            f = av.VideoFrame(width, height, pix)
            for k, p in enumerate(f.planes):
                a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
                a[:, : p.width] = (y[: p.height, : p.width] + 20) if k == 0 else 128
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return path


@pytest.mark.parametrize(("h", "w"), [(16, 100), (24, 512), (8, 500), (1, 16), (16, 1), (4000, 8)])
def test_optical_flow_on_small_and_elongated_pictures(h: int, w: int) -> None:
    """OpenCV's DIS asserted (8x500) or crashed the process (16x100, 24x512) on such pictures:
    a 1000x8 film stopped with "OpenCV … inv_scale_x > 0", a 16x1 film with a segmentation
    fault. Run in a subprocess, so a crash fails the test instead of ending the run."""
    code = textwrap.dedent(
        f"""
        import numpy as np
        from bttf.pipeline.flow import FlowEstimator
        rng = np.random.default_rng(0)
        for preset in ("ultrafast", "fast", "medium"):
            a = rng.integers(0, 255, ({h}, {w}), dtype=np.uint8)
            b = np.roll(a, (1, 2), (0, 1))
            flow = FlowEstimator(preset)(a, b, np.zeros(({h}, {w}, 2), np.float32))
            assert flow.shape == ({h}, {w}, 2) and flow.dtype == np.float32, flow.shape
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize(("w", "h"), [(1000, 8), (16, 1), (2, 2), (17, 9)])
def test_tiny_and_elongated_films(tmp_path: Path, w: int, h: int) -> None:
    src = film(tmp_path / "in.mkv", w, h)
    stats = bttf.colorize_video(src, tmp_path / "out.mkv", ColorizeConfig(**FAST, codec="ffv1"))
    assert stats.frames == 4 and stats.size == (w, h)
