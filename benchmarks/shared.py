"""One film shared out by segments among torchrun ranks: N ranks x 1 thread against one process.

    python benchmarks/shared.py [FILM] [--segment-frames 100] [--ranks 2] [--json]

Runs `bttf colorize FILM` (FFV1 yuv444p into .mkv, lossless, so frames can be compared) three
ways: 1 process x 1 thread, 1 process x `--ranks` threads, and `--ranks` processes x 1 thread
with torchrun's variables set (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; no torchrun binary
needed). Reports each one's wall time and whether the ranks' film is frame for frame the
1 x 1 film (same threads, same segments: it must be).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

DEFAULT_FILM = Path(__file__).resolve().parents[2] / "shared/data/film/vsdeoldify_sample_bw.mp4"


def frame_digests(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [
            hashlib.blake2b(f.to_ndarray(format="yuv444p").tobytes(), digest_size=16).hexdigest()
            for f in c.decode(c.streams.video[0])
        ]


def run(film: Path, out: Path, extra: list[str], ranks: int, threads: int) -> float:
    """Wall seconds of `ranks` processes (1: no torchrun variables) colorizing `film`."""
    cmd = [sys.executable, "-m", "bttf", "colorize", str(film), "-o", str(out), "-q", *extra]
    cmd += ["--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    procs = []
    for r in range(ranks):
        rank_env = env
        if ranks > 1:
            rank_env = {
                **env,
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": str(ranks),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29533",
            }
        procs.append(subprocess.Popen(cmd, env=rank_env))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        sys.exit(f"bttf colorize failed ({codes})")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("film", nargs="?", type=Path, default=DEFAULT_FILM)
    ap.add_argument("--segment-frames", type=int, default=100)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not a.film.is_file():
        sys.exit(f"{a.film} is not a file")
    extra = ["--codec", "ffv1", "--pix-fmt", "yuv444p", "--device", "cpu"]
    extra += ["--segment-frames", str(a.segment_frames)]
    n = a.ranks
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, ranks, threads in (
            ("1 process x 1 thread", 1, 1),
            (f"1 process x {n} threads", 1, n),
            (f"{n} ranks x 1 thread", n, 1),
        ):
            out = d / f"{ranks}x{threads}.mkv"
            load = round(os.getloadavg()[0], 2)  # the host is shared: how busy it was
            rows[name] = {"wall_s": round(run(a.film, out, extra, ranks, threads), 2), "load": load}
        with av.open(str(d / "1x1.mkv")) as c:
            frames = c.streams.video[0].frames or sum(1 for _ in c.demux(c.streams.video[0]))
        same = frame_digests(d / "1x1.mkv") == frame_digests(d / f"{n}x1.mkv")
    base = rows["1 process x 1 thread"]["wall_s"]
    for r in rows.values():
        r["fps"] = round(frames / r["wall_s"], 2)
        r["speed-up"] = round(base / r["wall_s"], 2)
    result = {
        "film": a.film.name,
        "frames": frames,
        "segment_frames": a.segment_frames,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "runs": rows,
        "ranks_identical_to_1x1": same,
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{a.film.name}: {frames} frames, segments of {a.segment_frames}; {result['machine']}")
    print(f"{'':26} {'wall s':>8} {'fps':>7} {'speed-up':>9} {'load':>6}")
    for name, r in rows.items():
        print(
            f"{name:26} {r['wall_s']:8.1f} {r['fps']:7.2f} {r['speed-up']:8.2f}x {r['load']:6.2f}"
        )
    print(f"{n} ranks' film frame for frame the 1 x 1 film: {same}")


if __name__ == "__main__":
    main()
