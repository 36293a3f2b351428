"""`bttf eval`: score colorizers against the truth, next to the gray baseline (ab = 0).

Per model: PSNR and SSIM of the RGB result, colorfulness (Hasler & Süsstrunk 2003) of the result
(the truth's is reported alongside), and the AuC of the per-pixel ab error CDF over thresholds
0..150 (Zhang et al. 2016), raw and class-rebalanced by a bin prior. Every number is the mean
over images. The functions are those of `bttf.metrics.image`, so training validation and
`eval` agree.

The rebalanced AuC weighs every row, the gray baseline included, by one prior: the one estimated
from the evaluated images themselves, so that the rows of a table are comparable (a checkpoint's
own training prior would give each model a different yardstick).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bttf.errors import BadInputError
from bttf.training import data as D

ProgressFn = Callable[[str, int, int], None]  # (what, done, total)
METRICS = ("psnr", "ssim", "colorfulness", "auc", "auc_rebal")


class MetricAccumulator:
    """Means over images of PSNR, SSIM, colorfulness, AuC and rebalanced AuC.

    `bin_weights` (313,): rebalancing weights for the AuC, `rebalance_weights(prior)` (None: no
    rebalanced AuC). add(L (N, 1, H, W), pred_ab (N, 2, H, W), true_ab (N, 2, H, W)), Lab units.
    """

    def __init__(self, bin_weights: torch.Tensor | None = None):
        self.bin_weights = bin_weights
        self.sums = {m: 0.0 for m in (*METRICS, "colorfulness_truth")}
        self.n = 0
        self.exact = 0  # images predicted exactly (PSNR = inf)

    def add(self, L: torch.Tensor, pred_ab: torch.Tensor, true_ab: torch.Tensor) -> None:
        from bttf.color import lab_to_rgb
        from bttf.metrics import image as M

        L, pred_ab, true_ab = L.float().cpu(), pred_ab.float().cpu(), true_ab.float().cpu()
        pred_rgb = lab_to_rgb(torch.cat([L, pred_ab], 1))
        true_rgb = lab_to_rgb(torch.cat([L, true_ab], 1))
        n = len(L)  # each metric is the mean over the batch: weight it by the batch size
        for i in range(n):  # PSNR per image: an exact one (inf) is counted apart, see result()
            v = M.psnr(pred_rgb[i : i + 1], true_rgb[i : i + 1])
            if math.isinf(v):
                self.exact += 1
            else:
                self.sums["psnr"] += v
        self.sums["ssim"] += n * M.ssim(pred_rgb, true_rgb)
        self.sums["colorfulness"] += n * M.colorfulness(pred_rgb)
        self.sums["colorfulness_truth"] += n * M.colorfulness(true_rgb)
        self.sums["auc"] += n * M.auc_ab(pred_ab, true_ab)
        if self.bin_weights is not None:
            w = M.pixel_weights(true_ab, self.bin_weights)
            self.sums["auc_rebal"] += n * M.auc_ab(pred_ab, true_ab, weights=w)
        self.n += n

    def result(self) -> dict[str, float]:
        """Means over images. PSNR is the mean over the images not predicted exactly (inf when
        all are); `exact` counts those (a grayscale truth scored by the gray baseline)."""
        out = {k: v / self.n if self.n else math.nan for k, v in self.sums.items()}
        finite = self.n - self.exact
        out["psnr"] = self.sums["psnr"] / finite if finite else (math.inf if self.n else math.nan)
        out["exact"] = float(self.exact)
        if self.bin_weights is None:
            out["auc_rebal"] = math.nan
        return out


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` scores, and on what."""

    inputs: tuple[Path, ...]  # a cache from `bttf prepare`, or image files / folders
    models: tuple[str, ...] = ()  # registered names (their shipped / official weights)
    weights: tuple[Path, ...] = ()  # checkpoints (`.safetensors` name their model)
    split: str = "val"  # for a cache: "val", "train" or "all"
    size: int = 256  # raw images: short side resized to this, centre-cropped square
    limit: int | None = None  # at most this many images
    batch_size: int = 8
    device: str = "auto"
    temperature: float = 0.38
    unsure: tuple[float, float] | str | None = "auto"  # `Colorizer`'s: the model's default
    saturation: float | str = "auto"  # `Colorizer`'s: the model's default
    gray_baseline: bool = True
    # the short side the model sees (as `bttf colorize --render-size`): L resized to it, ab
    # brought back to the image's size; None = the image's own size
    render_size: int | None = None
    by_folder: bool = False  # also a report per folder (a cache: the first part of each name)

    def __post_init__(self) -> None:
        """Every check of the options: BadInputError (UnknownModelError for a model), one line."""
        from bttf.models import get_spec

        for name in self.models:
            get_spec(name)
        if not self.models and not self.weights and not self.gray_baseline:
            raise BadInputError("nothing to evaluate: give --model or --weights")
        if self.split not in ("train", "val", "all"):
            raise BadInputError(f"split {self.split!r}: choose train, val or all")
        if self.size < 16:
            raise BadInputError(f"--size {self.size} must be at least 16")
        if self.limit is not None and self.limit < 1:
            raise BadInputError(f"--limit {self.limit} must be at least 1")
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size {self.batch_size} must be at least 1")
        if not self.temperature > 0:
            raise BadInputError(f"--temperature {self.temperature} must be > 0")
        if self.render_size is not None and self.render_size < 16:
            raise BadInputError(f"--render-size {self.render_size} must be at least 16")


