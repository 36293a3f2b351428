"""Peak memory of (d) `bttf colorize` for 100 and 1000 frames: it must not grow with the
film's length (within 5 %).

    python benchmarks/pipeline_memory.py                 # or: pipeline.py --memory
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline_common import clip_for, experiment_main, spawn


def memory_bench(args: argparse.Namespace, tmp: Path) -> dict:
    out = {}
    for n in (100, 1000):
        clip = clip_for(args, tmp, n)
        out[n] = spawn("bttf", clip, tmp, args, no_warmup=True)
    ratio = out[1000]["peak_mib"] / out[100]["peak_mib"]
    return {
        "size": args.size,
        "device": args.device,
        "model": args.model or "default",
        "peak_mib_100": out[100]["peak_mib"],
        "peak_mib_1000": out[1000]["peak_mib"],
        "ratio": round(ratio, 4),
        "within_5pct": ratio <= 1.05,
        "runs": out,
    }


def report(r: dict, cond: dict) -> None:
    print(
        f"peak memory of (d), {r['size']}: 100 frames {r['peak_mib_100']:.0f} MiB, "
        f"1000 frames {r['peak_mib_1000']:.0f} MiB, ratio {r['ratio']:.3f} "
        f"({'within' if r['within_5pct'] else 'NOT within'} 5%)"
    )
    print(f"conditions: {cond}")


def main() -> None:
    experiment_main(__doc__, memory_bench, report)


if __name__ == "__main__":
    main()
