"""Training data: a compact Lab cache built once (`prepare`), read memory-mapped, augmented
in torch.

A cache is a folder:

    L.npy       uint8 (N, S, S)      L * 2.55, rounded (L in [0, 100])
    ab.npy      uint8 (N, 2, S, S)   ab + 128, rounded and clipped to [0, 255]
    index.json  {"version", "size", "items": [{"name", "source", "split", "frame"}], "summary"}

Every image is resized so its short side is S and centre-cropped to S x S, so the cache is one array
and a batch is one fancy-indexed read. The train/val split is decided per source file by a hash of
its content (and the seed): adding files never moves existing ones to the other split, and every
frame of one video lands in the same split.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bttf.errors import BadInputError, OutputExistsError

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
CACHE_VERSION = 1
L_SCALE = 2.55  # uint8 L = round(L * 2.55)
AB_OFFSET = 128.0  # uint8 ab = round(ab + 128)

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of `prepare`: which media, where the cache goes, and how it is cut."""

    inputs: tuple[Path, ...]
    out: Path
    size: int = 256
    val_fraction: float = 0.05
    seed: int = 0
    frame_step: int = 30  # keep every N-th video frame...
    dup_threshold: float = 4.0  # ...unless it is this close to the last kept one (mean |dY|)
    max_frames_per_video: int = 200
    gray_threshold: float = 4.0  # 99th percentile chroma below this: a grayscale image, skipped
    workers: int = 0  # decoding threads (0: one per core)
    overwrite: bool = False


@dataclass
class PrepareSummary:
    """What `prepare` wrote and what it skipped."""

    cache: Path
    size: int
    train: int = 0
    val: int = 0
    files: int = 0
    videos: int = 0
    unreadable: int = 0
    grayscale: int = 0
    duplicate_frames: int = 0
    skipped_files: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.train + self.val

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cache"] = str(self.cache)
        d["skipped_files"] = self.skipped_files[:100]
        return d


def find_media(inputs: tuple[Path, ...] | list[Path]) -> list[tuple[Path, Path]]:
    """Images and videos under `inputs` (files or folders, searched recursively), sorted.

    Returns (file, root) pairs, `root` being the input the file was found under (names in the
    index are relative to it). Missing inputs raise BadInputError.
    """
    found: list[tuple[Path, Path]] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            found.append((p, p.parent))
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                    if not any(part.startswith(".") for part in f.relative_to(p).parts):
                        found.append((f, p))
        else:
            raise BadInputError(f"{p} does not exist; give image/video files or folders")
    return found


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS


def _resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): short side to `size`, centre crop."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[y0 : y0 + size, x0 : x0 + size])


