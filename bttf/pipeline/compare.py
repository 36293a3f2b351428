"""`bttf compare`: several colorizers side by side on one image or a few frames of a film.

    from bttf.pipeline.compare import CompareConfig, compare
    result = compare(CompareConfig(Path("film.mp4"), Path("sheet.png"),
                                   models=("fastcolor", "unet-ae"), frames=4))

The sheet is a grid of tiles, one row per frame (a still image is one row) and one column per
entry:

    gray input | model 1 | model 2 | ... | truth

The truth column is there when the input is in colour: it is then turned to gray first (its Lab
lightness), every model sees only that, and each tile's caption gives the model's name and its
metrics against the truth (PSNR in dB, AuC of the ab error, colourfulness; see
`bttf.metrics.image`); the gray tile carries the same metrics as the no-colour baseline. For a
gray input the captions give colourfulness only. A model's prediction keeps the input's L
everywhere: only a and b come from the model, so the metrics measure the colour alone.

Size: every tile is `tile_height` pixels high (default 256) and `tile_width = max(1,
round(width * tile_height / height))` wide, (width, height) the input's; under each tile is a
caption band of `CAPTION_HEIGHT` (36) pixels. The sheet is therefore

    (columns * tile_width) x (rows * (tile_height + 36))    (width x height)

with columns = 1 (gray) + number of models + 1 (truth, colour input only), rows = 1 for an image
and `frames` for a film (evenly spaced: the middles of `frames` equal parts of its duration;
fewer when the film has fewer frames).

Each model runs as `bttf colorize` runs it: the input's lightness at the model's render size
(short side `render_size`, rounded to its stride), `Colorizer.predict`, then `Colorizer.decode`
straight to the tile size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from bttf.errors import BadInputError, BttfError
from bttf.files import atomic_output
from bttf.pipeline.media import (
    check_input,
    check_output,
    is_image_path,
    read_rgb_image,
)

log = logging.getLogger(__name__)

CAPTION_HEIGHT = 36
#: 99th-percentile chroma (Lab units) at or above which an input counts as a colour one (the
#: threshold `bttf prepare` uses to skip grayscale images).
COLOR_THRESHOLD = 4.0
_SHEET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

ProgressFn = Callable[[int, int], None]  # (tiles done, tiles in all)


@dataclass(frozen=True)
class CompareConfig:
    """What `compare` needs.

    Args:
        input: an image or a film.
        output: the sheet (.png, .jpg, .webp, .bmp or .tif).
        models: registered model names, each with its shipped or downloaded weights (a released
            file not downloaded yet is an error naming `bttf download`) when it has some
            (otherwise it runs untrained, and its caption says so).
        weights: weights files, each one more column (a bttf .safetensors names its model).
        frames: frames of a film, evenly spaced (one row each); ignored for an image.
        tile_height: height of each tile in pixels.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        temperature: annealed-mean temperature for bin models.
        render_size: override every model's render size (short side), or None for each model's.
        render_square: feed every model a square (True) or the input's aspect (False); None:
            each model's own (`ModelSpec.render_square`).
        overwrite: replace an existing output.
    """

    input: Path
    output: Path
    models: tuple[str, ...] = ()
    weights: tuple[Path, ...] = ()
    frames: int = 4
    tile_height: int = 256
    device: str = "auto"
    temperature: float = 0.38
    unsure: tuple[float, float] | str | None = "auto"  # `Colorizer`'s: the model's default
    saturation: float | str = "auto"  # `Colorizer`'s: the model's default
    render_size: int | None = None
    render_square: bool | None = None
    overwrite: bool = False


@dataclass
class Column:
    """One column of the sheet and its metrics per row (NaN where there is no truth)."""

    label: str
    kind: str  # "gray", "model" or "truth"
    metrics: list[dict[str, float]] = field(default_factory=list)

    def mean(self, key: str) -> float:
        values = [m[key] for m in self.metrics if key in m and not math.isnan(m[key])]
        return float(np.mean(values)) if values else math.nan


@dataclass
class CompareResult:
    """What `compare` wrote."""

    output: Path
    width: int
    height: int
    tile: tuple[int, int]  # (width, height) of one tile, caption excluded
    rows: int
    columns: list[Column]
    has_truth: bool
    frame_times: list[float]  # seconds into the film of each row ([0.0] for an image)


# ---------------------------------------------------------------------------------------------
# reading the input


def _frame_targets(duration: float, count: int) -> list[float]:
    return [(i + 0.5) * duration / count for i in range(count)]


def _read_video_frames(path: Path, count: int) -> tuple[list[np.ndarray], list[float]]:
    """`count` evenly spaced frames of a film as float32 RGB (H, W, 3) in [0, 1], and their
    times (seconds from the first frame). Seeks when the duration is known, else decodes all."""
    from bttf.pipeline.media import open_input

    with open_input(path) as container:
        if not container.streams.video:
            raise BadInputError(f"{path} has no video stream; give a film or an image")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 90000)
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        rate = stream.average_rate or stream.guessed_rate
        known = stream.frames or (round(duration * rate) if duration and rate else 0)
        try:
            # Seeking finds a few frames of a long film fast; a short one is simply decoded.
            if duration and duration > 0 and (not known or count < known):
                frames, times = _seek_frames(container, stream, start, duration, count)
                if len(frames) == count:
                    return frames, times
                log.info(
                    "%s: seeking gave %d of %d frames; decoding it all", path, len(frames), count
                )
            container.seek(0)
            return _decode_all(container, stream, start, count)
        except av.FFmpegError as e:
            raise BadInputError(f"{path} does not decode ({e})") from e


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0


def _seek_frames(
    container, stream, start: float, duration: float, count: int
) -> tuple[list[np.ndarray], list[float]]:
    tb = stream.time_base or Fraction(1, 90000)
    frames: list[np.ndarray] = []
    times: list[float] = []
    for t in _frame_targets(duration, count):
        container.seek(int((start + t) / tb), stream=stream, backward=True)
        got = None
        for frame in container.decode(stream):
            ft = float(frame.pts * tb) - start if frame.pts is not None else t
            got = frame
            if ft >= t - 1e-6:
                break
        if got is None:
            break
        ft = float(got.pts * tb) - start if got.pts is not None else t
        if times and ft <= times[-1]:
            continue  # a short film: two targets landed on one frame
        frames.append(_rgb(got))
        times.append(ft)
    return frames, times


def _decode_all(
    container, stream, start: float, count: int
) -> tuple[list[np.ndarray], list[float]]:
    tb = stream.time_base or Fraction(1, 90000)
    stamps = [
        float(f.pts * tb) - start if f.pts is not None else math.nan
        for f in container.decode(stream)
    ]
    if not stamps:
        raise BadInputError(f"{container.name} holds no decodable video frames")
    n = len(stamps)
    wanted = sorted({min(n - 1, int((i + 0.5) * n / count)) for i in range(count)})
    container.seek(0)
    frames: list[np.ndarray] = []
    times: list[float] = []
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            frames.append(_rgb(frame))
            times.append(stamps[i] if not math.isnan(stamps[i]) else float(i))
        if len(frames) == len(wanted):
            break
    return frames, times


# ---------------------------------------------------------------------------------------------
# drawing


def fit_text(text: str, width: int, scale: float) -> tuple[str, float]:
    """Shrink the font (to 0.3 at least), then cut the text, until it fits `width` pixels."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    while scale > 0.3 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
        scale -= 0.05
    while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
        text = text[:-2] + "~" if len(text) > 2 else text[:-1]
    return text, scale


