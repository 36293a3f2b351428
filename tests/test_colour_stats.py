"""bttf.metrics.colour (colour statistics of a film), the shipped ImageNet prior, and the
colour rows of `bttf eval-video`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bttf.cli import cli
from bttf.color import rgb_to_lab
from bttf.metrics import ColourStats, colour_stats
from bttf.metrics.colour import HUE_NAMES, HUE_SECTORS, js_divergence
from bttf.metrics.video import evaluate_video
from bttf.models.bins import AB_BINS_NP, PRIOR_FILE, Q, imagenet_prior

ZERO_BIN = int(np.flatnonzero((AB_BINS_NP == 0).all(1))[0])  # the bin at (0, 0)


def _film(rgb: tuple[int, int, int], n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [np.full((h, w, 3), rgb, np.uint8) for _ in range(n)]


def _noise_film(n: int, seed: int, h: int = 36, w: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_rgb_to_lab_matches_scikit_image() -> None:
    color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(0).random((1, 64, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert np.abs(ours - color.rgb2lab(rgb)).max() < 0.5


def test_a_green_film_is_green() -> None:
    s = colour_stats(_film((0, 200, 0), 12))
    assert s.frames == 3  # frames 0, 5, 10
    assert s.pixels == 3 * 160 * 120
    assert s.mean_a < -40 and s.mean_b > 30
    assert s.strong_share == pytest.approx(1.0)
    assert s.hue_shares["green"] == pytest.approx(1.0)
    assert sum(s.hue_shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rgb", "sector"),
    [
        ((255, 0, 0), "red"),
        ((220, 20, 60), "red"),  # crimson
        ((255, 105, 180), "red"),  # hot pink
        ((255, 165, 0), "orange/yellow"),
        ((198, 134, 66), "orange/yellow"),  # a skin tone
        ((255, 255, 0), "orange/yellow"),
        ((107, 142, 35), "green"),  # olive drab
        ((46, 139, 87), "green"),  # sea green
        ((0, 255, 255), "cyan"),
        ((135, 206, 235), "blue"),  # sky blue
        ((0, 0, 255), "blue"),
        ((255, 0, 255), "purple/magenta"),
        ((128, 0, 128), "purple/magenta"),
    ],
)
def test_named_colours_fall_in_their_hue_sector(rgb, sector) -> None:
    s = colour_stats(_film(rgb, 1, 8, 8), width=8)
    assert s.strong_share == 1.0
    assert s.hue_shares[sector] == 1.0


def test_hue_sectors_cover_the_circle_once() -> None:
    assert len(HUE_NAMES) == 6
    span = sum((hi - lo) % 360 for _, lo, hi in HUE_SECTORS)
    assert span == 360


def test_a_gray_film_has_no_colour_and_the_gray_bin_divergence() -> None:
    frames = [np.full((30, 40, 3), g, np.uint8) for g in (0, 40, 128, 200, 255)]
    s = colour_stats(frames, step=1)
    assert s.strong_share == 0.0
    assert all(math.isnan(v) for v in s.hue_shares.values())
    assert abs(s.mean_a) < 0.01 and abs(s.mean_b) < 0.01
    assert s.bin_counts[ZERO_BIN] == s.pixels
    one_hot = np.zeros(Q)
    one_hot[ZERO_BIN] = 1.0
    expected = js_divergence(one_hot, imagenet_prior().double().numpy())
    assert s.js_prior == pytest.approx(expected)
    assert 0.40 < expected < 0.44  # nats
    d = s.to_dict()
    assert d["hue_shares"]["green"] is None and d["js_prior"] == pytest.approx(expected)


def test_js_divergence_bounds() -> None:
    p = np.array([1.0, 0.0])
    assert js_divergence(p, p) == 0.0
    assert js_divergence(p, p[::-1]) == pytest.approx(math.log(2))


def test_pooling_equals_the_stats_of_the_concatenation() -> None:
    a, b = _noise_film(10, 1), _noise_film(7, 2, h=50, w=50)
    sa, sb = colour_stats(a, step=1), colour_stats(b, step=1)
    both = colour_stats(a + b, step=1)
    for pooled in (ColourStats.pool([sa, sb]), sa + sb):
        assert pooled.frames == both.frames == 17
        assert pooled.pixels == both.pixels
        assert pooled.strong == both.strong
        assert pooled.hue_counts == both.hue_counts
        np.testing.assert_array_equal(pooled.bin_counts, both.bin_counts)
        assert pooled.mean_a == pytest.approx(both.mean_a)
        assert pooled.mean_b == pytest.approx(both.mean_b)
        assert pooled.js_prior == pytest.approx(both.js_prior)
    assert ColourStats.pool([]).pixels == 0
    assert math.isnan(ColourStats.pool([]).js_prior)


def test_the_shipped_prior() -> None:
    p = imagenet_prior()
    assert p.shape == (Q,) and p.dtype == torch.float32
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
    assert int(p.argmax()) == ZERO_BIN
    p[0] = 5  # a copy: the cached prior is untouched
    assert float(imagenet_prior()[0]) < 1


def test_the_shipped_prior_is_zhangs(shared_dir: Path) -> None:
    ref_path = shared_dir / "reference" / "zhang" / "prior_probs.npy"
    if not ref_path.is_file():
        pytest.skip(f"{ref_path} is not present")
    ref = np.load(ref_path)
    np.testing.assert_allclose(imagenet_prior().double().numpy(), ref / ref.sum(), rtol=1e-6)
    assert PRIOR_FILE.read_bytes() != ref_path.read_bytes()  # float32, not a copy


# --- evaluate_video and the CLI -----------------------------------------------------------------


def _write_colour_video(path: Path, rgb: tuple[int, int, int], frames: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for frame in _film(rgb, frames):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(vs.encode(None))
    return path


def test_evaluate_video_measures_colour_on_the_same_pass(tmp_path: Path) -> None:
    film = _write_colour_video(tmp_path / "green.mp4", (40, 180, 40))
    m = evaluate_video(film)
    assert m.colour is not None and m.colour.frames == 2  # frames 0 and 5 of 10
    assert m.colour.hue_shares["green"] > 0.95 and m.colour.mean_a < -20
    assert m.truth_colour is None
    m = evaluate_video(film, truth=film, colour_step=2)
    assert m.truth_colour is not None and m.truth_colour.frames == 5
    assert evaluate_video(film, colour_step=None).colour is None


def test_eval_video_prints_the_colour_rows(tiny_video: Path) -> None:
    res = CliRunner().invoke(cli, ["eval-video", str(tiny_video)])
    assert res.exit_code == 0, res.output
    for row in ("warping error", "CDC", "mean a*", "mean b*", "strong colour %", "green %"):
        assert row in res.stdout
    assert "JS to prior         0.42" in res.stdout  # a gray film


def test_eval_video_json_has_the_colour_keys(tmp_path: Path) -> None:
    film = _write_colour_video(tmp_path / "green.mp4", (40, 180, 40))
    res = CliRunner().invoke(cli, ["eval-video", str(film), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert {"warping_error", "cdc", "colour", "truth_colour"} <= set(d)
    c = d["colour"]
    assert set(c) == {
        "frames_measured",
        "pixels",
        "mean_a",
        "mean_b",
        "strong_share",
        "hue_shares",
        "js_prior",
    }
    assert set(c["hue_shares"]) == set(HUE_NAMES)
    assert c["hue_shares"]["green"] > 0.95
    res = CliRunner().invoke(cli, ["eval-video", str(film), "--truth", str(film)])
    assert res.exit_code == 0, res.output
    assert "(truth: " in next(line for line in res.stdout.splitlines() if "green %" in line)
