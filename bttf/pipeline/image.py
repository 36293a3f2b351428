"""Still images: colorize a photograph, keeping its own lightness.

The image is read as gray (`bttf.pipeline.media.read_gray_image`), run through the colorizer at
its render size the way the engine runs film frames (`bttf.pipeline.stages.colorize_gray`), and
written with the input's Lab lightness L and the model's ab (16-bit input stays 16-bit in PNG
and TIFF).
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch

from bttf.errors import BadInputError, BttfError
from bttf.files import atomic_output
from bttf.pipeline import engine
from bttf.pipeline.engine import ColorizeConfig, ColorizeStats, model_name
from bttf.pipeline.media import (
    check_input,
    check_output,
    is_image_path,
    read_gray_image,
)
from bttf.pipeline.stages import colorize_gray, render_dims, square_render
from bttf.runtime import resolve_device, torch_threads

_IMWRITE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
}
_SIXTEEN_BIT_SUFFIXES = {".png", ".tif", ".tiff"}


def colorize_image(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config: ColorizeConfig | None = None,
    *,
    colorizer=None,
) -> ColorizeStats:
    """Colorize the still image `src` into `dst` (its suffix picks the format: jpg, png, tiff,
    bmp, webp). The output's Lab lightness is the input's: L of every pixel is kept, only
    a and b come from the model (16-bit input stays 16-bit in png/tiff). `colorizer`: an
    already built `Colorizer` instead of the one the config names."""
    from bttf.color import lab_to_rgb, luma_to_l

    config = config or ColorizeConfig()
    t_begin = time.perf_counter()
    src = check_input(src)
    if config.keyframes is not None:
        raise BadInputError(f"{src} is a still image; --keyframes is for films, leave it out")
    dst = check_output(src, dst, config.overwrite)
    if not is_image_path(dst):
        raise BadInputError(
            f"{src} is an image; give OUTPUT an image suffix (.png, .jpg, .tif), not {dst.suffix}"
        )
    t0 = time.perf_counter()
    gray, bits = read_gray_image(src)
    t_decode = time.perf_counter() - t0
    device = resolve_device(config.device)
    if colorizer is None:
        colorizer = engine.build_colorizer(config, device)
    h, w = gray.shape
    short = config.render_size or colorizer.render_size
    square = square_render(colorizer, config.render_square)
    t0 = time.perf_counter()
    with torch_threads(device, config.threads), torch.inference_mode():
        ab = colorize_gray(colorizer, gray, device, short, square)
        L = luma_to_l(torch.from_numpy(gray)).to(device)[None, None]
        rgb = lab_to_rgb(torch.cat([L, ab.float()], dim=1))[0].permute(1, 2, 0).cpu().numpy()
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    suffix = dst.suffix.lower()
    if bits > 8 and suffix in _SIXTEEN_BIT_SUFFIXES:
        pixels = np.rint(rgb * 65535.0).astype(np.uint16)
    else:
        pixels = np.rint(rgb * 255.0).astype(np.uint8)
    bgr = np.ascontiguousarray(pixels[..., ::-1])
    ok, buf = cv2.imencode(suffix, bgr, _IMWRITE_PARAMS.get(suffix, []))
    if not ok:
        raise BttfError(f"OpenCV could not encode {dst.suffix} images; use .png or .jpg")
    with atomic_output(dst) as tmp:
        tmp.write_bytes(buf.tobytes())
    rh, rw = render_dims(h, w, short, colorizer.stride, square)
    return ColorizeStats(
        output=dst,
        frames=1,
        seconds=time.perf_counter() - t_begin,
        decode_s=t_decode,
        model_s=t_model,
        encode_s=time.perf_counter() - t0,
        model=model_name(colorizer),
        device=str(device),
        render_size=(rw, rh),
        batch_size=1,
        size=(w, h),
    )
