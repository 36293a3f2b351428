"""bttf: colorize black-and-white films."""

__version__ = "0.1.0"
