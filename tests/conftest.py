"""Shared fixtures: tiny media made on the fly, and the optional ../shared data."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """bttf's weights cache (converted copies of .pth files) in a temporary folder, never the
    user's own."""
    path = tmp_path_factory.getbasetemp() / "bttf-cache"
    monkeypatch.setenv("BTTF_CACHE_DIR", str(path))
    return path / "weights"


def stray_threads(timeout: float = 10.0) -> list[str]:
    """The engine's threads (named "bttf-...") still alive after waiting up to `timeout` s:
    a thread whose executor was shut down without waiting exits a moment later, so a fixed
    sleep before looking would make the check depend on how busy the machine is."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("bttf-")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.01)


# --- tiny media for the pipeline and `bttf colorize` tests ------------------------------------

from fractions import Fraction

import av
import cv2
import numpy as np


def luma(i: int, w: int, h: int) -> np.ndarray:
    """A moving gradient with a bright square: some structure, limited-range values."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = 40.0 + 120.0 * ((xx + 2 * i) % w) / w + 40.0 * yy / h
    x0 = (3 * i) % max(1, w - w // 4)
    img[h // 4 : h // 2, x0 : x0 + w // 4] = 220.0
    return np.clip(img, 16, 235).astype(np.uint8)


def make_video(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 24,
    fps: int = 24,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    audio_rate: int = 48000,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    color_range: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a small test film with PyAV: gray content (neutral chroma), optional audio.

    `pts`/`time_base` give each frame's timestamp (variable frame rate); the default is CFR.
    """
    tb = time_base or Fraction(1, fps)
    stamps = pts if pts is not None else list(range(frames))
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps, options=options or {})
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if color_range is not None:
            vs.codec_context.color_range = color_range
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = None
        if audio:
            aus = out.add_stream(audio, rate=audio_rate)
            aus.layout = "mono"
        for i, p in enumerate(stamps):
            y = luma(i, width, height)
            if pix_fmt.startswith("gray"):
                frame = av.VideoFrame.from_ndarray(y, format="gray")
            else:
                frame = av.VideoFrame(width, height, pix_fmt)
                bits = 10 if "10" in pix_fmt else 8
                dtype = np.uint8 if bits == 8 else np.dtype("<u2")
                for k, plane in enumerate(frame.planes):
                    a = np.frombuffer(plane, dtype=dtype)
                    a = a.reshape(plane.height, plane.line_size // a.itemsize)
                    if k == 0:
                        a[:, : plane.width] = y.astype(dtype) << (bits - 8)
                    else:
                        a[:] = 128 << (bits - 8)
            frame.pts, frame.time_base = p, tb
            if color_range is not None:
                frame.color_range = color_range
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if aus is not None:
            seconds = float((stamps[-1] + (stamps[-1] - stamps[-2] if len(stamps) > 1 else 1)) * tb)
            n = round(seconds * audio_rate)
            fmt = aus.codec_context.codec.audio_formats[0].name
            t = np.arange(n) / audio_rate
            wave = 0.3 * np.sin(2 * np.pi * 440 * t)
            chunk = aus.codec_context.frame_size or 1024
            for s in range(0, n, chunk):
                part = wave[s : s + chunk]
                if fmt == "u8":
                    arr = np.rint(128 + 127 * part).astype(np.uint8)
                elif fmt in ("s16", "s16p"):
                    arr = np.rint(32767 * part).astype(np.int16)
                else:
                    arr = part.astype(np.float32)
                af = av.AudioFrame.from_ndarray(arr[None], format=fmt, layout="mono")
                af.sample_rate, af.pts, af.time_base = audio_rate, s, Fraction(1, audio_rate)
                out.mux(aus.encode(af))
            out.mux(aus.encode(None))
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def tiny_video(media_dir: Path) -> Path:
    """24 frames of 64×48 at 24 fps, H.264 yuv420p, with a 1 s AAC mono track (mp4)."""
    return make_video(media_dir / "tiny.mp4")


@pytest.fixture(scope="session")
def vfr_video(media_dir: Path) -> Path:
    """Variable frame rate: 20 frames with irregular timestamps (ms), AAC audio (mp4)."""
    steps = [40, 40, 80, 20, 40, 120, 40, 40, 60, 40, 40, 40, 100, 40, 40, 20, 40, 80, 40]
    pts = [0]
    for s in steps:
        pts.append(pts[-1] + s)
    return make_video(media_dir / "vfr.mp4", frames=len(pts), pts=pts, time_base=Fraction(1, 1000))


@pytest.fixture(scope="session")
def odd_video(media_dir: Path) -> Path:
    """65×49 (odd), lossless FFV1 in Matroska, no audio."""
    return make_video(
        media_dir / "odd.mkv", width=65, height=49, frames=12, codec="ffv1", audio=None
    )


@pytest.fixture(scope="session")
def audio_only(media_dir: Path) -> Path:
    """An .m4a with AAC audio and no video."""
    path = media_dir / "sound.m4a"
    with av.open(str(path), "w") as out:
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "mono"
        for s in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            af.sample_rate, af.pts = 48000, s
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))
    return path


@pytest.fixture(scope="session")
def gray_png(media_dir: Path) -> Path:
    """A 64×48 8-bit gray PNG."""
    path = media_dir / "photo.png"
    cv2.imwrite(str(path), luma(5, 64, 48))
    return path
