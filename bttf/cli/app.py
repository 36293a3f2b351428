"""The `bttf` group, the console, and what several commands share: option types, default
output names, timecodes.

Only `bttf.cli` imports click and owns the rich console.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.console import Console

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bttf")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def cli(verbose: bool) -> None:
    """Colorize black-and-white films and photographs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


DEVICE_RE = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class DeviceParam(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps (whether that device exists is the library's question)."""

    name = "DEVICE"

    def convert(self, value, param, ctx):
        import re

        if not re.match(DEVICE_RE, str(value).strip().lower()):
            self.fail(f"{value!r}; use auto, cpu, cuda, cuda:N or mps", param, ctx)
        return value


class UnsureParam(click.ParamType):
    """auto, off, or LO,HI (two normalised entropies, 0 <= LO < HI <= 1)."""

    name = "auto|off|LO,HI"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or value in ("auto", "off"):
            return value
        try:
            lo, hi = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r}; use auto, off or LO,HI such as 0.3,0.6", param, ctx)
        if not 0 <= lo < hi <= 1:
            self.fail(f"{value!r}; LO,HI need 0 <= LO < HI <= 1", param, ctx)
        return (lo, hi)


class SaturationParam(click.ParamType):
    """auto, or a gain >= 0 on the model's ab."""

    name = "auto|S"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        from bttf.models.colorizer import check_saturation

        try:
            return check_saturation(float(value))
        except ValueError:
            self.fail(f"{value!r}; use auto or a number >= 0 such as 1.3", param, ctx)


class PixFmtParam(click.ParamType):
    """One of the encoder's output pixel formats (`bttf.pipeline.encode.OUTPUT_PIX_FMTS`, read
    when an option is parsed: importing the encoder at startup would slow every command)."""

    name = "PIX_FMT"

    def convert(self, value, param, ctx):
        from bttf.pipeline.encode import OUTPUT_PIX_FMTS

        if value not in OUTPUT_PIX_FMTS:
            self.fail(f"{value!r}; choose one of {', '.join(OUTPUT_PIX_FMTS)}", param, ctx)
        return value


class TimeParam(click.ParamType):
    """Seconds, as `12.5`, `1:02.5` (MM:SS) or `0:01:02.5` (HH:MM:SS), like ffmpeg's -ss/-t.
    `positive`: 0 is refused too (a duration)."""

    name = "TIME"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                parts = [float(p) for p in str(value).strip().split(":")]
                if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts[:-1]):
                    raise ValueError
                seconds = 0.0
                for p in parts:
                    seconds = seconds * 60.0 + p
            except ValueError:
                self.fail(
                    f"{value!r} is not a time; use seconds (12.5) or [HH:]MM:SS[.ms]", param, ctx
                )
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} must be a time >= 0", param, ctx)
        if self.positive and seconds == 0:
            self.fail("must be more than 0", param, ctx)
        return seconds


def default_output(src: str) -> str:

    from bttf.pipeline.media import is_image_path

    p = Path(src)
    return str(p.with_name(f"{p.stem}_color{p.suffix if is_image_path(p) else '.mp4'}"))


def timecode(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}"


class SizeParam(click.ParamType):
    """A file size: 5MB, 800KB, 2.5M, 1MiB or plain bytes."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        from bttf.pipeline.gif import parse_size

        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


#: The decoding of 313-bin models, shared by colorize, gif, eval and compare.
TEMPERATURE_OPTION = click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=0.38,
    show_default=True,
    help="Annealed-mean temperature of 313-bin models; lower is more saturated.",
)
UNSURE_OPTION = click.option(
    "--unsure",
    type=UnsureParam(),
    default="auto",
    show_default=True,
    help="Where the model is unsure of a colour (its entropy from LO to HI), raise the "
    "temperature to 1 so the colour comes out muted, not vivid and wrong; auto: the "
    "model's own setting (none of the shipped models has one; 0.3,0.6 is a good start); off: one "
    "temperature everywhere.",
)
SATURATION_OPTION = click.option(
    "--saturation",
    type=SaturationParam(),
    default="auto",
    show_default=True,
    help="Gain on the model's colour: 1.3 paints 30% more, 0.8 less, 0 gray (keyframes keep "
    "their own); auto: the model's own setting (1 for every model: its colours as they are).",
)
RENDER_SQUARE_OPTION = click.option(
    "--render-square/--render-aspect",
    "render_square",
    default=None,
    help="Feed the model a square of side --render-size (the frame squashed or stretched, as "
    "DeOldify's own pipeline does; its colour is stretched back onto the frame) or keep the "
    "frame's aspect. [default: the model's own, aspect kept for every model]",
)


@contextlib.contextmanager
def lazy_progress(
    label: str, columns: list, terminal_only: bool = False
) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar (`label`, a bar, `columns`, ETA) that appears with the first call of
    the callback it yields, `progress(done, total)`, and is gone after the block. With
    `terminal_only`, nothing is shown when stderr is a log or a pipe."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]{label}[/]", markup=True),
        BarColumn(),
        *columns,
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=None, start=False)

    def progress(done: int, total: int | None) -> None:
        if terminal_only and not console.is_terminal:
            return
        if not bar.live.is_started:  # only once the work has really begun
            bar.start()
            bar.start_task(task)
        bar.update(task, completed=done, total=max(total, done) if total else None)

    try:
        yield progress
    finally:
        if bar.live.is_started:
            bar.stop()
