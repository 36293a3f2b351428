"""A/B speed of `bttf colorize` between two source trees, runs alternated (the host drifts).

    git worktree add /tmp/base <commit>
    python benchmarks/ab.py /tmp/base --pairs 3          # (d) and (d --no-temporal), 360p

Each run is one `benchmarks/pipeline.py --worker` subprocess of its own tree (PYTHONPATH set to
that tree) on the same clip, B then A then B ...; prints every run and the medians as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def worker(tree: Path, mode: str, clip: Path, tmp: Path, frames: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / "pipeline.py"), "--worker", mode]
    cmd += ["--clip", str(clip), "--tmp", str(tmp), "--frames", str(frames)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise SystemExit(f"{tree} {mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the other source tree (A); B is this one")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--modes", default="bttf,bttf-notemporal")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE / "benchmarks"))
    from pipeline import SIZES, make_clip

    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip = tmp / "clip.mp4"
        make_clip(clip, *SIZES["360p"], args.frames)
        for mode in args.modes.split(","):
            runs[mode] = {"A": [], "B": []}
            for _ in range(args.pairs):
                for side, tree in (("B", HERE), ("A", args.base.resolve())):
                    r = worker(tree, mode, clip, tmp, args.frames)
                    runs[mode][side].append(r)
                    print(mode, side, r["fps"], "fps", r["peak_mib"], "MiB", file=sys.stderr)
    summary = {
        mode: {
            side: {
                "fps": [r["fps"] for r in rs],
                "median_fps": statistics.median(r["fps"] for r in rs),
                "peak_mib": [r["peak_mib"] for r in rs],
            }
            for side, rs in sides.items()
        }
        for mode, sides in runs.items()
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
