"""One film shared out by segments among torchrun ranks (bttf.pipeline.shared), on the CPU.

The ranks are plain subprocesses with torchrun's variables set (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); the output (FFV1, yuv444p: lossless) must be frame for frame the
one-process run's with the same --segment-frames.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import make_video

from bttf.cli import main
from bttf.models import create_model, save_weights
from bttf.pipeline.decode import FrameIndex, frame_times, probe_video, read_frames
from bttf.pipeline.segments import work_dir_for
from bttf.pipeline.shared import Share

SEG = 8
FRAMES = 36  # segments 0-3 full, 4 short


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(film, weights, the one-process reference output)."""
    d = tmp_path_factory.mktemp("shared")
    torch.manual_seed(0)
    weights = save_weights(
        d / "fastcolor.safetensors", create_model("fastcolor", pretrained=False), "fastcolor", {}
    )
    film = make_video(d / "film.mp4", frames=FRAMES)
    ref = d / "ref.mkv"
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(film), "-o", str(ref), *args(weights)])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    return film, weights, ref


def args(weights: Path, *extra: str) -> list[str]:
    return [
        *("--render-size", "32", "--batch-size", "4", "--device", "cpu", "--threads", "1"),
        *("--codec", "ffv1", "--pix-fmt", "yuv444p", "--segment-frames", str(SEG)),
        *("--weights", str(weights), *extra),
    ]


_SLOW = textwrap.dedent("""
    import sys, time
    from bttf.models import Colorizer
    real = Colorizer.predict
    def slow(self, *a, **k):  # a batch a second: time to kill it after its first segment
        time.sleep(1.0)
        return real(self, *a, **k)
    Colorizer.predict = slow
    from bttf.cli import main
    main(sys.argv[1:])
""")


def rank(
    r: int,
    cmd: list[str],
    *,
    world: int = 2,
    port: str = "29511",
    slow: bool = False,
    env: dict[str, str] | None = None,
):
    env = {
        **os.environ,
        **(env or {}),
        "RANK": str(r),
        "LOCAL_RANK": str(r),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
        "OMP_NUM_THREADS": "1",
    }
    code = _SLOW if slow else "import sys; from bttf.cli import main; main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv444p") for f in c.decode(c.streams.video[0])]


def same_film(a: Path, b: Path, frames: int = FRAMES) -> bool:
    pa, pb = planes(a), planes(b)
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        ta = [p.pts for p in ca.demux(ca.streams.video[0]) if p.size]
        tb = [p.pts for p in cb.demux(cb.streams.video[0]) if p.size]
        audio = bool(ca.streams.audio) == bool(cb.streams.audio)
    return (
        len(pa) == len(pb) == frames
        and all(np.array_equal(x, y) for x, y in zip(pa, pb))
        and ta == tb
        and audio
    )


def test_share_from_env() -> None:
    assert Share.from_env({}) is None
    assert Share.from_env({"WORLD_SIZE": "1"}) is None
    s = Share.from_env(
        {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "node:1", "MASTER_PORT": "29500"}
    )
    assert (s.rank, s.world, s.local_rank, s.run_id) == (1, 2, 1, "node_1-29500")


def test_two_ranks_make_the_one_process_film(setup, tmp_path: Path) -> None:
    film, weights, ref = setup
    out = tmp_path / "out.mkv"
    cmd = ["colorize", str(film), "-o", str(out), *args(weights)]
    procs = [rank(r, cmd) for r in (0, 1)]
    results = [(p.wait(60), p.stderr.read(), p.stdout.read()) for p in procs]
    assert [code for code, *_ in results] == [0, 0], results
    assert "rank 1/2: 2 segments (16 frames) done; rank 0 joins" in results[1][1]
    assert "truncated" not in results[1][1]
    assert "rank 0/2: wrote" in results[0][1] and "(5 segments, all ranks)" in results[0][1]
    assert same_film(out, ref)
    assert not work_dir_for(out).exists()

    # an unrelated run (another MASTER_PORT) on the same OUTPUT is refused while one works
    out.unlink()
    first = rank(0, cmd, slow=True)
    try:
        deadline = time.monotonic() + 30
        while not (work_dir_for(out) / "generation").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        other = rank(1, cmd, port="29999")
        assert other.wait(30) == 2
        assert "another bttf run is writing" in other.stderr.read()
    finally:
        first.kill()
        first.wait(30)


