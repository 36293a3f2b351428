"""Decoding that does not commit to a vivid colour when the model is unsure: the annealed mean
with a temperature per pixel rising with the entropy (`bins.annealed_mean(..., unsure=)`), in
every decoding path, the stabilizer's fused pass, the Colorizer and the engine's options."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from bttf.errors import BadInputError
from bttf.models import Colorizer, get_spec
from bttf.models.bins import (
    AB_BINS,
    Q,
    annealed_mean,
    annealed_mean_rows,
    check_unsure,
    normalized_entropy,
)
from bttf.models.fastcolor import UNSURE
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.temporal import Stabilizer

U = (0.3, 0.6)


def _logits(seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, Q, 9, 7, generator=g) * scale


def _reference(x: torch.Tensor, t0: float, unsure: tuple[float, float]) -> torch.Tensor:
    """Per pixel, in float64: T = t0 + (1 - t0) * clamp((H - lo) / (hi - lo), 0, 1)."""
    x = x.double()
    p = torch.softmax(x, 1)
    h = -(p * p.log()).sum(1, keepdim=True) / math.log(Q)
    a = ((h - unsure[0]) / (unsure[1] - unsure[0])).clamp(0, 1)
    pt = torch.softmax(x / (t0 + (1 - t0) * a), 1)
    return torch.einsum("nqhw,qc->nchw", pt, AB_BINS.double())


def test_normalized_entropy_bounds() -> None:
    assert float(normalized_entropy(torch.zeros(1, Q, 1, 1))) == pytest.approx(1.0, abs=1e-5)
    certain = torch.full((1, Q, 1, 1), -1e4)
    certain[0, 5] = 0
    assert float(normalized_entropy(certain)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("layout", ["channels", "pixels"])
def test_unsure_matches_the_per_pixel_reference(layout) -> None:
    x = _logits()
    if layout == "pixels":
        x = x.contiguous(memory_format=torch.channels_last)
    got = annealed_mean(x, 0.38, unsure=U)
    assert torch.allclose(got.double(), _reference(x, 0.38, U), atol=1e-3)


def test_every_path_agrees_top_k_and_the_stabilizers_rows() -> None:
    x = _logits(1)
    base = annealed_mean(x, 0.38, unsure=U)
    assert torch.allclose(annealed_mean(x, 0.38, top_k=Q, unsure=U), base, atol=1e-3)
    assert torch.allclose(annealed_mean(x, 0.38, unsure=U, chunk_elements=Q * 7), base, atol=1e-3)
    rows = x.permute(0, 2, 3, 1).reshape(-1, Q)
    for probs, scores in ((False, rows), (True, torch.softmax(rows, 1))):
        out = torch.empty(rows.shape[0], 2)
        annealed_mean_rows(scores, 1 / 0.38, out, probs=probs, unsure=U)
        assert torch.allclose(out.view(2, 9, 7, 2).permute(0, 3, 1, 2), base, atol=1e-3)


def test_confident_pixels_keep_zhangs_decoding_and_unsure_ones_get_the_mean() -> None:
    sharp = _logits(2, scale=30.0)  # near one-hot: entropy far below 0.3
    assert float(normalized_entropy(sharp).max()) < U[0]
    assert torch.allclose(annealed_mean(sharp, 0.38, unsure=U), annealed_mean(sharp, 0.38))
    flat = _logits(3, scale=0.5)  # near uniform: entropy above 0.6
    assert float(normalized_entropy(flat).min()) > U[1]
    assert torch.allclose(annealed_mean(flat, 0.38, unsure=U), annealed_mean(flat, 1.0), atol=1e-4)


def test_unsure_mutes_a_broad_guess() -> None:
    """A broad distribution with a slight favourite (green): Zhang's T commits to a vivid green,
    unsure decoding hedges towards the mean of what the model thinks possible."""
    a, b = AB_BINS[:, 0], AB_BINS[:, 1]
    green = int(torch.argmin((a + 40) ** 2 + (b - 40) ** 2))
    x = torch.zeros(1, Q, 1, 1)
    x[0, green] = 3.0
    assert float(normalized_entropy(x)) > U[1]
    vivid = annealed_mean(x, 0.38).norm()
    muted = annealed_mean(x, 0.38, unsure=U).norm()
    assert vivid > 40 and muted < 0.5 * vivid


def test_check_unsure_refuses_bad_ranges() -> None:
    assert check_unsure(None) is None
    assert check_unsure([0.2, 0.4]) == (0.2, 0.4)
    for bad in [(0.5, 0.5), (0.6, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.1,), "ab"]:
        with pytest.raises(ValueError):
            annealed_mean(_logits(), unsure=bad)


def test_stabilizer_fused_decode_uses_unsure() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (3, 9, 7), dtype=np.uint8)
    x = _logits(4)[:1].repeat(3, 1, 1, 1)
    fused = Stabilizer(strength=0.0)(frames, x, "bins", temperature=0.38, unsure=U)
    assert torch.allclose(fused, annealed_mean(x, 0.38, unsure=U), atol=1e-3)
    with pytest.raises(ValueError):
        Stabilizer()(frames, x, "bins", temperature=0.38, unsure=(0.7, 0.1))


def test_colorizer_unsure_auto_off_and_custom() -> None:
    fast, eccv = get_spec("fastcolor"), get_spec("eccv16")
    assert fast.unsure == UNSURE and eccv.unsure is None
    model = torch.nn.Identity()
    assert Colorizer(model, fast).unsure == UNSURE  # "auto": the model's own
    tuned = dataclasses.replace(fast, unsure=(0.2, 0.7))  # a model that ships a setting
    assert Colorizer(model, tuned).unsure == (0.2, 0.7)
    assert Colorizer(model, tuned, unsure="off").unsure is None
    assert Colorizer(model, fast, unsure="off").unsure is None
    assert Colorizer(model, fast, unsure=None).unsure is None
    assert Colorizer(model, fast, unsure=(0.1, 0.9)).unsure == (0.1, 0.9)
    assert Colorizer(model, eccv).unsure is None  # Zhang's models keep Zhang's decoding
    assert Colorizer(model, get_spec("fastcolor-l2"), unsure=(0.1, 0.9)).unsure is None  # ab
    for bad in ["maybe", (0.9, 0.1)]:
        with pytest.raises(BadInputError):
            Colorizer(model, fast, unsure=bad)


def test_decode_bins_applies_the_colorizers_unsure() -> None:
    x = _logits(5)
    col = Colorizer(torch.nn.Identity(), get_spec("fastcolor"), unsure=U)
    assert torch.allclose(col.decode_bins(x), annealed_mean(x, 0.38, unsure=U))


def test_config_checks_unsure() -> None:
    ColorizeConfig(unsure="off")
    ColorizeConfig(unsure=(0.2, 0.5))
    for bad in ["sometimes", (0.5, 0.2)]:
        with pytest.raises(BadInputError, match="unsure"):
            ColorizeConfig(unsure=bad)


def test_engine_output_follows_unsure(tiny_video, tmp_path) -> None:
    """The film's colours change with the option (the stabilizer's fused pass and the plain
    decode both honour it); its luma does not."""
    import av

    import bttf

    planes = {}
    for unsure in ("off", U):
        out = tmp_path / f"{unsure}.mkv"
        config = ColorizeConfig(unsure=unsure, codec="ffv1", pix_fmt="yuv444p", audio=False)
        bttf.colorize_video(tiny_video, out, config)
        with av.open(str(out)) as c:
            planes[str(unsure)] = np.stack(
                [f.to_ndarray(format="yuv444p") for f in c.decode(video=0)]
            )
    off, auto = planes["off"], planes[str(U)]
    assert np.array_equal(off[:, 0], auto[:, 0])
    assert np.abs(off[:, 1:].astype(int) - auto[:, 1:]).max() > 0
