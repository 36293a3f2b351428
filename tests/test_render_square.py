"""`render_square`: the model fed a square of side render size (the frame squashed or stretched,
as DeOldify's own pipeline does) instead of the frame's aspect; its colour goes back onto the
film's own luma at the film's size. Off (every model's default) changes nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import luma, make_video
from torch import nn

import bttf
from bttf.cli import cli
from bttf.errors import BadInputError
from bttf.models import Colorizer, ModelSpec, create_model, get_spec, save_weights
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.stages import colorize_gray, colorize_l, render_dims, square_render

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}
ASPECT_HW, SQUARE_HW = (32, 48), (32, 32)  # a 64x48 film at render size 32, stride 16


class Recording(Colorizer):
    """A colorizer that notes the (h, w) of every input the model sees."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.seen: list[tuple[int, int]] = []

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(L.shape[-2:]))
        return super().predict(L)


class EdgeAB(nn.Module):
    """ab from the horizontal gradient of L: squashing the frame changes its colour."""

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        gx = F.pad(L[..., 1:] - L[..., :-1], (0, 1))
        return torch.cat([4.0 * gx, -4.0 * gx], dim=1).clamp(-60, 60)


def recording(square_default: bool = False) -> Recording:
    """An EdgeAB colorizer whose spec's default render shape is as asked."""
    spec = ModelSpec("edge", EdgeAB, "ab", stride=16, render_size=32, render_square=square_default)
    return Recording(EdgeAB(), spec).eval()


def planes(path: Path) -> list[tuple[np.ndarray, ...]]:
    """Y, Cb, Cr of every frame, as stored."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            out.append(
                tuple(
                    np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy()
                    for p in f.planes
                )
            )
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of 64x48, lossless (ffv1), so that outputs compare frame for frame."""
    path = tmp_path_factory.mktemp("square") / "clip.mkv"
    return make_video(path, frames=12, codec="ffv1", audio=None)


def test_render_dims_square() -> None:
    assert render_dims(48, 64, 32, 16, square=True) == SQUARE_HW
    assert render_dims(48, 64, 32, 16) == ASPECT_HW
    assert render_dims(400, 100, 70, 16, square=True) == (64, 64)  # rounded to the stride


def test_model_default_and_override() -> None:
    plain, squared = recording(), recording(square_default=True)
    assert not square_render(plain, None) and square_render(squared, None)
    assert square_render(plain, True) and not square_render(squared, False)
    assert not square_render(object(), None)  # a colorizer without the attribute: aspect
    assert not any(s.render_square for s in map(get_spec, ["deoldify-video", "ddcolor"]))
    with pytest.raises(BadInputError, match="render_square"):
        ColorizeConfig(render_square=1)


def test_film_model_sees_a_square_and_the_film_keeps_its_size_and_luma(
    clip: Path, tmp_path: Path
) -> None:
    col = recording()
    square, aspect = tmp_path / "square.mkv", tmp_path / "aspect.mkv"
    stats = bttf.colorize_video(
        clip, square, ColorizeConfig(**FAST, codec="ffv1", render_square=True), colorizer=col
    )
    assert col.seen and set(col.seen) == {SQUARE_HW} and stats.render_size == (32, 32)
    col.seen.clear()
    bttf.colorize_video(clip, aspect, ColorizeConfig(**FAST, codec="ffv1"), colorizer=col)
    assert set(col.seen) == {ASPECT_HW}
    src, sq, asp = planes(clip), planes(square), planes(aspect)
    assert len(sq) == len(src) == 12
    for s, q in zip(src, sq):
        assert q[0].shape == (48, 64) and q[1].shape == (24, 32)
        assert np.array_equal(s[0], q[0])  # the film's luma, bit for bit
    assert any(not np.array_equal(q[1], a[1]) for q, a in zip(sq, asp))  # it changes colour