def caption(width: int, lines: Sequence[str]) -> np.ndarray:
    """A white band (CAPTION_HEIGHT, width, 3) uint8 RGB with up to two lines of dark text."""
    band = np.full((CAPTION_HEIGHT, width, 3), 255, np.uint8)
    for i, line in enumerate(lines[:2]):
        text, scale = fit_text(line, max(1, width - 6), 0.45 if i == 0 else 0.4)
        y = 15 + 16 * i
        cv2.putText(
            band, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA
        )
    return band


def _fmt_metrics(m: dict[str, float]) -> str:
    parts = []
    if "psnr" in m:
        parts.append("PSNR inf" if math.isinf(m["psnr"]) else f"PSNR {m['psnr']:.1f}")
    if "auc" in m:
        parts.append(f"AuC {m['auc']:.3f}")
    if "colorfulness" in m:
        parts.append(f"CF {m['colorfulness']:.1f}")
    return "  ".join(parts)


# ---------------------------------------------------------------------------------------------
# the comparison


def _load_colorizers(cfg: CompareConfig, device: torch.device) -> list[tuple[str, object]]:
    from bttf.models import Colorizer, get_spec, official_weights

    out: list[tuple[str, object]] = []
    decoding = {"temperature": cfg.temperature, "unsure": cfg.unsure, "saturation": cfg.saturation}
    for name in cfg.models:
        spec = get_spec(name)
        # shipped or downloaded; released but not downloaded: MissingWeightsError names the fix
        trained = official_weights(spec.name) is not None
        colorizer = Colorizer.create(name=name, **decoding)
        label = spec.name if trained else f"{spec.name} (untrained)"
        if not trained:
            log.warning(
                "%s has no weights here: its column shows an untrained model; give "
                "--weights FILE for a trained one",
                spec.name,
            )
        out.append((label, colorizer.to(device)))
    for path in cfg.weights:
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f"--weights {p} is not a file; check the path")
        colorizer = Colorizer.create(weights=p, **decoding)
        out.append((f"{colorizer.spec.name} ({p.stem})", colorizer.to(device)))
    return out


def _chroma_p99(ab: torch.Tensor) -> float:
    return float(torch.quantile(ab.float().norm(dim=0).flatten()[::7], 0.99))


