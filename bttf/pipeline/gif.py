"""Short, shareable GIF previews: colorize a few seconds, then a two-pass-palette GIF.

`make_gif` colorizes only the requested range, at GIF size, into a temporary directory (or takes an
already colorized video), then asks ffmpeg (the binary shipped with imageio-ffmpeg) for a GIF with
an optimal palette in two passes: `palettegen=stats_mode=diff` writes the clip's palette, then
`paletteuse` maps it with ordered dithering and `diff_mode=rectangle`, looping forever. With a
size budget it lowers the frame rate, then the width, until the file fits, and returns the
settings it chose.

Labels for the side-by-side view are drawn with OpenCV's built-in Hershey font into a transparent
PNG that ffmpeg overlays: no system font is needed (ffmpeg's drawtext would need a font file).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np

from bttf.errors import BadInputError, BttfError
from bttf.files import atomic_output
from bttf.pipeline.decode import probe_video
from bttf.pipeline.media import check_input, check_output, is_image_path

if TYPE_CHECKING:
    from bttf.pipeline.engine import ColorizeConfig, ColorizeStats

log = logging.getLogger(__name__)

DITHERS = ("bayer", "sierra2_4a", "floyd_steinberg", "none")
MIN_WIDTH = 120  # below this a preview stops being useful; the size search gives up there
_FPS_STEPS = (5 / 6, 2 / 3, 1 / 2)  # 12 fps -> 10, 8, 6: lower than half looks like a slideshow
_WIDTH_STEP = 0.85

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_size(text: str) -> int:
    """Parse a file size such as ``5MB``, ``800KB``, ``2.5M``, ``1.5MiB`` or ``300000`` into bytes.

    K/M/G (with or without B) are decimal (1 MB = 1,000,000 bytes, the smaller reading, so a GIF
    that fits "5MB" fits either way); KiB/MiB/GiB are binary. Raises ValueError when unreadable.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; use e.g. 5MB, 800KB or 2.5M")
    number, unit = float(m.group(1)), m.group(2).lower()
    prefix = unit[:1] if unit[:1] in "kmg" else ""
    if "i" in unit:
        if not prefix:
            raise ValueError(f"{text!r} is not a size; use e.g. 5MB, 800KB or 2.5M")
        scale = 1024 ** ("kmg".index(prefix) + 1)
    else:
        scale = _UNITS[prefix]
    size = int(number * scale)
    if size <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return size


def format_size(n: int) -> str:
    """Bytes as a short human string (decimal units, like `parse_size`)."""
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class GifConfig:
    """Everything `make_gif` needs; built by `bttf gif`.

    start/duration: the range of the input in seconds (duration None: to the end).
    fps / width: the target frame rate and width in pixels (per panel with side_by_side); never
        above the source's, so a small film is not blown up.
    side_by_side: black-and-white original left, colour right, each labelled.
    colorized: an already colorized version of the input (same timeline): skip colorizing.
    max_size: a size budget in bytes; fps then width are lowered until the GIF fits.
    dither / bayer_scale: paletteuse dithering; bayer (ordered) compresses far better in GIF
        than error diffusion (sierra2_4a, floyd_steinberg), which looks finer on stills.
    label: the right-hand label; None: "bttf <model>".
    colorize: the colorizing settings (model, weights, device, ...), required unless colorized.
    """

    start: float = 0.0
    duration: float | None = 4.0
    fps: float = 12.0
    width: int = 480
    side_by_side: bool = False
    colorized: Path | None = None
    max_size: int | None = None
    dither: str = "bayer"
    bayer_scale: int = 5
    overwrite: bool = False
    label: str | None = None
    colorize: ColorizeConfig | None = None

    def __post_init__(self) -> None:
        if self.start < 0:
            raise BadInputError(f"start must be >= 0 seconds, got {self.start}")
        if self.duration is not None and self.duration <= 0:
            raise BadInputError(f"duration must be > 0 seconds, got {self.duration}")
        if not 0 < self.fps <= 50:
            raise BadInputError(f"fps must be in (0, 50] (GIF delays are 1/100 s), got {self.fps}")
        if self.width < 16:
            raise BadInputError(f"width must be at least 16 pixels, got {self.width}")
        if self.dither not in DITHERS:
            raise BadInputError(f"dither must be one of {', '.join(DITHERS)}, got {self.dither!r}")
        if not 0 <= self.bayer_scale <= 5:
            raise BadInputError(f"bayer_scale must be in 0..5, got {self.bayer_scale}")
        if self.max_size is not None and self.max_size <= 0:
            raise BadInputError(f"max_size must be positive, got {self.max_size}")
        if self.colorized is None and self.colorize is None:
            raise BadInputError("give colorizing settings, or an already colorized video")


