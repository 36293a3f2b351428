"""The output file: reproducible, quiet encoders, the codec the suffix asks for, and every
stream of the source (audio, subtitles, attachments, chapters) carried where the container
allows it. Tiny media made here with PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_video

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}


def _colorize_in_a_process(src: Path, out: Path, perturb: int) -> None:
    """`bttf colorize` with default settings in a fresh interpreter whose malloc fills new
    memory with `perturb` (glibc's MALLOC_PERTURB_): code that reads uninitialised memory
    then gives other output."""
    env = {**os.environ, "MALLOC_PERTURB_": str(perturb), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bttf", "colorize", str(src), "-o", str(out), "-q"]
    subprocess.run(cmd, env=env, check=True, timeout=300)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_identical_runs_give_identical_files(tmp_path: Path, suffix: str) -> None:
    """Default settings (libx264 CRF 18 medium): x264's AVX-512 code read uninitialised memory
    and Matroska wrote random UIDs, so two runs differed."""
    src = make_video(tmp_path / "in.mp4")
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    _colorize_in_a_process(src, a, 0)
    _colorize_in_a_process(src, b, 165)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_encoder_libraries_are_quiet_unless_verbose(tmp_path: Path, codec: str) -> None:
    """x265 printed 46 lines of banner under --quiet; SVT-AV1 its own too."""
    import av

    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - not in this PyAV build
        pytest.skip(f"no {codec} in this PyAV")
    src = make_video(tmp_path / "in.mp4", frames=8, audio=None)
    env = {k: v for k, v in os.environ.items() if k != "SVT_LOG"}
    env["OMP_NUM_THREADS"] = "1"
    fast = [
        "--render-size",
        "32",
        "--crf",
        "30",
        "--preset",
        "8" if codec == "libsvtav1" else "fast",
    ]
    for verbose in ([], ["-v"]):
        out = tmp_path / f"out{len(verbose)}.mp4"
        cmd = [sys.executable, "-m", "bttf", *verbose, "colorize", str(src), "-o", str(out)]
        cmd += ["-q", "--codec", codec, *fast]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert p.returncode == 0, p.stderr
        said = p.stderr.lower()
        if verbose:
            assert "x265 [info]" in said or "svt[info]" in said
        else:
            assert p.stderr == ""