def rgb_u8_to_cache(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """uint8 (S, S, 3) RGB -> (L uint8 (S, S), ab uint8 (2, S, S), 99th percentile chroma)."""
    from bttf.color import rgb_to_lab

    t = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    lab = rgb_to_lab(t)
    L = lab[0].mul(L_SCALE).round_().clamp_(0, 255).to(torch.uint8).numpy()
    ab = lab[1:].add(AB_OFFSET).round_().clamp_(0, 255).to(torch.uint8).numpy()
    chroma = torch.linalg.vector_norm(lab[1:, ::4, ::4].reshape(2, -1), dim=0)
    return L, ab, float(torch.quantile(chroma, 0.99))


def _split_of(digest: str, seed: int, val_fraction: float) -> float:
    h = hashlib.sha1(f"{seed}:{digest}".encode()).hexdigest()
    return int(h[:12], 16) / float(1 << 48)


def _load_image(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    import cv2

    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        return None, digest
    return _resize_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size), digest


def _video_digest(path: Path) -> str:
    h = hashlib.sha1(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(4 << 20))
    return h.hexdigest()


def _video_frames(
    path: Path, cfg: PrepareConfig, summary: PrepareSummary
) -> Iterator[tuple[int, np.ndarray]]:
    """Every `frame_step`-th frame of a colour video, minus near-duplicates of the last kept one."""
    import av
    import cv2

    last: np.ndarray | None = None
    kept = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i % cfg.frame_step:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            thumb = cv2.resize(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA
            ).astype(np.float32)
            if last is not None and float(np.abs(thumb - last).mean()) < cfg.dup_threshold:
                summary.duplicate_frames += 1
                continue
            last = thumb
            yield i, _resize_crop(rgb, cfg.size)
            kept += 1
            if kept >= cfg.max_frames_per_video:
                break


class _NpyWriter:
    """Appends uint8 rows to a raw file; `finish` turns it into a .npy of the final shape."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        self.path, self.row_shape, self.n = path, row_shape, 0
        self.raw = path.with_suffix(".raw")
        self.f = open(self.raw, "wb")

    def append(self, row: np.ndarray) -> None:
        assert row.shape == self.row_shape and row.dtype == np.uint8
        self.f.write(np.ascontiguousarray(row).tobytes())
        self.n += 1

    def finish(self) -> None:
        self.f.close()
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.n, *self.row_shape)}
        tmp = self.path.with_suffix(".npy.tmp")
        with open(tmp, "wb") as out, open(self.raw, "rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 16 << 20)
        os.replace(tmp, self.path)
        self.raw.unlink()

    def abort(self) -> None:
        self.f.close()
        self.raw.unlink(missing_ok=True)


def prepare(cfg: PrepareConfig, progress: ProgressFn | None = None) -> PrepareSummary:
    """Build a Lab cache from images and colour videos (see the module docstring).

    Unreadable and grayscale files are skipped and counted; an input with no usable colour image
    raises BadInputError. Reproducible: the same files and seed give the same cache.
    """
    if cfg.size < 16:
        raise BadInputError(f"cache size {cfg.size} is too small; use at least 16 (e.g. 256)")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise BadInputError(f"val fraction {cfg.val_fraction} must be in [0, 1)")
    out = Path(cfg.out)
    if (out / "index.json").exists() and not cfg.overwrite:
        raise OutputExistsError(f"{out} already holds a cache; pass --overwrite to rebuild it")
    media = find_media(cfg.inputs)
    if not media:
        raise BadInputError(
            f"no images or videos found in {', '.join(map(str, cfg.inputs))}; "
            f"supported: {', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))}"
        )
    out.mkdir(parents=True, exist_ok=True)
    s = cfg.size
    summary = PrepareSummary(cache=out, size=s)
    wl, wab = _NpyWriter(out / "L.npy", (s, s)), _NpyWriter(out / "ab.npy", (2, s, s))
    items: list[dict] = []
    u_values: list[float] = []
    images = [(f, r) for f, r in media if not is_video(f)]
    videos = [(f, r) for f, r in media if is_video(f)]
    total = len(media)
    done = 0

    def add(rgb: np.ndarray, name: str, source: str, frame: int | None, digest: str) -> None:
        L, ab, chroma = rgb_u8_to_cache(rgb)
        if chroma < cfg.gray_threshold:
            summary.grayscale += 1
            summary.skipped_files.append(f"{name}: grayscale")
            return
        u = _split_of(digest, cfg.seed, cfg.val_fraction)
        wl.append(L)
        wab.append(ab)
        u_values.append(u)
        items.append(
            {
                "name": name,
                "source": source,
                "frame": frame,
                "split": "val" if u < cfg.val_fraction else "train",
            }
        )

    def load(fr: tuple[Path, Path]):
        try:
            return _load_image(fr[0], s)
        except Exception as e:  # noqa: BLE001 - cv2.error, OSError...: skip the file, count it
            log.warning("cannot read %s: %s", fr[0], e)
            return None, ""

    workers = cfg.workers or min(4, os.cpu_count() or 1)
    try:
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            for (f, root), (rgb, digest) in zip(images, pool.map(load, images)):
                done += 1
                name = f.relative_to(root).as_posix()
                if rgb is None:
                    summary.unreadable += 1
                    summary.skipped_files.append(f"{name}: unreadable")
                    log.warning("skipping unreadable image %s", f)
                else:
                    summary.files += 1
                    add(rgb, name, str(root), None, digest)
                if progress:
                    progress("prepare", done, total)
        for f, root in videos:
            done += 1
            name = f.relative_to(root).as_posix()
            try:
                digest = _video_digest(f)
                n_before = len(items) + summary.grayscale
                for i, rgb in _video_frames(f, cfg, summary):
                    add(rgb, name, str(root), i, digest)
                if len(items) + summary.grayscale == n_before:
                    raise ValueError("no frames decoded")
                summary.videos += 1
            except Exception as e:  # noqa: BLE001 - any decoder failure: skip the file, count it
                summary.unreadable += 1
                summary.skipped_files.append(f"{name}: unreadable ({type(e).__name__})")
                log.warning("skipping unreadable video %s: %s", f, e)
            if progress:
                progress("prepare", done, total)
        if not items:
            raise BadInputError(
                f"no usable colour images in {', '.join(map(str, cfg.inputs))} "
                f"({summary.unreadable} unreadable, {summary.grayscale} grayscale); "
                "training needs colour photographs or videos"
            )
        # A tiny set must still validate on something: move the most "val-like" file there.
        if cfg.val_fraction > 0 and not any(it["split"] == "val" for it in items):
            sources = {(it["source"], it["name"]) for it in items}
            if len(sources) >= 2:
                k = int(np.argmin(u_values))
                key = (items[k]["source"], items[k]["name"])
                for it in items:
                    if (it["source"], it["name"]) == key:
                        it["split"] = "val"
        wl.finish()
        wab.finish()
    except BaseException:
        wl.abort()
        wab.abort()
        raise
    summary.val = sum(it["split"] == "val" for it in items)
    summary.train = len(items) - summary.val
    index = {
        "version": CACHE_VERSION,
        "size": s,
        "seed": cfg.seed,
        "inputs": sorted(str(Path(p).resolve()) for p in cfg.inputs),
        "val_fraction": cfg.val_fraction,
        "items": items,
        "summary": summary.to_dict(),
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    log.info("cache %s: %d train, %d val", out, summary.train, summary.val)
    return summary


def is_cache(path: Path) -> bool:
    return (Path(path) / "index.json").is_file() and (Path(path) / "L.npy").is_file()


class LabCache:
    """A prepared cache opened read-only and memory-mapped."""

    def __init__(self, path: Path):
        path = Path(path)
        if not is_cache(path):
            raise BadInputError(f"{path} is not a bttf cache (no index.json); run `bttf prepare`")
        self.path = path
        self.index = json.loads((path / "index.json").read_text())
        if self.index.get("version") != CACHE_VERSION:
            raise BadInputError(
                f"{path}: cache version {self.index.get('version')} is not "
                f"{CACHE_VERSION}; rebuild it with `bttf prepare --overwrite`"
            )
        self.size: int = int(self.index["size"])
        self.items: list[dict] = self.index["items"]
        self.L = np.load(path / "L.npy", mmap_mode="r")
        self.ab = np.load(path / "ab.npy", mmap_mode="r")
        if len(self.L) != len(self.items) or len(self.ab) != len(self.items):
            raise BadInputError(f"{path}: arrays and index disagree; rebuild the cache")

    def __len__(self) -> int:
        return len(self.items)

    def indices(self, split: str) -> np.ndarray:
        """Row numbers of `split` ("train", "val" or "all")."""
        if split == "all":
            return np.arange(len(self.items))
        return np.array([i for i, it in enumerate(self.items) if it["split"] == split], np.int64)

    def read(self, rows: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 L (B, S, S) and ab (B, 2, S, S) for `rows` (sorted reads are faster on disk)."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        srt = rows[order]
        return np.asarray(self.L[srt])[inv], np.asarray(self.ab[srt])[inv]

    def lab(self, rows: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float L (B, 1, S, S) in [0, 100] and ab (B, 2, S, S) in Lab units."""
        L, ab = self.read(rows)
        return decode_l(torch.from_numpy(L)).unsqueeze(1), decode_ab(torch.from_numpy(ab))


def decode_l(L_u8: torch.Tensor) -> torch.Tensor:
    return L_u8.float().div_(L_SCALE)


def decode_ab(ab_u8: torch.Tensor) -> torch.Tensor:
    return ab_u8.float().sub_(AB_OFFSET)


@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation, one batched `grid_sample` for crop + resize + flip."""

    flip: bool = True
    scale: tuple[float, float] = (0.3, 1.0)  # crop area as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 8.0  # +- L units
    contrast: float = 0.2  # factor in [1 - c, 1 + c] around the image mean


def augment_batch(
    L_u8: torch.Tensor,
    ab_u8: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    aug: Augment | None = Augment(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 L (B, S, S) and ab (B, 2, S, S) -> float L (B, 1, s, s) in [0, 100], ab (B, 2, s, s).

    Random resized crop (area `scale`, aspect `ratio`) and horizontal flip on both, brightness and
    contrast jitter on L only. `aug=None`: a plain resize. All randomness comes from `generator`,
    so a batch is a function of the generator's seed.
    """
    B, S = L_u8.shape[0], L_u8.shape[-1]
    lab = torch.cat([decode_l(L_u8).unsqueeze(1), decode_ab(ab_u8)], 1)
    if aug is None:
        lab = F.interpolate(lab, size=(out_size, out_size), mode="area") if S != out_size else lab
        return lab[:, :1].contiguous(), lab[:, 1:].contiguous()
    g = generator
    u = torch.rand(B, 7, generator=g, dtype=torch.float64)
    area = aug.scale[0] + (aug.scale[1] - aug.scale[0]) * u[:, 0]
    logr = math.log(aug.ratio[0]) + (math.log(aug.ratio[1]) - math.log(aug.ratio[0])) * u[:, 1]
    r = torch.exp(logr)
    sx = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
    sy = torch.sqrt(area / r).clamp(max=1.0)
    tx = (1 - sx) * (2 * u[:, 2] - 1)
    ty = (1 - sy) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if aug.flip else torch.ones(B, dtype=u.dtype)
    theta = torch.zeros(B, 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = (sx * flip).float()
    theta[:, 0, 2] = tx.float()
    theta[:, 1, 1] = sy.float()
    theta[:, 1, 2] = ty.float()
    # A crop much larger than the output aliases under bilinear sampling: halve it first.
    if S * float(torch.minimum(sx, sy).min()) >= 2 * out_size:
        lab = F.avg_pool2d(lab, 2)
    grid = F.affine_grid(theta, [B, 3, out_size, out_size], align_corners=False)
    lab = F.grid_sample(lab, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    L, ab = lab[:, :1], lab[:, 1:]
    if aug.contrast or aug.brightness:
        c = 1 + aug.contrast * (2 * u[:, 5:6].float() - 1)
        b = aug.brightness * (2 * u[:, 6:7].float() - 1)
        mean = L.mean(dim=(2, 3), keepdim=True)
        L = ((L - mean) * c.view(B, 1, 1, 1) + mean + b.view(B, 1, 1, 1)).clamp_(0, 100)
    return L.contiguous(), ab.contiguous()
