"""Interrupted runs resume: segments in `.OUTPUT.bttf-work/`, killed (SIGKILL), terminated
(SIGTERM) or interrupted midway, then `--resume`: the film is frame for frame the one an
uninterrupted run makes. Lossless (`--crf 0`) so that the comparison sees the pipeline, not the
encoder: a segmented film starts a new GOP at every segment, so a lossy encode of it differs from
one written in one go (two identical runs do give identical files: tests/test_encode.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import make_video

import bttf
from bttf.cli import main
from bttf.models import Colorizer, create_model, save_weights
from bttf.pipeline import ColorizeConfig, segments
from bttf.pipeline.encode import VideoWriter
from bttf.pipeline.segments import WARMUP_FRAMES, decode_timestamps, work_dir_for

SEG = 8
BATCH = 4
# The `Colorizer.predict` call of the first batch of the third segment: SEG // BATCH batches a
# segment and, before segments 1 and 2, the stabilizer's restart over the (up to WARMUP_FRAMES)
# frames before the segment, in batches too.
WARMUP_CALLS = -(-min(WARMUP_FRAMES, SEG) // BATCH)
THIRD_SEGMENT_CALL = 2 * (SEG // BATCH) + 2 * WARMUP_CALLS + 1


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed weights, so that every process colorizes alike."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "fastcolor.safetensors"
    return save_weights(path, create_model("fastcolor", pretrained=False), "fastcolor", {})


def args_for(weights: Path, *extra: str) -> list[str]:
    return [
        "--render-size",
        "32",
        "--batch-size",
        str(BATCH),
        "--preset",
        "ultrafast",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--crf",
        "0",
        "--segment-frames",
        str(SEG),
        "--weights",
        str(weights),
        "-q",
        *extra,
    ]


def config_for(weights: Path, **kw) -> ColorizeConfig:
    base = {
        "render_size": 32,
        "batch_size": BATCH,
        "preset": "ultrafast",
        "device": "cpu",
        "threads": 1,
        "crf": 0,
        "segment_frames": SEG,
        "weights": str(weights),
    }
    return ColorizeConfig(**{**base, **kw})


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def film(path: Path) -> tuple[list[tuple[np.ndarray, ...]], list, list, list[bytes]]:
    """(planes, times, durations, audio packets) of a file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
        planes = [tuple(_plane(p) for p in f.planes) for f in frames]
        times = [f.time for f in frames]
        durations = [f.duration for f in frames]
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(*c.streams.audio) if p.size] if c.streams.audio else []
    return planes, times, durations, audio


def _plane(p) -> np.ndarray:
    a = np.frombuffer(p, dtype=np.uint8)
    return a.reshape(p.height, p.line_size)[:, : p.width].copy()


def same_film(a: Path, b: Path) -> bool:
    fa, fb = film(a), film(b)
    return (
        len(fa[0]) == len(fb[0])
        and all(all(np.array_equal(x, y) for x, y in zip(p, q)) for p, q in zip(fa[0], fb[0]))
        and fa[1:] == fb[1:]
    )


