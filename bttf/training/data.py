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
from bttf.files import atomic_output, write_atomic
from bttf.pipeline.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, decode_image, is_video_path

log = logging.getLogger(__name__)

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

    def __post_init__(self) -> None:
        """Every check of the options: BadInputError, one line."""
        if self.size < 16:
            raise BadInputError(f"cache size {self.size} is too small; use at least 16 (e.g. 256)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise BadInputError(f"val fraction {self.val_fraction} must be in [0, 1)")
        if self.frame_step < 1:
            raise BadInputError(f"--frame-step {self.frame_step} must be at least 1")
        if self.workers < 0:
            raise BadInputError(f"--workers {self.workers} must be 0 or more")


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
                hidden = any(part.startswith(".") for part in f.relative_to(p).parts)
                if (
                    f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
                    and not hidden
                ):
                    found.append((f, p))
        else:
            raise BadInputError(f"{p} does not exist; give image/video files or folders")
    return found


def is_video(path: Path) -> bool:
    return is_video_path(path)


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


def load_image(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    """A photo as uint8 RGB (size, size, 3) (None when unreadable) and the SHA-1 of its bytes."""
    import cv2

    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    try:
        bgr = decode_image(data, path, cv2.IMREAD_COLOR)
    except BadInputError:
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
        self.f = open(self.raw, "wb")  # noqa: SIM115 - closed by finish() or abort()

    def append(self, row: np.ndarray) -> None:
        assert row.shape == self.row_shape and row.dtype == np.uint8
        self.f.write(np.ascontiguousarray(row).tobytes())
        self.n += 1

    def finish(self) -> None:
        self.f.close()
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.n, *self.row_shape)}
        with atomic_output(self.path) as tmp, open(tmp, "wb") as out, open(self.raw, "rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 16 << 20)
        self.raw.unlink()

    def abort(self) -> None:
        self.f.close()
        self.raw.unlink(missing_ok=True)


def _ensure_val(items: list[dict], u_values: list[float]) -> None:
    """A tiny set must still validate on something: the most "val-like" file goes there."""
    if any(it["split"] == "val" for it in items):
        return
    if len({(it["source"], it["name"]) for it in items}) < 2:
        return
    k = int(np.argmin(u_values))
    key = (items[k]["source"], items[k]["name"])
    for it in items:
        if (it["source"], it["name"]) == key:
            it["split"] = "val"


def _write_index(out: Path, cfg: PrepareConfig, items: list[dict], summary: PrepareSummary) -> None:
    """index.json, written atomically (its presence marks a complete cache)."""
    index = {
        "version": CACHE_VERSION,
        "size": cfg.size,
        "seed": cfg.seed,
        "inputs": sorted(str(Path(p).resolve()) for p in cfg.inputs),
        "val_fraction": cfg.val_fraction,
        "items": items,
        "summary": summary.to_dict(),
    }
    write_atomic(out / "index.json", json.dumps(index, indent=1))


def prepare(cfg: PrepareConfig, progress: ProgressFn | None = None) -> PrepareSummary:
    """Build a Lab cache from images and colour videos (see the module docstring).

    Unreadable and grayscale files are skipped and counted; an input with no usable colour image
    raises BadInputError. Reproducible: the same files and seed give the same cache.
    """
    out = Path(cfg.out)
    if (out / "index.json").exists() and not cfg.overwrite:
        raise OutputExistsError(f"{out} already holds a cache; pass --overwrite to rebuild it")
    media = find_media(cfg.inputs)
    if not media:
        raise BadInputError(
            f"no images or videos found in {', '.join(map(str, cfg.inputs))}; "
            f"supported: {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}"
        )
    made = [d for d in (out, *out.parents) if not d.exists()]  # deepest first; removed on failure
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
            return load_image(fr[0], s)
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
        if cfg.val_fraction > 0:
            _ensure_val(items, u_values)
        wl.finish()
        wab.finish()
    except BaseException:
        wl.abort()
        wab.abort()
        for d in made:  # the folders this call made, where nothing else was put in them
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    summary.val = sum(it["split"] == "val" for it in items)
    summary.train = len(items) - summary.val
    _write_index(out, cfg, items, summary)
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
    film: float = 0.0  # share of images whose L is degraded like an old film (`film_degrade`)


def make_augment(option: bool | str | None) -> Augment | None:
    """`TrainConfig.augment` -> an `Augment`: False/None/"none": off; True/"standard": crops, flips,
    jitter; "film": the same plus `film_degrade` on 80% of the images (the target stays clean)."""
    if option is None or option is False or option == "none":
        return None
    if option is True or option == "standard":
        return Augment()
    if option == "film":
        return Augment(film=0.8)
    raise ValueError(f"unknown augmentation {option!r} (none, standard, film)")


def _u(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


_DCT8 = torch.tensor(
    [
        [
            (math.sqrt(1 / 8) if k == 0 else math.sqrt(2 / 8))
            * math.cos((2 * n + 1) * k * math.pi / 16)
            for n in range(8)
        ]
        for k in range(8)
    ],
    dtype=torch.float32,
)
# The JPEG luminance quantization table (ITU-T T.81, Annex K), at quality 50.
_JPEG_Q = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def jpeg_blocks(L: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """8x8 block-DCT quantization of L (B, 1, H, W) in [0, 100] with the JPEG table x `scale` (B,)."""
    B, _, H, W = L.shape
    h, w = H - H % 8, W - W % 8
    x = L[:, 0, :h, :w] * 2.55 - 128  # 0-255 units, as JPEG sees them
    blk = x.reshape(B, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    D = _DCT8
    c = D @ blk @ D.T
    q = (_JPEG_Q * scale.view(B, 1, 1, 1, 1)).clamp(min=1)
    c = torch.round(c / q) * q
    y = (D.T @ c @ D).permute(0, 1, 3, 2, 4).reshape(B, h, w)
    out = L.clone()
    out[:, 0, :h, :w] = (y + 128) / 2.55
    return out


def gaussian_blur(L: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of L (B, 1, H, W); sigma (B,) in pixels (0: unchanged)."""
    B = L.shape[0]
    r = 3
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma.clamp(min=1e-3).view(B, 1) ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    x = F.pad(L.transpose(0, 1), (r, r, r, r), mode="reflect")  # (1, B, H+6, W+6)
    x = F.conv2d(x, k.view(B, 1, 1, -1), groups=B)
    x = F.conv2d(x, k.view(B, 1, -1, 1), groups=B)
    return x.transpose(0, 1)


def film_degrade(L: torch.Tensor, generator: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Make clean L (B, 1, H, W) in [0, 100] look like a frame of an old, digitized film.

    Each image is degraded with probability `p`; each effect is drawn on its own: contrast and gamma
    (faded or crushed prints), vignetting, uneven exposure and flicker, grain (fine and clumped),
    vertical scratches and dust, softness (Gaussian blur) and JPEG/MPEG-like 8x8 blocking. Only the
    input is touched: the colour target stays clean. All randomness comes from `generator`.
    """
    g = generator
    B, _, H, W = L.shape
    on = (_u(g, B) < p).float().view(B, 1, 1, 1)
    if float(on.sum()) == 0:
        return L
    u = _u(g, B, 16)
    x = L.clone()

    def mask(i: int, prob: float) -> torch.Tensor:
        return (u[:, i] < prob).float().view(B, 1, 1, 1)

    # Contrast around the mean (0.55-1.3) and gamma (0.7-1.5).
    mean = x.mean(dim=(2, 3), keepdim=True)
    c = (0.55 + 0.75 * u[:, 1]).view(B, 1, 1, 1)
    x = torch.lerp(x, (x - mean) * c + mean, mask(0, 0.7)).clamp(0, 100)
    gamma = torch.exp(math.log(0.7) + (math.log(1.5) - math.log(0.7)) * u[:, 3]).view(B, 1, 1, 1)
    x = torch.lerp(x, 100 * (x / 100).clamp(min=0) ** gamma, mask(2, 0.6))
    # Vignetting: darker corners, up to 45%.
    yy = torch.linspace(-1, 1, H).view(1, 1, H, 1)
    xx = torch.linspace(-1, 1, W).view(1, 1, 1, W)
    r2 = (yy**2 + xx**2) / 2
    v = (0.45 * u[:, 5]).view(B, 1, 1, 1)
    x = torch.lerp(x, x * (1 - v * r2**1.5), mask(4, 0.5))
    # Flicker (a global gain and offset) and uneven exposure (a smooth low-frequency field).
    gain = (0.85 + 0.3 * u[:, 7]).view(B, 1, 1, 1)
    off = (16 * u[:, 8] - 8).view(B, 1, 1, 1)
    x = torch.lerp(x, x * gain + off, mask(6, 0.6))
    field = F.interpolate(
        torch.randn(B, 1, 3, 3, generator=g), size=(H, W), mode="bicubic", align_corners=False
    )
    x = x + mask(9, 0.4) * field * 4
    # Grain: fine noise plus noise clumped at half resolution, 1-7 L units.
    sig = (1 + 6 * u[:, 11]).view(B, 1, 1, 1)
    fine = torch.randn(B, 1, H, W, generator=g)
    coarse = F.interpolate(
        torch.randn(B, 1, (H + 1) // 2, (W + 1) // 2, generator=g),
        size=(H, W),
        mode="bilinear",
        align_corners=False,
    )
    x = x + mask(10, 0.7) * sig * (0.6 * fine + 0.8 * coarse)
    # Scratches (thin vertical lines, bright or dark) and dust (small dark or white specks).
    sc = torch.zeros(B, 1, 1, W)
    n_s = (_u(g, B) * 4).long()
    for b in torch.nonzero(mask(12, 0.35).view(B) * on.view(B)).flatten().tolist():
        for _ in range(int(n_s[b]) + 1):
            col = int(_u(g, 1) * W)
            sc[b, 0, 0, col : col + 1 + int(_u(g, 1) * 2)] = float(_u(g, 1) * 60 - 30)
    x = x + sc
    dust = (torch.rand(B, 1, H, W, generator=g) < 0.0015 * u[:, 13].view(B, 1, 1, 1)).float()
    dust = F.max_pool2d(dust, 3, stride=1, padding=1) * mask(14, 0.4)
    sign = torch.where(torch.rand(B, 1, H, W, generator=g) < 0.5, -1.0, 1.0)
    x = torch.where(dust > 0, 50 + 50 * sign, x)
    x = x.clamp(0, 100)
    # Softness, then blocking (a digitized, compressed copy).
    sigma = 0.4 + 1.4 * u[:, 15]
    x = torch.lerp(
        x, gaussian_blur(x, sigma), (torch.rand(B, generator=g) < 0.6).float().view(B, 1, 1, 1)
    )
    jq = 0.5 + 3.5 * torch.rand(B, generator=g)
    x = torch.lerp(
        x, jpeg_blocks(x, jq), (torch.rand(B, generator=g) < 0.4).float().view(B, 1, 1, 1)
    )
    x = x.clamp(0, 100)
    return torch.lerp(L, x, on)


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
    if aug.film > 0:
        L = film_degrade(L, g, aug.film)
    return L.contiguous(), ab.contiguous()
