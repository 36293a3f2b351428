"""Keyframe-guided colour: export, the folder's checks, propagation along the shot, resume."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import bttf
from bttf.cli import main
from bttf.color import rgb_to_lab
from bttf.errors import BadInputError
from bttf.models import create_model, save_weights
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.decode import probe_video
from bttf.pipeline.keyframes import export_keyframes, load_keyframes

W, H = 192, 128
N = 36
CUT = 24  # first frame of the second shot
SPEED = 1.5  # pixels a frame


def texture(seed: int, h: int, w: int, cell: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.random((h // cell, w // cell)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min())
    return (60 + 150 * img).astype(np.float32)


def scene(seed: int) -> np.ndarray:
    """A wide RGB texture: the left half tinted red, the right half blue (float 0..255)."""
    gray = texture(seed, H, 3 * W)
    tint = np.ones((H, 3 * W, 3), np.float32)
    tint[:, : 3 * W // 2] = (1.25, 0.8, 0.8)
    tint[:, 3 * W // 2 :] = (0.8, 0.9, 1.3)
    return np.clip(gray[..., None] * tint, 0, 255)


def truth_frames() -> list[np.ndarray]:
    """N uint8 RGB frames: a window panning over one scene, then (from CUT) over another."""
    out = []
    for t in range(N):
        sc = scene(1) if t < CUT else scene(2)
        x = W + t * SPEED if t < CUT else W // 3 + t * SPEED
        m = np.float32([[1, 0, -x], [0, 1, 0]])
        out.append(np.rint(cv2.warpAffine(sc, m, (W, H), flags=cv2.INTER_LINEAR)).astype(np.uint8))
    return out


def luma_of(rgb: np.ndarray) -> np.ndarray:
    y = rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def ab_of(rgb: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    return rgb_to_lab(t)[1:].numpy()


def write_gray(path: Path, frames: list[np.ndarray], fps: int = 24) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=fps)
        vs.width, vs.height, vs.pix_fmt = W, H, "gray"
        for g in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(g, format="gray")))
        out.mux(vs.encode(None))
    return path


def read_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def write_key(folder: Path, index: int, rgb: np.ndarray, suffix: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:06d}{suffix}"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def truth() -> list[np.ndarray]:
    return truth_frames()


@pytest.fixture(scope="module")
def gray_film(truth, tmp_path_factory) -> Path:
    return write_gray(tmp_path_factory.mktemp("kf") / "film.mkv", [luma_of(f) for f in truth])


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "fastcolor.safetensors"
    return save_weights(path, create_model("fastcolor", pretrained=False), "fastcolor", {})


def config(weights: Path, **kw) -> ColorizeConfig:
    base = {
        "render_size": 96,
        "batch_size": 4,
        "device": "cpu",
        "threads": 1,
        "codec": "ffv1",
        "crf": None,
        "preset": None,
        "pix_fmt": "yuv444p",
        "weights": str(weights),
    }
    return ColorizeConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def plain(gray_film, weights, tmp_path_factory) -> list[np.ndarray]:
    out = tmp_path_factory.mktemp("plain") / "out.mkv"
    bttf.colorize_video(gray_film, out, config(weights))
    return read_rgb(out)


def colorized(film: Path, keys: Path, weights: Path, out: Path, **kw) -> list[np.ndarray]:
    bttf.colorize_video(film, out, config(weights, keyframes=keys, **kw))
    return read_rgb(out)


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def ab_error(a: np.ndarray, b: np.ndarray, margin: int = 16, seen: int = W) -> float:
    """Mean |ab| difference of two RGB frames inside a margin, in the `seen` columns on the left
    (the content that comes in on the right was not in the keyframe)."""
    d = ab_of(a) - ab_of(b)
    return float(np.abs(d[:, margin:-margin, margin : min(seen, W - margin)]).mean())


def shown(t: int, key: int) -> int:
    """Columns of frame `t` whose content frame `key` shows (the pan moves it left)."""
    return W - round(max(0, t - key) * SPEED)


# --- export ----------------------------------------------------------------------------------


def test_export_one_png_per_shot(gray_film: Path, tmp_path: Path) -> None:
    paths = export_keyframes(gray_film, tmp_path / "k")
    assert [p.name for p in paths] == ["000000.png", f"{CUT:06d}.png"]
    img = cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (H, W, 3)
    with av.open(str(gray_film)) as c:
        frame = list(c.decode(video=0))[CUT].to_ndarray(format="gray")
    assert np.array_equal(img[..., 0], frame) and np.array_equal(img[..., 2], frame)


def test_export_middle_and_cli(gray_film: Path, tmp_path: Path, capsys) -> None:
    args = ["keyframes", str(gray_film), "-o", str(tmp_path / "m")]
    code, err = run_main([*args, "--at", "middle"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == [f"{(CUT - 1) // 2:06d}.png", f"{(CUT + N - 1) // 2:06d}.png"]
    code, err = run_main(args, capsys)
    assert code == 2 and "already holds images" in err and err.count("\n") == 1


# --- colour along the shot -------------------------------------------------------------------


def test_keyframe_colour_follows_the_pattern_and_stops_at_the_cut(
    gray_film, truth, plain, weights, tmp_path
) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 0, truth[0])
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv")
    assert ab_error(out[0], truth[0], margin=2) < 2.0  # the keyframe itself, at full res
    for t in (5, 15, CUT - 1):
        err = ab_error(out[t], truth[t], seen=shown(t, 0))
        base = ab_error(plain[t], truth[t], seen=shown(t, 0))
        assert err < 4.0 and err < base / 3, (t, err, base)
    for t in range(CUT, N):  # the next shot: untouched
        assert np.array_equal(out[t], plain[t]), t


def test_saturation_leaves_the_keyframes_colour_as_painted(
    gray_film, truth, plain, weights, tmp_path
) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 0, truth[0])
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv", saturation=2.0)
    assert ab_error(out[0], truth[0], margin=2) < 2.0  # the restorer's colour, not doubled
    vivid = [ab_error(out[t], plain[t]) for t in range(CUT, N)]  # the model's shot: doubled
    assert min(vivid) > 0.5, vivid


def test_keyframe_in_the_middle_colours_earlier_frames(
    gray_film, truth, plain, weights, tmp_path
) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 12, truth[12])
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv")
    for t in (0, 6, 12, 20):
        err = ab_error(out[t], truth[t], seen=shown(t, 12))
        base = ab_error(plain[t], truth[t], seen=shown(t, 12))
        assert err < 4.0 and err < base / 3, (t, err, base)


def test_brightness_of_the_keyframe_is_ignored(gray_film, truth, weights, tmp_path) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 0, np.clip(truth[0].astype(int) + 30, 0, 255).astype(np.uint8))
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv", duration=2 / 24)
    # the film's own luma under the keyframe's chroma
    assert np.abs(luma_of(out[0]).astype(int) - luma_of(truth[0])).mean() < 1.5
    assert ab_error(out[0], truth[0], margin=2) < 6.0


def test_resume_across_segments_gives_the_same_frames(gray_film, truth, weights, tmp_path):
    keys = tmp_path / "keys"
    write_key(keys, 10, truth[10])
    ref = tmp_path / "ref.mkv"
    bttf.colorize_video(gray_film, ref, config(weights, keyframes=keys, segment_frames=8))

    def interrupt(done: int, total: int | None) -> None:
        if done > 16:
            raise KeyboardInterrupt

    out = tmp_path / "out.mkv"
    cfg = config(weights, keyframes=keys, segment_frames=8)
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(gray_film, out, cfg, progress=interrupt)
    bttf.colorize_video(
        gray_film, out, config(weights, keyframes=keys, segment_frames=8, resume=True)
    )
    a, b = read_rgb(ref), read_rgb(out)
    assert len(a) == len(b) == N and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_start_counts_the_film_own_frames(gray_film, truth, plain, weights, tmp_path) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 12, truth[12])
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv", start=8 / 24, duration=8 / 24)
    gray = [luma_of(f).astype(int) for f in out]
    j = int(np.argmin([np.abs(g - luma_of(truth[12])).mean() for g in gray]))
    assert np.abs(gray[j] - luma_of(truth[12])).mean() < 1.5  # frame 12 is in the range
    assert ab_error(out[j], truth[12], margin=2) < 2.0  # and coloured as the keyframe


# --- bad keyframe folders --------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("name", "not named by a frame index"),
        ("past", "past the end"),
        ("aspect", "aspect ratio"),
        ("gray", "no colour"),
        ("unreadable", "not an image"),
        ("empty", "holds no images"),
    ],
)
def test_bad_keyframes_exit_2_and_write_nothing(
    case, message, gray_film, truth, weights, tmp_path, capsys
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    if case == "name":
        cv2.imwrite(str(keys / "shot1.png"), truth[0])
    elif case == "past":
        write_key(keys, N + 5, truth[0])
    elif case == "aspect":
        write_key(keys, 0, cv2.resize(truth[0], (W, W)))
    elif case == "gray":
        write_key(keys, 0, cv2.cvtColor(luma_of(truth[0]), cv2.COLOR_GRAY2RGB))
    elif case == "unreadable":
        (keys / "000003.png").write_bytes(b"not a png")
    out = tmp_path / "out.mkv"
    args = [
        "colorize",
        str(gray_film),
        "-o",
        str(out),
        "--keyframes",
        str(keys),
        "--device",
        "cpu",
        "--weights",
        str(weights),
        "--render-size",
        "32",
    ]
    code, err = run_main(args, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == [keys]
    with pytest.raises(BadInputError):
        load_keyframes(keys, probe_video(gray_film))


def test_same_aspect_at_another_size_is_resized(gray_film, truth, weights, tmp_path) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 0, cv2.resize(truth[0], (W * 2, H * 2)), ".jpg")
    out = colorized(gray_film, keys, weights, tmp_path / "out.mkv", duration=2 / 24)
    assert ab_error(out[0], truth[0], margin=2) < 3.0


def test_gif_takes_the_keyframes_at_its_own_frame_rate(gray_film, truth, weights, tmp_path):
    from bttf.pipeline.gif import GifConfig, make_gif

    keys = tmp_path / "keys"
    write_key(keys, 12, truth[12])  # 0.5 s: frame 6 of a 12 fps clip
    small = cv2.resize(truth[12], (96, 64), interpolation=cv2.INTER_AREA)
    errors = []
    for k in (keys, None):
        out = tmp_path / f"{k is None}.gif"
        cfg = GifConfig(duration=1.0, fps=12, width=96, colorize=config(weights, keyframes=k))
        make_gif(gray_film, out, cfg)
        errors.append(ab_error(read_rgb(out)[6], small, margin=4))
    assert errors[0] < 5.0 and errors[0] < errors[1] / 2, errors


def test_folder_mode_takes_each_films_own_keyframes(gray_film, truth, weights, tmp_path, capsys):
    films = tmp_path / "films"
    films.mkdir()
    for name in ("a", "b"):
        (films / f"{name}.mkv").write_bytes(gray_film.read_bytes())
    write_key(tmp_path / "keys" / "a", 0, truth[0])  # b has none
    args = ["colorize", str(films), "-o", str(tmp_path / "out"), "--keyframes"]
    args += [str(tmp_path / "keys"), "--device", "cpu", "--weights", str(weights)]
    args += ["--render-size", "96", "--crf", "0", "--pix-fmt", "yuv444p", "--duration", "0.2", "-q"]
    code, err = run_main(args, capsys)
    assert code == 0, err
    a, b = (read_rgb(tmp_path / "out" / f"{n}.mp4")[0] for n in "ab")
    assert ab_error(a, truth[0], margin=2) < 3.0 < ab_error(b, truth[0], margin=2)


def test_other_keyframes_refuse_a_resume(gray_film, truth, weights, tmp_path, capsys) -> None:
    keys = tmp_path / "keys"
    write_key(keys, 10, truth[10])

    def interrupt(done: int, total: int | None) -> None:
        if done > 8:
            raise KeyboardInterrupt

    out = tmp_path / "out.mkv"
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(
            gray_film, out, config(weights, keyframes=keys, segment_frames=8), progress=interrupt
        )
    write_key(keys, 10, truth[11])
    with pytest.raises(BadInputError, match="keyframes"):
        bttf.colorize_video(
            gray_film, out, config(weights, keyframes=keys, segment_frames=8, resume=True)
        )


def test_a_still_image_refuses_keyframes(gray_png, tmp_path, capsys) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    args = ["colorize", str(gray_png), "-o", str(tmp_path / "o.png"), "--keyframes", str(keys)]
    code, err = run_main(args, capsys)
    assert code == 2 and "--keyframes is for films" in err and not (tmp_path / "o.png").exists()


def test_gray_window_decodes_overlapping_windows_once(gray_film: Path) -> None:
    """A keyframe every shot: the windows overlap, the film is still decoded once; frames no
    track needs are dropped; a frame asked for again after that is sought and is the same."""
    from bttf.pipeline.keyframes import GrayWindow

    info = probe_video(gray_film)
    win = GrayWindow(info, (H // 2, W // 2), "repeat")
    try:
        first = {i: win.get(i) for i in range(20)}  # key 5's window
        for i in range(10, N):  # key 30's, overlapping it
            assert win.get(i) is not None
            win.forget(i - 4)
            assert len(win.frames) <= 5 + (N - 1 - i) and min(win.frames) >= i - 4
        assert win.decoded == N
        assert win.get(N) is None and win.get(N + 3) is None
        # forgotten: sought and decoded again (frame 11's timestamp, 458 ms, is rounded to just
        # before 11 / 24 s)
        again = win.get(11)
        assert again is not None and np.array_equal(again, first[11]) and win.decoded > N
    finally:
        win.close()


def test_keyframe_every_shot_each_shot_its_own(gray_film, truth, weights, tmp_path) -> None:
    """Two shots, a keyframe in each (the second one in the middle of its shot): each shot
    takes its own keyframe's colour, frames before the second key included."""
    keys = tmp_path / "keys"
    for k in (0, 30):
        write_key(keys, k, truth[k])
    out = colorized(gray_film, keys, weights, tmp_path / "o.mkv")
    for t in (4, 12, 26, 28, 33):
        key = 0 if t < CUT else 30
        assert ab_error(out[t], truth[t], seen=shown(t, key) if t > key else W) < 3.0, t


def test_a_track_a_pixel_off_at_an_edge_takes_the_colour_of_the_right_side() -> None:
    """The tracked keyframe is one pixel off: its edge (dark red | bright blue) sits a column
    right of the frame's. Where the tracked colour is wrong (the frame's first bright column),
    the match around it gives the blue; away from the edge the colour is as tracked."""
    from bttf.pipeline.keyframes import match_colour

    h, w, edge = 12, 24, 10
    gray = np.full((h, w), 50.0, np.float32)
    gray[:, edge:] = 200.0
    key_gray = np.roll(gray, 1, axis=1)
    key_gray[:, 0] = 50.0
    tracked = np.where((key_gray > 100)[..., None], [-20.0, -60.0], [60.0, 40.0]).astype(np.float32)
    assert tracked[0, edge, 1] == 40.0  # (the tracked colour there is the red)
    out = np.dstack(match_colour(key_gray, gray, *cv2.split(tracked)))
    assert np.allclose(out[:, edge], [-20.0, -60.0], atol=0.5)
    assert np.allclose(out[:, : edge - 3], [60.0, 40.0], atol=1e-3)
    assert np.allclose(out[:, edge + 3 :], [-20.0, -60.0], atol=1e-3)
