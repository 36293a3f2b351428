"""x264 held to its AVX2 code (what the engine does on an AVX-512 CPU, so that identical runs
give identical files) against the code x264 picks itself: (a) transcode, N times each,
alternating.

    python benchmarks/pipeline_asm.py --asm-ab 5 --frames 120   # or: pipeline.py --asm-ab 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pipeline_common import clip_for, experiment_main, spawn
from pipeline_modes import encode_options


def asm_bench(args: argparse.Namespace, tmp: Path) -> dict:
    """(a) alternately as the engine runs it and with `x264-asm-auto`, `args.asm_ab` times each
    (alternating, so a change in the machine's load falls on both); wall-clock fps and CPU
    time per frame (the steadier of the two on a shared machine)."""
    clip = clip_for(args, tmp)
    runs: dict[str, list[dict]] = {"engine": [], "x264-asm-auto": []}
    for _ in range(args.asm_ab):
        for name, variant in (("engine", None), ("x264-asm-auto", "x264-asm-auto")):
            r = spawn("transcode", clip, tmp, args, variant=variant)
            runs[name].append({"fps": r["fps"], "cpu_ms_per_frame": r["cpu_ms_per_frame"]})
    med = {
        k: {m: float(np.median([r[m] for r in v])) for m in ("fps", "cpu_ms_per_frame")}
        for k, v in runs.items()
    }
    e, a = med["engine"], med["x264-asm-auto"]
    return {
        "size": args.size,
        "frames": args.frames,
        "preset": args.preset,
        "encode_options": encode_options(args.preset),
        "runs": runs,
        "median": med,
        "engine_vs_auto_fps": round(e["fps"] / a["fps"], 3),
        "engine_vs_auto_cpu": round(e["cpu_ms_per_frame"] / a["cpu_ms_per_frame"], 3),
    }


def report(r: dict, cond: dict) -> None:
    print(json.dumps(r, indent=2))


def main() -> None:
    asm_ab = {"type": int, "default": 5, "metavar": "N", "help": "runs of each, alternating"}
    experiment_main(__doc__, asm_bench, report, **{"--asm-ab": asm_ab})


if __name__ == "__main__":
    main()