@pytest.fixture(scope="module")
def reference(tiny_video: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted segmented run every resumed one must equal."""
    out = tmp_path_factory.mktemp("ref") / "ref.mp4"
    stats = bttf.colorize_video(tiny_video, out, config_for(weights))
    assert stats.segments == 3 and not work_dir_for(out).exists()
    return out


# --- segmented output ------------------------------------------------------------------------


def test_segmented_film_keeps_timing_audio_and_luma(
    tiny_video: Path, reference: Path, weights: Path, tmp_path: Path
) -> None:
    direct = tmp_path / "direct.mp4"
    bttf.colorize_video(tiny_video, direct, config_for(weights, segment_frames=0))
    (sp, st, sd, sa), (rp, rt, rd, ra), (_, dt, dd, da) = (
        film(tiny_video),
        film(reference),
        film(direct),
    )
    assert len(rp) == len(sp) == 24
    assert rt == st == dt and rd == sd == dd and ra == sa == da
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(sp, rp))  # lossless: the source's Y
    with av.open(str(reference)) as r, av.open(str(direct)) as d:
        assert r.streams.video[0].average_rate == d.streams.video[0].average_rate
        assert r.streams.video[0].duration == d.streams.video[0].duration


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_segmented_vfr_rotated_and_windowed(tmp_path: Path, weights: Path, suffix: str) -> None:
    from fractions import Fraction

    steps = [40, 40, 80, 20, 40, 120, 40, 40, 60, 40, 40, 40, 100, 40, 40, 20, 40, 80, 40]
    pts = [0]
    for s in steps:
        pts.append(pts[-1] + s)
    src = make_video(
        tmp_path / "vfr.mp4", frames=len(pts), pts=pts, time_base=Fraction(1, 1000), rotation=90
    )
    for kw in ({}, {"start": 0.1, "duration": 0.6}):
        seg, direct = tmp_path / f"seg{suffix}", tmp_path / f"direct{suffix}"
        for p in (seg, direct):
            p.unlink(missing_ok=True)
        bttf.colorize_video(
            src, seg, config_for(weights, segment_frames=5, preset="medium", crf=18, **kw)
        )
        bttf.colorize_video(
            src, direct, config_for(weights, segment_frames=0, preset="medium", crf=18, **kw)
        )
        (_, st, sd, sa), (_, dt, dd, da) = film(seg), film(direct)
        assert st == dt and sa == da and len(st) > 5
        if suffix == ".mkv":  # MP4 durations come from B-frame decode times: not comparable
            assert sd == dd
        with av.open(str(seg)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert next(c.decode(video=0)).rotation == 90


def test_decode_timestamps() -> None:
    # I P B B (pts in presentation ticks), as Matroska returns them without dts
    pts = [0, 3, 1, 2, 6, 4, 5]
    dts = decode_timestamps(pts)
    assert all(b > a for a, b in pairwise(dts)) and all(d <= p for d, p in zip(dts, pts))
    assert decode_timestamps([0, 1, 2]) == [0, 1, 2]


# --- interrupted and resumed -----------------------------------------------------------------

_SLOW = textwrap.dedent("""
    import sys, time
    from bttf.models import Colorizer
    real = Colorizer.predict
    def slow(self, *a, **k):  # 1 s a batch, 2-4 s a segment: ample time to kill it between
        time.sleep(1.0)
        return real(self, *a, **k)
    Colorizer.predict = slow
    from bttf.cli import main
    main(sys.argv[1:])
""")


def test_sigkill_then_resume_is_frame_identical(
    tiny_video: Path, reference: Path, weights: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "film.mp4"
    work = work_dir_for(out)
    cmd = ["colorize", str(tiny_video), "-o", str(out), *args_for(weights)]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, *cmd], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((work / "manifest.json").read_text())["segments"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)  # a crash, a power cut: nothing gets to clean up
    finally:
        proc.wait(30)
    manifest = json.loads((work / "manifest.json").read_text())
    assert 1 <= len(manifest["segments"]) < 3 and not out.exists()

    code, err = run_main(["colorize", str(tiny_video), "-o", str(out), *args_for(weights)], capsys)
    assert code == 2 and "--resume" in err  # the work is not thrown away unasked
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(out), *args_for(weights, "--resume")], capsys
    )
    assert code == 0, err
    assert same_film(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mp4"]


def test_sigterm_is_like_ctrl_c_and_resumes(
    tiny_video: Path,
    reference: Path,
    weights: Path,
    tmp_path: Path,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Colorizer.predict
    calls = []

    def terminated(self, *a, **k):
        calls.append(1)
        if len(calls) == THIRD_SEGMENT_CALL:  # the first batch of the third segment
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises here
        return real(self, *a, **k)

    # the CLI builds its own colorizer: the public Colorizer class's predict is the seam
    monkeypatch.setattr(Colorizer, "predict", terminated)
    out = tmp_path / "film.mp4"
    code, err = run_main(["colorize", str(tiny_video), "-o", str(out), *args_for(weights)], capsys)
    assert code == 143 and "terminated" in err
    work = work_dir_for(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [work.name]  # no partial output
    assert sorted(p.name for p in work.iterdir()) == [
        "lock",
        "manifest.json",
        "seg-00000.mp4",
        "seg-00001.mp4",
    ]
    monkeypatch.undo()
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(out), *args_for(weights, "--resume")], capsys
    )
    assert code == 0, err
    assert same_film(out, reference) and not work.exists()


@pytest.fixture
def interrupted(tiny_video: Path, weights: Path, tmp_path: Path) -> Path:
    """An output whose run stopped (KeyboardInterrupt) after two of its three segments."""

    def interrupt(done: int, total: int | None) -> None:
        if done > 2 * SEG:  # after the first batch of the third segment
            raise KeyboardInterrupt

    out = tmp_path / "film.mp4"
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(tiny_video, out, config_for(weights), progress=interrupt)
    assert len(json.loads((work_dir_for(out) / "manifest.json").read_text())["segments"]) == 2
    return out


def test_changed_settings_are_refused(
    interrupted: Path, tiny_video: Path, weights: Path, capsys
) -> None:
    args = ["colorize", str(tiny_video), "-o", str(interrupted), *args_for(weights, "--resume")]
    code, err = run_main([*args, "--crf", "10"], capsys)
    assert code == 2 and err.count("\n") == 1 and "crf 0 -> 10" in err
    code, err = run_main([*args, "--no-temporal"], capsys)
    assert code == 2 and "temporal True -> False" in err
    code, err = run_main([*args, "--unsure", "0.2,0.9"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unsure" in err
    code, err = run_main([*args, "--saturation", "1.2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "saturation" in err
    assert (
        len(json.loads((work_dir_for(interrupted) / "manifest.json").read_text())["segments"]) == 2
    )


def test_a_second_run_on_the_same_output_is_refused(
    interrupted: Path, tiny_video: Path, weights: Path, capsys
) -> None:
    import fcntl

    # Hold the lock as a running process would.
    fd = os.open(work_dir_for(interrupted) / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, err = run_main(
            ["colorize", str(tiny_video), "-o", str(interrupted), *args_for(weights, "--resume")],
            capsys,
        )
    finally:
        os.close(fd)
    assert code == 2 and "another bttf run" in err
    assert (work_dir_for(interrupted) / "seg-00001.mp4").exists()


def test_power_cut_leftovers_are_cleaned(
    interrupted: Path, tiny_video: Path, reference: Path, weights: Path
) -> None:
    work = work_dir_for(interrupted)
    (work / "seg-00002.partial.mp4").write_bytes(b"half a segment")
    (work / "final.partial.mp4").write_bytes(b"half a film")
    with open(work / "seg-00001.mp4", "ab") as f:  # listed, but not as the manifest says
        f.write(b"x")
    stats = bttf.colorize_video(tiny_video, interrupted, config_for(weights, resume=True))
    assert stats.resumed_frames == SEG  # segment 1 was done again
    assert same_film(interrupted, reference) and not work.exists()


def test_interrupted_while_joining_only_joins_again(
    interrupted: Path,
    tiny_video: Path,
    reference: Path,
    weights: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_join = segments.join_segments

    def broken_join(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(segments, "join_segments", broken_join)
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(tiny_video, interrupted, config_for(weights, resume=True))
    work = work_dir_for(interrupted)
    assert json.loads((work / "manifest.json").read_text())["finished"]
    assert not interrupted.exists()
    monkeypatch.setattr(segments, "join_segments", real_join)

    class NoModel(Colorizer):  # the same model and weights, so the resume is allowed
        def predict(self, L: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the model ran again")

    built = Colorizer.create(weights=weights)
    no_model = NoModel(built.model, built.spec, built.temperature, built.top_k)
    stats = bttf.colorize_video(
        tiny_video, interrupted, config_for(weights, resume=True), colorizer=no_model
    )
    assert stats.frames == stats.resumed_frames == 24
    assert same_film(interrupted, reference)


def test_resume_with_nothing_to_resume_starts_afresh(
    tiny_video: Path, reference: Path, weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fresh.mp4"
    stats = bttf.colorize_video(tiny_video, out, config_for(weights, resume=True))
    assert stats.resumed_frames == 0 and stats.segments == 3
    assert same_film(out, reference) and sorted(p.name for p in tmp_path.iterdir()) == ["fresh.mp4"]


def test_disk_full_keeps_the_segments_for_resume(
    tiny_video: Path,
    reference: Path,
    weights: Path,
    tmp_path: Path,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    real = VideoWriter.write
    written = []

    def filling(self, *a, **k):
        written.append(1)
        if len(written) == 2 * SEG + 3:  # in the third segment
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(VideoWriter, "write", filling)
    out = tmp_path / "film.mp4"
    code, err = run_main(["colorize", str(tiny_video), "-o", str(out), *args_for(weights)], capsys)
    assert code == 1 and err.count("\n") == 1 and "disk is full" in err
    work = work_dir_for(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [work.name]
    assert sorted(p.name for p in work.glob("seg-*")) == ["seg-00000.mp4", "seg-00001.mp4"]
    monkeypatch.setattr(VideoWriter, "write", real)
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(out), *args_for(weights, "--resume")], capsys
    )
    assert code == 0, err
    assert same_film(out, reference)
