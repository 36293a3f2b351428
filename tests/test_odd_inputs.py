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
from conftest import make_video

import bttf
from bttf.cli import main
from bttf.errors import BadInputError
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


def test_video_starting_after_the_audio_is_not_called_truncated(tmp_path: Path) -> None:
    """An MKV whose video starts 0.5 s after its audio: the container's span (audio's) was
    taken for the video's, so a whole film was said to be "truncated" (37 frames declared)."""
    src = make_video(tmp_path / "late.mkv", frames=24, pts=list(range(12, 36)), audio="aac")
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    assert stats.frames == 24
    assert not stats.notices


def test_a_film_that_starts_without_a_keyframe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut without re-encoding (its first packets are not a keyframe): every frame keeps its
    time, those before the first frame that decodes show that frame, and the warning says why
    instead of "the previous frame is shown again" (there was none)."""
    made = make_video(tmp_path / "gop.mkv", frames=48, audio=None, options={"g": "24", "bf": "0"})
    src = tmp_path / "cut.mkv"
    with av.open(str(made)) as inp, av.open(str(src), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        packets = [p for p in inp.demux(video=0) if p.size][5:]  # the keyframe and 4 more gone
        assert not packets[0].is_keyframe
        for p in packets:
            p.stream = v
            out.mux(p)
    with caplog.at_level("WARNING", logger="bttf.pipeline.decode"):
        stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    assert stats.frames == 43 and 0 < stats.repeated < 43
    assert not [n for n in stats.notices if "truncated" in n]  # (Matroska's duration: from 0)
    # the notice says so too (it said "N damaged frames … replaced by the last good one")
    assert [n for n in stats.notices if n.startswith(f"the first {stats.repeated} frames")]
    assert not [n for n in stats.notices if "damaged frame" in n]
    assert "starts without a keyframe" in caplog.text
    assert "the first frame that decodes is shown in its place" in caplog.text
    assert "the previous frame is shown again" not in caplog.text
    with pytest.raises(BadInputError, match="starts without a keyframe"):
        config = ColorizeConfig(**FAST, on_decode_error="fail", overwrite=True)
        bttf.colorize_video(src, tmp_path / "out.mp4", config)


def test_one_frame_audio_only_and_frameless_films(tmp_path: Path, capsys) -> None:
    """One frame (progressive and interlaced) is a film; audio only, and a video stream with
    no frame, are one-line errors (exit 2) with nothing written."""
    one = make_video(tmp_path / "one.mp4", frames=1, audio=None)
    assert bttf.colorize_video(one, tmp_path / "one-out.mp4", ColorizeConfig(**FAST)).frames == 1
    options = {"flags": "+ildct+ilme", "x264-params": "bff=1"}
    one_il = make_video(tmp_path / "one-il.mp4", frames=1, audio=None, options=options)
    assert bttf.colorize_video(one_il, tmp_path / "il-out.mp4", ColorizeConfig(**FAST)).frames == 1
    audio = tmp_path / "audio.m4a"
    frameless = tmp_path / "frameless.mkv"
    for path, video in ((audio, False), (frameless, True)):
        with av.open(str(path), "w") as out:
            if video:
                vs = out.add_stream("ffv1", rate=25)
                vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            a = out.add_stream("aac", rate=48000)
            a.layout = "mono"
            for s in range(0, 4800, 1024):
                f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
                f.sample_rate, f.pts = 48000, s
                out.mux(a.encode(f))
            out.mux(a.encode(None))
    for path, said in ((audio, "audio-only"), (frameless, "without any frame")):
        with pytest.raises(SystemExit) as exc:
            main(["colorize", str(path), "-o", str(tmp_path / "x.mp4"), "-q"])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and len(err.splitlines()) == 1 and said in err
    assert not (tmp_path / "x.mp4").exists()


def test_a_variable_rate_film_with_a_pause_is_not_called_truncated(tmp_path: Path) -> None:
    """6 frames around a 10 s pause (MKV: no frame count, so duration x rate = 243 frames were
    expected): it "may be truncated", though every frame was read up to its end."""
    src = make_video(tmp_path / "gap.mkv", frames=6, pts=[0, 1, 2, 240, 241, 242], audio=None)
    stats = bttf.colorize_video(src, tmp_path / "out.mkv", ColorizeConfig(**FAST))
    assert stats.frames == 6 and not stats.notices
    # a film cut short in the middle of its data still is
    whole = make_video(tmp_path / "whole.mkv", frames=96, audio=None)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    stats = bttf.colorize_video(cut, tmp_path / "cut-out.mkv", ColorizeConfig(**FAST))
    assert [n for n in stats.notices if "may be truncated" in n]
