"""Films shared out by segments among torchrun ranks: N ranks x 1 thread against one process.

    python benchmarks/shared.py [FILM] [--segment-frames 100] [--ranks 2] [--folder FILM2] [--json]

One film: runs `bttf colorize FILM` (FFV1 yuv444p into .mkv, lossless, so frames can be
compared) four ways: 1 process x 1 thread, 1 process x `--ranks` threads, `--ranks` processes x
1 thread with torchrun's variables set (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; no torchrun
binary needed), each rank decoding only its segments (a seek before each), and the same ranks
decoding the whole film each (what they did before: forced here by --on-decode-error skip, which
makes no difference on an undamaged film). Reports each one's wall time, the frames each rank
decoded (its `-v` log line) and whether the ranks' film is frame for frame the 1 x 1 film.

`--folder FILM2`: also a folder of FILM and FILM2 (films of different lengths), 1 process x 1
thread against `--ranks` ranks x 1 thread sharing the segments of both; each output compared
with the 1 x 1 one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
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


def run(
    src: Path, out: Path, extra: list[str], ranks: int, threads: int, port: int
) -> tuple[float, float, list[int]]:
    """Wall and CPU seconds of `ranks` processes (1: no torchrun variables) colorizing `src` (a film or
    a folder), and the frames each rank says it decoded (summed over a folder's films)."""
    cmd = [sys.executable, "-m", "bttf", "-v", "colorize", str(src), "-o", str(out), "-q"]
    cmd += [*extra, "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    logs = [out.with_name(f"{out.name}.rank{r}.log") for r in range(ranks)]
    t0, cpu0 = time.perf_counter(), _children_cpu()
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
                "MASTER_PORT": str(port),
            }
        with open(logs[r], "w") as log:
            procs.append(subprocess.Popen(cmd, env=rank_env, stderr=log))
    codes = [p.wait() for p in procs]
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    what = f"{src.name}: {ranks} x {threads} {' '.join(extra[-2:])}"
    print(f"  {what}: {wall:.1f} s, CPU {cpu:.1f} s", file=sys.stderr, flush=True)
    if any(codes):
        sys.exit(f"bttf colorize failed ({codes}): {logs[0].read_text()[-2000:]}")
    decoded = [
        sum(int(n) for n in re.findall(r"decoded (\d+) frames", p.read_text())) for p in logs
    ]
    return wall, cpu, decoded


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far (contention on a shared
    host stretches wall time much more than CPU time)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def film_rows(film: Path, extra: list[str], n: int, d: Path) -> tuple[dict, int, bool]:
    rows = {}
    for name, ranks, threads, more in (
        ("1 process x 1 thread", 1, 1, []),
        (f"1 process x {n} threads", 1, n, []),
        (f"{n} ranks x 1 thread", n, 1, []),
        (f"{n} ranks x 1 thread, whole decode", n, 1, ["--on-decode-error", "skip"]),
    ):
        out = d / f"{ranks}x{threads}{'w' if more else ''}.mkv"
        load = round(os.getloadavg()[0], 2)  # the host is shared: how busy it was
        wall, cpu, decoded = run(film, out, [*extra, *more], ranks, threads, 29533 + len(rows))
        rows[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "load": load}
        if ranks > 1:
            rows[name]["decoded_per_rank"] = decoded
    frames = count(d / "1x1.mkv")
    ref = frame_digests(d / "1x1.mkv")
    same = ref == frame_digests(d / f"{n}x1.mkv") == frame_digests(d / f"{n}x1w.mkv")
    base = rows["1 process x 1 thread"]["wall_s"]
    for r in rows.values():
        r["fps"] = round(frames / r["wall_s"], 2)
        r["speed-up"] = round(base / r["wall_s"], 2)
    return rows, frames, same


def folder_rows(films: list[Path], extra: list[str], n: int, d: Path) -> dict:
    lib = d / "lib"
    lib.mkdir()
    for f in films:
        (lib / f.name).symlink_to(f.resolve())
    rows: dict = {}
    for name, ranks in (("1 process x 1 thread", 1), (f"{n} ranks x 1 thread", n)):
        out = d / f"folder{ranks}"
        load = round(os.getloadavg()[0], 2)
        wall, cpu, decoded = run(lib, out, extra, ranks, 1, 29543 + ranks)
        rows[name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "load": load}
        if ranks > 1:
            rows[name]["decoded_per_rank"] = decoded
    outs = [f"{f.stem}.mp4" for f in films]
    frames = {o: count(d / "folder1" / o) for o in outs}
    same = all(
        frame_digests(d / "folder1" / o) == frame_digests(d / f"folder{n}" / o) for o in outs
    )
    base = rows["1 process x 1 thread"]["wall_s"]
    for r in rows.values():
        r["fps"] = round(sum(frames.values()) / r["wall_s"], 2)
        r["speed-up"] = round(base / r["wall_s"], 2)
    return {"films": frames, "runs": rows, "ranks_identical_to_1x1": same}


def show(title: str, rows: dict) -> None:
    print(title)
    print(f"{'':36} {'wall s':>8} {'CPU s':>7} {'fps':>7} {'speed-up':>9} {'load':>6}  decoded")
    for name, r in rows.items():
        dec = r.get("decoded_per_rank", "")
        print(
            f"{name:36} {r['wall_s']:8.1f} {r['cpu_s']:7.1f} {r['fps']:7.2f} {r['speed-up']:8.2f}x "
            f"{r['load']:6.2f}  {dec}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("film", nargs="?", type=Path, default=DEFAULT_FILM)
    ap.add_argument("--segment-frames", type=int, default=100)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--folder", type=Path, default=None, help="a second film, for the folder")
    ap.add_argument("--no-film", action="store_true", help="only the folder (with --folder)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    for f in (a.film, a.folder):
        if f is not None and not f.is_file():
            sys.exit(f"{f} is not a file")
    extra = ["--codec", "ffv1", "--pix-fmt", "yuv444p", "--device", "cpu"]
    extra += ["--segment-frames", str(a.segment_frames)]
    n = a.ranks
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rows, frames, same = {}, None, None
        if not a.no_film:
            rows, frames, same = film_rows(a.film, extra, n, d)
        folder = folder_rows([a.film, a.folder], extra, n, d) if a.folder else None
    result = {
        "film": a.film.name,
        "frames": frames,
        "segment_frames": a.segment_frames,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "runs": rows,
        "ranks_identical_to_1x1": same,
        "folder": folder,
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return
    if rows:
        what = f"{a.film.name}: {frames} frames, segments of {a.segment_frames}"
        show(f"{what}; {result['machine']}", rows)
        print(f"{n} ranks' films (seek and whole decode) frame for frame the 1 x 1 film: {same}")
    if folder:
        films = ", ".join(f"{k} {v} frames" for k, v in folder["films"].items())
        show(f"folder: {films}", folder["runs"])
        print(
            f"{n} ranks' films frame for frame the 1 x 1 ones: {folder['ranks_identical_to_1x1']}"
        )


if __name__ == "__main__":
    main()
