"""The `bttf` command line: a thin shell over the library.

Only this module imports click and owns the rich console. Each command validates its options,
builds one config dataclass and calls one library function.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.console import Console

from bttf.errors import BttfError

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bttf")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def cli(verbose: bool) -> None:
    """Colorize black-and-white films and photographs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (for scripts).")
def models_cmd(as_json: bool) -> None:
    """List the registered colorizers."""
    import json

    from rich.table import Table

    from bttf.models import describe_models

    rows = describe_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(
        title="bttf colorizers", caption="weights: yes shipped / missing / no: use --weights FILE"
    )
    for column, justify in (
        ("model", "left"),
        ("output", "left"),
        ("params", "right"),
        ("render size", "right"),
        ("weights", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "model")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        weights = "no" if r["shipped"] is None else "yes" if r["weights_present"] else "missing"
        output = "313 bins" if r["output"] == "bins" else "ab"
        table.add_row(name, output, f"{r['params']:,}", str(r["render_size"]), weights)
    Console().print(table)


def _timecode(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}"


@cli.command("cuts")
@click.argument("input", type=click.Path(dir_okay=True, file_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the cuts as a JSON list.")
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Frame rate of a folder of frames (a video file's own timing is used).",
)
@click.option(
    "--min-scene-len",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Shortest shot in frames; no cut closer than this to the previous one.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=1.0),
    default=3.0,
    show_default=True,
    help="How many times the recent median frame difference a cut must reach.",
)
def cuts_cmd(input: str, as_json: bool, fps: float, min_scene_len: int, threshold: float) -> None:
    """Print the hard scene cuts of INPUT (a video file or a folder of frames).

    One line per cut: the time of the first frame of the new shot and its index.
    """
    import json

    from bttf.pipeline.cuts import CutParams, detect_cuts

    params = CutParams(min_scene_len=min_scene_len, ratio=threshold)
    with console.status(f"looking for cuts in {input}"):
        cuts = detect_cuts(input, params, fps=fps)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in cuts], indent=2))
        return
    for c in cuts:
        click.echo(f"{_timecode(c.time)}  frame {c.frame}")
    console.print(f"{len(cuts)} cut(s), {len(cuts) + 1} shot(s)", highlight=False)


@cli.command("eval-video")
@click.argument("output", type=click.Path(dir_okay=True, file_okay=True))
@click.option(
    "--truth",
    type=click.Path(dir_okay=True, file_okay=True),
    default=None,
    help="The colour original (video or folder of frames): adds PSNR, SSIM, colourfulness.",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=2),
    default=None,
    help="Evaluate only the first N frames.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Frame rate of a folder of frames.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_video_cmd(
    output: str, truth: str | None, max_frames: int | None, fps: float, as_json: bool
) -> None:
    """Temporal consistency of a colorized video OUTPUT: warping error and CDC (lower is better).

    Warping error follows Lai et al. 2018 with OpenCV DIS flow (not FlowNet2: compare numbers
    only with this tool's); CDC follows Liu et al. 2021. With --truth, flow is computed on the
    truth's luma and the truth's own values are shown for reference.
    """
    import json

    from bttf.metrics.video import evaluate_video

    with console.status(f"evaluating {output}"):
        m = evaluate_video(output, truth, max_frames=max_frames, fps=fps)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    rows = [
        ("frames", f"{m.frames}", None),
        ("warping error", f"{m.warping_error:.6f}", m.truth_warping_error),
        ("CDC", f"{m.cdc:.6f}", m.truth_cdc),
    ]
    if m.psnr is not None:
        rows += [
            ("PSNR (dB)", f"{m.psnr:.2f}", None),
            ("SSIM", f"{m.ssim:.4f}", None),
            ("colourfulness", f"{m.colorfulness:.2f}", m.truth_colorfulness),
        ]
    for name, value, ref in rows:
        extra = f"   (truth: {ref:.6g})" if ref is not None else ""
        click.echo(f"{name:<15}{value}{extra}")
    click.echo(f"flow: {m.flow_method}")
    for note in m.notes:
        console.print(f"note: {note}", highlight=False)


# --- colorize -------------------------------------------------------------------------------

