"""Scene-cut detection on generated clips: exact cut index, no false cuts on a pan, the command."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from bttf.cli import cli
from bttf.errors import BadInputError
from bttf.pipeline.cuts import CutDetector, CutParams, detect_cuts


def texture(seed: int, h: int = 240, w: int = 320, cell: int = 8) -> np.ndarray:
    """A smooth random gray texture (features about `cell` px) with a lighting gradient."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h // cell, w // cell)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :] * (1 if seed % 2 else -1)
    img = 0.7 * img + 0.3 * (ramp % 1.0)
    img = (img - img.min()) / (img.max() - img.min())
    lo, hi = (20, 200) if seed % 2 else (60, 250)
    return (lo + img * (hi - lo)).astype(np.uint8)


def pan(
    tex: np.ndarray, n: int, speed: float, size: tuple[int, int] = (48, 64)
) -> list[np.ndarray]:
    """n frames of a (h, w) window sliding right over `tex` at `speed` px/frame (sub-pixel)."""
    h, w = size
    frames = []
    for t in range(n):
        m = np.float32([[1, 0, -t * speed], [0, 1, -t * speed * 0.3]])
        frames.append(
            cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        )
    return frames


def two_shots(cut: int = 12, n: int = 24) -> list[np.ndarray]:
    return pan(texture(1), cut, 0.7) + pan(texture(2), n - cut, 0.7)


def feed_all(frames: list[np.ndarray], params: CutParams | None = None) -> list[int]:
    det = CutDetector(params)
    return [i for i, f in enumerate(frames) if det.feed(f)]


def test_two_shot_clip_cut_at_exact_frame():
    assert feed_all(two_shots(12)) == [12]


@pytest.mark.parametrize("speed", [0.5, 2.0, 4.0])
def test_no_false_cut_on_a_pan(speed):
    assert feed_all(pan(texture(3), 40, speed)) == []


def test_no_cut_on_a_static_shot_with_grain():
    rng = np.random.default_rng(0)
    base = texture(4, 48, 64).astype(np.int16)
    frames = [
        np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(30)
    ]
    assert feed_all(frames) == []


def test_min_scene_len_suppresses_a_second_cut():
    frames = pan(texture(1), 10, 0.5) + pan(texture(2), 3, 0.5) + pan(texture(5), 11, 0.5)
    assert feed_all(frames, CutParams(min_scene_len=8)) == [10]
    assert feed_all(frames, CutParams(min_scene_len=2)) == [10, 13]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for f in frames:
            rgb = np.repeat(f[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_detect_cuts_on_a_video_file(tmp_path):
    path = tmp_path / "two_shots.mp4"
    write_video(path, two_shots(12))
    cuts = detect_cuts(path)
    assert [c.frame for c in cuts] == [12]
    assert cuts[0].time == pytest.approx(12 / 24, abs=1e-3)


def test_detect_cuts_on_a_folder_and_the_command(tmp_path):
    for i, f in enumerate(two_shots(12)):
        cv2.imwrite(str(tmp_path / f"{i:05d}.png"), f)
    assert [c.frame for c in detect_cuts(tmp_path, fps=12)] == [12]
    res = CliRunner().invoke(cli, ["cuts", str(tmp_path), "--json", "--fps", "12"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [c["frame"] for c in data] == [12] and data[0]["time"] == pytest.approx(1.0)
    res = CliRunner().invoke(cli, ["cuts", str(tmp_path), "--fps", "12"])
    assert res.exit_code == 0 and "00:00:01.000  frame 12" in res.stdout


def test_missing_input_is_a_bad_input_error(tmp_path):
    with pytest.raises(BadInputError):
        detect_cuts(tmp_path / "nope.mp4")
    with pytest.raises(BadInputError):
        detect_cuts(tmp_path)  # an empty folder
