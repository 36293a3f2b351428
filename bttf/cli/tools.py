"""`bttf models`, `bttf cuts`, `bttf keyframes`, `bttf eval-video`, `bttf compare`: looking at
models and films."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.console import Console

from bttf.cli.app import (
    RENDER_SQUARE_OPTION,
    SATURATION_OPTION,
    TEMPERATURE_OPTION,
    UNSURE_OPTION,
    DeviceParam,
    cli,
    console,
    timecode,
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
        title="bttf colorizers",
        caption="size: the weights file. CPU s/frame: one 360p frame through `bttf colorize`, "
        "measured on a 2-vCPU Xeon (benchmarks/model_speed.py --pipeline); fast < 0.5, medium "
        "< 2, slow < 10. weights: shipped / downloaded / bttf download NAME / train it "
        "yourself (bttf train --model NAME, then --weights FILE)",
    )
    for column, justify in (
        ("model", "left"),
        ("output", "left"),
        ("params", "right"),
        ("size", "right"),
        ("render size", "right"),
        ("CPU s/frame", "right"),
        ("weights", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column in ("model", "params"))
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        output = "313 bins" if r["output"] == "bins" else "ab"
        size = f"{r['file_size'] / 1e6:.1f} MB" if r["file_size"] else "-"
        cpu = r["cpu_s_360p"]
        speed = r["speed"] if cpu is None else f"{cpu:.{1 if cpu >= 1 else 2}f} {r['speed']}"
        table.add_row(
            name, output, f"{r['params']:,}", size, str(r["render_size"]), speed, _source(r)
        )
    Console().print(table)


def _source(row: dict) -> str:
    """Where a model's weights come from, for the `bttf models` table."""
    from urllib.parse import urlsplit

    if row["weights"] == "missing":
        return f"shipped file missing ({row['shipped']})"
    if row["weights"] == "cached":
        return f"downloaded ({row['release']})"
    if row["weights"] == "not downloaded":
        return f"{row['source']} (from {urlsplit(row['url']).netloc})"
    return row["source"]


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
        click.echo(f"{timecode(c.time)}  frame {c.frame}")
    console.print(f"{len(cuts)} cut(s), {len(cuts) + 1} shot(s)", highlight=False)


@cli.command("keyframes")
@click.argument("film", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder to write the keyframes in (created if missing).",
)
@click.option(
    "--at",
    type=click.Choice(["first", "middle"]),
    default="first",
    show_default=True,
    help="Which frame of each shot.",
)
@click.option("--overwrite", is_flag=True, help="Write into a folder that already holds images.")
def keyframes_cmd(film: str, out_dir: str, at: str, overwrite: bool) -> None:
    """Write one gray PNG per shot of FILM into a folder, named by the film's frame index
    (000123.png), at full resolution.

    Colour some of them in any editor (GIMP, Krita…), keep their names, and give the folder to
    `bttf colorize FILM --keyframes FOLDER`: their colour is carried through their shots.
    """
    from bttf.pipeline.keyframes import export_keyframes

    with console.status(f"looking for shots in {film}"):
        paths = export_keyframes(film, out_dir, at, overwrite=overwrite)
    console.print(f"{len(paths)} keyframe(s) written to {out_dir}", highlight=False)


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
    """Temporal consistency and colour statistics of a colorized video OUTPUT.

    Warping error follows Lai et al. 2018 with OpenCV DIS flow (not FlowNet2: compare numbers
    only with this tool's); CDC follows Liu et al. 2021 (lower is better for both). With
    --truth, flow is computed on the truth's luma and the truth's own values are shown for
    reference.

    Colour, on every 5th frame at 160 px wide: mean a* (< 0 green, > 0 red) and b* (< 0 blue,
    > 0 yellow), the share of strongly coloured pixels (chroma > 20), the hue shares among
    them, and the Jensen-Shannon divergence (nats) of the ab-bin histogram to Zhang et al.'s
    ImageNet prior (0.42 for a gray film; see bttf.metrics.colour).
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
    if m.colour is not None:
        rows += _colour_rows(m.colour, m.truth_colour)
    width = max(15, *(len(name) + 2 for name, _, _ in rows))
    for name, value, ref in rows:
        extra = f"   (truth: {ref:.6g})" if ref is not None else ""
        click.echo(f"{name:<{width}}{value}{extra}")
    click.echo(f"flow: {m.flow_method}")
    for note in m.notes:
        console.print(f"note: {note}", highlight=False)


def _colour_rows(c, truth) -> list[tuple[str, str, float | None]]:
    """eval-video's rows for ColourStats `c` and the truth's (or None); shares in %."""

    def row(name: str, get, fmt: str) -> tuple[str, str, float | None]:
        value = get(c)
        ref = get(truth) if truth is not None else None
        return (
            name,
            "n/a" if math.isnan(value) else format(value, fmt),
            None if ref is None or math.isnan(ref) else ref,
        )

    rows = [
        row("mean a*", lambda s: s.mean_a, "+.2f"),
        row("mean b*", lambda s: s.mean_b, "+.2f"),
        row("strong colour %", lambda s: 100 * s.strong_share, ".1f"),
    ]
    for hue in c.hue_shares:
        rows.append(row(f"  {hue} %", lambda s, h=hue: 100 * s.hue_shares[h], ".1f"))
    rows.append(row("JS to prior", lambda s: s.js_prior, ".4f"))
    return rows


# --- colorize -------------------------------------------------------------------------------


@cli.command("compare")
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-m",
    "--models",
    "models",
    multiple=True,
    help="Models to compare, comma-separated or repeated (`bttf models`); each uses "
    "its shipped or downloaded weights (`bttf download NAME`), or runs untrained (its "
    "caption says so).",
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
@RENDER_SQUARE_OPTION
@click.option(
    "--device",
    type=DeviceParam(),
    default="auto",
    show_default=True,
    help="auto, cpu, cuda, cuda:N or mps.",
)
@TEMPERATURE_OPTION
@UNSURE_OPTION
@SATURATION_OPTION
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def compare_cmd(
    input: str,
    models: tuple[str, ...],
    weights: tuple[str, ...],
    output: str | None,
    frames: int,
    tile_height: int,
    render_size: int | None,
    render_square: bool | None,
    device: str,
    temperature: float,
    unsure,
    saturation,
    overwrite: bool,
) -> None:
    """Colorize INPUT (image or film) with several models into one side-by-side sheet:
    gray | each model | truth (when INPUT is in colour, it is turned gray first), captioned
    with PSNR, AuC and colourfulness against the truth. The sheet is
    (columns x tile width) wide and (rows x (height + 36)) high."""
    import math

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
        unsure=unsure,
        saturation=saturation,
        render_size=render_size,
        render_square=render_square,
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
