"""Keyframe-guided colour on longer films: speed and peak memory against the film's length.

A synthetic 640x360 gray film (FFV1) of `--lengths` frames, a new shot every `--shot` frames
(a panning textured scene, its colours its own), and a keyframe in the middle of every shot
(the truth frame): the workflow of a restorer who colours one frame per shot. Each run is a
fresh process, so its peak memory (ru_maxrss) is its own: automatic mode and keyframes,
alternated. Reported per length: fps of both, their ratio, the peak memory of both, and the
PSNR (RGB) of every 5th frame against the truth with the keyframes (automatic in brackets).
Target (issue #18): peak memory flat in the film's length.

    python benchmarks/keyframes_long.py --lengths 200 800 --shot 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 640, 360
SPEED = 1.5  # pixels a frame

RUN = """
import json, resource, sys, time
import bttf
from bttf.pipeline import ColorizeConfig
film, out, keys = sys.argv[1], sys.argv[2], sys.argv[3] or None
config = ColorizeConfig(codec="ffv1", crf=None, preset=None, pix_fmt="yuv444p", device="cpu",
                        keyframes=keys, overwrite=True, audio=False)
t0, c0 = time.perf_counter(), time.process_time()
stats = bttf.colorize_video(film, out, config)
print(json.dumps({"fps": stats.frames / (time.perf_counter() - t0),
                  "cpu_fps": stats.frames / (time.process_time() - c0),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scene(shot: int) -> np.ndarray:
    """A wide RGB scene for `shot`: a texture, tinted by three colour bands of its own."""
    rng = np.random.default_rng(shot)
    noise = cv2.resize(rng.random((H // 12, 3 * W // 12)).astype(np.float32), (3 * W, H))
    gray = 60 + 150 * (noise - noise.min()) / (noise.max() - noise.min())
    tint = np.ones((H, 3 * W, 3), np.float32)
    for band in range(3):
        tint[:, band * W : (band + 1) * W] = 0.75 + 0.5 * rng.random(3)
    return np.clip(gray[..., None] * tint, 0, 255)


def frame(t: int, shot_len: int, cache: dict) -> np.ndarray:
    shot = t // shot_len
    if shot not in cache:
        cache.clear()
        cache[shot] = scene(shot)
    x = W // 2 + (t % shot_len) * SPEED
    m = np.float32([[1, 0, -x], [0, 1, 0]])
    return np.rint(cv2.warpAffine(cache[shot], m, (W, H))).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])), 0, 255)


def make_film(path: Path, keys: Path, n: int, shot_len: int) -> None:
    keys.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24)
        vs.width, vs.height, vs.pix_fmt = W, H, "gray"
        for t in range(n):
            rgb = frame(t, shot_len, cache)
            if t % shot_len == shot_len // 2:
                cv2.imwrite(str(keys / f"{t:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            g = luma(rgb).astype(np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(g, format="gray")))
        out.mux(vs.encode(None))


def psnr_every_5th(out: Path, n: int, shot_len: int) -> float:
    cache: dict = {}
    vals = []
    with av.open(str(out)) as c:
        for t, f in enumerate(c.decode(c.streams.video[0])):
            if t % 5 == 0 and t < n:
                d = f.to_ndarray(format="rgb24").astype(np.float32) - frame(t, shot_len, cache)
                vals.append(10 * np.log10(255.0**2 / max(float(np.mean(d * d)), 1e-10)))
    return float(np.mean(vals))


def run(film: Path, out: Path, keys: Path | None) -> dict:
    cmd = [sys.executable, "-c", RUN, str(film), str(out), str(keys or "")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[200, 800])
    ap.add_argument("--shot", type=int, default=50, help="frames a shot")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bttf-kf-long-") as tmp:
        work = Path(tmp)
        for n in args.lengths:
            film, keys = work / f"film{n}.mkv", work / f"keys{n}"
            make_film(film, keys, n, args.shot)
            auto = run(film, work / "auto.mkv", None)
            auto_psnr = psnr_every_5th(work / "auto.mkv", n, args.shot)
            keyed = run(film, work / "keyed.mkv", keys)
            row = {
                "frames": n,
                "keyframes": len(list(keys.iterdir())),
                "auto": auto,
                "keyed": keyed,
                "ratio": keyed["fps"] / auto["fps"],
                "cpu_ratio": keyed["cpu_fps"] / auto["cpu_fps"],
                "psnr": psnr_every_5th(work / "keyed.mkv", n, args.shot),
                "auto_psnr": auto_psnr,
            }
            rows.append(row)
            print(
                f"{n:5d} frames, {row['keyframes']:3d} keyframes: {keyed['fps']:.2f} fps "
                f"(automatic {auto['fps']:.2f}, {row['ratio']:.2f}x; CPU time "
                f"{row['cpu_ratio']:.2f}x), peak {keyed['peak_mib']:.0f} MiB (automatic "
                f"{auto['peak_mib']:.0f}), PSNR {row['psnr']:.2f} dB ({auto_psnr:.2f})",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
