"""The temporal stabilizer and the temporal metrics on synthetic clips and predictions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_cuts import pan, texture, two_shots

from bttf.cli import cli
from bttf.metrics.video import cdc, evaluate_video, pair_flows, warping_error
from bttf.pipeline.flow import FlowEstimator, consistent_mask, warp
from bttf.pipeline.temporal import Stabilizer

Q = 313


def content_logits(frames: list[np.ndarray], stride: int = 4, sharp: float = 0.02) -> torch.Tensor:
    """Logits (N, 313, h/stride, w/stride) peaked at a bin that follows the gray content."""
    g = np.stack(
        [
            cv2.resize(
                f, (f.shape[1] // stride, f.shape[0] // stride), interpolation=cv2.INTER_AREA
            )
            for f in frames
        ]
    ).astype(np.float32)
    centre = torch.from_numpy(g / 255.0 * (Q - 1))[:, None]
    k = torch.arange(Q, dtype=torch.float32)[None, :, None, None]
    return -sharp * (k - centre) ** 2


def probs(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.float(), dim=1)


def test_static_scene_stays_static():
    frames = [texture(7, 48, 64)] * 40
    out = content_logits(frames)
    fused = Stabilizer()(np.stack(frames), out, "bins")
    assert fused.shape == out.shape and fused.dtype == out.dtype
    err = (probs(fused) - probs(out)).abs().amax(dim=(1, 2, 3))
    assert float(err.max()) < 1e-4  # equal to the first frame's output, no drift over 40 frames


def test_noisy_predictions_on_a_static_scene_are_smoothed():
    frames = np.stack([texture(7, 48, 64)] * 30)
    gen = torch.Generator().manual_seed(0)
    out = content_logits(list(frames)) + 3.0 * torch.randn(30, Q, 12, 16, generator=gen)
    fused = Stabilizer(strength=0.8)(frames, out, "bins")
    flicker_raw = (probs(out)[1:] - probs(out)[:-1]).abs().mean()
    flicker_fused = (probs(fused)[10:] - probs(fused)[9:-1]).abs().mean()
    assert flicker_fused < 0.5 * flicker_raw


def test_reset_at_a_cut_and_no_colour_carried():
    frames = two_shots(12, 24)
    out = content_logits(frames)
    out[12:] += 5.0 * torch.randn(12, Q, 1, 1, generator=torch.Generator().manual_seed(1))
    st = Stabilizer(strength=1.0)
    fused = st(np.stack(frames), out, "bins")
    assert st.cuts == [12]
    assert torch.equal(fused[12], out[12])  # first frame of the new shot is the per-frame output
    assert torch.equal(fused[0], out[0])


def test_batches_and_reset_give_the_same_result():
    frames = pan(texture(5), 20, 1.5)
    noise = torch.randn(20, Q, 12, 16, generator=torch.Generator().manual_seed(2))
    out = content_logits(frames) + noise
    gray = np.stack(frames)
    st = Stabilizer()
    whole = st(gray, out, "bins")
    st.reset()
    parts = torch.cat([st(gray[i : i + 7], out[i : i + 7], "bins") for i in range(0, 20, 7)])
    assert torch.allclose(whole, parts, atol=1e-5)
    assert st.cuts == []


def test_predictions_that_follow_the_motion_are_kept():
    frames = pan(texture(6, 240, 320, cell=24), 20, 2.0, size=(96, 128))
    out = content_logits(frames)
    fused = Stabilizer(strength=0.8)(np.stack(frames), out, "bins")
    k = torch.arange(Q, dtype=torch.float32)[None, :, None, None]

    def mean_bin(x: torch.Tensor) -> torch.Tensor:
        return (probs(x) * k).sum(1)

    # interior only: at the borders content enters the frame
    err = (mean_bin(fused) - mean_bin(out))[:, 3:-3, 3:-3].abs().mean()
    # in bins; the content moves by ~4 bins a frame, so an unwarped carry-over lags by ~15
    assert float(err) < 2.5


def test_ab_output_is_fused_in_ab():
    frames = np.stack([texture(8, 48, 64)] * 10)
    ab = torch.randn(10, 2, 12, 16, generator=torch.Generator().manual_seed(3)) * 20
    fused = Stabilizer(strength=0.8)(frames, ab, "ab")
    assert torch.equal(fused[0], ab[0])
    assert float(fused[1:].std(0).mean()) < 0.6 * float(ab[1:].std(0).mean())


def test_strength_zero_is_per_frame_and_bad_arguments_are_refused():
    frames = np.stack(pan(texture(5), 6, 1.0))
    out = content_logits(list(frames))
    assert torch.equal(Stabilizer(strength=0.0)(frames, out, "bins"), out)
    with pytest.raises(ValueError):
        Stabilizer(strength=1.5)
    with pytest.raises(ValueError):
        Stabilizer()(frames, out, "rgb")
    with pytest.raises(ValueError):
        Stabilizer()(frames[:3], out, "bins")


def test_flow_recovers_a_known_shift_and_flags_the_border():
    frames = pan(texture(9, 240, 320), 2, 3.0, size=(96, 128))
    a, b = frames
    est = FlowEstimator("fast")
    fw, bw = est(a, b), est(b, a)
    valid = consistent_mask(fw, bw)
    inner = valid[8:-8, 8:-8]
    assert inner.mean() > 0.9
    # frame 1 is frame 0 moved left by (3, 0.9): a(p) = b(p - (3, 0.9))
    assert np.median(fw[8:-8, 8:-8, 0][inner]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(fw[8:-8, 8:-8, 1][inner]) == pytest.approx(-0.9, abs=0.3)
    assert np.abs(warp(b.astype(np.float32), fw) - a)[8:-8, 8:-8][inner].mean() < 3.0


def colour(frames: list[np.ndarray], tint: tuple[float, float, float]) -> list[np.ndarray]:
    return [
        np.clip(f[..., None].astype(np.float32) * np.array(tint), 0, 255).astype(np.uint8)
        for f in frames
    ]


def test_a_guess_given_once_does_not_steer_later_flows():
    # OpenCV 5.1's DIS starts every later call without a guess from the last guess it was given;
    # stripes (ambiguous to a flow) show it: a guess of 12 px moves the next flow by ~26 px
    rng = np.random.default_rng(0)
    x, y = np.arange(264)[None, :], np.arange(128)[:, None]
    wide = 127 + 60 * np.sin(2 * np.pi * x / 12) + 20 * np.sin(2 * np.pi * y / 9)
    wide = (wide + rng.normal(0, 4, wide.shape)).clip(0, 255).astype(np.uint8)
    a, b, c = (wide[:, s : s + 224].copy() for s in (0, 3, 6))
    guess = np.zeros((128, 224, 2), np.float32)
    guess[..., 0] = 12.0
    est, fresh = FlowEstimator("medium"), FlowEstimator("medium")
    guided = est(b, a, guess)
    assert np.median(guided[..., 0]) == pytest.approx(15.0, abs=0.5)  # (the guess was used)
    np.testing.assert_array_equal(est(c, b), fresh(c, b))
    fine = FlowEstimator("medium", finest_scale=0)
    np.testing.assert_array_equal(
        fine(c, b, guess), FlowEstimator("medium", finest_scale=0)(c, b, guess)
    )
    assert not np.array_equal(fine(c, b, guess), est(c, b, guess))  # (the setting took)
    with pytest.raises(ValueError, match="unknown DIS preset"):
        FlowEstimator("slow")
    with pytest.raises(ValueError, match="no setting 'finest'"):
        FlowEstimator("fast", finest=0)


def test_metrics_are_zero_on_identical_frames():
    frames = colour([texture(3, 48, 64)] * 6, (1.0, 0.8, 0.6))
    assert warping_error(frames) == pytest.approx(0.0, abs=1e-9)
    assert cdc(frames) == pytest.approx(0.0, abs=1e-12)


def test_metrics_on_a_shift_and_on_flicker():
    grays = pan(texture(9, 240, 320), 8, 2.0, size=(96, 128))
    steady = colour(grays, (1.0, 0.8, 0.6))
    flicker = [
        colour([g], (1.0, 0.8, 0.6) if i % 2 else (0.6, 0.8, 1.0))[0] for i, g in enumerate(grays)
    ]
    pairs = pair_flows(grays)
    e_steady = warping_error(steady, pairs=pairs)
    e_flicker = warping_error(flicker, pairs=pairs)
    assert e_steady < 2e-3  # the shift is handled by the flow
    assert e_flicker > 10 * e_steady
    assert cdc(flicker) > 10 * cdc(steady)


def test_eval_video_command_on_folders(tmp_path):
    grays = pan(texture(9, 240, 320), 6, 1.0, size=(48, 64))
    out_dir, truth_dir = tmp_path / "out", tmp_path / "truth"
    out_dir.mkdir()
    truth_dir.mkdir()
    for i, (o, t) in enumerate(zip(colour(grays, (1.0, 0.8, 0.6)), colour(grays, (0.9, 0.8, 0.7)))):
        cv2.imwrite(str(out_dir / f"{i:05d}.png"), o[..., ::-1])
        cv2.imwrite(str(truth_dir / f"{i:05d}.png"), t[..., ::-1])
    m = evaluate_video(out_dir)
    assert m.frames == 6 and m.psnr is None and m.warping_error < 2e-3
    res = CliRunner().invoke(cli, ["eval-video", str(out_dir), "--truth", str(truth_dir)])
    assert res.exit_code == 0, res.output
    assert "warping error" in res.stdout and "PSNR" in res.stdout


def test_the_engine_runs_the_stabilizer_with_its_strength(tmp_path, monkeypatch):
    from test_cuts import write_video

    from bttf.pipeline import ColorizeConfig, colorize_video, temporal

    made: list[Stabilizer] = []

    class Recording(Stabilizer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(temporal, "Stabilizer", Recording)
    src = tmp_path / "two_shots.mp4"
    write_video(src, two_shots(12, 24))
    config = ColorizeConfig(temporal=True, temporal_strength=0.6, render_size=64, audio=False)
    stats = colorize_video(src, tmp_path / "out.mp4", config)
    assert stats.frames == 24
    assert len(made) == 1 and made[0].params.strength == 0.6
    assert made[0].cuts == [12]
    made.clear()
    colorize_video(src, tmp_path / "out2.mp4", ColorizeConfig(temporal=False, render_size=64))
    assert made == []


def test_planned_batches_equal_unplanned_ones_even_for_a_wrong_size_guess():
    frames = pan(texture(6), 16, 1.2)
    noise = torch.randn(16, Q, 12, 16, generator=torch.Generator().manual_seed(3))
    out = content_logits(frames) + noise
    gray = np.stack(frames)
    plain, planned = Stabilizer(), Stabilizer()
    want = torch.cat([plain(gray[i : i + 8], out[i : i + 8], "bins") for i in (0, 8)])
    got = []
    for i, guess in ((0, (5, 5)), (8, tuple(out.shape[-2:]))):  # the first guess is wrong
        plan = planned.plan(gray[i : i + 8], guess)
        got.append(planned(gray[i : i + 8], out[i : i + 8], "bins", plan))
    assert torch.allclose(want, torch.cat(got), atol=1e-6)
    with pytest.raises(ValueError, match="other frames"):
        planned(gray[:4], out[:4], "bins", planned.plan(gray[:8], (12, 16)))
    plain.close()
    planned.close()


def test_the_engine_fuses_the_same_on_its_own_thread_as_inline(tmp_path):
    from test_cuts import write_video

    from bttf.pipeline import ColorizeConfig, colorize_video

    src = tmp_path / "pan.mkv"
    write_video(src, pan(texture(7), 20, 1.5))
    config = {"temporal": True, "render_size": 64, "audio": False, "crf": 0, "batch_size": 4}
    colorize_video(src, tmp_path / "async.mkv", ColorizeConfig(**config), overlap=True)
    colorize_video(src, tmp_path / "inline.mkv", ColorizeConfig(**config), overlap=False)
    a, b = (read_planes(tmp_path / n) for n in ("async.mkv", "inline.mkv"))
    assert len(a) == 20 and all(np.array_equal(x, y) for x, y in zip(a, b))


def read_planes(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray() for f in c.decode(video=0)]
