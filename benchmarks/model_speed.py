"""How fast each registered colorizer runs on this machine's CPU.

For each model: parameters, GFLOPs per frame (torch's FLOP counter; a multiply-add counts 2),
and frames/s of `Colorizer.predict` alone and of predict + decode (annealed mean for 313-bin
models, then the bilinear resize to the input size), in float32 under `torch.inference_mode`.

    python benchmarks/model_speed.py                      # all models, 256x256, batch 8, 2 threads
    python benchmarks/model_speed.py -m fastcolor -s 384 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bttf.models import Colorizer, create_model, get_spec, list_models


def gflops(colorizer: Colorizer, size: int) -> float:
    """GFLOPs of one frame through predict + decode."""
    L = torch.rand(1, 1, size, size) * 100
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        colorizer(L)
    return counter.get_total_flops() / 1e9


def frames_per_second(fn, L: torch.Tensor, warmup: int, iters: int) -> float:
    """Median frames/s over `iters` timed batches."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(L)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(L)
            times.append(time.perf_counter() - t0)
    return L.shape[0] / statistics.median(times)


def bench(name: str, size: int, batch: int, warmup: int, iters: int) -> dict:
    spec = get_spec(name)
    colorizer = Colorizer(create_model(name, pretrained=False), spec).eval()
    L = torch.rand(batch, 1, size, size) * 100
    return {
        "model": spec.name,
        "output": spec.output,
        "params": sum(p.numel() for p in colorizer.model.parameters()),
        "gflops_per_frame": round(gflops(colorizer, size), 3),
        "size": size,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "fps_predict": round(frames_per_second(colorizer.predict, L, warmup, iters), 2),
        "fps_predict_decode": round(frames_per_second(colorizer, L, warmup, iters), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--models", nargs="*", default=None,
                        help="models to time (default: all registered)")
    parser.add_argument("-s", "--size", type=int, default=256, help="square frame side")
    parser.add_argument("-b", "--batch", type=int, default=8)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR)  # no random-init warnings in the table
    torch.set_num_threads(args.threads)
    rows = [bench(n, args.size, args.batch, args.warmup, args.iters)
            for n in (args.models or list_models())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':<12}{'params':>12}{'GFLOPs':>9}{'fps fwd':>10}{'fps fwd+dec':>13}"
          f"   ({args.size}x{args.size}, batch {args.batch}, {args.threads} threads)")
    for r in rows:
        print(f"{r['model']:<12}{r['params']:>12,}{r['gflops_per_frame']:>9.2f}"
              f"{r['fps_predict']:>10.1f}{r['fps_predict_decode']:>13.1f}")


if __name__ == "__main__":
    main()
