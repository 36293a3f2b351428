"""`bttf gif` and bttf.pipeline.gif: palette GIF previews, size budgets, the usual output rules."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bttf.errors import BadInputError, BttfError, OutputExistsError
from bttf.pipeline.gif import (
    GifConfig,
    GifStep,
    gif_ladder,
    hold_small_changes,
    label_png,
    make_gif,
    parse_size,
    size_ladder,
)

W, H, RATE, N = 160, 120, 24, 48  # 2 s


def _write_clip(path: Path, color: bool) -> Path:
    """A moving gradient with a bright square, colour or gray; small and fast to encode."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=RATE)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        y, x = np.mgrid[0:H, 0:W]
        for i in range(N):
            img = np.stack([(x + 3 * i) % 256, (2 * y) % 256, (x + y + 5 * i) % 256], -1)
            img[20:50, 10 + 2 * i : 40 + 2 * i] = (230, 40, 40)
            img = img.astype(np.uint8)
            if not color:
                img[:] = img.mean(-1, keepdims=True).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("gif_media")
    return _write_clip(d / "bw.mp4", color=False), _write_clip(d / "color.mp4", color=True)


def _gif_info(path: Path) -> tuple[tuple[int, int], int, int | None]:
    with Image.open(path) as im:
        assert im.format == "GIF"
        return im.size, im.n_frames, im.info.get("loop")


def _cfg(colorized: Path, **kw) -> GifConfig:
    base = {"duration": 1.0, "fps": 12, "width": 96, "colorized": colorized}
    return GifConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "text, n",
    [
        ("5MB", 5_000_000),
        ("800KB", 800_000),
        ("2.5M", 2_500_000),
        ("1MiB", 1 << 20),
        ("300000", 300_000),
        ("64 kb", 64_000),
        ("1.5g", 1_500_000_000),
    ],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "MB", "5XB", "-1MB", "0", "5 M B", "ib"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_gif_frames_width_loop(clips, tmp_path):
    bw, color = clips
    out = tmp_path / "p.gif"
    r = make_gif(bw, out, _cfg(color, start=0.5))
    (w, h), frames, loop = _gif_info(out)
    assert (w, h) == (96, 72) == (r.width, r.height)
    assert abs(frames - 12) <= 1 and r.frames == frames
    assert loop == 0  # NETSCAPE loop count 0: forever
    assert r.size_bytes == out.stat().st_size and not r.reduced and r.attempts == 1
    with Image.open(out) as im:  # really in colour
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 10
    assert [p.name for p in tmp_path.iterdir()] == ["p.gif"]  # no temp file left beside it