def test_off_changes_nothing(clip: Path, tmp_path: Path) -> None:
    """Aspect kept (False, and None for a model whose default is aspect) makes the same frames,
    and so does False for a model whose own default is square."""
    outs = []
    for name, col, square in [
        ("none", recording(), None),
        ("false", recording(), False),
        ("forced", recording(square_default=True), False),
    ]:
        out = tmp_path / f"{name}.mkv"
        bttf.colorize_video(
            clip, out, ColorizeConfig(**FAST, codec="ffv1", render_square=square), colorizer=col
        )
        assert set(col.seen) == {ASPECT_HW}
        outs.append(planes(out))
    for other in outs[1:]:
        assert all(all(map(np.array_equal, a, b)) for a, b in zip(outs[0], other))
    col = recording(square_default=True)  # its default: square
    bttf.colorize_video(
        clip, tmp_path / "default.mkv", ColorizeConfig(**FAST, codec="ffv1"), colorizer=col
    )
    assert set(col.seen) == {SQUARE_HW}


def test_still_image(tmp_path: Path) -> None:
    from bttf.color import luma_to_l, rgb_to_lab

    src, out = tmp_path / "photo.png", tmp_path / "photo_out.png"
    gray = luma(5, 64, 48)
    cv2.imwrite(str(src), gray)
    col = recording()
    config = ColorizeConfig(render_size=32, device="cpu", render_square=True)
    stats = bttf.colorize_image(src, out, config, colorizer=col)
    assert col.seen == [SQUARE_HW] and stats.render_size == (32, 32) and stats.size == (64, 48)
    rgb = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (48, 64, 3)
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    assert np.abs(lab[0].numpy() - luma_to_l(gray)).mean() < 0.6  # the photo's lightness
    col.seen.clear()
    ab = colorize_gray(col, gray, torch.device("cpu"), 32)  # the colorizer's default: aspect
    assert col.seen == [ASPECT_HW] and ab.shape == (1, 2, 48, 64)
    col.seen.clear()  # `bttf compare`'s path
    L = luma_to_l(torch.from_numpy(gray).float())[None, None]
    ab = colorize_l(col, L, torch.device("cpu"), 32, (24, 32), square=True)
    assert col.seen == [SQUARE_HW] and ab.shape == (1, 2, 24, 32)


def test_cli_flags(tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    cv2.imwrite(str(src), luma(5, 64, 48))
    for name in ("colorize", "gif", "compare"):
        cmd = cli.commands[name]
        for flags, want in (([], None), (["--render-square"], True), (["--render-aspect"], False)):
            with cmd.make_context(name, [str(src), *flags]) as ctx:
                assert ctx.params["render_square"] is want, (name, flags)
    torch.manual_seed(0)
    weights = save_weights(
        tmp_path / "w.safetensors", create_model("fastcolor", pretrained=False), "fastcolor", {}
    )
    base = ["colorize", str(src), "--weights", str(weights), "--render-size", "32"]
    base += ["--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(cli, [*base, "-o", str(tmp_path / "sq.png"), "--render-square"])
    assert result.exit_code == 0 and "32x32]" in result.output, result.output
    result = runner.invoke(cli, [*base, "-o", str(tmp_path / "asp.png"), "--render-aspect"])
    assert result.exit_code == 0 and "48x32]" in result.output, result.output
    sheet = ["compare", str(src), "--weights", str(weights), "--device", "cpu", "--height", "32"]
    result = runner.invoke(cli, [*sheet, "-o", str(tmp_path / "sheet.png"), "--render-square"])
    assert result.exit_code == 0 and (tmp_path / "sheet.png").is_file(), result.output


def test_resume_with_another_shape_is_refused(tmp_path: Path) -> None:
    src = make_video(tmp_path / "film.mp4", frames=24, audio=None)
    out = tmp_path / "film_out.mp4"
    col = recording()
    config = ColorizeConfig(**FAST, crf=0, segment_frames=8)

    def interrupt(done: int, total: int | None) -> None:
        if done > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(src, out, config, interrupt, colorizer=col)
    square = dataclasses.replace(config, resume=True, render_square=True)
    with pytest.raises(BadInputError, match="render_square None -> True"):
        bttf.colorize_video(src, out, square, colorizer=col)
    # aspect kept, said explicitly, is the setting the run was started with: it resumes
    stats = bttf.colorize_video(
        src, out, dataclasses.replace(config, resume=True, render_square=False), colorizer=col
    )
    assert stats.resumed_frames == 8 and stats.frames == 24
