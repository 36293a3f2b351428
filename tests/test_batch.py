"""`bttf colorize DIR -o OUTDIR`: every film, past failures, a summary, exit codes; and the
plan that lets torchrun processes share a film library."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from bttf.cli import cli
from bttf.errors import BadInputError
from bttf.pipeline.batch import dist_env, find_videos, output_names

FAST = [
    "--render-size",
    "32",
    "--batch-size",
    "4",
    "--preset",
    "ultrafast",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--no-temporal",
]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


@pytest.fixture
def library(tmp_path: Path, tiny_video: Path) -> Path:
    d = tmp_path / "reels"
    d.mkdir()
    for name in ("b.mp4", "a.MOV", "c.mkv"):
        shutil.copy(tiny_video, d / name)
    (d / "notes.txt").write_text("not a film")
    (d / ".hidden.mp4").write_text("a partial file of something")
    (d / "sub").mkdir()
    return d


def test_find_and_names(library: Path, tmp_path: Path) -> None:
    films = find_videos(library)
    assert [f.name for f in films] == ["a.MOV", "b.mp4", "c.mkv"]
    out = tmp_path / "o"
    names = output_names([library / "x.mov", library / "x.mkv", library / "y.mp4"], out)
    assert [p.name for p in names.values()] == ["x.mov.mp4", "x.mkv.mp4", "y.mp4"]


def test_dist_env() -> None:
    assert dist_env({}) == (0, 1, 0)
    assert dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(BadInputError):
            dist_env(bad)


def test_folder_past_a_failure_with_a_summary(library: Path, tmp_path: Path) -> None:
    (library / "b.mp4").write_text("this one is broken")
    out = tmp_path / "colour"
    out.mkdir()
    (out / "c.mp4").write_bytes(b"done before")
    result = CliRunner().invoke(cli, ["colorize", str(library), "-o", str(out), *FAST])
    assert result.exit_code == 1, result.output
    assert frame_count(out / "a.mp4") == 24 and not (out / "b.mp4").exists()
    assert (out / "c.mp4").read_bytes() == b"done before"
    err = result.stderr
    assert "1 done, 1 skipped, 1 failed" in err
    assert "bttf: error: " in err and "b.mp4" in err and "not a video" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]

    (library / "b.mp4").unlink()  # all done or skipped: exit 0
    result = CliRunner().invoke(cli, ["colorize", str(library), "-o", str(out), "-q", *FAST])
    assert result.exit_code == 0 and result.output == ""


def test_default_outdir_and_refusals(library: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["colorize", str(library), "-q", *FAST])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "reels_color").iterdir()) == [
        "a.mp4",
        "b.mp4",
        "c.mp4",
    ]
    result = CliRunner().invoke(cli, ["colorize", str(library), "-o", str(library), *FAST])
    assert result.exit_code != 0 and "input folder" in str(result.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["colorize", str(empty), *FAST])
    assert "holds no film" in str(result.exception)


def test_two_processes_share_the_library(tmp_path: Path, tiny_video: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("r0.mp4", "r1.mp4", "r2.mp4"):
        shutil.copy(tiny_video, lib / name)
    out = tmp_path / "out"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bttf", "colorize", str(lib), "-o", str(out), *FAST],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert sorted(p.name for p in out.iterdir()) == ["r0.mp4", "r1.mp4", "r2.mp4"]
    assert all(frame_count(out / n) == 24 for n in ("r0.mp4", "r1.mp4", "r2.mp4"))
    # one segment each: r0's to rank 0, r1's to rank 1, r2's to rank 0; rank 0 joins all
    err0, err1 = logs[0][1], logs[1][1]
    assert "rank 0/2" in err0 and err0.count("joined 1 segment of all ranks") == 3, err0
    assert "rank 1/2" in err1 and "1 segment here" in err1 and "0 segments here" in err1, err1