def compare(cfg: CompareConfig, progress: ProgressFn | None = None) -> CompareResult:
    """Colorize `cfg.input` with every model and write the comparison sheet `cfg.output`.

    See the module docstring for the layout and the size of the sheet.

    Raises:
        BadInputError: unreadable input, bad output path or options.
        OutputExistsError: the output exists and `overwrite` is off.
        UnknownModelError, WeightsError: a model or weights file does not load.
    """
    from bttf.color import lab_to_rgb, rgb_to_lab
    from bttf.metrics.image import auc_ab, colorfulness, psnr
    from bttf.pipeline.stages import colorize_l
    from bttf.runtime import resolve_device

    src = check_input(cfg.input)
    dst = check_output(src, cfg.output, cfg.overwrite)
    if dst.suffix.lower() not in _SHEET_SUFFIXES:
        raise BadInputError(
            f"the sheet is an image: give -o a suffix like .png or .jpg, not {dst.suffix!r}"
        )
    if not cfg.models and not cfg.weights:
        raise BadInputError("nothing to compare: give --models NAME[,NAME...] and/or --weights")
    if cfg.frames < 1:
        raise BadInputError(f"--frames {cfg.frames} must be at least 1")
    if cfg.tile_height < 16:
        raise BadInputError(f"tile height {cfg.tile_height} must be at least 16 pixels")
    device = resolve_device(cfg.device)
    colorizers = _load_colorizers(cfg, device)

    if is_image_path(src):
        frames, times = [read_rgb_image(src)], [0.0]
    else:
        frames, times = _read_video_frames(src, cfg.frames)
    h, w = frames[0].shape[:2]
    th = int(cfg.tile_height)
    tw = max(1, round(w * th / h))

    # Lab of every frame, full size, and of its tile.
    labs = [rgb_to_lab(torch.from_numpy(f).permute(2, 0, 1).contiguous()) for f in frames]
    has_truth = max(_chroma_p99(lab[1:]) for lab in labs) >= COLOR_THRESHOLD
    columns = [Column("gray input", "gray")]
    columns += [Column(label, "model") for label, _ in colorizers]
    if has_truth:
        columns.append(Column("truth", "truth"))

    total, done = len(frames) * len(colorizers), 0
    rows: list[np.ndarray] = []
    with torch.inference_mode():
        for frame, lab in zip(frames, labs, strict=True):
            tile_lab = torch.from_numpy(
                cv2.resize(lab.permute(1, 2, 0).numpy(), (tw, th), interpolation=cv2.INTER_AREA)
            ).permute(2, 0, 1)
            L_tile = tile_lab[:1]
            true_ab = tile_lab[1:]
            true_rgb = lab_to_rgb(tile_lab)
            tiles_rgb: list[torch.Tensor] = [lab_to_rgb(torch.cat([L_tile, 0 * true_ab]))]
            abs_: list[torch.Tensor] = [torch.zeros_like(true_ab)]
            L_full = lab[0].numpy()
            for _, colorizer in colorizers:
                L_in = torch.from_numpy(L_full)[None, None]
                size = (th, tw)
                ab = colorize_l(colorizer, L_in, device, cfg.render_size, size, cfg.render_square)
                ab = ab[0].float().cpu()
                abs_.append(ab)
                tiles_rgb.append(lab_to_rgb(torch.cat([L_tile, ab])))
                done += 1
                if progress:
                    progress(done, total)
            if has_truth:
                tiles_rgb.append(true_rgb)
                abs_.append(true_ab)
            true_hwc = true_rgb.permute(1, 2, 0).numpy()
            row_tiles = []
            for col, rgb, ab in zip(columns, tiles_rgb, abs_, strict=True):
                hwc = rgb.permute(1, 2, 0).numpy()
                m = {"colorfulness": colorfulness(hwc)}
                if has_truth and col.kind != "truth":
                    m["psnr"] = psnr(hwc, true_hwc)
                    m["auc"] = auc_ab(ab[None], true_ab[None])
                col.metrics.append(m)
                img = np.rint(np.clip(hwc, 0, 1) * 255).astype(np.uint8)
                band = caption(tw, [col.label, _fmt_metrics(m)])
                row_tiles.append(np.concatenate([img, band], axis=0))
            rows.append(np.concatenate(row_tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    ok, buf = cv2.imencode(dst.suffix.lower(), np.ascontiguousarray(sheet[..., ::-1]))
    if not ok:
        raise BttfError(f"OpenCV could not encode {dst.suffix} images; use .png or .jpg")
    with atomic_output(dst) as tmp:
        tmp.write_bytes(buf.tobytes())
    return CompareResult(
        output=dst,
        width=sheet.shape[1],
        height=sheet.shape[0],
        tile=(tw, th),
        rows=len(rows),
        columns=columns,
        has_truth=has_truth,
        frame_times=times,
    )
