"""Colour statistics of whole films colorized by one or more models (is there a colour cast?).

Every film of ../shared/data/film (or --films DIR) is colorized with each MODEL through the
library (`bttf.colorize_video`, one colorizer built per model), then read back once: the colour
statistics of `bttf.metrics.colour` (every --step-th frame at 160 px wide: mean a*, mean b*,
share of strongly coloured pixels (chroma > 20), hue shares among them, Jensen-Shannon
divergence in nats of the 313-bin ab histogram to Zhang et al.'s ImageNet prior; a gray film
scores 0.42, a hundred colour photographs pooled 0.02-0.03) per film and pooled over all the
films (one histogram of all their pixels). One markdown table per model.

MODEL is a weights file (.safetensors, .pt: it names its model) or a registered model name
(`bttf models`; "default" is the shipped default). --colorized DIR adds already-colorized films
instead: DIR holds one video per film with the film's name (any video suffix), and the column is
named after DIR. With --out OUT the colorized films are kept as OUT/<label>/<film>.mp4, so a
later run can read them back with --colorized OUT/<label>.

--sheets DIR writes one contact sheet per film, DIR/<film>.png: columns gray | model 1 | ...,
rows a few frames of every shot (shots from `bttf.pipeline.cuts.CutDetector`; up to --per-shot
frames a shot, up to --rows rows), tiles --tile-height pixels high, a label band on top of each
column (its name and its colour statistics on this film); the gray tile names the shot and frame.

    python benchmarks/films.py default                                  # the shipped model
    python benchmarks/films.py /work/v1_fastcolor.safetensors new.safetensors --sheets sheets
    python benchmarks/films.py default --film the_great_train_robbery   # one film
    python benchmarks/films.py --colorized out/v1_fastcolor --colorized out/new --sheets sheets

Encoding (--quality): "lossless" (x264 CRF 0, 4:4:4, ultrafast: the statistics see the model's
colours exactly; the default) or "fast" (CRF 18, 4:2:0, veryfast: what a user's file holds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SHARED_FILMS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "film"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
GAP = 4  # white pixels between shots on a sheet

log = logging.getLogger("films")


@dataclass
class Column:
    """One model (or folder of colorized films): where its films are and what they measured."""

    label: str
    source: str  # "model" or "colorized"
    spec: str  # the weights file / model name, or the folder
    videos: dict[str, Path] = field(default_factory=dict)  # film stem -> colorized video
    stats: dict[str, object] = field(default_factory=dict)  # film stem -> ColourStats


# --- colorizing -------------------------------------------------------------------------------


def _is_weights(spec: str) -> bool:
    return Path(spec).suffix.lower() in (".safetensors", ".pt", ".pth") or Path(spec).is_file()


def _labels(specs: list[str]) -> list[str]:
    labels: list[str] = []
    for spec in specs:
        base = Path(spec).stem if _is_weights(spec) else spec
        label, k = base, 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def _config(quality: str, temporal: bool, device: str, render_size: int | None = None):
    from bttf import ColorizeConfig

    enc = (
        {"crf": 0, "preset": "ultrafast", "pix_fmt": "yuv444p"}
        if quality == "lossless"
        else {"crf": 18, "preset": "veryfast", "pix_fmt": "yuv420p"}
    )
    return ColorizeConfig(
        device=device,
        temporal=temporal,
        audio=False,
        overwrite=True,
        segment_frames=0,
        render_size=render_size,
        **enc,
    )


def _unsure(text: str):
    """--unsure as `Colorizer` takes it: "auto", "off" or a (lo, hi) pair."""
    if text in ("auto", "off"):
        return text
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def colorize_all(
    col: Column,
    films: list[Path],
    out_dir: Path,
    quality: str,
    temporal: bool,
    device: str,
    unsure: str = "auto",
    render_size: int | None = None,
    saturation: str = "auto",
) -> None:
    """Colorize every film with the column's model into out_dir/<label>/<film>.mp4."""
    import bttf
    from bttf.models import Colorizer

    spec = col.spec
    decoding = {
        "unsure": _unsure(unsure),
        "saturation": saturation if saturation == "auto" else float(saturation),
    }
    if _is_weights(spec):
        colorizer = Colorizer.create(weights=spec, **decoding)
    else:
        colorizer = Colorizer.create(name=spec, **decoding)
    config = _config(quality, temporal, device, render_size)
    folder = out_dir / col.label
    folder.mkdir(parents=True, exist_ok=True)
    for film in films:
        dst = folder / f"{film.stem}.mp4"
        t0 = time.perf_counter()
        st = bttf.colorize_video(film, dst, config, colorizer=colorizer)
        log.info(
            "%s: %s colorized, %d frames in %.1f s",
            col.label,
            film.name,
            st.frames,
            time.perf_counter() - t0,
        )
        col.videos[film.stem] = dst


