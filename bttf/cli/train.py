"""`bttf prepare`, `bttf train`, `bttf eval`: data, training runs and scores."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from bttf.cli.app import SATURATION_OPTION, TEMPERATURE_OPTION, UNSURE_OPTION, cli, console


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
    help="Start from a weights file, 'pretrained' for the official weights, or 'imagenet' for "
    "torchvision's ImageNet trunk of a ResNet model (`bttf download resnet18-imagenet`).",
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
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Bin models: give this share of each pixel's target to the data's colour prior, so an "
    "unsure model falls back on common colours, e.g. 0.1.",
)
@click.option(
    "--soft-sigma",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Bin models: width (ab units) of the soft-encoded target over its 5 nearest bins "
    "[default: 5, Zhang et al.'s].",
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
    label_smoothing: float,
    soft_sigma: float | None,
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
        label_smoothing=label_smoothing,
        augment=False if no_augment else (True if augment_kind == "standard" else augment_kind),
        cache_size=cache_size,
        val_fraction=val_fraction,
        resume=resume,
        overwrite=overwrite,
        **({} if soft_sigma is None else {"soft_sigma": soft_sigma}),
    )
    if os.environ.get("RANK", "0") != "0":
        train(cfg)
        return
    with _train_progress(spec.name) as on_event:
        result = train(cfg, on_event)
    console.print(
        f"done: {result.steps} steps; best {result.best}, last {result.last}", highlight=False
    )


def _report_table(report, folder: str | None = None):
    """A rich table of an `EvalReport` (one row per model, the gray baseline first)."""
    import math

    from rich.table import Table

    def f(v: float, fmt: str) -> str:
        return "inf" if math.isinf(v) else ("-" if math.isnan(v) else format(v, fmt))

    at = f", models at short side {report.render_size}" if report.render_size else ""
    where = f"{folder}: " if folder else ""
    table = Table(
        title=f"{where}{report.images} images, {report.size}x{report.size}{at} "
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
    return table


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
@TEMPERATURE_OPTION
@UNSURE_OPTION
@SATURATION_OPTION
@click.option(
    "--render-size",
    type=click.IntRange(16, 4096),
    default=None,
    help="Run the models at this short side, as `bttf colorize --render-size` does "
    "(colours brought back to the image's size).  [default: the image's size]",
)
@click.option(
    "--by-folder",
    is_flag=True,
    help="Also a table per folder of DATA (a cache: per source folder), each rebalanced by "
    "its own images' prior.",
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
    unsure,
    saturation,
    render_size: int | None,
    by_folder: bool,
    as_json: bool,
) -> None:
    """Score models on DATA (images or a cache) against the gray baseline: PSNR, SSIM,
    colorfulness, AuC of the ab error (raw and class-rebalanced)."""
    import json

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
        unsure=unsure,
        saturation=saturation,
        render_size=render_size,
        by_folder=by_folder,
    )
    with console.status("evaluating") as status:
        report = evaluate(cfg, lambda name, k, n: status.update(f"evaluating: {name} ({k}/{n})"))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return

    Console().print(_report_table(report))
    for folder, sub in report.folders.items():
        Console().print(_report_table(sub, folder))
    console.print(
        "PSNR in dB; AuC of the ab error over thresholds 0-150 (Zhang et al. 2016), "
        "'reb.' rebalanced by these images' own bin prior",
        highlight=False,
    )
