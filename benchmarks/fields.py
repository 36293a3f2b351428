"""What colouring an interlaced film field by field costs: `bttf colorize` on an interlaced
clip with fields (the default) and with --no-fields, runs alternated (the host drifts).

The clip is `pipeline_common.make_clip`'s textured, grainy, panning film at twice the frame
rate, its frames woven in pairs into interlaced frames (top field first, x264 +ildct+ilme),
so the two fields of a frame hold two moments, as a camera's do.

    python benchmarks/fields.py                      # 480i (720x480), 96 frames, 2 pairs
    python benchmarks/fields.py --size 1080 --frames 48 --pairs 1 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_common import conditions, make_clip

SIZES = {"480": (720, 480), "576": (720, 576), "1080": (1920, 1080)}


def interlaced_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """`frames` interlaced frames (25 fps, tff) woven from 2 x `frames` progressive ones."""
    progressive = path.with_name("progressive.mp4")
    make_clip(progressive, width, height, 2 * frames)
    options = {"flags": "+ildct+ilme", "x264-params": "tff=1", "crf": "16", "preset": "veryfast"}
    with av.open(str(progressive)) as inp, av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options=options)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.time_base = vs.codec_context.time_base = Fraction(1, 25)
        pics = (f.to_ndarray(format="yuv420p") for f in inp.decode(video=0))
        for i, (first, second) in enumerate(zip(pics, pics, strict=False)):
            woven = first.copy()
            woven[1:height:2] = second[1:height:2]  # the bottom field: the later moment
            frame = av.VideoFrame.from_ndarray(woven, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    return path


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(clip: Path, out: Path, fields: bool, render_size: int | None) -> dict:
    import bttf
    from bttf.pipeline import ColorizeConfig

    config = ColorizeConfig(fields=fields, overwrite=True, render_size=render_size)
    c0, t0 = cpu_s(), time.perf_counter()
    stats = bttf.colorize_video(clip, out, config)
    seconds = time.perf_counter() - t0
    return {
        "fps": round(stats.frames / seconds, 2),
        "cpu_ms_per_frame": round(1000 * (cpu_s() - c0) / stats.frames, 1),
        "model_s": round(stats.model_s, 2),
        "stabilize_s": round(stats.stabilize_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480", choices=sorted(SIZES))
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--render-size", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import logging

    logging.getLogger("bttf").setLevel(logging.ERROR)
    runs: dict[str, list[dict]] = {"fields": [], "frames": []}
    with tempfile.TemporaryDirectory(prefix="bttf-fields-") as d:
        clip = interlaced_clip(Path(d) / "interlaced.mp4", *SIZES[args.size], args.frames)
        run(clip, Path(d) / "warm.mp4", True, args.render_size)  # one-off costs
        for _ in range(args.pairs):
            for name in ("fields", "frames"):
                r = run(clip, Path(d) / f"{name}.mp4", name == "fields", args.render_size)
                runs[name].append(r)
                if not args.json:
                    print(name, r, flush=True)
    median = {
        k: {m: statistics.median(r[m] for r in v) for m in ("fps", "cpu_ms_per_frame")}
        for k, v in runs.items()
    }
    result = {
        "size": args.size,
        "frames": args.frames,
        "runs": runs,
        "median": median,
        "fields_vs_frames_fps": round(median["fields"]["fps"] / median["frames"]["fps"], 3),
        "conditions": conditions(),
    }
    print(json.dumps(result, indent=2 if args.json else None))


if __name__ == "__main__":
    main()