@dataclass(frozen=True)
class GifResult:
    """What `make_gif` wrote and the settings it settled on."""

    path: Path
    fps: float
    width: int  # per panel
    height: int
    frames: int
    size_bytes: int
    attempts: int  # GIFs encoded (more than one when a size budget forced a reduction)
    reduced: bool  # settings were lowered (colours, frame differencing, dither, fps, width)
    side_by_side: bool = False
    colorize_stats: ColorizeStats | None = None  # None with `colorized`
    colors: int = 256  # palette colours
    hold: int = 0  # frame differencing: changes up to this many levels held (0: off)
    dither: str = "bayer"
    tried: tuple[tuple[str, int], ...] = ()  # (settings, bytes) of each GIF encoded, in order

    @property
    def total_width(self) -> int:
        """The GIF's width: two panels side by side."""
        return self.width * 2 if self.side_by_side else self.width


@dataclass(frozen=True)
class _Probe:
    width: int  # display width (sample aspect ratio applied)
    height: int
    fps: float | None
    duration: float | None


def _probe(path: Path) -> _Probe:
    if is_image_path(path):
        raise BadInputError(f"{path} is a still image; a GIF preview needs a video")
    info = probe_video(path)
    w, h = info.width, info.height
    sar = info.sample_aspect_ratio
    if sar and sar > 0:
        w = max(1, round(w * float(sar)))
    if info.rotation % 180 == 90:  # ffmpeg turns the picture upright, as a player does
        w, h = h, w
    return _Probe(w, h, float(info.rate) if info.rate else None, info.duration)


def _ffmpeg_exe() -> str:
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:  # pragma: no cover - imageio-ffmpeg ships its binary
        raise BttfError(f"no ffmpeg binary: {e}; reinstall imageio-ffmpeg") from None