def test_a_killed_rank_then_resume(setup, tmp_path: Path) -> None:
    film, weights, ref = setup
    out = tmp_path / "out.mkv"
    work = work_dir_for(out)
    cmd = ["colorize", str(film), "-o", str(out), *args(weights)]
    r1 = rank(1, cmd, slow=True)
    r0 = rank(0, cmd)
    try:
        deadline = time.monotonic() + 40
        while not (work / "seg-00001.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r1.poll() is None, r1.stderr.read()
        r1.kill()  # a crash: nothing gets to clean up
    finally:
        r1.wait(30)
    assert r0.wait(60) == 1
    err = r0.stderr.read()
    assert "rank 1 stopped before finishing segment 3" in err and "--resume" in err
    assert not out.exists() and (work / "seg-00001.mkv").exists()

    with pytest.raises(SystemExit) as exc:  # one process does not take the ranks' folder
        main([*cmd, "--resume", "-q"])
    assert exc.value.code == 2 and (work / "seg-00001.mkv").exists()

    # the same command, not --resume: refused (rank 0 waits for rank 1 to hear it, at most 3 s)
    again = rank(0, cmd, port="29512", env={"BTTF_SHARE_TIMEOUT": "3"})
    assert again.wait(60) == 2 and "--resume" in again.stderr.read()

    resumed = [rank(r, [*cmd, "--resume"], port="29512") for r in (0, 1)]
    results = [(p.wait(60), p.stderr.read()) for p in resumed]
    assert [code for code, _ in results] == [0, 0], results
    assert same_film(out, ref)
    assert not work.exists()


def test_a_rank_with_no_segment_that_comes_late(setup, tmp_path: Path) -> None:
    """One segment for two ranks: rank 1 has nothing to do, and rank 0 joins only once it has
    come (so it never finds a folder already joined and removed, and waits there forever)."""
    film, weights, _ = setup
    out = tmp_path / "out.mkv"
    cmd = ["colorize", str(film), "-o", str(out), *args(weights), "--segment-frames", "64"]
    r0 = rank(0, cmd, port="29513")
    time.sleep(3)
    r1 = rank(1, cmd, port="29513")
    results = [(p.wait(60), p.stderr.read()) for p in (r0, r1)]
    assert [code for code, _ in results] == [0, 0], results
    assert "rank 1/2: 0 segments (0 frames) done" in results[1][1]
    assert len(planes(out)) == FRAMES and not work_dir_for(out).exists()


def test_keyframes_under_two_ranks(setup, tmp_path: Path) -> None:
    """A keyframe in rank 1's segment colours rank 0's segments too, as in one process."""
    import cv2

    film, weights, plain = setup
    keys = tmp_path / "keys"
    keys.mkdir()
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32], rgb[:, 32:] = (200, 60, 40), (40, 80, 220)
    cv2.imwrite(str(keys / "000010.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    ref, out = tmp_path / "ref.mkv", tmp_path / "out.mkv"
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(film), "-o", str(ref), *args(weights, "--keyframes", str(keys))])
        raise SystemExit(0)
    assert exc.value.code in (0, None) and not same_film(ref, plain)  # the keyframe shows
    cmd = ["colorize", str(film), "-o", str(out), *args(weights, "--keyframes", str(keys))]
    procs = [rank(r, cmd, port="29514") for r in (0, 1)]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    assert same_film(out, ref)


def test_a_folder_shared_by_segments(setup, tmp_path: Path) -> None:
    """Two films of different lengths: both shared out by segments (not one film per rank),
    each joined by rank 0 into the one-process film; a broken file fails on every rank alike
    (no rank waits for it), rank 0 exits 1 and the others 0."""
    film, weights, _ = setup
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    (lib / "a.mp4").write_bytes(film.read_bytes())  # 36 frames: 5 segments of 8
    make_video(lib / "b.mp4", frames=20)  # 3 segments
    (lib / "c.mp4").write_text("not a film")
    refs = {}
    for name, frames in (("a", FRAMES), ("b", 20)):
        refs[name] = tmp_path / f"{name}.mp4"
        with pytest.raises(SystemExit) as exc:
            main(["colorize", str(lib / f"{name}.mp4"), "-o", str(refs[name]), *args(weights)])
            raise SystemExit(0)
        assert exc.value.code in (0, None)
    cmd = ["colorize", str(lib), "-o", str(out), *args(weights)]
    procs = [rank(r, cmd, port="29515") for r in (0, 1)]
    results = [(p.wait(120), p.stderr.read(), p.stdout.read()) for p in procs]
    assert [code for code, *_ in results] == [1, 0], results
    err0, err1 = results[0][1] + results[0][2], results[1][1] + results[1][2]
    assert "bttf: error: rank 0/2: " in err0 and "c.mp4" in err0 and "not a video" in err0
    assert "2 done, 0 skipped, 1 failed" in err0 and "bttf: error" not in err1, (err0, err1)
    # segments of a: ranks 0 1 0 1 0; of b (after a's 5): 1 0 1 -> 4 segments each
    assert "joined 5 segments of all ranks" in err0 and "joined 3 segments" in err0
    assert "2 segments here" in err1 and "3 segments here" not in err1
    for name, frames in (("a", FRAMES), ("b", 20)):
        assert same_film(out / f"{name}.mp4", refs[name], frames), name
        assert not work_dir_for(out / f"{name}.mp4").exists()
    assert not (out / "c.mp4").exists() and not work_dir_for(out / "c.mp4").exists()


