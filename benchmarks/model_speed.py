"""How fast each registered colorizer runs on this machine's CPU.

For each model: parameters, GFLOPs per frame (torch's FLOP counter; a multiply-add counts 2),
and frames/s of `Colorizer.predict` alone and of predict + decode (annealed mean for 313-bin
models, then the bilinear resize to the input size), in float32 under `torch.inference_mode`.

    python benchmarks/model_speed.py                      # all models, 256x256, batch 8, 2 threads
    python benchmarks/model_speed.py -m fastcolor eccv16 -s 384 --json

Wall-clock frames/s need an otherwise idle machine. On a shared one, `--cpu-time` estimates
the idle-machine figure from the process's CPU time instead (threads sleep rather than spin
while they wait, so CPU time counts work only; frames/s = frames / (CPU seconds / threads)).
On an idle machine the two agree within about 5% for fastcolor.

`--pipeline` runs each model through the real pipeline instead (`bttf.colorize_video`, the engine
behind `bttf colorize`, its defaults: temporal stabilizer, threads = cores - 1; batch `-b`) on a
generated 360p clip of `--frames` frames, each model in its own subprocess so that its peak memory
(ru_maxrss) is its own, with random weights built here (speed does not depend on their values; no
released file is needed). It reports parameters, the model's build time (random init and on the
meta device, as loading weights builds it), CPU seconds per frame (all threads: what the speed
class of `bttf models` is bucketed from), frames/s and peak memory. One warm-up forward pass at
the render size comes first (oneDNN's kernel choice is not counted).

    python benchmarks/model_speed.py --pipeline -m deoldify-video ddcolor-tiny --frames 3 -b 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-m", "--models", nargs="*", default=None, help="models to time (default: all registered)"
    )
    parser.add_argument("-s", "--size", type=int, default=256, help="square frame side")
    parser.add_argument("-b", "--batch", type=int, default=8)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="estimate idle-machine frames/s from CPU time (shared machines)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="time each model through bttf.colorize_video on a generated clip (see above)",
    )
    parser.add_argument("--frames", type=int, default=3, help="--pipeline: frames in the clip")
    parser.add_argument("--clip-size", default="360p", help="--pipeline: 360p, 480p, 720p or 1080p")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline or args.worker:
        main_pipeline(args)
        return
    if args.cpu_time:
        # Must be set before torch loads OpenMP: waiting threads sleep instead of spinning.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    import torch

    from bttf.models import list_models

    logging.basicConfig(level=logging.ERROR)  # no random-init warnings in the table
    torch.set_num_threads(args.threads)
    rows = [bench(n, args) for n in (args.models or list_models())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    clock = "CPU-time estimate" if args.cpu_time else "wall clock, median"
    print(
        f"{'model':<14}{'params':>12}{'GFLOPs':>9}{'fps fwd':>10}{'fps fwd+dec':>13}"
        f"   ({args.size}x{args.size}, batch {args.batch}, {args.threads} threads, {clock})"
    )
    for r in rows:
        print(
            f"{r['model']:<14}{r['params']:>12,}{r['gflops_per_frame']:>9.2f}"
            f"{r['fps_predict']:>10.1f}{r['fps_predict_decode']:>13.1f}"
        )


def bench(name: str, args: argparse.Namespace) -> dict:
    import torch

    from bttf.models import Colorizer, create_model, get_spec

    spec = get_spec(name)
    colorizer = Colorizer(create_model(name, pretrained=False), spec).eval()
    size = spec.stride * max(1, round(args.size / spec.stride))
    L = torch.rand(args.batch, 1, size, size) * 100
    fwd, both = timed(colorizer, L, args)
    return {
        "model": spec.name,
        "output": spec.output,
        "params": sum(p.numel() for p in colorizer.model.parameters()),
        "gflops_per_frame": round(gflops(colorizer, size), 3),
        "size": size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "clock": "cpu" if args.cpu_time else "wall",
        "fps_predict": round(fwd, 2),
        "fps_predict_decode": round(both, 2),
    }


def gflops(colorizer, size: int) -> float:
    """GFLOPs of one frame through predict + decode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    L = torch.rand(1, 1, size, size) * 100
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        colorizer(L)
    return counter.get_total_flops() / 1e9


def timed(colorizer, L, args: argparse.Namespace) -> tuple[float, float]:
    """(frames/s of predict, frames/s of predict + decode): median over `iters` batches."""
    import torch

    clock = time.process_time if args.cpu_time else time.perf_counter
    scale = torch.get_num_threads() if args.cpu_time else 1
    size = tuple(L.shape[-2:])
    fwd, both = [], []
    with torch.inference_mode():
        for _ in range(args.warmup):
            colorizer(L)
        for _ in range(args.iters):
            t0 = clock()
            out = colorizer.predict(L)
            t1 = clock()
            colorizer.decode(out, size)
            t2 = clock()
            fwd.append((t1 - t0) / scale)
            both.append((t2 - t0) / scale)
    n = L.shape[0]
    return n / statistics.median(fwd), n / statistics.median(both)


