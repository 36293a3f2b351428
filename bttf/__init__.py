"""bttf: colorize black-and-white films.

    import bttf
    stats = bttf.colorize_video("film.mp4", "film_color.mp4", bttf.ColorizeConfig())
    bttf.colorize_image("photo.jpg", "photo_color.jpg")

The API is imported on first use, so `import bttf` (and `bttf --help`) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bttf.pipeline.engine import ColorizeConfig as ColorizeConfig
    from bttf.pipeline.engine import ColorizeStats as ColorizeStats
    from bttf.pipeline.engine import colorize_video as colorize_video
    from bttf.pipeline.image import colorize_image as colorize_image

_LAZY = ("ColorizeConfig", "ColorizeStats", "colorize_image", "colorize_video")

__all__ = ["ColorizeConfig", "ColorizeStats", "__version__", "colorize_image", "colorize_video"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import bttf.pipeline

        return getattr(bttf.pipeline, name)
    raise AttributeError(f"module 'bttf' has no attribute {name!r}")
