"""bttf.metrics.image on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bttf.color import lab_to_rgb, rgb_to_lab
from bttf.metrics.image import auc_ab, colorfulness, pixel_weights, psnr, ssim
from bttf.models.bins import AB_BINS_NP, Q, rebalance_weights
from bttf.training.evaluate import MetricAccumulator


def _colourful_image(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth, saturated test picture: hue across, saturation down, (H, W, 3) float in [0, 1]."""
    rng = np.random.default_rng(seed)
    hue = np.linspace(0, 2 * np.pi, w)[None, :] + rng.uniform(0, 1)
    sat = np.linspace(0.2, 1, h)[:, None]
    rgb = 0.5 + 0.5 * sat[..., None] * np.stack(
        [np.cos(hue), np.cos(hue - 2 * np.pi / 3), np.cos(hue + 2 * np.pi / 3)], axis=-1
    )
    return np.clip(rgb, 0, 1)


def _gray_baseline(rgb: np.ndarray) -> np.ndarray:
    """Keep L, set a = b = 0: the colourless prediction."""
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).double())
    lab[1:] = 0
    return lab_to_rgb(lab).permute(1, 2, 0).numpy()


def _lab(rgb) -> torch.Tensor:
    """(1, 3, H, W) Lab of an (H, W, 3) float or uint8 array, or of a (3, H, W) tensor."""
    if isinstance(rgb, torch.Tensor):
        return rgb_to_lab(rgb.float())[None]
    a = np.asarray(rgb)
    chw = torch.from_numpy(a / 255.0 if a.dtype == np.uint8 else a).permute(2, 0, 1)
    return rgb_to_lab(chw.float())[None]


def _scores(preds: list, truths: list, bin_weights=None) -> dict[str, float]:
    """Every image metric averaged over (prediction, truth) RGB pairs, as `bttf eval` and the
    training validation average them (`MetricAccumulator`, one image at a time)."""
    acc = MetricAccumulator(bin_weights)
    for pred, true in zip(preds, truths, strict=True):
        lab_p, lab_t = _lab(pred), _lab(true)
        acc.add(lab_t[:, :1], lab_p[:, 1:], lab_t[:, 1:])
    m = acc.result()
    return m | {"n": acc.n, "auc_raw": m["auc"]}


def _ab(rgb: np.ndarray) -> np.ndarray:
    return rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).double())[1:].permute(1, 2, 0).numpy()


def test_psnr_known_values() -> None:
    true = np.zeros((8, 8, 3))
    assert psnr(true + 0.1, true) == pytest.approx(20.0)
    assert psnr(true, true) == math.inf
    assert psnr((true * 255).astype(np.uint8), (true * 255).astype(np.uint8)) == math.inf
    assert psnr(true + 25.5, true, data_range=255) == pytest.approx(20.0)
    batch = np.stack([true + 0.1, true + 0.01])
    assert psnr(batch, np.zeros_like(batch)) == pytest.approx(30.0)  # mean of 20 and 40 dB


def test_ssim_identical_and_small() -> None:
    img = _colourful_image()
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img[:5, :4], img[:5, :4]) == pytest.approx(1.0)  # window shrinks to 3
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.1, img.shape), 0, 1)
    assert 0 < ssim(noisy, img) < 0.95
    with pytest.raises(ValueError, match="3x3"):
        ssim(img[:2], img[:2])


def test_colorfulness_known_values() -> None:
    gray = np.repeat(np.random.default_rng(0).uniform(size=(10, 10, 1)), 3, axis=2)
    assert colorfulness(gray) == pytest.approx(0.0, abs=1e-9)
    # half pure red, half black: rg in {255, 0}, yb in {127.5, 0}
    img = np.zeros((4, 4, 3))
    img[:2, :, 0] = 1.0
    expected = 1.3 * math.hypot(127.5, 63.75)
    assert colorfulness(img) == pytest.approx(expected)
    assert colorfulness((img * 255).astype(np.uint8)) == pytest.approx(expected)
    assert colorfulness(_colourful_image()) > 30


