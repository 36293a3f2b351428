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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