def find_colorized(col: Column, films: list[Path]) -> None:
    folder = Path(col.spec)
    if not folder.is_dir():
        raise SystemExit(f"--colorized {folder} is not a folder")
    for film in films:
        hits = [folder / f"{film.stem}{s}" for s in VIDEO_SUFFIXES]
        hits = [h for h in hits if h.is_file()]
        if not hits:
            raise SystemExit(f"--colorized {folder} has no {film.stem}.* (one video per film)")
        col.videos[film.stem] = hits[0]


# --- reading back: statistics, shots, sheet frames ---------------------------------------------


def pick_rows(n: int, cuts: list[int], per_shot: int, max_rows: int) -> list[tuple[int, int]]:
    """(shot index, frame index) of the sheet's rows: up to `per_shot` evenly spaced frames of
    every shot, `max_rows` in all (the longest shots get more; too many shots: evenly chosen)."""
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    shots = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    shots = [(s, e) for s, e in shots if e > s]
    if len(shots) > max_rows:
        keep = sorted({round((i + 0.5) * len(shots) / max_rows - 0.5) for i in range(max_rows)})
        chosen = {i: 1 for i in keep}
    else:
        chosen = {i: 1 for i in range(len(shots))}
        by_length = sorted(range(len(shots)), key=lambda i: shots[i][0] - shots[i][1])
        budget = max_rows - len(shots)
        for _ in range(per_shot - 1):
            for i in by_length:
                if budget and chosen[i] < min(per_shot, shots[i][1] - shots[i][0]):
                    chosen[i] += 1
                    budget -= 1
    rows = []
    for i, k in sorted(chosen.items()):
        s, e = shots[i]
        rows += [(i, s + int((j + 0.5) * (e - s) / k)) for j in range(k)]
    return rows


def _tile_size(h: int, w: int, tile_h: int) -> tuple[int, int]:
    return max(1, round(w * tile_h / h)), tile_h


def read_source(film: Path, tile_h: int, per_shot: int, max_rows: int):
    """One pass over the gray film: its shots (CutDetector) and every frame at tile size (gray,
    uint8); returns the rows to show and their gray tiles."""
    from bttf.pipeline.cuts import CutDetector, iter_frames

    det = CutDetector()
    small: list[np.ndarray] = []
    for t, gray in iter_frames(film, gray=True):
        det.feed(gray, time=t)
        tw, th = _tile_size(*gray.shape, tile_h)
        small.append(cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA))
    rows = pick_rows(len(small), [c.frame for c in det.cuts], per_shot, max_rows)
    return len(small), len(det.cuts) + 1, rows, [small[i] for _, i in rows]


def read_colorized(video: Path, wanted: set[int], tile: tuple[int, int], step: int):
    """One pass over a colorized film: its ColourStats and the `wanted` frames at tile size."""
    from bttf.metrics.colour import ColourAccumulator
    from bttf.pipeline.cuts import iter_frames

    acc = ColourAccumulator(step)
    tiles: dict[int, np.ndarray] = {}
    n = 0
    for i, (_, rgb) in enumerate(iter_frames(video, gray=False)):
        acc.add(rgb)
        if i in wanted:
            tiles[i] = cv2.resize(rgb, tile, interpolation=cv2.INTER_AREA)
        n = i + 1
    return acc.stats, tiles, n


# --- output -----------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def stats_row(name: str, s) -> str:
    return (
        f"| {name} | {s.frames} | {s.mean_a:+.2f} | {s.mean_b:+.2f} | {_pct(s.strong_share)} "
        f"| {_pct(s.hue_shares['green'])} | {s.js_prior:.3f} |"
    )