@dataclass
class EvalRow:
    name: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            **{k: _json_float(v) for k, v in self.metrics.items()},
        }


@dataclass
class EvalReport:
    images: int
    size: int
    rows: list[EvalRow]
    colorfulness_truth: float
    render_size: int | None = None
    folders: dict[str, EvalReport] = field(default_factory=dict)  # with `by_folder`

    def to_dict(self) -> dict:
        out = {
            "images": self.images,
            "size": self.size,
            "render_size": self.render_size,
            "colorfulness_truth": _json_float(self.colorfulness_truth),
            "results": [r.to_dict() for r in self.rows],
        }
        if self.folders:
            out["folders"] = {k: v.to_dict() for k, v in self.folders.items()}
        return out


def _json_float(v: float):
    """JSON has no inf or NaN: inf as the string "inf", NaN as null."""
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def load_eval_images(cfg: EvalConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 L (N, S, S) and ab (N, 2, S, S) of the images to score (grayscale ones included),
    and each image's folder (relative to its input; "." at its top)."""
    if len(cfg.inputs) == 1 and D.is_cache(cfg.inputs[0]):
        cache = D.LabCache(cfg.inputs[0])
        rows = cache.indices(cfg.split)
        if len(rows) == 0:
            raise BadInputError(f"{cfg.inputs[0]} has no {cfg.split!r} images; try --split all")
        rows = rows[: cfg.limit] if cfg.limit else rows
        L, ab = cache.read(rows)
        folders = [str(Path(cache.items[r]["name"]).parent) for r in rows]
        return torch.from_numpy(L), torch.from_numpy(ab), folders
    media = [(f, root) for f, root in D.find_media(cfg.inputs) if not D.is_video(f)]
    if cfg.limit:
        media = media[: cfg.limit]
    Ls, abs_, folders = [], [], []
    for f, root in media:
        try:
            rgb, _ = D.load_image(f, cfg.size)
        except Exception:  # noqa: BLE001 - unreadable: not scored
            rgb = None
        if rgb is None:
            continue
        L, ab, _ = D.rgb_u8_to_cache(rgb)
        Ls.append(L)
        abs_.append(ab)
        folders.append(str(f.relative_to(root).parent))
    if not Ls:
        raise BadInputError(f"no readable images in {', '.join(map(str, cfg.inputs))}")
    return torch.from_numpy(np.stack(Ls)), torch.from_numpy(np.stack(abs_)), folders


@torch.no_grad()
def _score(
    predict: Callable[[torch.Tensor], torch.Tensor],
    L_u8: torch.Tensor,
    ab_u8: torch.Tensor,
    prior: torch.Tensor | None,
    batch: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    from bttf.models.bins import rebalance_weights

    acc = MetricAccumulator(None if prior is None else rebalance_weights(prior, lam=0.5))
    for i in range(0, len(L_u8), batch):
        L = D.decode_l(L_u8[i : i + batch]).unsqueeze(1)
        ab = D.decode_ab(ab_u8[i : i + batch])
        acc.add(L, predict(L), ab)
        if progress:
            progress(min(len(L_u8), i + batch))
    return acc.result()


def _model_predictor(
    colorizer, device: torch.device, render_size: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """L -> ab the way `bttf colorize` runs the model, at `render_size` (None: the images' own
    short side)."""
    from bttf.pipeline.stages import colorize_l

    def predict(L: torch.Tensor) -> torch.Tensor:
        short = render_size or min(L.shape[-2:])
        return colorize_l(colorizer, L, device, short).float().cpu()

    return predict


def evaluate(cfg: EvalConfig, progress: ProgressFn | None = None) -> EvalReport:
    """Score every model of `cfg` (and the gray baseline) on the images of `cfg.inputs`; with
    `cfg.by_folder`, on each folder's images too (`EvalReport.folders`)."""
    from bttf.runtime import resolve_device

    device = resolve_device(cfg.device)
    L_u8, ab_u8, folders = load_eval_images(cfg)
    report = _evaluate_on(cfg, device, L_u8, ab_u8, progress)
    if cfg.by_folder:
        for folder in sorted(set(folders)):
            idx = torch.tensor([i for i, f in enumerate(folders) if f == folder])
            report.folders[folder] = _evaluate_on(cfg, device, L_u8[idx], ab_u8[idx])
    return report


def _evaluate_on(
    cfg: EvalConfig,
    device: torch.device,
    L_u8: torch.Tensor,
    ab_u8: torch.Tensor,
    progress: ProgressFn | None = None,
) -> EvalReport:
    """`evaluate` on these images: every model and the gray baseline, rebalanced by their prior."""
    from bttf.models import Colorizer, create_model, get_spec, load_model, official_weights
    from bttf.models.bins import estimate_prior

    # every 4th pixel is plenty for a histogram and 16x cheaper
    image_prior = estimate_prior(
        D.decode_ab(ab_u8[i : i + 64, :, ::4, ::4].contiguous()) for i in range(0, len(ab_u8), 64)
    )
    n = len(L_u8)
    rows: list[EvalRow] = []
    jobs: list[tuple[str, str, Callable[[], tuple]]] = []
    for name in cfg.models:
        spec = get_spec(name)
        if official_weights(spec.name) is None:  # a released file not downloaded: says which
            raise BadInputError(
                f"{spec.name} has no installed weights to score; give its "
                "weights file with --weights"
            )
        jobs.append(
            (spec.name, "shipped", lambda s=spec: (create_model(s.name, pretrained=True), s, {}))
        )
    for w in cfg.weights:
        w = Path(w)
        jobs.append(
            (
                "",
                f"{w.parent.name}/{w.name}" if w.parent.name else w.name,
                lambda w=w: load_model(w),
            )
        )
    total = len(jobs) + int(cfg.gray_baseline)
    k = 0
    if cfg.gray_baseline:
        m = _score(
            lambda L: torch.zeros(L.shape[0], 2, *L.shape[-2:]),
            L_u8,
            ab_u8,
            image_prior,
            cfg.batch_size,
        )
        rows.append(EvalRow("gray", "ab = 0", m))
        k += 1
        if progress:
            progress("gray", k, total)
    truth = None
    for label, source, build in jobs:
        model, spec, _meta = build()
        col = Colorizer(
            model.to(device).eval(),
            spec,
            temperature=cfg.temperature,
            unsure=cfg.unsure,
            saturation=cfg.saturation,
        )
        name = spec.name
        m = _score(
            _model_predictor(col, device, cfg.render_size), L_u8, ab_u8, image_prior, cfg.batch_size
        )
        rows.append(EvalRow(name, source, m))
        k += 1
        if progress:
            progress(name, k, total)
    truth = rows[0].metrics.get("colorfulness_truth", math.nan) if rows else math.nan
    for r in rows:
        r.metrics.pop("colorfulness_truth", None)
    return EvalReport(
        images=n,
        size=int(L_u8.shape[-1]),
        rows=rows,
        colorfulness_truth=truth,
        render_size=cfg.render_size,
    )