_DEVICE_RE = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class _DeviceParam(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps (whether that device exists is the library's question)."""

    name = "DEVICE"

    def convert(self, value, param, ctx):
        import re

        if not re.match(_DEVICE_RE, str(value).strip().lower()):
            self.fail(f"{value!r}; use auto, cpu, cuda, cuda:N or mps", param, ctx)
        return value


class _PixFmtParam(click.ParamType):
    """One of the encoder's output pixel formats (`bttf.pipeline.encode.OUTPUT_PIX_FMTS`, read
    when an option is parsed: importing the encoder at startup would slow every command)."""

    name = "PIX_FMT"

    def convert(self, value, param, ctx):
        from bttf.pipeline.encode import OUTPUT_PIX_FMTS

        if value not in OUTPUT_PIX_FMTS:
            self.fail(f"{value!r}; choose one of {', '.join(OUTPUT_PIX_FMTS)}", param, ctx)
        return value


class _TimeParam(click.ParamType):
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


def _default_output(src: str) -> str:
    from pathlib import Path

    from bttf.pipeline.media import is_image_path

    p = Path(src)
    return str(p.with_name(f"{p.stem}_color{p.suffix if is_image_path(p) else '.mp4'}"))


_COLORIZER_OPTIONS = [
    click.option(
        "--model", default=None, help="Colorizer name (see `bttf models`). [default: default]"
    ),
    click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Weights file; a bttf .safetensors names its model, so it is enough alone.",
    ),
    click.option(
        "--device",
        type=_DeviceParam(),
        default="auto",
        show_default=True,
        help="auto, cpu, cuda, cuda:N or mps.",
    ),
    click.option(
        "--render-size",
        type=click.IntRange(16, 4096),
        default=None,
        help="Short side (pixels) the model works at; smaller is faster (160 with "
        "--preset veryfast: 360p in real time on 2 CPU cores). [default: the "
        "model's, 256]",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Frames per model call (halved automatically on CUDA out-of-memory).",
    ),
    click.option(
        "--temperature",
        type=click.FloatRange(min=0, min_open=True),
        default=0.38,
        show_default=True,
        help="Annealed-mean temperature; lower is more saturated.",
    ),
    click.option(
        "--top-k",
        type=click.IntRange(1, 313),
        default=None,
        help="Decode colours from the k most likely bins only.",
    ),
    click.option(
        "--temporal/--no-temporal",
        default=True,
        show_default=True,
        help="Stabilize colours across frames (flow-guided fusion).",
    ),
    click.option(
        "--temporal-strength",
        type=click.FloatRange(0.0, 1.0),
        default=None,
        help="How much of the past frames the stabilizer keeps, 0..1. [default: 0.9]",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for the model. [default: all cores but one]",
    ),
]


def _colorizer_options(f):
    """The model and colorizing options shared by `colorize` and `gif`; the command takes them
    as `**colorizer` and hands them to `_colorize_config`."""
    for option in reversed(_COLORIZER_OPTIONS):
        f = option(f)
    return f


def _colorize_config(**options: Any):
    """The one builder of `ColorizeConfig` from command-line options (`colorize` and `gif`).

    Options left unset (None) where the config's default is not None take that default, so the
    library, not the CLI, owns it. The config checks the values: a BadInputError from it is
    one line and exit 2 through `main()`.
    """
    import dataclasses

    from bttf.pipeline import ColorizeConfig

    fields = {f.name: f for f in dataclasses.fields(ColorizeConfig)}
    unset = [k for k, v in options.items() if v is None and fields[k].default is not None]
    for k in unset:
        del options[k]
    return ColorizeConfig(**options)


@contextlib.contextmanager
def _film_progress(label: str = "colorizing") -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar (frames, fps, ETA) that appears with the first call of the callback it
    yields, `progress(done, total)`, and is gone after the block."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Fps(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            text = f"{speed:5.1f} fps" if speed else "  ... fps"
            return Text(text, style="progress.data.speed")

    bar = Progress(
        TextColumn(f"[bold]{label}[/]", markup=True),
        BarColumn(),
        MofNCompleteColumn(),
        _Fps(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("colorize", total=None, start=False)

    def progress(done: int, total: int | None) -> None:
        if not bar.live.is_started:  # only once the input is open and the model loaded
            bar.start()
            bar.start_task(task)
        bar.update(task, completed=done, total=max(total, done) if total else None)

    try:
        yield progress
    finally:
        if bar.live.is_started:
            bar.stop()


def _colorize_folder(src: str, out: str | None, config, quiet: bool) -> None:
    """`bttf colorize DIR -o OUTDIR`: every film of DIR, a summary table, exit 1 on a failure."""
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table

    from bttf.pipeline.batch import DONE, FAILED, SKIPPED, colorize_folder, dist_env

    rank, world, _ = dist_env()
    out_dir = Path(out) if out else Path(src.rstrip("/\\") + "_color")
    tag = f"rank {rank}/{world}: " if world > 1 else ""
    bars = contextlib.ExitStack()  # the current film's progress bar; closed when it is done

    def on_start(i: int, n: int, film: Path) -> None:
        if not quiet:
            console.print(f"{tag}[{i}/{n}] {escape(film.name)}", highlight=False)

    def progress_for(film: Path):
        if quiet or world > 1:  # N processes, one terminal: bars would overwrite each other
            return None
        return bars.enter_context(_film_progress(escape(film.name)))

    def on_done(item) -> None:
        bars.close()
        if item.status == FAILED:
            where = "" if str(item.src) in item.reason else f"{item.src}: "
            click.echo(f"bttf: error: {tag}{where}{item.reason}", err=True)
        for n in item.notices if not quiet else ():
            console.print(f"  note: {escape(n)}", highlight=False)

    with bars:
        result = colorize_folder(
            src, out_dir, config, on_start=on_start, on_done=on_done, progress_for=progress_for
        )
    if not quiet:
        shard = f" (rank {rank} of {world}: {len(result.items)} of {result.total} films)"
        table = Table(title=f"{src} -> {out_dir}{shard if world > 1 else ''}")
        for col, justify in (
            ("film", "left"),
            ("status", "left"),
            ("frames", "right"),
            ("time", "right"),
            ("note", "left"),
        ):
            table.add_column(col, justify=justify, overflow="fold")
        style = {DONE: "green", SKIPPED: "yellow", FAILED: "red"}
        for it in result.items:
            table.add_row(
                escape(it.src.name),
                f"[{style[it.status]}]{it.status}[/]",
                str(it.frames) if it.frames else "",
                f"{it.seconds:.1f} s" if it.status != SKIPPED else "",
                escape(it.reason),
            )
        console.print(table)
        console.print(
            f"{tag}{result.count(DONE)} done, {result.count(SKIPPED)} skipped, "
            f"{result.count(FAILED)} failed",
            highlight=False,
        )
    if not result.ok:
        raise click.exceptions.Exit(1)


@cli.command("colorize")
@click.argument("input", type=click.Path(dir_okay=True))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=True),
    default=None,
    help="Output file; its suffix picks the format. [default: INPUT_color.mp4, or "
    "the image's own suffix] For a folder INPUT: the folder to write "
    "NAME.mp4 files in. [default: INPUT_color]",
)
@_colorizer_options
@click.option("--codec", default="libx264", show_default=True, help="Video encoder.")
@click.option(
    "--crf",
    type=click.IntRange(0, 63),
    default=18,
    show_default=True,
    help="Encoder quality (lower is better and bigger).",
)
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset.")
@click.option(
    "--pix-fmt",
    type=_PixFmtParam(),
    default="yuv420p",
    show_default=True,
    help="Output pixel format: yuv420p, yuv422p, yuv444p or their 10-bit p10le forms.",
)
@click.option(
    "--start",
    type=_TimeParam(),
    default=None,
    help="Start at this time (seconds or [HH:]MM:SS[.ms]), like ffmpeg -ss.",
)
@click.option(
    "--duration",
    type=_TimeParam(positive=True),
    default=None,
    help="Colorize this much (seconds or [HH:]MM:SS[.ms]), like ffmpeg -t.",
)
@click.option("--no-audio", is_flag=True, help="Leave the audio out.")
@click.option(
    "--on-decode-error",
    type=click.Choice(["repeat", "skip", "fail"]),
    default="repeat",
    show_default=True,
    help="A damaged frame: show the last good one in its place, leave it out (the "
    "previous frame lasts longer), or stop with an error.",
)
@click.option(
    "--segment-frames",
    type=click.IntRange(min=0),
    default=None,
    help="Write films longer than this many frames in closed segments beside OUTPUT, "
    "so an interrupted run can --resume; 0: never. [default: 2000]",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run of OUTPUT (same options); starts afresh when "
    "there is nothing to continue.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def colorize_cmd(
    input: str,
    output: str | None,
    codec: str,
    crf: int,
    preset: str,
    pix_fmt: str,
    start: float | None,
    duration: float | None,
    no_audio: bool,
    on_decode_error: str,
    segment_frames: int | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    **colorizer: Any,
) -> None:
    """Colorize INPUT, a film (any format PyAV reads) or a photo (jpg, png, tiff…), or every
    film in the folder INPUT.

    The film keeps its own luma (only chroma comes from the model), its frames, timestamps,
    audio and rotation. OUTPUT is written beside itself and renamed when complete. A long film
    is written in segments in .OUTPUT.bttf-work/ as it goes: after Ctrl-C, a kill or a crash,
    the same command with --resume continues where it stopped.

    A folder: each film goes to OUTDIR/NAME.mp4; existing outputs are skipped, failures
    reported; exit code 1 if any failed. Under torchrun --nproc_per_node=N (or with RANK and
    WORLD_SIZE set), process r takes films r, r+N, … on GPU LOCAL_RANK.
    """
    from bttf.pipeline import colorize_image, colorize_video
    from bttf.pipeline.media import is_image_path

    config = _colorize_config(
        **colorizer,
        codec=codec,
        crf=crf,
        preset=preset,
        pix_fmt=pix_fmt,
        start=start,
        duration=duration,
        audio=not no_audio,
        overwrite=overwrite,
        on_decode_error=on_decode_error,
        segment_frames=segment_frames,
        resume=resume,
    )
    if os.path.isdir(input):
        _colorize_folder(input, output, config, quiet)
        return
    output = output or _default_output(input)
    if is_image_path(input):
        if quiet:
            stats = colorize_image(input, output, config)
        else:
            with console.status(f"colorizing {input}"):
                stats = colorize_image(input, output, config)
    elif quiet:
        stats = colorize_video(input, output, config)
    else:
        with _film_progress() as progress:
            stats = colorize_video(input, output, config, progress=progress)
    if not quiet:
        console.print(
            f"wrote {stats.output}: {stats.summary()}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


# --- gif --------------------------------------------------------------------------------------


class _SizeParam(click.ParamType):
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


@cli.command("gif")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="The GIF to write. [default: INPUT_preview.gif]",
)
@click.option(
    "--start",
    type=_TimeParam(),
    default=0.0,
    help="Start at this time (seconds or [HH:]MM:SS[.ms]).  [default: 0]",
)
@click.option(
    "--duration",
    type=_TimeParam(positive=True),
    default=4.0,
    show_default=True,
    help="Length of the preview (seconds or [HH:]MM:SS[.ms]).",
)
@click.option(
    "--fps",
    type=click.FloatRange(0, 50, min_open=True),
    default=12.0,
    show_default=True,
    help="GIF frame rate (never above the film's).",
)
@click.option(
    "--width",
    type=click.IntRange(16, 4096),
    default=480,
    show_default=True,
    help="GIF width in pixels, per panel with --side-by-side (never above the film's).",
)
@click.option(
    "--side-by-side",
    is_flag=True,
    help='Black-and-white original left, colour right, labelled "original" and "bttf MODEL".',
)
@click.option(
    "--colorized",
    type=click.Path(dir_okay=False),
    default=None,
    help="An already colorized version of INPUT (same timeline, e.g. from `bttf "
    "colorize`): only make the GIF.",
)
@click.option(
    "--max-size",
    type=_SizeParam(),
    default=None,
    help="Size budget such as 5MB, 800KB or 2.5M: lowers fps, then width, until it fits.",
)
@click.option(
    "--dither",
    type=click.Choice(["bayer", "sierra2_4a", "floyd_steinberg", "none"]),
    default="bayer",
    show_default=True,
    help="Palette dithering: bayer compresses best; sierra2_4a looks finer on stills.",
)
@click.option("--label", default=None, help='Right-hand label. [default: "bttf MODEL"]')
@_colorizer_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
def gif_cmd(
    input: str,
    output: str | None,
    start: float,
    duration: float,
    fps: float,
    width: int,
    side_by_side: bool,
    colorized: str | None,
    max_size: int | None,
    dither: str,
    label: str | None,
    overwrite: bool,
    quiet: bool,
    **colorizer: Any,
) -> None:
    """Make a short looping GIF preview of INPUT colorized, for an issue, a chat or a README.

    Only the requested range is colorized, at GIF size, in a temporary folder; the GIF uses a
    palette computed for the clip (two passes through ffmpeg) and loops forever.
    """
    from pathlib import Path

    from bttf.pipeline.gif import GifConfig, format_size, make_gif

    colorize = None if colorized is not None else _colorize_config(**colorizer, audio=False)
    config = GifConfig(
        start=start,
        duration=duration,
        fps=fps,
        width=width,
        side_by_side=side_by_side,
        colorized=Path(colorized) if colorized else None,
        max_size=max_size,
        dither=dither,
        overwrite=overwrite,
        label=label,
        colorize=colorize,
    )
    p = Path(input)
    output = output or str(p.with_name(f"{p.stem}_preview.gif"))
    if quiet:
        result = make_gif(input, output, config)
    else:
        with console.status(f"making {output}") as status:

            def progress(done: int, total: int | None) -> None:
                status.update(f"colorizing frame {done}/{total or '?'}")

            result = make_gif(input, output, config, progress=progress)
    if quiet:
        return
    if result.fps != fps or result.width != width:
        why = f"to fit --max-size {format_size(max_size)}" if result.reduced else "the film's own"
        console.print(
            f"chose {result.fps:g} fps, {result.width} px wide ({why}; asked for "
            f"{fps:g} fps, {width} px)",
            highlight=False,
            markup=False,
        )
    console.print(
        f"wrote {result.path}: {result.frames} frames, {result.total_width}x{result.height} at "
        f"{result.fps:g} fps, {format_size(result.size_bytes)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------------------------------------
# prepare / train / eval (bttf.training)


def _val_every(value: str) -> tuple[int, str]:
    """ "500" -> every 500 steps; "2ep" (or "2e", "2epochs") -> every 2 epochs; "0": each epoch."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(ep|e|epoch|epochs|s|steps?)?\s*", value or "")
    if not m:
        raise click.BadParameter(
            "give N (steps) or Nep (epochs), e.g. 500 or 1ep", param_hint="--val-every"
        )
    unit = "epochs" if (m.group(2) or "").startswith("e") else "steps"
    return int(m.group(1)), unit


def _model_kwargs(model_args: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """--model-arg KEY=VALUE ...: each value read as JSON, else kept as text."""
    import json

    kwargs = []
    for arg in model_args:
        key, sep, value = arg.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{arg!r}: give KEY=VALUE", param_hint="--model-arg")
        try:
            kwargs.append((key.strip(), json.loads(value)))
        except ValueError:
            kwargs.append((key.strip(), value))
    return tuple(kwargs)


@contextlib.contextmanager
def _train_progress(model_name: str) -> Iterator[Callable[[Any], None]]:
    """Progress bars for data preparation and training, and a line per validation, driven by
    the `TrainEvent` callback this yields."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        prep = None
        task = None

        def on_event(e) -> None:
            nonlocal prep, task
            if e.kind == "prepare":
                if prep is None:
                    prep = bar.add_task("preparing data", total=e.total, info="")
                bar.update(prep, completed=e.done, total=e.total)
            elif e.kind == "start":
                console.print(f"{model_name}: {e.message}", highlight=False)
                task = bar.add_task("training", total=e.total_steps, completed=e.step, info="")
            elif e.kind in ("step", "val") and task is not None:
                info = (
                    f"epoch {e.epoch + 1}/{e.epochs}  loss {e.loss:.4f}  {e.images_per_s:.1f} img/s"
                )
                bar.update(task, completed=e.step, info=info)
                if e.kind == "val":
                    m = e.metrics
                    console.print(
                        f"step {e.step}: val loss {m.get('loss', float('nan')):.4f}  "
                        f"PSNR {m.get('psnr', float('nan')):.2f}  "
                        f"AuC {m.get('auc', float('nan')):.3f}  "
                        f"AuC rebal {m.get('auc_rebal', float('nan')):.3f}  "
                        f"colorfulness {m.get('colorfulness', float('nan')):.1f}",
                        highlight=False,
                    )

        yield on_event


@cli.command("prepare")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Cache folder to write (L.npy, ab.npy, index.json).",
)
@click.option(
    "--size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Working size: short side resized to this, centre-cropped square.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.05,
    show_default=True,
    help="Share of source files held out for validation (stable: by file hash).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option(
    "--frame-step",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Videos: keep every N-th frame (near-duplicates are skipped too).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Decoding threads (0: one per core, at most 4).",
)
@click.option("--overwrite", is_flag=True, help="Rebuild an existing cache.")
def prepare_cmd(
    data: tuple[str, ...],
    out: str,
    size: int,
    val_fraction: float,
    seed: int,
    frame_step: int,
    workers: int,
    overwrite: bool,
) -> None:
    """Build a training cache (Lab, uint8, memory-mapped) from images and colour videos in DATA."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from bttf.training.data import PrepareConfig, prepare

    cfg = PrepareConfig(
        inputs=tuple(Path(d) for d in data),
        out=Path(out),
        size=size,
        val_fraction=val_fraction,
        seed=seed,
        frame_step=frame_step,
        workers=workers,
        overwrite=overwrite,
    )
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("preparing", total=None)
        s = prepare(cfg, lambda _stage, done, total: bar.update(task, completed=done, total=total))
    console.print(
        f"{out}: {s.train} train + {s.val} val images ({s.size}x{s.size}) from {s.files} files "
        f"and {s.videos} videos; skipped {s.unreadable} unreadable, {s.grayscale} grayscale, "
        f"{s.duplicate_frames} duplicate frames",
        highlight=False,
    )


@cli.command("train")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-m",
    "--model",
    default="fastcolor",
    show_default=True,
    help="Registered model to train (`bttf models`).",
)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder: checkpoints, metrics.csv, loss.png, samples/.",
)
@click.option(
    "--model-arg",
    "model_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Architecture option (value read as JSON, else text), e.g. variant=dropout.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Length of the run in epochs."
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Length of the run in steps (wins)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images per step (per process under torchrun).",
)
@click.option(
    "--image-size",
    type=int,
    default=176,
    show_default=True,
    help="Training crop size (a multiple of the model's stride).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=3e-4,
    show_default=True,
    help="Peak learning rate.",
)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option(
    "--warmup-steps",
    type=int,
    default=None,
    help="Linear warm-up (default: 3% of the run, at most 500), then cosine decay.",
)
@click.option(
    "--loss",
    type=click.Choice(["auto", "rebalanced", "ce", "normalized", "huber", "l2", "l1", "gan"]),
    default="auto",
    show_default=True,
    help="Objective; auto: rebalanced for bin models, huber for ab models.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Background threads preparing batches (0: none).",
)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
@click.option(
    "--init",
    default=None,
    help="Start from a weights file, or 'pretrained' for the official weights.",
)
@click.option("--freeze-encoder", is_flag=True, help="Train the decoder only at first.")
@click.option(
    "--unfreeze-at",
    type=int,
    default=None,
    help="Epoch (0-based) at which a frozen encoder joins training.",
)
@click.option(
    "--encoder-lr-mult",
    type=float,
    default=None,
    help="Encoder LR = lr x this (default 0.1 with --init, else 1).",
)
@click.option(
    "--val-every",
    default="0",
    show_default=True,
    help="Validate every N steps, or every Nep epochs; 0: each epoch.",
)
@click.option(
    "--save-every",
    type=int,
    default=0,
    show_default=True,
    help="Also checkpoint every N steps (0: at each validation).",
)
@click.option(
    "--val-images",
    type=int,
    default=64,
    show_default=True,
    help="Validation images used (a fixed subset).",
)
@click.option(
    "--best-metric",
    type=click.Choice(["auc_rebal", "auc", "loss", "psnr", "ssim"]),
    default="auc_rebal",
    show_default=True,
    help="What best.safetensors maximises.",
)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Validate and save a moving average of the weights with this decay, e.g. 0.998 (0: off).",
)
@click.option("--no-augment", is_flag=True, help="No flips, crops or jitter.")
@click.option(
    "--rebalance-lambda",
    type=float,
    default=0.5,
    show_default=True,
    help="rebalanced loss: w = 1 / ((1 - lam) * prior + lam / 313); 1: no rebalancing, "
    "lower: more saturated colours.",
)
@click.option(
    "--augment",
    "augment_kind",
    type=click.Choice(["standard", "film"]),
    default="standard",
    show_default=True,
    help="film: also degrade the gray input like an old film (grain, blur, flicker, scratches, "
    "blocking...); the colour target stays clean.",
)
@click.option("--no-amp", is_flag=True, help="No bf16 autocast on CUDA.")
@click.option(
    "--cache-size",
    type=int,
    default=256,
    show_default=True,
    help="Raw DATA is prepared into RUN/cache at this size.",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.05,
    show_default=True,
    help="Raw DATA: validation share.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@click.option("--overwrite", is_flag=True, help="Start again in an existing run folder.")
def train_cmd(
    data: tuple[str, ...],
    model: str,
    out: str,
    model_args: tuple[str, ...],
    epochs: int | None,
    steps: int | None,
    batch_size: int,
    image_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int | None,
    loss: str,
    device: str,
    seed: int,
    workers: int,
    threads: int | None,
    init: str | None,
    freeze_encoder: bool,
    unfreeze_at: int | None,
    encoder_lr_mult: float | None,
    val_every: str,
    save_every: int,
    val_images: int,
    best_metric: str,
    grad_clip: float,
    ema: float,
    no_augment: bool,
    augment_kind: str,
    rebalance_lambda: float,
    no_amp: bool,
    cache_size: int,
    val_fraction: float,
    resume: bool,
    overwrite: bool,
) -> None:
    """Train MODEL on DATA (a cache from `bttf prepare`, or image/video folders).

    Multi-GPU: torchrun --nproc_per_node=N -m bttf train ... (DDP; rank 0 writes).
    """
    # Spinning OpenMP workers collapse throughput (5-10x) when the CPU is shared; read by the
    # OpenMP runtime when torch loads, so only effective if nothing imported torch yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    from bttf.models import get_spec
    from bttf.training.loop import TrainConfig, train

    spec = get_spec(model)
    every, unit = _val_every(val_every)  # the other checks are TrainConfig's
    cfg = TrainConfig(
        data=tuple(Path(d) for d in data),
        model=model,
        out=Path(out),
        epochs=epochs,
        steps=steps,
        model_kwargs=_model_kwargs(model_args),
        batch_size=batch_size,
        image_size=image_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        loss=loss,
        device=device,
        amp=not no_amp,
        seed=seed,
        workers=workers,
        threads=threads,
        init=init,
        freeze_encoder=freeze_encoder,
        unfreeze_at=unfreeze_at,
        encoder_lr_mult=encoder_lr_mult,
        val_every=every,
        val_unit=unit,
        save_every=save_every,
        val_images=val_images,
        best_metric=best_metric,
        grad_clip=grad_clip,
        ema=ema,
        rebalance_lambda=rebalance_lambda,
        augment=False if no_augment else (True if augment_kind == "standard" else augment_kind),
        cache_size=cache_size,
        val_fraction=val_fraction,
        resume=resume,
        overwrite=overwrite,
    )
    if os.environ.get("RANK", "0") != "0":
        train(cfg)
        return
    with _train_progress(spec.name) as on_event:
        result = train(cfg, on_event)
    console.print(
        f"done: {result.steps} steps; best {result.best}, last {result.last}", highlight=False
    )


@cli.command("eval")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="Registered model with its shipped/official weights (repeatable).",
)
@click.option(
    "-w",
    "--weights",
    "weights",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A checkpoint (.safetensors names its model; repeatable).",
)
@click.option(
    "--split",
    type=click.Choice(["val", "train", "all"]),
    default="val",
    show_default=True,
    help="Which images of a cache.",
)
@click.option(
    "--size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Raw images: short side resized to this, centre-cropped.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score at most N images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=0.38,
    show_default=True,
    help="Annealed-mean temperature of bin models.",
)
@click.option(
    "--render-size",
    type=click.IntRange(16, 4096),
    default=None,
    help="Run the models at this short side, as `bttf colorize --render-size` does "
    "(colours brought back to the image's size).  [default: the image's size]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_cmd(
    data: tuple[str, ...],
    models: tuple[str, ...],
    weights: tuple[str, ...],
    split: str,
    size: int,
    limit: int | None,
    batch_size: int,
    device: str,
    temperature: float,
    render_size: int | None,
    as_json: bool,
) -> None:
    """Score models on DATA (images or a cache) against the gray baseline: PSNR, SSIM,
    colorfulness, AuC of the ab error (raw and class-rebalanced)."""
    import json
    import math
    from pathlib import Path

    from rich.table import Table

    from bttf.training.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        inputs=tuple(Path(d) for d in data),
        models=models,
        weights=tuple(Path(w) for w in weights),
        split=split,
        size=size,
        limit=limit,
        batch_size=batch_size,
        device=device,
        temperature=temperature,
        render_size=render_size,
    )
    with console.status("evaluating") as status:
        report = evaluate(cfg, lambda name, k, n: status.update(f"evaluating: {name} ({k}/{n})"))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return

    def f(v: float, fmt: str) -> str:
        return "inf" if math.isinf(v) else ("-" if math.isnan(v) else format(v, fmt))

    at = f", models at short side {report.render_size}" if report.render_size else ""
    table = Table(
        title=f"{report.images} images, {report.size}x{report.size}{at} "
        f"(truth colorfulness {f(report.colorfulness_truth, '.1f')})"
    )
    for col in ("model", "weights", "PSNR", "SSIM", "colorf.", "AuC", "AuC reb."):
        table.add_column(col, justify="left" if col in ("model", "weights") else "right")
    for r in report.rows:
        m = r.metrics
        table.add_row(
            r.name,
            r.source,
            f(m["psnr"], ".2f"),
            f(m["ssim"], ".4f"),
            f(m["colorfulness"], ".1f"),
            f(m["auc"], ".4f"),
            f(m["auc_rebal"], ".4f"),
        )
    Console().print(table)
    console.print(
        "PSNR in dB; AuC of the ab error over thresholds 0-150 (Zhang et al. 2016), "
        "'reb.' rebalanced by these images' own bin prior",
        highlight=False,
    )


@cli.command("compare")
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-m",
    "--models",
    "models",
    multiple=True,
    help="Models to compare, comma-separated or repeated (`bttf models`); each uses "
    "its shipped weights, or runs untrained (its caption says so).",
)
@click.option(
    "-w",
    "--weights",
    "weights",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A checkpoint, one more column (a .safetensors names its model; repeatable).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="The sheet (.png, .jpg ...). [default: INPUT_compare.png]",
)
@click.option(
    "--frames",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="A film: this many evenly spaced frames, one row each.",
)
@click.option(
    "--height",
    "tile_height",
    type=click.IntRange(16, 2048),
    default=256,
    show_default=True,
    help="Height of each tile in pixels (a 36 px caption is added).",
)
@click.option(
    "--render-size",
    type=click.IntRange(16, 4096),
    default=None,
    help="Short side the models work at. [default: each model's own]",
)
@click.option(
    "--device",
    type=_DeviceParam(),
    default="auto",
    show_default=True,
    help="auto, cpu, cuda, cuda:N or mps.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=0.38,
    show_default=True,
    help="Annealed-mean temperature of bin models.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def compare_cmd(
    input: str,
    models: tuple[str, ...],
    weights: tuple[str, ...],
    output: str | None,
    frames: int,
    tile_height: int,
    render_size: int | None,
    device: str,
    temperature: float,
    overwrite: bool,
) -> None:
    """Colorize INPUT (image or film) with several models into one side-by-side sheet:
    gray | each model | truth (when INPUT is in colour, it is turned gray first), captioned
    with PSNR, AuC and colourfulness against the truth. The sheet is
    (columns x tile width) wide and (rows x (height + 36)) high."""
    import math
    from pathlib import Path

    from bttf.models import get_spec
    from bttf.pipeline.compare import CompareConfig, compare

    names = tuple(n.strip() for m in models for n in m.split(",") if n.strip())
    for name in names:
        get_spec(name)
    if not names and not weights:
        names = ("default",)
    src = Path(input)
    out = Path(output) if output else src.with_name(f"{src.stem}_compare.png")
    cfg = CompareConfig(
        input=src,
        output=out,
        models=names,
        weights=tuple(Path(w) for w in weights),
        frames=frames,
        tile_height=tile_height,
        device=device,
        temperature=temperature,
        render_size=render_size,
        overwrite=overwrite,
    )
    with console.status("comparing") as status:
        result = compare(cfg, lambda k, n: status.update(f"comparing: {k}/{n} tiles"))

    def f(v: float, fmt: str) -> str:
        return "inf" if math.isinf(v) else ("-" if math.isnan(v) else format(v, fmt))

    console.print(
        f"wrote {result.output} ({result.width}x{result.height}, {result.rows} "
        f"row{'s' if result.rows > 1 else ''})",
        highlight=False,
    )
    for col in result.columns:
        line = f"  {col.label:<28} colourfulness {f(col.mean('colorfulness'), '.1f')}"
        if result.has_truth and col.kind != "truth":
            line += f"  PSNR {f(col.mean('psnr'), '.2f')}  AuC {f(col.mean('auc'), '.4f')}"
        console.print(line, highlight=False)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised on the main thread so it unwinds like Ctrl-C (temp files go, work
    folders for --resume stay)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


# click >= 8.2 raises this (a UsageError) to print the help for a bare `bttf`: keep its form
_HELP_ERRORS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit codes 0 / 1 / 2 / 130 (Ctrl-C) / 143 (SIGTERM);
    BTTF_DEBUG=1 re-raises."""
    import signal
    import threading

    debug = os.environ.get("BTTF_DEBUG", "") not in ("", "0")
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = cli.main(args=argv, prog_name="bttf", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        if isinstance(e, _Terminated) or isinstance(e.__cause__, _Terminated):
            console.print("bttf: terminated", highlight=False)
            sys.exit(143)
        console.print("bttf: interrupted", highlight=False)
        sys.exit(130)
    except click.ClickException as e:
        if debug:
            raise
        if isinstance(e, click.UsageError) and not isinstance(e, _HELP_ERRORS):
            # one line, like every other error; click's own form is usage + hint + message
            where = e.ctx.command_path if e.ctx else "bttf"
            click.echo(
                f"bttf: error: {e.format_message().rstrip('.')}; see '{where} --help'", err=True
            )
        else:
            e.show()
        sys.exit(e.exit_code)
    except BttfError as e:
        if debug:
            raise
        click.echo(f"bttf: error: {e}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:  # last resort: one line, never a traceback
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        click.echo(
            f"bttf: error: {type(e).__name__}: {first} (set BTTF_DEBUG=1 for details)", err=True
        )
        sys.exit(1)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
