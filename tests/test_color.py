"""bttf.color against scikit-image, forth and back, dtypes, and the luma table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from bttf.color import L_LUT, L_LUT_NP, lab_to_rgb, luma_to_l, rgb_to_lab


def _test_colours() -> np.ndarray:
    """(K, 3) sRGB colours: random, the 8 cube corners, points on the 12 edges, near-black."""
    rng = np.random.default_rng(0)
    corners = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    t = np.linspace(0, 1, 33)
    edges = []
    for c0, c1 in itertools.combinations(corners, 2):
        if np.abs(c0 - c1).sum() == 1:  # cube edge
            edges.append(c0[None] + t[:, None] * (c1 - c0)[None])
    dark = rng.uniform(0, 0.02, size=(200, 3))  # linear segments of the sRGB and Lab curves
    grays = np.repeat(np.linspace(0, 1, 50)[:, None], 3, axis=1)
    return np.concatenate([rng.uniform(size=(5000, 3)), corners, *edges, dark, grays])


def _as_image(colours: np.ndarray) -> torch.Tensor:
    """(K, 3) -> (1, 3, 1, K)."""
    return torch.from_numpy(colours.T[None, :, None, :].copy())


def _as_rows(img: torch.Tensor) -> np.ndarray:
    return img[0, :, 0, :].T.double().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage(dtype: torch.dtype) -> None:
    rgb = _test_colours()
    ours = _as_rows(rgb_to_lab(_as_image(rgb).to(dtype)))
    ref = rgb2lab(rgb[None])[0]
    assert np.abs(ours - ref).max() < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lab_to_rgb_matches_skimage(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(1)
    # in-gamut Labs (from RGB) plus arbitrary Labs that need clipping
    lab = np.concatenate(
        [
            rgb2lab(_test_colours()[None])[0],
            np.stack(
                [
                    rng.uniform(0, 100, 3000),
                    rng.uniform(-110, 110, 3000),
                    rng.uniform(-110, 110, 3000),
                ],
                axis=1,
            ),
        ]
    )
    ours = _as_rows(lab_to_rgb(_as_image(lab).to(dtype)))
    # skimage warns about the negative Z it clips; we clip it silently
    with pytest.warns(UserWarning):
        ref = lab2rgb(lab[None])[0]
    assert ours.min() >= 0 and ours.max() <= 1
    # compare in Lab units, as the contract says
    assert np.abs(rgb2lab(ours[None])[0] - rgb2lab(ref[None])[0]).max() < 0.05


def test_forth_and_back() -> None:
    rgb = _as_image(_test_colours()).float()
    back = lab_to_rgb(rgb_to_lab(rgb))
    assert (back - rgb).abs().max().item() < 1e-3


def test_shapes_and_batch_dims() -> None:
    x = torch.rand(2, 4, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(x)
    assert lab.shape == x.shape
    # batched and single-image kernels may round differently in float32 (L up to 100)
    assert torch.allclose(rgb_to_lab(x[1, 2]), lab[1, 2], atol=1e-4)
    assert lab_to_rgb(lab).shape == x.shape
    assert rgb_to_lab(torch.rand(3, 4, 4)).shape == (3, 4, 4)


def test_half_in_half_out() -> None:
    x = torch.rand(1, 3, 8, 8)
    lab_h = rgb_to_lab(x.half())
    assert lab_h.dtype == torch.float16
    assert (lab_h.float() - rgb_to_lab(x)).abs().max() < 0.1  # half rounding of values up to 100
    rgb_h = lab_to_rgb(lab_h)
    assert rgb_h.dtype == torch.float16
    assert (rgb_h.float() - x).abs().max() < 5e-3


def test_bad_input_messages_show_shape() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        rgb_to_lab(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(1, 4, 4, 3\)"):
        lab_to_rgb(torch.rand(1, 4, 4, 3))
    with pytest.raises(TypeError, match="uint8"):
        rgb_to_lab(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError):
        rgb_to_lab(np.zeros((3, 2, 2)))  # type: ignore[arg-type]


def test_gradients_finite() -> None:
    x = torch.tensor([0.0, 0.001, 0.5, 1.0]).view(1, 1, 4).expand(3, 1, 4).clone()
    x.requires_grad_(True)
    rgb_to_lab(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_l_lut_matches_skimage() -> None:
    assert L_LUT.shape == (256,) and L_LUT.dtype == torch.float32
    gray = np.repeat((np.arange(256) / 255.0)[:, None], 3, axis=1)
    ref = rgb2lab(gray[None])[0][:, 0]
    assert np.abs(L_LUT.numpy() - ref).max() < 1e-3
    assert L_LUT[0] == 0 and abs(L_LUT[255].item() - 100) < 1e-3
    assert torch.all(L_LUT[1:] > L_LUT[:-1])


def test_luma_to_l_uint8_float_numpy_agree() -> None:
    y = torch.randint(0, 256, (2, 5, 6), dtype=torch.uint8)
    from_lut = luma_to_l(y)
    assert from_lut.shape == y.shape and from_lut.dtype == torch.float32
    assert torch.allclose(from_lut, luma_to_l(y.float()), atol=1e-3)
    assert np.array_equal(luma_to_l(y.numpy()), from_lut.numpy())
    assert np.allclose(luma_to_l(y.numpy().astype(np.float32)), from_lut.numpy(), atol=1e-3)
    assert np.array_equal(L_LUT_NP, L_LUT.numpy())
    # same as converting the gray frame with rgb_to_lab
    rgb = (y.float() / 255)[:, None].expand(2, 3, 5, 6)
    assert torch.allclose(rgb_to_lab(rgb)[:, 0], from_lut, atol=1e-3)