def test_auc_known_values() -> None:
    true = np.zeros((4, 5, 2))
    assert auc_ab(true, true) == 1.0
    off30 = true.copy()
    off30[..., 0] = 18.0
    off30[..., 1] = 24.0  # error exactly 30 everywhere: the curve steps from 0 to 1 at t = 30
    assert auc_ab(off30, true) == pytest.approx((150 - 30 + 0.5) / 150)
    half = true.copy()
    half[:2] = 200.0  # half the pixels never within 150
    assert auc_ab(half, true) == pytest.approx(0.5)
    w = np.ones((4, 5))
    w[:2] = 0  # weigh only the exact pixels
    assert auc_ab(half, true, weights=w) == pytest.approx(1.0)
    assert auc_ab(np.full((4, 5, 2), 500.0), true) == 0.0


def test_auc_torch_layout_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    pred, true = rng.normal(0, 40, (2, 6, 7, 2)), rng.normal(0, 40, (2, 6, 7, 2))
    w = rng.uniform(0, 2, (2, 6, 7))
    expected = auc_ab(pred, true, w)
    pred_t, true_t = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in (pred, true))
    assert auc_ab(pred_t, true_t, torch.from_numpy(w)) == pytest.approx(expected)
    assert expected == pytest.approx(np.mean([auc_ab(pred[i], true[i], w[i]) for i in range(2)]))


def test_pixel_weights_pick_the_nearest_bin() -> None:
    bw = np.arange(Q, dtype=np.float64)
    ab = AB_BINS_NP[[0, 120, 312]].astype(np.float64).reshape(1, 3, 2) + 2.0
    np.testing.assert_array_equal(pixel_weights(ab, bw), [[0, 120, 312]])
    tens = torch.from_numpy(ab).permute(2, 0, 1)[None]
    np.testing.assert_array_equal(pixel_weights(tens, torch.from_numpy(bw)), [[[0, 120, 312]]])
    with pytest.raises(ValueError, match=r"\(10,\)"):
        pixel_weights(ab, np.ones(10))


def test_gray_baseline_is_sane() -> None:
    truth = [_colourful_image(seed=s) for s in range(3)]
    preds = [_gray_baseline(t) for t in truth]
    # weights from a prior peaked at gray, like natural images: saturated colours weigh more
    prior = np.exp(-np.hypot(AB_BINS_NP[:, 0], AB_BINS_NP[:, 1]) / 20)
    m = _scores(preds, truth, bin_weights=rebalance_weights(prior))
    assert m["n"] == 3
    assert 10 < m["psnr"] < 40
    assert 0 < m["ssim"] < 1
    assert m["colorfulness"] < 0.5 and m["colorfulness_truth"] > 30
    assert 0 < m["auc_rebal"] < m["auc_raw"] < 1
    # the raw AuC of the gray baseline is the mean over t of P(|ab| <= t)
    chroma = np.hypot(*np.moveaxis(_ab(truth[0]), -1, 0))
    curve = np.array([(chroma <= t).mean() for t in range(151)])
    expected = (curve.sum() - 0.5 * (curve[0] + curve[-1])) / 150  # trapezoid rule
    assert auc_ab(_ab(preds[0]), _ab(truth[0])) == pytest.approx(expected, abs=1e-3)


def test_evaluate_identical_images() -> None:
    imgs = [_colourful_image(seed=1), (_colourful_image(16, 12) * 255).astype(np.uint8)]
    m = _scores(imgs, imgs)
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0)
    assert m["auc_raw"] == 1.0 and math.isnan(m["auc_rebal"])
    assert m["colorfulness"] == m["colorfulness_truth"]
    chw = [torch.from_numpy(imgs[0]).permute(2, 0, 1)]
    assert _scores(chw, chw)["auc_raw"] == 1.0


def test_zhang_rebalanced_weights_lower_the_gray_auc(shared_dir) -> None:
    prior = np.load(shared_dir / "reference" / "zhang" / "prior_probs.npy")
    truth = [_colourful_image(seed=2)]
    m = _scores([_gray_baseline(truth[0])], truth, rebalance_weights(prior))
    assert 0 < m["auc_rebal"] < m["auc_raw"] < 1


def test_metric_input_errors() -> None:
    img = np.zeros((8, 8, 3))
    with pytest.raises(ValueError, match=r"\(8, 8, 4\)"):
        psnr(np.zeros((8, 8, 4)), np.zeros((8, 8, 4)))
    with pytest.raises(ValueError, match="differ"):
        psnr(img, np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match=r"\(1, 4, 8, 8\)"):
        colorfulness(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="weights"):
        auc_ab(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)), weights=np.ones((4, 5)))
    with pytest.raises(ValueError):  # one prediction for two truths
        psnr(np.stack([img]), np.stack([img, img]))
