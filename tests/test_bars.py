"""Black bars (`bttf.pipeline.bars`): found once per film from spread frames, filled in the gray the
model sees, never in the output; part of a resumable run's settings."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import bttf
from bttf.cli import main
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.bars import BLACK, Bars, bars_in, fill_bars, find_bars
from bttf.pipeline.decode import SourceFrame, probe_video
from bttf.pipeline.fields import FieldPreparer
from bttf.pipeline.stages import Preparer

W, H, BAR = 96, 64, 16  # a 64x64 picture in a 96-wide frame: 16-pixel pillarbox bars
N = 30


def picture(t: int, h: int = H, w: int = W - 2 * BAR) -> np.ndarray:
    """A moving texture, 40..220: no column or row of it is black."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (130 + 90 * np.sin(0.3 * xx + 0.2 * yy + 0.4 * t)).astype(np.uint8)


def boxed(t: int, left: int = BAR, right: int = BAR, top: int = 0, bottom: int = 0) -> np.ndarray:
    g = np.zeros((H, W), np.uint8)
    g[top : H - bottom, left : W - right] = picture(t, H - top - bottom, W - left - right)
    return g


def write_gray(path: Path, frames: list[np.ndarray], gop: int = 12) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24, options={"g": str(gop)})
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "gray"
        for g in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(g, format="gray")))
        out.mux(vs.encode(None))
    return path


@pytest.fixture(scope="module")
def pillarboxed(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bars")
    return write_gray(folder / "pillarbox.mkv", [boxed(t) for t in range(N)])


def test_bars_in_finds_pillarbox_and_letterbox() -> None:
    assert bars_in([boxed(t) for t in range(3)]) == Bars(0, 0, BAR, BAR)
    frames = [boxed(t, left=0, right=0, top=8, bottom=6) for t in range(3)]
    assert bars_in(frames) == Bars(8, 6, 0, 0)
    assert bars_in([boxed(t, left=10, right=0) for t in range(3)]) == Bars(0, 0, 10, 0)


def test_no_bars_where_a_sample_lights_the_band_or_it_is_too_thin() -> None:
    frames = [boxed(t) for t in range(3)]
    frames[1] = boxed(1, left=0, right=0)  # one frame fills the width: no bars
    assert bars_in(frames) is None
    assert bars_in([boxed(t, left=1, right=1) for t in range(3)]) is None  # 1 px: a ragged edge
    dark = [np.full((H, W), BLACK, np.uint8) for _ in range(3)]
    assert bars_in(dark) is None  # all dark: not all bars
    assert bars_in([boxed(t, left=40, right=40) for t in range(3)]) is None  # too little picture
    assert bars_in([]) is None


def test_fill_mirrors_the_picture_into_the_bars() -> None:
    g = boxed(0, top=4, bottom=2)
    bars = Bars(4, 2, BAR, BAR)
    filled = fill_bars(g, bars)
    pic = g[4 : H - 2, BAR : W - BAR]
    assert filled.shape == g.shape and np.array_equal(filled[4 : H - 2, BAR : W - BAR], pic)
    assert np.array_equal(filled[4 : H - 2, :BAR], pic[:, :BAR][:, ::-1])
    assert np.array_equal(filled[:4, BAR : W - BAR], pic[:4][::-1])
    assert filled.mean(axis=0).min() > BLACK and filled.mean(axis=1).min() > BLACK


def test_find_bars_samples_the_film_and_its_range(pillarboxed: Path, tiny_video: Path) -> None:
    info = probe_video(pillarboxed)
    assert find_bars(info) == Bars(0, 0, BAR, BAR)
    assert find_bars(info, start=0.5, duration=0.5) == Bars(0, 0, BAR, BAR)
    assert find_bars(probe_video(tiny_video)) is None


def test_find_bars_seeks_a_long_film(tmp_path: Path, monkeypatch) -> None:
    import bttf.pipeline.bars as bars_mod

    frames = [boxed(t) for t in range(60)]
    frames[45:56] = [boxed(t, left=0, right=0) for t in range(45, 56)]  # a late full-width shot
    path = write_gray(tmp_path / "long.mkv", frames, gop=1)
    monkeypatch.setattr(bars_mod, "WALK", 10)  # "long": sampled by seeking
    assert find_bars(probe_video(path)) is None  # the late shot was seen
    picked = []
    real = bars_mod._samples

    def spy(*a):
        for f in real(*a):
            picked.append(f.pts)
            yield f

    monkeypatch.setattr(bars_mod, "_samples", spy)
    find_bars(probe_video(path))
    assert len(set(picked)) == len(picked) >= bars_mod.SAMPLES - 1  # spread, none twice
    assert max(picked) - min(picked) >= 40


def src(y: np.ndarray) -> SourceFrame:
    return SourceFrame(index=0, y=y.copy(), pts=0, duration=1, time_base=Fraction(1, 24))


def test_the_model_sees_no_bars_the_output_keeps_them(pillarboxed: Path) -> None:
    info = probe_video(pillarboxed)
    y = boxed(3)
    frame = src(y)
    plain = Preparer(info, (32, 48), 0, (H, W))(frame)
    filled = Preparer(info, (32, 48), 0, (H, W), Bars(0, 0, BAR, BAR))(src(y))
    assert plain.small[:, :4].max() <= BLACK < filled.small[:, :4].mean()
    assert np.array_equal(plain.chroma, filled.chroma)  # the output's L: bars still black
    fields = FieldPreparer(info, (16, 48), 0, (H, W), True, Bars(0, 0, BAR, BAR))(src(y))
    assert fields.small[:, :, :4].mean() > BLACK and fields.chroma[:, :, :4].max() <= BLACK


def _planes(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="yuv444p") for f in c.decode(video=0)]).astype(int)