# ---- --pipeline: each model through bttf.colorize_video, one subprocess per model ----------


def main_pipeline(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from pipeline import SIZES, make_clip  # benchmarks/pipeline.py, beside this file

    if args.worker:
        print(json.dumps(pipeline_worker(args.worker, Path(args.clip), args.batch)))
        return
    from bttf.models import list_models

    names = args.models or list_models()
    cond = conditions()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bttf-model-speed-") as tmp:
        clip = Path(tmp) / f"clip_{args.clip_size}.mp4"
        make_clip(clip, *SIZES[args.clip_size], args.frames)
        for name in names:
            rows.append(spawn_worker(name, clip, args.frames, args.batch))
            if not args.json:
                print_pipeline_row(rows[-1])
    result = {"conditions": cond, "clip": args.clip_size, "frames": args.frames, "models": rows}
    if args.json:
        print(json.dumps(result, indent=2))


def conditions() -> dict:
    """The machine and how busy it was."""
    import platform
    import subprocess
    from pathlib import Path

    import torch

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    training = subprocess.run(["pgrep", "-f", "bttf train"], capture_output=True, check=False)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "other_training_running": bool(training.stdout.strip()),
        "torch": torch.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def spawn_worker(name: str, clip, frames: int, batch: int) -> dict:
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--worker", name, "--clip", str(clip)]
    cmd += ["--frames", str(frames), "--batch", str(batch)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return {"model": name, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_times(name: str) -> tuple[float, float]:
    """CPU seconds to build `name` with random init, and on the meta device (what loading a
    weights file costs before the tensors are read)."""
    import torch

    from bttf.models import get_spec

    spec = get_spec(name)
    with torch.device("meta"):  # the meta device's one-off set-up, not the model's
        torch.nn.Linear(1, 1)
    t0 = _cpu_s()
    spec.factory()
    t1 = _cpu_s()
    with torch.device("meta"):
        spec.factory()
    return t1 - t0, _cpu_s() - t1


def pipeline_worker(name: str, clip, batch: int) -> dict:
    """One model: random weights, one warm-up pass, then the clip through colorize_video."""
    import logging
    import tempfile
    import time
    from pathlib import Path

    import torch

    from bttf.models import Colorizer, create_model, get_spec
    from bttf.pipeline import engine
    from bttf.pipeline.decode import probe_video
    from bttf.pipeline.stages import render_dims

    logging.basicConfig(level=logging.ERROR)
    spec = get_spec(name)
    init_s, meta_s = build_times(name)
    torch.manual_seed(0)
    colorizer = Colorizer(create_model(name, pretrained=False), spec).eval()
    info = probe_video(clip)
    rh, rw = render_dims(info.height, info.width, spec.render_size, spec.stride)
    with torch.inference_mode():
        colorizer(torch.rand(1, 1, rh, rw) * 100)  # warm-up: oneDNN's kernel choice
    cpu0, t0 = _cpu_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = engine.ColorizeConfig(overwrite=True, batch_size=batch)
        stats = engine.colorize_video(clip, Path(tmp) / "out.mp4", config, colorizer=colorizer)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {
        "model": spec.name,
        "params": sum(p.numel() for p in colorizer.model.parameters()),
        "build_random_init_cpu_s": round(init_s, 2),
        "build_meta_cpu_s": round(meta_s, 3),
        "render_hw": [rh, rw],
        "frames": stats.frames,
        "batch": stats.batch_size,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 2),
        "model_s": round(stats.model_s, 2),
        "cpu_s_per_frame": round(cpu / stats.frames, 2),
        "fps": round(stats.frames / wall, 3),
        "peak_mib": round(_maxrss_mib()),
    }


def print_pipeline_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['model']:<18} failed: {r['error']}", flush=True)
        return
    print(
        f"{r['model']:<18}{r['params']:>13,} params  render {r['render_hw'][0]}x"
        f"{r['render_hw'][1]}  {r['cpu_s_per_frame']:>7.2f} CPU s/frame  {r['fps']:>7.3f} fps  "
        f"peak {r['peak_mib']:>6,} MiB  build {r['build_random_init_cpu_s']:.2f} s random / "
        f"{r['build_meta_cpu_s']:.3f} s meta",
        flush=True,
    )


if __name__ == "__main__":
    main()