def test_a_rank_that_fails_on_a_film(setup, tmp_path: Path) -> None:
    """A damaged frame in a.mp4 with --on-decode-error fail (every rank decodes the whole
    film then): the rank that meets it first leaves a note, the other stops on it instead of
    waiting, rank 0 reports a.mp4 failed, and both go on to b.mp4."""
    film, weights, _ = setup
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    make_video(lib / "a.mp4", frames=FRAMES)
    (lib / "b.mp4").write_bytes(film.read_bytes())
    data = bytearray((lib / "a.mp4").read_bytes())
    with av.open(str(lib / "a.mp4")) as c:  # frame 12: in rank 1's segment 1
        pk = [p for p in c.demux(c.streams.video[0]) if p.size and p.pts is not None]
        hit = sorted(pk, key=lambda p: p.pts)[12]
        at, size = hit.pos, hit.size
    data[at + 8 : at + size] = bytes(size - 8)
    (lib / "a.mp4").write_bytes(bytes(data))
    cmd = ["colorize", str(lib), "-o", str(out), *args(weights, "--on-decode-error", "fail")]
    procs = [rank(0, cmd, port="29516")]
    time.sleep(5)  # rank 0 may give a.mp4 up before rank 1 comes: it waits for it
    procs.append(rank(1, cmd, port="29516"))
    results = [(p.wait(120), p.stderr.read() + p.stdout.read()) for p in procs]
    assert [code for code, _ in results] == [1, 0], results
    assert "bttf: error: rank 0/2: " in results[0][1] and "0.375 s" in results[0][1], results
    assert "1 done, 0 skipped, 1 failed" in results[0][1]
    assert len(planes(out / "b.mp4")) == FRAMES and not (out / "a.mp4").exists()


def test_a_rank_waits_for_rank_0_at_most_the_timeout(setup, tmp_path: Path) -> None:
    film, weights, _ = setup
    out = tmp_path / "out.mkv"
    cmd = ["colorize", str(film), "-o", str(out), *args(weights)]
    env = {"BTTF_SHARE_TIMEOUT": "2"}
    r1 = rank(1, cmd, port="29517", env=env)  # rank 0 never comes
    assert r1.wait(60) == 1
    err = r1.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bttf: error: rank 1 waited"), err
    assert "rank 0" in err[0] and "--resume" in err[0]

    r0 = rank(0, cmd, port="29518", env=env)  # rank 1 never comes
    assert r0.wait(60) == 1
    err = r0.stderr.read()
    assert "waited 2 s for rank 1" in err and "--resume" in err, err
    assert not out.exists()


def test_frame_times_are_the_decoders(setup) -> None:
    film, *_ = setup
    info = probe_video(film)
    for start, duration in ((None, None), (0.3, 0.5)):
        index = frame_times(info, start, duration)
        assert index is not None and index.pts == [
            f.pts for f in read_frames(info, start, duration)
        ]
    index = FrameIndex(list(range(0, 100, 10)), [0, 40, 80])
    assert [index.key_before(p) for p in (0, 39, 40, 79, 95)] == [0, 0, 40, 40, 80]


def test_each_rank_decodes_only_its_segments(setup, tmp_path: Path) -> None:
    """A keyframe every 8 frames, segments of 24 (16 warm-up frames): rank 0 decodes frames
    0-23 and 32-71, rank 1 8-47 and 56-95 (seeking), not 96 each; the film is the one
    process's."""
    _, weights, _ = setup
    film = make_video(tmp_path / "gop8.mp4", frames=96, options={"g": "8", "bf": "0"})
    ref, out = tmp_path / "ref.mkv", tmp_path / "out.mkv"
    extra = ("--segment-frames", "24")
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(film), "-o", str(ref), *args(weights, *extra)])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    cmd = ["-v", "colorize", str(film), "-o", str(out), *args(weights, *extra)]
    procs = [rank(r, cmd, port="29519") for r in (0, 1)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    for r, expect in ((0, 64), (1, 80)):  # (a frame or two more where a seek lands early)
        said = re.search(rf"rank {r}: decoded (\d+) frames \(the film has 96\)", results[r][1])
        assert said and expect <= int(said[1]) <= expect + 2, results[r][1]
    assert same_film(out, ref, 96)
