"""Image and video metrics, imported by training and pipeline alike (no import cycle between them).

    from bttf.metrics.image import psnr, ssim, colorfulness, auc_ab   # per image or batch
    from bttf.metrics.video import evaluate_video, warping_error, cdc  # temporal consistency
    from bttf.metrics.colour import colour_stats, ColourStats         # colour cast of a film

The names below are imported on first use, so importing `bttf.metrics.image` does not pull in
OpenCV and the flow code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bttf.metrics.colour import ColourStats as ColourStats
    from bttf.metrics.colour import colour_stats as colour_stats
    from bttf.metrics.image import auc_ab as auc_ab
    from bttf.metrics.image import colorfulness as colorfulness
    from bttf.metrics.image import pixel_weights as pixel_weights
    from bttf.metrics.image import psnr as psnr
    from bttf.metrics.image import ssim as ssim
    from bttf.metrics.video import VideoMetrics as VideoMetrics
    from bttf.metrics.video import cdc as cdc
    from bttf.metrics.video import evaluate_video as evaluate_video
    from bttf.metrics.video import warping_error as warping_error

_LAZY = {
    "ColourStats": "bttf.metrics.colour",
    "colour_stats": "bttf.metrics.colour",
    "auc_ab": "bttf.metrics.image",
    "colorfulness": "bttf.metrics.image",
    "pixel_weights": "bttf.metrics.image",
    "psnr": "bttf.metrics.image",
    "ssim": "bttf.metrics.image",
    "VideoMetrics": "bttf.metrics.video",
    "cdc": "bttf.metrics.video",
    "evaluate_video": "bttf.metrics.video",
    "warping_error": "bttf.metrics.video",
}

__all__ = [
    "ColourStats",
    "VideoMetrics",
    "auc_ab",
    "cdc",
    "colorfulness",
    "colour_stats",
    "evaluate_video",
    "pixel_weights",
    "psnr",
    "ssim",
    "warping_error",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bttf.metrics' has no attribute {name!r}")