def test_engine_fills_bars_for_the_model_only(pillarboxed: Path, tmp_path: Path) -> None:
    out = {}
    for fill in (True, False):
        dst = tmp_path / f"{fill}.mkv"
        config = ColorizeConfig(
            fill_bars=fill, codec="ffv1", pix_fmt="yuv444p", render_size=64, audio=False
        )
        bttf.colorize_video(pillarboxed, dst, config)
        out[fill] = _planes(dst)
    filled, kept = out[True], out[False]
    assert np.array_equal(filled[:, 0], kept[:, 0])  # luma: the film's own
    assert np.abs(filled[:, 1:, :, :BAR] - 128).max() <= 1  # bars: black, no colour
    assert np.abs(filled[:, 1:, :, -BAR:] - 128).max() <= 1
    assert np.abs(filled[:, 1:, :, BAR:-BAR] - kept[:, 1:, :, BAR:-BAR]).max() > 0


def test_keep_bars_is_a_changed_setting_for_resume(pillarboxed: Path, tmp_path: Path, capsys):
    dst = tmp_path / "out.mkv"

    def interrupt(done: int, total: int | None) -> None:
        if done >= 16:
            raise KeyboardInterrupt

    config = ColorizeConfig(
        codec="ffv1", render_size=32, batch_size=4, segment_frames=8, audio=False, threads=1
    )
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(pillarboxed, dst, config, progress=interrupt)
    args = ["colorize", str(pillarboxed), "-o", str(dst), "--codec", "ffv1", "--render-size"]
    args += ["32", "--batch-size", "4", "--segment-frames", "8", "--resume", "--threads", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--keep-bars"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "bars" in err
    main(args)  # the same settings: it resumes
    assert dst.is_file() and len(_planes(dst)) == N


def plane_of(p) -> np.ndarray:
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def test_bars_stay_neutral_in_420_and_field_by_field(pillarboxed: Path, tmp_path: Path) -> None:
    for fields in (False, True):
        dst = tmp_path / f"f{fields}.mkv"
        config = ColorizeConfig(
            codec="ffv1", pix_fmt="yuv420p", render_size=64, audio=False, fields=fields
        )
        bttf.colorize_video(pillarboxed, dst, config)
        with av.open(str(dst)) as c:
            for f in c.decode(video=0):
                u, v = (plane_of(p) for p in f.planes[1:])
                for plane in (u, v):
                    assert np.abs(plane[:, : BAR // 2].astype(int) - 128).max() <= 1, fields
                    assert np.abs(plane[:, -BAR // 2 :].astype(int) - 128).max() <= 1, fields