def _run(stream: Any, what: str) -> None:
    """Run an ffmpeg-python graph quietly; a failure becomes one line with ffmpeg's reason."""
    args = ffmpeg.compile(
        stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error"),
        cmd=_ffmpeg_exe(),
        overwrite_output=True,
    )
    log.debug("ffmpeg: %s", " ".join(args))
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines()]
        reason = next((ln for ln in reversed(lines) if ln), f"exit status {proc.returncode}")
        reason = re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", reason)  # "[out#0/gif @ 0x55…] "
        raise BttfError(f"ffmpeg failed {what}: {reason}")


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _height_for(width: int, probe: _Probe) -> int:
    return max(1, round(width * probe.height / probe.width))


def label_png(path: Path, panel_w: int, panel_h: int, labels: tuple[str, str]) -> None:
    """Write a transparent RGBA image (2 panels wide) with a dark box and white text per label."""
    img = np.zeros((panel_h, 2 * panel_w, 4), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.35, min(1.0, panel_w / 600))
    thickness = 1 if scale < 0.7 else 2
    pad = max(2, round(4 * scale))
    for i, text in enumerate(labels):
        text = text.encode("ascii", "replace").decode()  # Hershey fonts are ASCII only
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        x0, y0 = i * panel_w + pad, pad
        x1 = min((i + 1) * panel_w - 1, x0 + tw + 2 * pad)
        y1 = min(panel_h - 1, y0 + th + base + 2 * pad)
        img[y0:y1, x0:x1] = (0, 0, 0, 150)
        # draw into a separate opaque layer so the text's alpha is its own anti-aliasing
        layer = np.zeros((panel_h, 2 * panel_w), np.uint8)
        org = (x0 + pad, y0 + pad + th)
        cv2.putText(layer, text, org, font, scale, 255, thickness, cv2.LINE_AA)
        a = layer.astype(np.float32) / 255.0
        img[..., :3] = (img[..., :3] * (1 - a[..., None]) + 255 * a[..., None]).astype(np.uint8)
        img[..., 3] = np.maximum(img[..., 3], layer)
    if not cv2.imwrite(str(path), img[..., [2, 1, 0, 3]]):
        raise BttfError(f"cannot write the label image {path}")


def _cut(src: Path, dst: Path, start: float, duration: float | None, fps: float, w: int, h: int):
    """The requested range of `src` at GIF rate and size, lossless (FFV1): what gets colorized."""
    kw: dict[str, Any] = {"ss": start} if start > 0 else {}
    if duration is not None:
        kw["t"] = duration
    v = (
        ffmpeg.input(str(src), **kw)
        .video.filter("fps", fps=_fps_arg(fps))
        .filter("scale", w, h, flags="lanczos")
        .filter("setsar", "1")
    )
    _run(v.output(str(dst), vcodec="ffv1", pix_fmt="yuv420p", an=None), "cutting the clip")


def _fps_arg(fps: float) -> str:
    return str(Fraction(fps).limit_denominator(1001))


def _encode_gif(
    out: Path,
    color: tuple[Path, float],
    original: tuple[Path, float] | None,
    duration: float | None,
    step: GifStep,
    height: int,
    labels_png: Path | None,
    tmp: Path,
    config: GifConfig,
) -> None:
    fps, width = step.fps, step.width

    def timed(path: Path, start: float):
        kw: dict[str, Any] = {"ss": start} if start > 0 else {}
        if duration is not None:
            kw["t"] = duration
        v = ffmpeg.input(str(path), **kw).video.filter("setpts", "PTS-STARTPTS")
        return v.filter("fps", fps=_fps_arg(fps))

    def scaled(v, pix_fmt: str):
        # scale converts pixel formats too, so each branch negotiates its own format
        v = v.filter("scale", width, height, flags="lanczos").filter("setsar", "1")
        return v.filter("format", pix_fmt)

    v = timed(*color)
    if original is not None:
        if original == color:  # ffmpeg-python merges identical inputs: split explicitly
            both = v.split()
            v, left = both[0], both[1]
        else:
            left = timed(*original)
        # the black-and-white the model saw, even if the source carries a tint
        left = scaled(left, "gray").filter("format", "rgb24")
        v = ffmpeg.filter([left, scaled(v, "rgb24")], "hstack", inputs=2, shortest=1)
        if labels_png is not None:
            v = ffmpeg.overlay(v, ffmpeg.input(str(labels_png)), x=0, y=0, format="rgb")
    else:
        v = scaled(v, "rgb24")
    if step.hold:
        frames, held = tmp / "frames.mkv", tmp / "held.mkv"
        _run(v.output(str(frames), vcodec="ffv1", pix_fmt="bgr0"), "rendering the GIF frames")
        hold_small_changes(frames, held, step.hold)
        frames.unlink()
        v = ffmpeg.input(str(held)).video
    _palette_gif(v, out, tmp / "palette.png", step, config)


def _palette_gif(v, out: Path, palette: Path, step: GifStep, config: GifConfig) -> None:
    """Two runs rather than a split in one graph: a split would hold every frame in memory
    until palettegen has seen the last one."""
    dither = step.dither or config.dither
    try:
        pal = v.filter("palettegen", stats_mode="diff", max_colors=step.colors)
        _run(pal.output(str(palette), update=1, **{"frames:v": 1}), "making the GIF palette")
        use: dict[str, Any] = {"dither": dither, "diff_mode": "rectangle"}
        if dither == "bayer":
            use["bayer_scale"] = config.bayer_scale
        gif = ffmpeg.filter([v, ffmpeg.input(str(palette))], "paletteuse", **use)
        _run(gif.output(str(out), f="gif", loop=0), "making the GIF")
    finally:
        palette.unlink(missing_ok=True)
        (palette.parent / "held.mkv").unlink(missing_ok=True)


def hold_small_changes(src: Path, dst: Path, threshold: int) -> None:
    """Copy the RGB film `src` to `dst` (FFV1, same timestamps), each pixel keeping the colour
    it had in the previous output frame unless one of its channels moved by more than
    `threshold` levels: film grain then no longer changes every pixel of every frame, and the
    GIF encoder leaves the unchanged ones out (transparent)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream("ffv1", rate=vin.average_rate or 12)
        vs.width, vs.height, vs.pix_fmt = vin.width, vin.height, "bgr0"
        vs.time_base = vin.time_base
        prev: np.ndarray | None = None
        for frame in inp.decode(vin):
            rgb = frame.to_ndarray(format="rgb24")
            if prev is not None:
                moved = np.abs(rgb.astype(np.int16) - prev).max(axis=-1, keepdims=True)
                rgb = np.where(moved <= threshold, prev, rgb).astype(np.uint8)
            prev = rgb.astype(np.int16)
            held = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            held.pts, held.time_base = frame.pts, frame.time_base
            out.mux(vs.encode(held))
        out.mux(vs.encode(None))


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(container.streams.video[0]) if p.size)


@dataclass(frozen=True)
class GifStep:
    """One setting of the size search: frame rate, width, palette colours, frame-difference
    threshold (`hold`: a pixel whose colour moved by at most this many levels keeps the previous
    frame's, so GIF's frame differencing leaves it out) and dithering (None: the config's)."""

    fps: float
    width: int
    colors: int = 256
    hold: int = 0
    dither: str | None = None

    def describe(self, config_dither: str) -> str:
        parts = [f"{self.fps:g} fps", f"{self.width} px", f"{self.colors} colours"]
        if self.hold:
            parts.append(f"changes under {self.hold} levels held")
        parts.append(f"{self.dither or config_dither} dither")
        return ", ".join(parts)


#: Palette colours, then frame differencing, then no dithering, tried at the asked fps and
#: width before those are lowered (measured on a grainy 320-px colour clip, 3 s at 12 fps:
#: 256 -> 128 -> 64 colours -19 %, -31 %; holding changes under 8 / 16 levels -19 % / -44 % at 256
#: colours; no dithering -2 %; other dithering, and bayer scales under 5, made it bigger).
QUALITY_STEPS = ((128, 0, None), (64, 0, None), (64, 8, None), (64, 16, None), (64, 16, "none"))


def gif_ladder(fps: float, width: int, dither: str) -> list[GifStep]:
    """Settings to try, best first: fewer colours, frame differencing and no dithering at the
    asked fps and width, then lower fps (down to half), then narrower (`size_ladder`)."""
    steps = [GifStep(fps, width)]
    for colors, hold, d in QUALITY_STEPS:
        if d is None or d != dither:
            steps.append(GifStep(fps, width, colors, hold, d))
    last = steps[-1]
    for f, w in size_ladder(fps, width)[1:]:
        steps.append(GifStep(f, w, last.colors, last.hold, last.dither))
    return steps


def size_ladder(fps: float, width: int) -> list[tuple[float, int]]:
    """Settings to try, best first: lower fps (down to half), then narrower at that fps."""
    steps: list[tuple[float, int]] = [(fps, width)]
    for r in _FPS_STEPS:
        f = round(fps * r) if fps >= 4 else round(fps * r, 2)
        if 0 < f < steps[-1][0]:
            steps.append((f, width))
    low_fps, w = steps[-1][0], width
    min_w = min(width, MIN_WIDTH)
    while w > min_w:
        w = max(min_w, int(w * _WIDTH_STEP))
        steps.append((low_fps, w))
    return steps


def _check_inputs(
    src: str | Path, dst: str | Path, config: GifConfig
) -> tuple[Path, Path, _Probe, _Probe]:
    """INPUT, OUTPUT and the probes of INPUT and of the --colorized video (INPUT's when none),
    checked before any work."""
    src = check_input(src)
    if Path(dst).suffix.lower() != ".gif":
        raise BadInputError(f"OUTPUT {dst} is not a .gif; name it e.g. preview.gif")
    dst = check_output(src, dst, config.overwrite)
    if config.colorized is not None:
        colorized = check_input(config.colorized)
        if colorized.resolve() == dst.resolve():
            raise BadInputError(f"OUTPUT {dst} is the --colorized video; choose another name")
    probe = _probe(src)
    if probe.duration is not None and config.start >= probe.duration:
        raise BadInputError(
            f"--start {config.start:g}s is past the end of {src} ({probe.duration:.2f}s)"
        )
    color_probe = probe
    if config.colorized is not None:
        color_probe = _probe(Path(config.colorized))
        if color_probe.duration is not None and config.start >= color_probe.duration:
            raise BadInputError(
                f"--start {config.start:g}s is past the end of the --colorized video "
                f"{config.colorized} ({color_probe.duration:.2f}s); is it the same film?"
            )
    return src, dst, probe, color_probe


def _geometry(config: GifConfig, probe, color_probe) -> tuple[float, int, int]:
    """The GIF's fps, width and height: never upscaled and never above the source's frame rate
    (both only make the file bigger)."""
    fps = config.fps if probe.fps is None else min(config.fps, round(probe.fps, 3))
    width = min(config.width, probe.width, color_probe.width)
    if fps != config.fps or width != config.width:
        log.info(
            "source is %dx%d at %s fps: GIF at %d px, %g fps",
            probe.width,
            probe.height,
            probe.fps,
            width,
            fps,
        )
    return fps, width, _height_for(width, probe)


def make_gif(
    src: str | Path,
    dst: str | Path,
    config: GifConfig,
    progress: Callable[[int, int | None], None] | None = None,
) -> GifResult:
    """Make a looping GIF preview of `src` (colorized) at `dst`.

    Colorizes only [start, start + duration], at the GIF's size and frame rate, with
    `bttf.pipeline.engine.colorize_video` into a temporary directory (removed afterwards), unless
    `config.colorized` names a colorized version already. The GIF is written beside `dst` and
    renamed into place on success. `progress` is passed to the colorizer.

    Raises BadInputError (unreadable input, empty range), OutputExistsError (dst exists and not
    config.overwrite), BttfError (ffmpeg failed; max_size unreachable even at the smallest
    setting). Returns the settings used.
    """
    src, dst, probe, color_probe = _check_inputs(src, dst, config)

    fps, width, height = _geometry(config, probe, color_probe)
    keys = None
    if config.colorized is None and config.colorize.keyframes is not None:
        from bttf.pipeline.decode import probe_video
        from bttf.pipeline.keyframes import load_keyframes

        info = probe_video(src)  # the keyframes checked before anything is made
        keys = (load_keyframes(config.colorize.keyframes, info), float(info.rate or 24))

    with tempfile.TemporaryDirectory(prefix="bttf-gif-") as tmp_name, atomic_output(dst) as part:
        tmp = Path(tmp_name)
        stats = None
        if config.colorized is None:
            clip, colored = tmp / "clip.mkv", tmp / "colorized.mkv"
            _cut(src, clip, config.start, config.duration, fps, _even(width), _even(height))
            colorize = _clip_keyframes(config.colorize, keys, clip, config.start, fps, tmp)
            stats = _colorize(clip, colored, colorize, progress)
            model = stats.model
            color, original = (colored, 0.0), (clip, 0.0)
            duration = None
        else:
            color, original = (Path(config.colorized), config.start), (src, config.start)
            duration = config.duration
            model = config.colorize.model if config.colorize is not None else None
        labels = ("original", config.label or (f"bttf {model}" if model else "bttf"))

        candidates = (
            gif_ladder(fps, width, config.dither) if config.max_size else [GifStep(fps, width)]
        )
        sources = (color, original if config.side_by_side else None, duration)
        step, tried = _fit(part, candidates, sources, probe, labels, tmp, config)
        h = _height_for(step.width, probe)
        frames = _count_frames(part)
        if frames == 0:
            raise BadInputError(f"no frames in the requested range of {src}")
    return GifResult(
        path=dst,
        fps=step.fps,
        width=step.width,
        height=h,
        frames=frames,
        size_bytes=dst.stat().st_size,
        attempts=len(tried),
        reduced=step != GifStep(fps, width),
        colorize_stats=stats,
        side_by_side=config.side_by_side,
        colors=step.colors,
        hold=step.hold,
        dither=step.dither or config.dither,
        tried=tuple(tried),
    )


def _fit(
    part: Path,
    candidates: list[GifStep],
    sources: tuple,
    probe: _Probe,
    labels: tuple[str, str],
    tmp: Path,
    config: GifConfig,
) -> tuple[GifStep, list[tuple[str, int]]]:
    """Encode `candidates` in order into `part` until one fits `config.max_size` (the first,
    without a budget): the step chosen and (description, bytes) of each GIF encoded."""
    color, original, duration = sources
    tried: list[tuple[str, int]] = []
    measured: tuple[int, GifStep] | None = None
    for i, step in enumerate(candidates):
        last = i == len(candidates) - 1
        if measured is not None and not last:
            # size grows at most about linearly in fps and pixel count: skip sure misses
            s0, m = measured
            same = (step.colors, step.hold, step.dither) == (m.colors, m.hold, m.dither)
            if same and s0 * (step.fps / m.fps) * (step.width / m.width) ** 2 > (
                config.max_size * 1.2
            ):
                continue
        h = _height_for(step.width, probe)
        png = None
        if original is not None:
            png = tmp / f"labels_{step.width}.png"
            label_png(png, step.width, h, labels)
        _encode_gif(part, color, original, duration, step, h, png, tmp, config)
        size = part.stat().st_size
        tried.append((step.describe(config.dither), size))
        log.info("GIF at %s: %s", step.describe(config.dither), format_size(size))
        if config.max_size is None or size <= config.max_size:
            return step, tried
        measured = (size, step)
    step = candidates[-1]
    raise BttfError(
        f"even at {step.describe(config.dither)} the GIF is {format_size(size)}, over "
        f"--max-size {format_size(config.max_size)}; shorten --duration or raise --max-size"
    )


def _clip_keyframes(colorize, keys, clip: Path, start: float, fps: float, tmp: Path):
    """`colorize` with `keys` = (the checked keyframes, the film's rate) renamed to the clip's
    frame indices; without keyframes when none falls in the clip."""
    if keys is None:
        return colorize
    from bttf.pipeline.decode import probe_video
    from bttf.pipeline.keyframes import retime_keyframes

    frames = probe_video(clip).frames or 0
    folder = retime_keyframes(keys[0], keys[1], start, fps, frames, tmp / "keyframes")
    return replace(colorize, keyframes=folder)


def _colorize(clip: Path, out: Path, colorize: ColorizeConfig, progress) -> ColorizeStats:
    from bttf.pipeline.engine import colorize_video

    # the whole (already cut) clip, near-lossless and quick: only the palette step reads it
    cfg = replace(
        colorize,
        start=None,
        duration=None,
        audio=False,
        overwrite=True,
        codec="libx264",
        crf=12,
        preset="veryfast",
        pix_fmt="yuv420p",
    )
    return colorize_video(clip, out, cfg, progress=progress)
