"""Streaming stages over frames: decode -> colorize (model, stabilizer) -> encode.

    from bttf.pipeline import ColorizeConfig, colorize_video
    stats = colorize_video("film.mp4", "film_color.mp4", ColorizeConfig(batch_size=4))

The names below are imported on first use, so importing a light stage (e.g. `cuts`) does not
pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bttf.pipeline.config import ColorizeConfig as ColorizeConfig
    from bttf.pipeline.config import ColorizeStats as ColorizeStats
    from bttf.pipeline.engine import colorize as colorize
    from bttf.pipeline.engine import colorize_video as colorize_video
    from bttf.pipeline.image import colorize_image as colorize_image

_LAZY = {
    "ColorizeConfig": "bttf.pipeline.config",
    "ColorizeStats": "bttf.pipeline.config",
    "colorize": "bttf.pipeline.engine",
    "colorize_image": "bttf.pipeline.image",
    "colorize_video": "bttf.pipeline.engine",
}

__all__ = ["ColorizeConfig", "ColorizeStats", "colorize", "colorize_image", "colorize_video"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bttf.pipeline' has no attribute {name!r}")