def table(col: Column, films: list[Path]) -> str:
    from bttf.metrics.colour import ColourStats

    lines = [
        f"### {col.label} ({col.spec})",
        "",
        "| film | frames measured | mean a* | mean b* | strong % | green % of strong | JS to prior |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [stats_row(f.stem, col.stats[f.stem]) for f in films]
    lines.append(stats_row("**pooled**", ColourStats.pool(col.stats[f.stem] for f in films)))
    return "\n".join(lines)


def _stamp(img: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a dark strip at the bottom left of an RGB tile."""
    from bttf.pipeline.compare import fit_text

    out = img.copy()
    text, scale = fit_text(text, max(1, out.shape[1] - 6), 0.4)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y0 = max(0, out.shape[0] - th - base - 4)
    out[y0:, : tw + 6] = (out[y0:, : tw + 6] * 0.35).astype(np.uint8)
    cv2.putText(
        out,
        text,
        (3, out.shape[0] - base - 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return out


def write_sheet(
    path: Path,
    film: Path,
    rows: list[tuple[int, int]],
    gray_tiles: list[np.ndarray],
    columns: list[tuple[str, str, dict[int, np.ndarray]]],
) -> None:
    """gray | model ... with a label band on top (compare.py's caption) and shots apart."""
    from bttf.pipeline.compare import caption

    th, tw = gray_tiles[0].shape
    header = [caption(tw, ["gray input", film.stem])]
    header += [caption(tw, [label, line]) for label, line, _ in columns]
    parts = [np.concatenate(header, axis=1)]
    blank = np.zeros((th, tw, 3), np.uint8)
    prev_shot = None
    for (shot, frame), gray in zip(rows, gray_tiles, strict=True):
        if prev_shot is not None and shot != prev_shot:
            parts.append(np.full((GAP, tw * (1 + len(columns)), 3), 255, np.uint8))
        prev_shot = shot
        tiles = [_stamp(np.repeat(gray[..., None], 3, axis=2), f"shot {shot + 1}, frame {frame}")]
        tiles += [t.get(frame, blank) for _, _, t in columns]
        parts.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(parts, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(sheet[..., ::-1])):
        raise SystemExit(f"could not write {path}")


def _sheet_line(s) -> str:
    return (
        f"a {s.mean_a:+.1f} b {s.mean_b:+.1f} strong {_pct(s.strong_share)}% "
        f"green {_pct(s.hue_shares['green'])}% JS {s.js_prior:.2f}"
    )


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "models", nargs="*", help="weights files or registered model names (default: default)"
    )
    ap.add_argument(
        "--colorized",
        type=Path,
        action="append",
        default=[],
        help="a folder of already-colorized films (one column, named after the folder)",
    )
    ap.add_argument("--films", type=Path, default=SHARED_FILMS, help="folder of gray films")
    ap.add_argument(
        "--film", action="append", default=[], help="only films whose name contains this"
    )
    ap.add_argument("--out", type=Path, default=None, help="keep the colorized films here")
    ap.add_argument("--sheets", type=Path, default=None, help="write contact sheets here")
    ap.add_argument("--step", type=int, default=5, help="measure every N-th frame")
    ap.add_argument("--quality", choices=["lossless", "fast"], default="lossless")
    ap.add_argument("--no-temporal", action="store_true", help="colorize frame by frame")
    ap.add_argument("--unsure", default="auto", help="decoding: auto, off or LO,HI (bttf colorize)")
    ap.add_argument("--saturation", default="auto", help="decoding: auto or a gain (bttf colorize)")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--render-size", type=int, default=None, help="short side the models work at (their own)"
    )
    ap.add_argument("--tile-height", type=int, default=240)
    ap.add_argument("--per-shot", type=int, default=3, help="sheet rows per shot, at most")
    ap.add_argument("--rows", type=int, default=12, help="sheet rows, at most")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    log.setLevel(logging.INFO)

    if not args.films.is_dir():
        print(f"no films: {args.films} is absent (give --films DIR); nothing to do")
        return 0
    films = sorted(p for p in args.films.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if args.film:
        films = [f for f in films if any(k in f.name for k in args.film)]
    if not films:
        print(f"no films in {args.films} match; nothing to do")
        return 0
    if args.step < 1 or args.tile_height < 16 or args.rows < 1 or args.per_shot < 1:
        ap.error("--step, --rows, --per-shot must be >= 1 and --tile-height >= 16")
    specs = list(args.models) or ([] if args.colorized else ["default"])
    columns = [Column(lb, "model", s) for lb, s in zip(_labels(specs), specs, strict=True)]
    columns += [Column(d.name, "colorized", str(d)) for d in args.colorized]

    work = Path(tempfile.mkdtemp(prefix="bttf-films-")) if args.out is None else args.out
    try:
        for col in columns:
            if col.source == "model":
                colorize_all(
                    col,
                    films,
                    work,
                    args.quality,
                    not args.no_temporal,
                    args.device,
                    args.unsure,
                    args.render_size,
                    args.saturation,
                )
            else:
                find_colorized(col, films)

        for film in films:
            n, shots, rows, gray_tiles = read_source(
                film, args.tile_height, args.per_shot, args.rows
            )
            tile = gray_tiles[0].shape[1::-1]
            wanted = {i for _, i in rows} if args.sheets else set()
            sheet_columns = []
            for col in columns:
                s, tiles, m = read_colorized(col.videos[film.stem], wanted, tile, args.step)
                if m != n:
                    log.warning("%s: %s has %d frames, the film %d", col.label, film.stem, m, n)
                col.stats[film.stem] = s
                sheet_columns.append((col.label, _sheet_line(s), tiles))
            log.info("%s: %d frames, %d shot(s)", film.stem, n, shots)
            if args.sheets:
                write_sheet(args.sheets / f"{film.stem}.png", film, rows, gray_tiles, sheet_columns)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"Colour statistics, every {args.step}th frame at 160 px wide; JS in nats to Zhang's "
        "ImageNet prior (gray film 0.42); pooled = one histogram over all the films.\n"
    )
    for col in columns:
        print(table(col, films), end="\n\n")
    if args.sheets:
        print(f"contact sheets in {args.sheets}/")
    if args.json:
        from bttf.metrics.colour import ColourStats

        doc = {
            col.label: {
                "spec": col.spec,
                "films": {k: v.to_dict() for k, v in col.stats.items()},
                "pooled": ColourStats.pool(col.stats.values()).to_dict(),
            }
            for col in columns
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