def test_side_by_side_is_twice_as_wide_gray_left_labelled(clips, tmp_path):
    bw, color = clips
    out = tmp_path / "sbs.gif"
    r = make_gif(bw, out, _cfg(color, side_by_side=True, label="bttf test"))
    (w, h), frames, loop = _gif_info(out)
    assert (w, h) == (192, 72) and r.total_width == 192 and loop == 0
    assert abs(frames - 12) <= 1
    with Image.open(out) as im:
        im.seek(frames // 2)
        rgb = np.asarray(im.convert("RGB")).astype(int)
    left, right = rgb[30:, :96], rgb[30:, 96:]  # below the labels
    assert np.abs(left[..., 0] - left[..., 2]).mean() < 3  # black and white
    assert np.abs(right[..., 0] - right[..., 2]).mean() > 10


def test_label_image_has_text_in_both_halves(tmp_path):
    png = tmp_path / "l.png"
    label_png(png, 200, 100, ("original", "bttf fastcolor"))
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGBA"))
    assert a.shape == (100, 400, 4)
    assert (a[..., 3] == 0).mean() > 0.7  # mostly transparent
    for half in (a[:, :200], a[:, 200:]):
        assert (half[..., :3].min(-1) > 150).sum() > 20  # light strokes


def test_max_size_lowers_settings_in_ladder_order(clips, tmp_path):
    bw, color = clips
    full = make_gif(bw, tmp_path / "full.gif", _cfg(color, width=160))
    budget = int(full.size_bytes * 0.45)
    out = tmp_path / "small.gif"
    r = make_gif(bw, out, _cfg(color, width=160, max_size=budget))
    assert r.reduced and r.attempts >= 2 and len(r.tried) == r.attempts
    assert out.stat().st_size == r.size_bytes <= budget
    dither = None if r.dither == "bayer" else r.dither  # a step's None: the config's dither
    assert GifStep(r.fps, r.width, r.colors, r.hold, dither) in gif_ladder(12, 160, "bayer")[1:]
    (w, _), frames, loop = _gif_info(out)
    assert w == r.width and loop == 0 and abs(frames - r.fps) <= 1


def _grainy_clip(path: Path) -> Path:
    """3 s of 160-px colour footage at 12 fps with film grain: every pixel changes a little
    every frame, which is what kept real footage over a GIF budget."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    scene = np.stack([x + 40, y + 60, 200 - x // 2], -1).astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=12)
        s.width, s.height, s.pix_fmt = W, H, "bgr0"
        for i in range(36):
            img = np.roll(scene, i, axis=1) + rng.normal(0, 4, (H, W, 1))
            f = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            c.mux(s.encode(f.reformat(format="bgr0")))
        c.mux(s.encode(None))
    return path


def test_max_size_tries_palette_and_frame_differencing_before_fps_and_width(tmp_path):
    """#21: the ladder went straight to fewer fps and pixels; a grainy clip fits a budget of
    70 % of its full-quality GIF at the asked fps and width."""
    clip = _grainy_clip(tmp_path / "grain.mkv")
    cfg = {"duration": None, "fps": 12, "width": W, "colorized": clip}
    full = make_gif(clip, tmp_path / "full.gif", GifConfig(**cfg))
    r = make_gif(clip, tmp_path / "fit.gif", GifConfig(**cfg, max_size=int(0.7 * full.size_bytes)))
    assert (r.fps, r.width) == (12, W) and r.reduced
    assert r.colors < 256 or r.hold > 0
    assert r.tried[0][1] == full.size_bytes and r.tried[-1][1] == r.size_bytes


def test_hold_small_changes_keeps_the_previous_colour_under_the_threshold(tmp_path):
    src, dst = tmp_path / "in.mkv", tmp_path / "held.mkv"
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (100, 103, 110, 112)]
    with av.open(str(src), "w") as c:
        s = c.add_stream("ffv1", rate=12)
        s.width, s.height, s.pix_fmt = 8, 8, "bgr0"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    hold_small_changes(src, dst, 4)
    with av.open(str(dst)) as c:
        got = [int(f.to_ndarray(format="rgb24")[0, 0, 0]) for f in c.decode(video=0)]
    assert got == [100, 100, 110, 110]  # +3 held, +10 passes, +2 held again


def test_gif_ladder_lowers_quality_before_fps_and_width():
    steps = gif_ladder(12, 480, "bayer")
    at_full = [st for st in steps if (st.fps, st.width) == (12, 480)]
    assert [(st.colors, st.hold, st.dither) for st in at_full] == [
        (256, 0, None),
        (128, 0, None),
        (64, 0, None),
        (64, 8, None),
        (64, 16, None),
        (64, 16, "none"),
    ]
    assert steps[len(at_full) :] and all(st.colors == 64 for st in steps[len(at_full) :])
    assert [(st.fps, st.width) for st in steps[len(at_full) - 1 :]] == size_ladder(12, 480)


def test_ladder_order():
    steps = size_ladder(12, 480)
    assert steps[:4] == [(12, 480), (10, 480), (8, 480), (6, 480)]
    assert all(f == 6 for f, _ in steps[4:])
    widths = [w for _, w in steps[3:]]
    assert widths == sorted(widths, reverse=True) and widths[-1] == 120


def test_max_size_unreachable_is_a_clear_error(clips, tmp_path):
    bw, color = clips
    out = tmp_path / "x.gif"
    with pytest.raises(BttfError, match="max-size"):
        make_gif(bw, out, _cfg(color, max_size=1000))
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refused_then_allowed(clips, tmp_path):
    bw, color = clips
    out = tmp_path / "p.gif"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        make_gif(bw, out, _cfg(color))
    assert out.read_bytes() == b"keep"
    make_gif(bw, out, _cfg(color, overwrite=True))
    assert _gif_info(out)[1] > 0


@pytest.mark.parametrize(
    "kw",
    [{"fps": 0}, {"width": 4}, {"duration": 0}, {"start": -1}, {"dither": "x"}],
)
def test_bad_config(clips, kw):
    with pytest.raises(BadInputError):
        _cfg(clips[1], **kw)


def test_bad_inputs(clips, tmp_path):
    bw, color = clips
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(BadInputError):
        make_gif(junk, tmp_path / "a.gif", _cfg(color))
    with pytest.raises(BadInputError, match="past the end"):
        make_gif(bw, tmp_path / "b.gif", _cfg(color, start=30))
    with pytest.raises(BadInputError, match=".gif"):
        make_gif(bw, tmp_path / "c.mp4", _cfg(color))
    with pytest.raises(BadInputError):
        make_gif(tmp_path / "missing.mp4", tmp_path / "d.gif", _cfg(color))


# --- the command line ------------------------------------------------------------------------


def _main(capsys, *args: str) -> tuple[int, str]:
    from bttf.cli import main

    try:
        main(["gif", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_cli_colorizes_only_the_range_side_by_side(tiny_video, tmp_path, capsys, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out" / "p.gif"
    out.parent.mkdir()
    code, err = _main(
        capsys,
        str(tiny_video),
        "-o",
        str(out),
        "--start",
        "0.25",
        "--duration",
        "0.5",
        "--width",
        "48",
        "--side-by-side",
        "--model",
        "fastcolor",
        "--device",
        "cpu",
        "--render-size",
        "32",
        "--threads",
        "1",
    )
    assert code == 0, err
    (w, h), frames, loop = _gif_info(out)
    assert (w, h) == (96, 36) and loop == 0 and abs(frames - 6) <= 1
    assert "wrote" in err and "96x36" in err
    assert list(scratch.iterdir()) == []  # the temporary colorized clip is gone
    assert [p.name for p in out.parent.iterdir()] == ["p.gif"]


def test_cli_max_size_says_what_it_chose(clips, tmp_path, capsys):
    bw, color = clips
    full = make_gif(bw, tmp_path / "full.gif", _cfg(color, width=160))
    out = tmp_path / "p.gif"
    budget = f"{full.size_bytes * 0.45 / 1000:.1f}KB"
    code, err = _main(
        capsys,
        str(bw),
        "--colorized",
        str(color),
        "-o",
        str(out),
        "--width",
        "160",
        "--duration",
        "1",
        "--max-size",
        budget,
    )
    assert code == 0, err
    assert "chose" in err and "max-size" in err
    assert out.stat().st_size <= full.size_bytes * 0.45


def test_cli_max_size_unreachable(clips, tmp_path, capsys):
    bw, color = clips
    code, err = _main(
        capsys,
        str(bw),
        "--colorized",
        str(color),
        "-o",
        str(tmp_path / "p.gif"),
        "--max-size",
        "1KB",
    )
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("bttf: error:") and "max-size" in err


def test_cli_overwrite_refusal(clips, tmp_path, capsys):
    bw, color = clips
    out = tmp_path / "p.gif"
    out.write_bytes(b"keep")
    args = (str(bw), "--colorized", str(color), "-o", str(out), "--duration", "0.5")
    code, err = _main(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert out.read_bytes() == b"keep"
    code, err = _main(capsys, *args, "--overwrite")
    assert code == 0 and _gif_info(out)[1] > 0


@pytest.mark.parametrize("bad", ["junk", "missing", "audio", "image", "past_end"])
def test_cli_bad_input_exit_2_one_line(
    bad, clips, tiny_video, audio_only, gray_png, tmp_path, capsys
):
    src = {
        "junk": tmp_path / "junk.mp4",
        "missing": tmp_path / "nope.mp4",
        "audio": audio_only,
        "image": gray_png,
        "past_end": tiny_video,
    }[bad]
    if bad == "junk":
        src.write_bytes(b"\x00" * 100)
    extra = ["--start", "10"] if bad == "past_end" else []
    code, err = _main(
        capsys, str(src), "-o", str(tmp_path / "p.gif"), "--colorized", str(clips[1]), *extra
    )
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bttf: error:"), err
    assert not (tmp_path / "p.gif").exists()


def test_cli_bad_max_size_is_a_usage_error(clips, tmp_path, capsys):
    code, err = _main(capsys, str(clips[0]), "-o", str(tmp_path / "p.gif"), "--max-size", "5XB")
    assert code == 2 and "--max-size" in err
