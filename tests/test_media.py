"""The one set of media suffixes and the one image reader (`bttf.pipeline.media`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bttf.errors import BadInputError
from bttf.pipeline.media import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    decode_image,
    is_image_path,
    is_video_path,
    read_gray_image,
    read_image,
    read_rgb_image,
)
from bttf.training import data as D


def test_suffix_sets_are_one_for_colorize_and_prepare(tmp_path: Path) -> None:
    assert not IMAGE_SUFFIXES & VIDEO_SUFFIXES
    for name in ("a.ts", "b.MKV", "c.mp4", "d.webm"):
        (tmp_path / name).write_bytes(b"x")
        assert is_video_path(name) and D.is_video(Path(name)) and not is_image_path(name)
    (tmp_path / "e.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    found = sorted(f.name for f, _ in D.find_media([tmp_path]))
    assert found == ["a.ts", "b.MKV", "c.mp4", "d.webm", "e.PNG"]


def test_sixteen_bit_and_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint16)
    rgba[..., 2] = 65535  # red in BGRA
    rgba[..., 3] = 1000
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(tmp_path / "a.png").dtype == np.uint16
    gray, bits = read_gray_image(tmp_path / "a.png")
    assert bits == 16 and gray.shape == (4, 6) and gray.dtype == np.float32
    assert gray.max() == pytest.approx(0.299 * 255, abs=0.5)
    rgb = read_rgb_image(tmp_path / "a.png")
    assert rgb.shape == (4, 6, 3) and np.allclose(rgb[..., 0], 1.0) and np.allclose(rgb[..., 1:], 0)


def test_eight_bit_gray_and_float(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g.png"), np.full((3, 5), 200, np.uint8))
    gray, bits = read_gray_image(tmp_path / "g.png")
    assert bits == 8 and np.all(gray == 200)
    assert np.allclose(read_rgb_image(tmp_path / "g.png"), 200 / 255)
    cv2.imwrite(str(tmp_path / "f.tiff"), np.full((3, 5), 1.5, np.float32))
    gray, bits = read_gray_image(tmp_path / "f.tiff")
    assert bits == 16 and np.all(gray == 255.0)  # a float file's [0, 1] is clipped


def test_unreadable_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for path in (tmp_path / "junk.jpg", tmp_path / "empty.png", tmp_path / "missing.png"):
        with pytest.raises(BadInputError) as e:
            read_image(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(BadInputError, match="bytes.png"):
        decode_image(b"junk", "bytes.png")
