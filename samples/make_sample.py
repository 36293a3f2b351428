"""Build samples/clip.mp4: a 5-second black-and-white test film with a sound track.

Three shots made from public-domain photographs that scikit-image ships (astronaut, coffee,
chelsea — see skimage.data), turned to gray and filmed by a virtual camera (slow zoom, pan,
pull-back) with hard cuts between them, a little grain and flicker like old film. The sound is
a generated tone per shot over soft noise, encoded as AAC.

    python samples/make_sample.py [OUTPUT]      # default: samples/clip.mp4

Deterministic (fixed seed); needs only numpy, opencv, scikit-image and PyAV.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data
from skimage.color import rgb2gray

W, H, FPS, SECONDS = 480, 320, 24, 5
RATE = 48_000
SHOT_FRAMES = 40  # three shots of 40 frames = 120 frames


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)


def _camera(img: np.ndarray, frame: int, n: int, start: tuple, end: tuple) -> np.ndarray:
    """Crop a window (cx, cy, width as a fraction of the image width) moving from start to end."""
    t = _ease(frame / max(1, n - 1))
    cx, cy, fw = (a + (b - a) * t for a, b in zip(start, end))
    h, w = img.shape
    cw = fw * w
    ch = cw * H / W
    x0 = float(np.clip(cx * w - cw / 2, 0, w - cw))
    y0 = float(np.clip(cy * h - ch / 2, 0, h - ch))
    # Sub-pixel crop by an affine warp, so the motion is smooth.
    m = np.array([[cw / W, 0, x0], [0, ch / H, y0]], dtype=np.float64)
    return cv2.warpAffine(
        img, m, (W, H), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT
    )


def frames(rng: np.random.Generator):
    shots = [
        (data.astronaut(), (0.45, 0.40, 0.95), (0.45, 0.30, 0.55)),  # slow zoom in on the face
        (data.coffee(), (0.30, 0.50, 0.70), (0.70, 0.50, 0.70)),  # pan left to right
        (data.chelsea(), (0.50, 0.45, 0.78), (0.50, 0.50, 0.98)),  # pull back from the cat
    ]
    for img, start, end in shots:
        gray = (rgb2gray(img) * 255.0).astype(np.float32)
        for i in range(SHOT_FRAMES):
            f = _camera(gray, i, SHOT_FRAMES, start, end)
            flicker = 1.0 + 0.02 * np.sin(i * 1.7) + rng.normal(0, 0.01)
            grain = cv2.GaussianBlur(rng.normal(0, 4.0, f.shape).astype(np.float32), (0, 0), 0.7)
            yield np.clip(f * flicker + grain, 0, 255).astype(np.uint8)


def sound(rng: np.random.Generator) -> np.ndarray:
    """Mono float32 samples: one tone per shot (with a soft attack) over quiet noise."""
    n_shot = RATE * SHOT_FRAMES // FPS
    out = []
    for hz in (220.0, 277.2, 329.6):
        t = np.arange(n_shot) / RATE
        env = np.minimum(1.0, t / 0.05) * np.minimum(1.0, (t[-1] - t) / 0.05)
        out.append(0.2 * env * np.sin(2 * np.pi * hz * t) + rng.normal(0, 0.01, n_shot))
    return np.concatenate(out).astype(np.float32)


DEFAULT_OUTPUT = Path(__file__).with_name("clip.mp4")


def main(path: str | Path = DEFAULT_OUTPUT) -> Path:
    rng = np.random.default_rng(1895)
    path = Path(path)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        out.metadata["title"] = "bttf sample: three shots from scikit-image's photographs"
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "22", "preset": "slow"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.color_range = 1  # limited ("tv")
        vs.codec_context.colorspace = 6  # BT.601 (smpte170m): SD
        vs.codec_context.color_primaries = 6
        vs.codec_context.color_trc = 6
        aus = out.add_stream("aac", rate=RATE, options={"b": "64k"})
        aus.layout = "mono"
        # Interleave: the sound of each frame's duration goes in right after the frame.
        samples = sound(rng)
        per_frame = RATE // FPS
        audio_pos = 0
        # All pictures first (18 MB): made lazily between encoder calls, x264's output was not
        # byte-for-byte repeatable from run to run.
        pictures = list(frames(rng))
        for i, gray in enumerate(pictures):
            frame = av.VideoFrame(W, H, "yuv420p")
            y = np.frombuffer(frame.planes[0], np.uint8).reshape(H, frame.planes[0].line_size)
            y[:, :W] = np.rint(16 + gray.astype(np.float32) * (219 / 255))
            for p in frame.planes[1:]:
                np.frombuffer(p, np.uint8)[:] = 128
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            frame.color_range, frame.colorspace = 1, 6
            out.mux(vs.encode(frame))
            while audio_pos < min(len(samples), (i + 1) * per_frame):
                chunk = samples[audio_pos : audio_pos + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = RATE, audio_pos, Fraction(1, RATE)
                out.mux(aus.encode(af))
                audio_pos += len(chunk)
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return path


if __name__ == "__main__":
    p = main(*sys.argv[1:2])
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
