"""sRGB <-> CIE Lab on torch tensors, and L from 8-bit luma.

Conventions (the same as scikit-image's ``rgb2lab``/``lab2rgb`` defaults, so numbers agree with it):

- RGB is gamma-encoded sRGB (IEC 61966-2-1) in [0, 1], channels on dim -3: ``(*, 3, H, W)``.
- Lab is CIE 1976 L*a*b* with the D65 white, 2-degree observer: L in [0, 100]; a and b are unbounded
  in principle, roughly [-86, 98] and [-108, 95] for sRGB colours.
- Half-precision inputs are computed in float32 and returned in half; float64 stays float64.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["L_LUT", "L_LUT_NP", "lab_to_rgb", "luma_to_l", "rgb_to_lab"]

# scikit-image's constants, so that the two implementations agree to float rounding.
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
# The white point is folded into the matrices: one 3x3 product per direction instead of two passes.
_LABXYZ_FROM_RGB = _XYZ_FROM_RGB / _WHITE_D65[:, None]
_RGB_FROM_LABXYZ = _RGB_FROM_XYZ * _WHITE_D65[None, :]

# skimage's CIE constants: threshold on Y/Yn between the cube root and the linear segment
_EPS = 0.008856
_KAPPA = 7.787  # slope of the linear segment
_F_EPS = 0.2068966  # f(_EPS): the same threshold seen from the Lab side


def _check_image(x: Tensor, name: str, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"{fn} expects {name} of shape (*, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point {name} tensor, got {x.dtype}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # half/bfloat16 lack the precision for pow/cbrt near the thresholds: compute in float32.
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=32)
def _matrix(which: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    m = _LABXYZ_FROM_RGB if which == "to_lab" else _RGB_FROM_LABXYZ
    return torch.tensor(m, device=device, dtype=dtype)


def _apply3x3(m: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,...jhw->...ihw", m, x)


def _srgb_to_linear(c: Tensor) -> Tensor:
    # clamp inside pow so the branch torch.where discards never yields NaN (nor NaN gradients)
    return torch.where(c > 0.04045, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)


def _linear_to_srgb(c: Tensor) -> Tensor:
    return torch.where(
        c > 0.0031308, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * c
    )


def _lab_f(t: Tensor) -> Tensor:
    return torch.where(t > _EPS, t.clamp_min(_EPS) ** (1 / 3), _KAPPA * t + 16 / 116)


def _lab_f_inv(t: Tensor) -> Tensor:
    return torch.where(t > _F_EPS, t**3, (t - 16 / 116) / _KAPPA)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """Convert sRGB to CIE Lab (D65, 2-degree observer), like ``skimage.color.rgb2lab``.

    Args:
        rgb: ``(*, 3, H, W)`` float tensor, gamma-encoded sRGB in [0, 1]; any device.

    Returns:
        ``(*, 3, H, W)`` tensor of the input's dtype: L in [0, 100], a and b roughly in [-110, 100].
    """
    _check_image(rgb, "rgb", "rgb_to_lab")
    wd = _work_dtype(rgb.dtype)
    lin = _srgb_to_linear(rgb.to(wd))
    f = _lab_f(_apply3x3(_matrix("to_lab", rgb.device, wd), lin))
    fx, fy, fz = f.unbind(-3)
    lab = torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)
    return lab.to(rgb.dtype)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Convert CIE Lab (D65, 2-degree observer) to sRGB, like ``skimage.color.lab2rgb``.

    Out-of-gamut colours are clipped to [0, 1] per channel; negative Z is clipped to 0 first,
    as scikit-image does.

    Args:
        lab: ``(*, 3, H, W)`` float tensor, L in [0, 100], a and b in about [-128, 127]; any device.

    Returns:
        ``(*, 3, H, W)`` tensor of the input's dtype, sRGB in [0, 1].
    """
    _check_image(lab, "lab", "lab_to_rgb")
    wd = _work_dtype(lab.dtype)
    L, a, b = lab.to(wd).unbind(-3)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = (fy - b / 200).clamp_min(0)
    xyz = _lab_f_inv(torch.stack([fx, fy, fz], dim=-3))
    lin = _apply3x3(_matrix("to_rgb", lab.device, wd), xyz)
    return _linear_to_srgb(lin).clamp_(0, 1).to(lab.dtype)


def _l_of_gray(y: np.ndarray) -> np.ndarray:
    """L of the sRGB gray R=G=B=y/255 (float64).

    The Y row of the matrix sums to 1, so Y = linear(y).
    """
    c = np.clip(y / 255.0, 0.0, 1.0)
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    lin = lin * _XYZ_FROM_RGB[1].sum()
    f = np.where(lin > _EPS, np.cbrt(lin), _KAPPA * lin + 16 / 116)
    return 116 * f - 16


#: L in [0, 100] of each 8-bit sRGB gray level, as a numpy array (256,) float32.
L_LUT_NP: np.ndarray = _l_of_gray(np.arange(256, dtype=np.float64)).astype(np.float32)
L_LUT_NP.flags.writeable = False
#: The same table as a CPU tensor (256,) float32: ``L_LUT[y]`` is the L of gray level ``y``.
L_LUT: Tensor = torch.from_numpy(L_LUT_NP.copy())


@functools.lru_cache(maxsize=8)
def _lut_on(device: torch.device) -> Tensor:
    return L_LUT.to(device)


def luma_to_l(y: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """L of an 8-bit gray frame, treating each value as sRGB-encoded gray (R = G = B = y).

    uint8 inputs go through the 256-entry table ``L_LUT`` (one gather, no arithmetic); float
    inputs (values on the 0..255 scale, clipped to it) use the exact formula, so fractional levels
    are handled too. A tensor gives a tensor on the same device; a numpy array gives a numpy array.

    Args:
        y: any shape, uint8 or float, gray levels in [0, 255].

    Returns:
        Same shape, float32 (float64 for float64 input), L in [0, 100].
    """
    if isinstance(y, np.ndarray):
        if y.dtype == np.uint8:
            return L_LUT_NP[y]
        if not np.issubdtype(y.dtype, np.floating):
            raise TypeError(f"luma_to_l expects uint8 or float gray levels, got {y.dtype}")
        return _l_of_gray(y.astype(np.float64)).astype(
            np.float64 if y.dtype == np.float64 else np.float32
        )
    if not isinstance(y, Tensor):
        raise TypeError(f"luma_to_l expects a torch.Tensor or numpy array, got {type(y).__name__}")
    if y.dtype == torch.uint8:
        return _lut_on(y.device)[y.long()]
    if not y.is_floating_point():
        raise TypeError(f"luma_to_l expects uint8 or float gray levels, got {y.dtype}")
    wd = _work_dtype(y.dtype)
    lin = _srgb_to_linear((y.to(wd) / 255).clamp(0, 1))  # Y row of the matrix sums to 1: Y = lin
    out = 116 * _lab_f(lin) - 16
    return out if y.dtype == torch.float64 else out.to(torch.float32)
