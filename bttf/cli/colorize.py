"""`bttf colorize` and `bttf gif`: the main job and its previews, over one ColorizeConfig builder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import click

from bttf.cli.app import (
    RENDER_SQUARE_OPTION,
    SATURATION_OPTION,
    TEMPERATURE_OPTION,
    UNSURE_OPTION,
    DeviceParam,
    PixFmtParam,
    SizeParam,
    TimeParam,
    cli,
    console,
    default_output,
    lazy_progress,
)

COLORIZER_OPTIONS = [
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
        type=DeviceParam(),
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
    RENDER_SQUARE_OPTION,
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Frames per model call (halved automatically on CUDA out-of-memory).",
    ),
    TEMPERATURE_OPTION,
    UNSURE_OPTION,
    SATURATION_OPTION,
    click.option(
        "--top-k",
        type=click.IntRange(1, 313),
        default=None,
        help="Decode colours from the k most likely bins only.",
    ),
    click.option(
        "--fill-bars/--keep-bars",
        default=True,
        show_default=True,
        help="Fill the film's black bars (letterbox, pillarbox) in what the model sees, so they "
        "do not warm its colour; the output keeps them black.",
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
    click.option(
        "--keyframes",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of frames coloured by hand, named by the film's frame index "
        "(000123.png, see `bttf keyframes`): their colour is carried through their shots. "
        "For a folder INPUT: KEYFRAMES/<film name>/.",
    ),
]


def colorizer_options(f):
    """The model and colorizing options shared by `colorize` and `gif`; the command takes them
    as `**colorizer` and hands them to `colorize_config`."""
    for option in reversed(COLORIZER_OPTIONS):
        f = option(f)
    return f


def colorize_config(**options: Any):
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


def film_progress(label: str = "colorizing"):
    """A progress bar (frames, fps, elapsed, ETA) for `progress(done, total)`, appearing once
    the input is open and the model loaded."""
    from rich.progress import MofNCompleteColumn, ProgressColumn, TimeElapsedColumn
    from rich.text import Text

    class _Fps(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            text = f"{speed:5.1f} fps" if speed else "  ... fps"
            return Text(text, style="progress.data.speed")

    return lazy_progress(label, [MofNCompleteColumn(), _Fps(), TimeElapsedColumn()])


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
        return bars.enter_context(film_progress(escape(film.name)))

    def on_done(item) -> None:
        bars.close()
        if item.status == FAILED:
            where = "" if str(item.src) in item.reason else f"{item.src}: "
            if world > 1 and rank > 0:  # rank 0 reports the films and sets the exit code
                click.echo(f"{tag}{where}failed here: {item.reason}", err=True)
            else:
                click.echo(f"bttf: error: {tag}{where}{item.reason}", err=True)
        for n in item.notices if not quiet else ():
            console.print(f"  note: {escape(n)}", highlight=False)

    with bars:
        result = colorize_folder(
            src, out_dir, config, on_start=on_start, on_done=on_done, progress_for=progress_for
        )
    if not quiet:
        shard = f" (rank {rank} of {world}, sharing segments; frames: this rank's)"
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
    if not result.ok and (rank == 0 or not result.shared):  # (torchrun stops all on an exit 1)
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
@colorizer_options
@click.option(
    "--codec",
    default=None,
    help="Video encoder. [default: by OUTPUT's suffix: libvpx-vp9 (with Opus audio) for "
    ".webm, else libx264]",
)
@click.option(
    "--crf",
    type=click.IntRange(0, 63),
    default=18,
    show_default=True,
    help="Encoder quality (lower is better and bigger).",
)
@click.option(
    "--preset",
    default="medium",
    show_default=True,
    help="Encoder speed preset (x264's names; VP9 maps them to libvpx's cpu-used, or give 0..5).",
)
@click.option(
    "--pix-fmt",
    type=PixFmtParam(),
    default=None,
    help="Output pixel format: yuv420p, yuv422p, yuv444p or their 10-bit p10le forms. "
    "[default: yuv420p; for a 10-bit source (ProRes, 10-bit HEVC) its 10-bit form, luma "
    "kept at full depth, where the encoder takes it]",
)
@click.option(
    "--start",
    type=TimeParam(),
    default=None,
    help="Start at this time (seconds or [HH:]MM:SS[.ms]), like ffmpeg -ss.",
)
@click.option(
    "--duration",
    type=TimeParam(positive=True),
    default=None,
    help="Colorize this much (seconds or [HH:]MM:SS[.ms]), like ffmpeg -t.",
)
@click.option("--no-audio", is_flag=True, help="Leave the audio out.")
@click.option(
    "--fields/--no-fields",
    default=None,
    help="Colour each field of an interlaced film on its own, so what moves between the two "
    "fields of a frame keeps its colour (--fields also for a film flagged progressive that is "
    "interlaced; --no-fields: whole frames). [default: when the film says it is interlaced]",
)
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
    codec: str | None,
    crf: int,
    preset: str,
    pix_fmt: str | None,
    start: float | None,
    duration: float | None,
    no_audio: bool,
    fields: bool | None,
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
    WORLD_SIZE set), the processes share the segments (--segment-frames) of the film, or of all
    the films of the folder, each on GPU LOCAL_RANK; rank 0 joins them and reports.
    """
    from bttf.pipeline import colorize_image, colorize_video
    from bttf.pipeline.media import is_image_path

    config = colorize_config(
        **colorizer,
        codec=codec,
        crf=crf,
        preset=preset,
        pix_fmt=pix_fmt,
        start=start,
        duration=duration,
        audio=not no_audio,
        fields=fields,
        overwrite=overwrite,
        on_decode_error=on_decode_error,
        segment_frames=segment_frames,
        resume=resume,
    )
    if os.path.isdir(input):
        _colorize_folder(input, output, config, quiet)
        return
    output = output or default_output(input)
    if not is_image_path(input) and _colorize_shared(input, output, config, quiet):
        return
    if is_image_path(input):
        if quiet:
            stats = colorize_image(input, output, config)
        else:
            with console.status(f"colorizing {input}"):
                stats = colorize_image(input, output, config)
    elif quiet:
        stats = colorize_video(input, output, config)
    else:
        with film_progress() as progress:
            stats = colorize_video(input, output, config, progress=progress)
    if not quiet:
        console.print(
            f"wrote {stats.output}: {stats.summary()}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _colorize_shared(input: str, output: str, config, quiet: bool) -> bool:
    """One film under torchrun: this rank's segments, a line per rank every 10 s, rank 0's
    summary. False when not under torchrun (WORLD_SIZE unset or 1)."""
    import time

    from bttf.pipeline import colorize_video
    from bttf.pipeline.shared import Share

    share = Share.from_env()
    if share is None:
        return False
    tag = f"rank {share.rank}/{share.world}"
    last = [time.monotonic()]

    def progress(done: int, total: int | None) -> None:
        if not quiet and time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            click.echo(f"{tag}: {done} frames colorized (of {total or '?'} in the film)", err=True)

    stats = colorize_video(input, output, config, progress=progress, share=share)
    if quiet:
        return True
    if share.rank == 0:
        console.print(
            f"{tag}: wrote {stats.output} ({stats.segments} segments, all ranks); this rank: "
            f"{stats.summary()}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    else:
        click.echo(
            f"{tag}: {stats.segments} segments ({stats.frames} frames) done; rank 0 joins", err=True
        )
    return True


# --- gif --------------------------------------------------------------------------------------


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
    type=TimeParam(),
    default=0.0,
    help="Start at this time (seconds or [HH:]MM:SS[.ms]).  [default: 0]",
)
@click.option(
    "--duration",
    type=TimeParam(positive=True),
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
    type=SizeParam(),
    default=None,
    help="Size budget such as 5MB, 800KB or 2.5M: fewer palette colours, frame differencing "
    "(grain held still), no dithering, then lower fps, then width, until it fits.",
)
@click.option(
    "--dither",
    type=click.Choice(["bayer", "sierra2_4a", "floyd_steinberg", "none"]),
    default="bayer",
    show_default=True,
    help="Palette dithering: bayer compresses best; sierra2_4a looks finer on stills.",
)
@click.option("--label", default=None, help='Right-hand label. [default: "bttf MODEL"]')
@colorizer_options
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

    colorize = None if colorized is not None else colorize_config(**colorizer, audio=False)
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
    if len(result.tried) > 1:  # what each step of the size search gave
        first = result.tried[0][1]
        for what, size in result.tried:
            saved = f" ({100 * (size - first) / first:+.0f} %)" if size != first else ""
            console.print(f"  {what}: {format_size(size)}{saved}", highlight=False, markup=False)
    if result.reduced or result.fps != fps or result.width != width:
        why = f"to fit --max-size {format_size(max_size)}" if result.reduced else "the film's own"
        extra = f", {result.colors} colours" if result.colors != 256 else ""
        if result.hold:
            extra += f", changes under {result.hold} levels held"
        if result.dither != dither:
            extra += f", {result.dither} dither"
        console.print(
            f"chose {result.fps:g} fps, {result.width} px wide{extra} ({why}; asked for "
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
