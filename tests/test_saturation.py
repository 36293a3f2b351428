"""`saturation`: a gain on the model's decoded ab (`Colorizer.saturate`), in every path that
turns ab into colour — the engine's chroma stage, stills, eval — with its checks."""

from __future__ import annotations

import dataclasses
import math

import av
import numpy as np
import pytest
import torch

import bttf
from bttf.cli import main
from bttf.errors import BadInputError
from bttf.models import Colorizer, get_spec
from bttf.pipeline import ColorizeConfig


def test_auto_is_the_models_own_and_numbers_are_checked() -> None:
    fast = get_spec("fastcolor")
    model = torch.nn.Identity()
    assert fast.saturation == 1.0 and Colorizer(model, fast).saturation == 1.0
    vivid = dataclasses.replace(fast, saturation=1.4)  # a model that ships a setting
    assert Colorizer(model, vivid).saturation == 1.4
    assert Colorizer(model, vivid, saturation=1.0).saturation == 1.0
    assert Colorizer(model, fast, saturation=0).saturation == 0.0
    for bad in [-0.1, math.nan, math.inf, "lots", True]:
        with pytest.raises(BadInputError, match="saturation"):
            Colorizer(model, fast, saturation=bad)


def test_decode_scales_ab_and_keeps_the_hue() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 313, 6, 5, generator=g) * 3
    plain = Colorizer(torch.nn.Identity(), get_spec("fastcolor"))
    vivid = Colorizer(torch.nn.Identity(), get_spec("fastcolor"), saturation=1.5)
    ab, ab2 = plain.decode(logits, (12, 10)), vivid.decode(logits, (12, 10))
    assert torch.allclose(ab2, 1.5 * ab)
    assert torch.equal(plain.saturate(ab), ab)  # 1: untouched, bit for bit


def test_config_checks_saturation() -> None:
    ColorizeConfig(saturation=1.3)
    ColorizeConfig(saturation=0)
    for bad in [-1, math.nan, "lots", True]:
        with pytest.raises(BadInputError, match="saturation"):
            ColorizeConfig(saturation=bad)


def _planes(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="yuv444p") for f in c.decode(video=0)]).astype(int)


def test_engine_chroma_follows_saturation_luma_does_not(tiny_video, tmp_path) -> None:
    planes = {}
    for s in (0.0, 1.0, 1.5):
        out = tmp_path / f"s{s}.mkv"
        config = ColorizeConfig(saturation=s, codec="ffv1", pix_fmt="yuv444p", audio=False)
        bttf.colorize_video(tiny_video, out, config)
        planes[s] = _planes(out)
    assert np.array_equal(planes[0.0][:, 0], planes[1.0][:, 0])
    assert np.array_equal(planes[1.5][:, 0], planes[1.0][:, 0])
    assert np.abs(planes[0.0][:, 1:] - 128).max() <= 1  # gray
    dev = {s: np.abs(planes[s][:, 1:] - 128).mean() for s in (1.0, 1.5)}
    assert dev[1.0] > 1 and 1.3 < dev[1.5] / dev[1.0] < 1.7, dev


def test_still_image_follows_saturation(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = (rng.random((48, 64)) * 200 + 30).astype(np.uint8)
    src = tmp_path / "photo.png"
    Image.fromarray(gray).save(src)
    out = {}
    for s in (1.0, 2.0):
        dst = tmp_path / f"out{s}.png"
        bttf.colorize_image(src, dst, ColorizeConfig(saturation=s))
        rgb = np.asarray(Image.open(dst).convert("RGB")).astype(int)
        out[s] = np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()
    assert out[2.0] > 1.3 * out[1.0] > 0


@pytest.mark.parametrize("value", ["-1", "lots", "nan"])
def test_cli_refuses_a_bad_saturation_in_one_line(tiny_video, tmp_path, capsys, value) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(tiny_video), "-o", str(out), "--saturation", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "saturation" in err and "Traceback" not in err
    assert not out.exists()
