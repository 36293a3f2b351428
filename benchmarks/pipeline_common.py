"""Shared by the pipeline benchmarks (`pipeline.py` and the experiments beside it): the test
clip, the machine's conditions, one mode run in a fresh interpreter (`spawn`, which runs
`pipeline_modes.py --worker MODE`), the options every experiment takes and the frame that runs
one (`run_experiment`: a temp folder, the conditions before and after, the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {"360p": (640, 360), "480p": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
RATE = 24
WARMUP_FRAMES = 16
PRESET = "medium"  # the engine's default x264 preset (ColorizeConfig)


# ---------------------------------------------------------------------------------------------
# The test clip


def _periodic_texture(h: int, w: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Noise with a 1/f^beta spectrum, periodic in both axes (so it can pan forever), in [0, 1]."""
    spec = np.fft.rfft2(rng.standard_normal((h, w)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    t = np.fft.irfft2(spec / f**beta, s=(h, w))
    t -= t.min()
    return t / t.max()


def make_clip(path: Path, width: int, height: int, frames: int, seed: int = 0) -> None:
    """Write a gray h264 film: two shots of panning textured scenery with a moving disc,
    vignetting, flicker and grain (like old film); yuv420p with flat chroma, 24 fps."""
    import av
    import cv2

    rng = np.random.default_rng(seed)
    shots = []
    for beta in (1.4, 1.8):
        tex = _periodic_texture(height, width, rng, beta)
        shots.append((40 + 180 * tex).astype(np.float32))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1.0 - 0.35 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    r = height / 8
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=RATE, options={"crf": "18", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = Fraction(1, 12800)
        for i in range(frames):
            base = shots[0] if i < frames // 2 else shots[1]
            dy, dx = (i * 1) % height, (i * 3) % width  # pan right and down
            img = np.roll(base, (-dy, -dx), axis=(0, 1))
            cx = (0.2 + 0.6 * ((i * 5) % width) / width) * width
            cy = height / 2 + height / 5 * math.sin(i / 12)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img = np.where(disc, 235.0 - 0.3 * img, img)
            img = img * vignette * (1.0 + 0.02 * math.sin(i * 1.7))  # flicker
            grain = rng.normal(0, 0.8, (height // 2, width // 2)).astype(np.float32)
            img += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)  # grain
            y = np.clip(16 + img * (219 / 255), 16, 235).astype(np.uint8)
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(frame.planes, (y, 128, 128)):
                dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                dst[:, : plane.width] = value
            frame.pts = i * (12800 // RATE)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def clip_for(args: argparse.Namespace, tmp: Path, frames: int | None = None) -> Path:
    """The test clip at `args.size`, `frames` (default `args.frames`) long, made in `tmp`."""
    n = frames or args.frames
    clip = tmp / f"clip-{args.size}-{n}.mp4"
    if not clip.exists():
        make_clip(clip, *SIZES[args.size], n)
    return clip


# ---------------------------------------------------------------------------------------------
# Running a mode, the machine


def spawn(mode: str, clip: Path, tmp: Path, args: argparse.Namespace, **extra) -> dict:
    """Run `--worker mode` in a fresh interpreter; its last stdout line is the result."""
    cmd = [
        sys.executable,
        str(HERE / "pipeline_modes.py"),
        "--worker",
        mode,
        "--clip",
        str(clip),
        "--tmp",
        str(tmp),
        "--device",
        args.device,
        "--frames",
        str(args.frames),
        "--batch",
        str(extra.get("batch", args.batch)),
        "--preset",
        args.preset,
    ]
    if args.render_size:
        cmd += ["--render-size", str(args.render_size)]
    if args.model:
        cmd += ["--model", args.model]
    threads = extra.get("threads", args.threads)
    if threads:
        cmd += ["--threads", str(threads)]
    if extra.get("variant"):
        cmd += ["--variant", extra["variant"]]
    if extra.get("render_hw"):
        cmd += ["--render-hw", extra["render_hw"]]
    if extra.get("no_warmup"):
        cmd.append("--no-warmup")
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def conditions() -> dict:
    """The machine and how busy it was (timings on a loaded machine are not comparable)."""
    import av
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    training = subprocess.run(
        ["pgrep", "-f", "bttf train"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu,
        "cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "other_training_running": bool(training.stdout.strip()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "ffmpeg_libavcodec": av.library_versions.get("libavcodec"),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


# ---------------------------------------------------------------------------------------------
# Options and the frame of one experiment


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every pipeline experiment takes (and passes on to its modes)."""
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", default="360p", choices=sorted(SIZES))
    parser.add_argument("--model", default=None, help="registered model (default: `default`)")
    parser.add_argument("--frames", type=int, default=240, help="frames in the clip")
    parser.add_argument("--batch", type=int, default=8, help="batch size of (b) and (d)")
    parser.add_argument("--preset", default=PRESET, help="x264 preset of every mode")
    parser.add_argument(
        "--render-size",
        type=int,
        default=None,
        help="short side the model runs at (default: the model's own)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads ((b), (c): all cores; (d): the engine's default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


Experiment = Callable[[argparse.Namespace, Path], dict]
Report = Callable[[dict, dict], None]


def run_experiment(args: argparse.Namespace, experiment: Experiment, report: Report) -> None:
    """Run `experiment(args, tmp)` in a temp folder; print its result (JSON with --json, else
    `report(result, conditions)`), with the machine's conditions before and after."""
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
    cond_before = conditions()
    with tempfile.TemporaryDirectory(prefix="bttf-bench-") as d:
        r = experiment(args, Path(d))
    cond = conditions()
    cond["load_avg_before"] = cond_before["load_avg"]
    cond["other_training_running"] |= cond_before["other_training_running"]
    r["conditions"] = cond
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        report(r, cond)


def experiment_main(doc: str, experiment: Experiment, report: Report, **extra) -> None:
    """`main()` of an experiment script: the common options (plus `extra`: name -> argparse
    keywords), then `run_experiment`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_options(parser)
    for name, kw in extra.items():
        parser.add_argument(name, **kw)
    run_experiment(parser.parse_args(), experiment, report)
