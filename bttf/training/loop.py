"""The training loop: `train(TrainConfig)` -> a run folder usable by `bttf colorize --weights`.

RUN_DIR holds `last.safetensors`, `best.safetensors` (weights + metadata: model, config, bin prior,
step, validation metrics), `state.pt` (optimizer, schedule, step, RNG states: plain tensors and
dicts, loadable with `torch.load(weights_only=True)`), `metrics.csv`, `loss.png` and
`samples/epoch_N.png` (gray | prediction | truth for a fixed validation set).

metrics.csv has one row per step: step, epoch (fractional), loss (the training objective; for
"gan" adversarial + 100 L1), lr, images_per_s (validation excluded), and on validation steps
val_loss (the criterion on the validation images; L1 for "gan"), val_psnr, val_ssim,
val_colorfulness, val_auc, val_auc_rebal (see `bttf.training.evaluate`; the rebalancing prior is
the training data's). Validation runs on the first `val_images` validation images of the cache,
resized to `image_size`, decoded as `bttf colorize` decodes (annealed mean, T = 0.38).

Determinism: the data order is a function of (seed, epoch) (a `DistributedSampler`, also with one
process) and the augmentation of a batch a function of (seed, step, rank), so `resume=True`
continues a killed run exactly: same step counter and, on the same machine, the same losses.

Multi-GPU: under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set) the model is wrapped in DDP,
`batch_size` is per process, and only rank 0 validates and writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bttf.errors import BadInputError, OutputExistsError
from bttf.training import data as D
from bttf.training.losses import GanObjective, build_loss, resolve_loss

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("loss", "psnr", "ssim", "colorfulness", "auc", "auc_rebal")
CSV_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", *(f"val_{m}" for m in METRIC_COLUMNS))
HIGHER_IS_BETTER = {
    "loss": False,
    "psnr": True,
    "ssim": True,
    "auc": True,
    "auc_rebal": True,
    "colorfulness": True,
}
OFFICIAL_INIT = ("pretrained", "official", "shipped")
_ENCODER_RE = re.compile(
    r"^(encoder|backbone|stem|features|enc\w*|down\w*|layer[1-4]|conv1|bn1|model[1-5])[._]"
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train` needs. `epochs` or `steps` sets the length (steps wins when both)."""

    data: tuple[Path, ...]
    model: str
    out: Path
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # architecture options (cnn-ae variant ...)
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 16  # per process
    image_size: int = 176
    lr: float = 3e-4  # peak, after warm-up; cosine decay to lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW, not on biases and norms
    warmup_steps: int | None = None  # None: 3% of the run, at most 500
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    ema: float = 0.0  # decay of a moving average of the weights, validated and saved (0: off)
    loss: str = "auto"  # see bttf.training.losses
    rebalance_lambda: float = 0.5
    temperature: float = 0.38  # annealed mean when validating a bin model
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True
    seed: int = 0
    workers: int = 1  # background threads preparing batches (0: in the training thread)
    threads: int | None = None  # torch CPU threads (None: the cores this process may use)
    init: str | None = None  # weights file, or "pretrained" for the model's official/shipped ones
    freeze_encoder: bool = False
    unfreeze_at: int | None = None  # epoch (0-based) at which a frozen encoder starts training
    encoder_lr_mult: float | None = None  # None: 0.1 when starting from `init`, else 1
    val_every: int = 0  # 0: at the end of each epoch
    val_unit: str = "steps"  # "steps" or "epochs"
    save_every: int = 0  # steps; 0: at each validation
    val_images: int = 64  # validation images at most (a fixed subset)
    sample_images: int = 6
    best_metric: str = "auc_rebal"
    augment: bool | str = True  # False, True (standard) or "film" (`data.make_augment`)
    resume: bool = False
    overwrite: bool = False
    # For raw inputs, prepared on the fly into out/cache:
    cache_size: int = 256
    val_fraction: float = 0.05


@dataclass
class TrainEvent:
    """What the loop reports to its callback (rank 0 only)."""

    kind: str  # "prepare", "start", "step", "val", "save", "done"
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: float = math.nan
    lr: float = 0.0
    images_per_s: float = 0.0
    eta_s: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    done: int = 0
    total: int = 0


@dataclass
class TrainResult:
    out: Path
    steps: int
    best: Path | None
    last: Path | None
    best_value: float | None
    metrics: dict[str, float]


ProgressFn = Callable[[TrainEvent], None]


# ---------------------------------------------------------------------------------------------
# helpers


def _seed_of(*parts: int) -> int:
    """A 63-bit seed mixing integers (stable across runs and Python versions)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = ((x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def encoder_parameter_names(model: nn.Module) -> set[str]:
    """Names of the encoder's parameters: `model.encoder_parameters()` if the model says, else a
    name-prefix rule (encoder./backbone./stem./layer1-4./model1-5. ...)."""
    names = dict(model.named_parameters())
    fn = getattr(model, "encoder_parameters", None)
    if callable(fn):
        ids = {id(p) for p in fn()}
        return {n for n, p in names.items() if id(p) in ids}
    return {n for n in names if _ENCODER_RE.match(n)}


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["data"] = [str(p) for p in cfg.data]
    d["out"] = str(cfg.out)
    d["model_kwargs"] = dict(cfg.model_kwargs)
    return d


class _Dist:
    """torchrun's environment, or a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.owns_group = False
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and self.world > 1:
            device = f"cuda:{self.local_rank}"
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise BadInputError(f"unknown device {device!r}: {e}") from e
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise BadInputError("--device cuda but no CUDA device is available; use cpu")
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor(
            [x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu"
        )
        dist.all_reduce(t)
        return float(t) / self.world

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _open_data(cfg: TrainConfig, dd: _Dist, progress: ProgressFn | None) -> D.LabCache:
    if len(cfg.data) == 1 and D.is_cache(cfg.data[0]):
        return D.LabCache(cfg.data[0])
    for p in cfg.data:
        if not Path(p).exists():
            raise BadInputError(
                f"{p} does not exist; give a cache from `bttf prepare`, "
                "or image/video files and folders"
            )
        if Path(p).is_dir() and (Path(p) / "index.json").exists() and len(cfg.data) > 1:
            raise BadInputError(f"{p} is a cache: train on one cache, or on raw folders")
    cache_dir = Path(cfg.out) / "cache"
    wanted = sorted(str(Path(p).resolve()) for p in cfg.data)
    if dd.main and D.is_cache(cache_dir):
        index = json.loads((cache_dir / "index.json").read_text())
        if index.get("inputs") != wanted or index.get("size") != cfg.cache_size:
            log.info("%s was prepared from other data or at another size: rebuilding", cache_dir)
            (cache_dir / "index.json").unlink()
    if dd.main and not D.is_cache(cache_dir):
        pcfg = D.PrepareConfig(
            inputs=tuple(Path(p) for p in cfg.data),
            out=cache_dir,
            size=cfg.cache_size,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            overwrite=True,
        )

        def prog(stage: str, done: int, total: int) -> None:
            if progress:
                progress(TrainEvent("prepare", done=done, total=total))

        summary = D.prepare(pcfg, prog)
        log.info(
            "prepared %s: %d train, %d val (%d unreadable, %d grayscale skipped)",
            cache_dir,
            summary.train,
            summary.val,
            summary.unreadable,
            summary.grayscale,
        )
    dd.barrier()
    return D.LabCache(cache_dir)


def estimate_data_prior(
    cache: D.LabCache, rows: np.ndarray, stride: int = 4, chunk: int = 64
) -> torch.Tensor:
    """The bin prior (313,) of the ab values of `rows`, sampled every `stride` pixels."""
    from bttf.models.bins import estimate_prior

    def batches() -> Iterator[torch.Tensor]:
        for i in range(0, len(rows), chunk):
            srt = np.sort(rows[i : i + chunk])
            ab = np.asarray(cache.ab[srt][:, :, ::stride, ::stride])
            yield D.decode_ab(torch.from_numpy(np.ascontiguousarray(ab)))

    return estimate_prior(batches()).float()


class _Batches:
    """Batches for steps [start, total): rows from the sampler of their epoch, augmentation seeded
    by (seed, step, rank). With `workers` > 0, made ahead on a daemon thread (bounded queue)."""

    def __init__(
        self,
        cache: D.LabCache,
        train_rows: np.ndarray,
        cfg: TrainConfig,
        dd: _Dist,
        steps_per_epoch: int,
        start: int,
        total: int,
    ):
        from torch.utils.data import DistributedSampler

        self.cache, self.rows, self.cfg, self.dd = cache, train_rows, cfg, dd
        self.spe, self.start, self.total = steps_per_epoch, start, total
        self.sampler = DistributedSampler(
            range(len(train_rows)),
            num_replicas=dd.world,
            rank=dd.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.aug = D.make_augment(cfg.augment)
        self._epoch, self._order = -1, np.zeros(0, np.int64)
        self._q: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def make(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.spe)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order = np.fromiter(iter(self.sampler), np.int64)
            self._epoch = epoch
        b = self.cfg.batch_size
        rows = self.rows[self._order[i * b : (i + 1) * b]]
        L_u8, ab_u8 = self.cache.read(rows)
        g = torch.Generator().manual_seed(_seed_of(self.cfg.seed, step, self.dd.rank))
        return D.augment_batch(
            torch.from_numpy(L_u8), torch.from_numpy(ab_u8), self.cfg.image_size, g, self.aug
        )

    def _work(self) -> None:
        try:
            for step in range(self.start, self.total):
                item = self.make(step)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised on the training thread
            self._error = e
            self._q.put(None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cfg.workers <= 0:
            for step in range(self.start, self.total):
                yield self.make(step)
            return
        self._q = queue.Queue(maxsize=max(2, 2 * self.cfg.workers))
        self._thread = threading.Thread(target=self._work, name="bttf-batches", daemon=True)
        self._thread.start()
        try:
            for _ in range(self.start, self.total):
                item = self._q.get()
                if item is None:
                    raise self._error  # type: ignore[misc]
                yield item
        finally:
            self._stop.set()
            self._thread.join()


# ---------------------------------------------------------------------------------------------
# validation and outputs


@torch.no_grad()
def validate(
    model: nn.Module,
    spec,
    cache: D.LabCache,
    rows: np.ndarray,
    cfg: TrainConfig,
    criterion: nn.Module,
    bin_weights: torch.Tensor | None,
    device: torch.device,
    samples: int = 0,
) -> tuple[dict[str, float], np.ndarray | None]:
    """Mean validation loss and image metrics on `rows` (centre, resized to image_size), and a
    gray | prediction | truth sample grid (uint8 RGB) of the first `samples` images."""
    from bttf.color import lab_to_rgb
    from bttf.models import Colorizer
    from bttf.training.evaluate import MetricAccumulator

    was_training = model.training
    model.eval()
    colorizer = Colorizer(model, spec, temperature=cfg.temperature)
    acc = MetricAccumulator(bin_weights)
    loss_sum, n = 0.0, 0
    grid: list[np.ndarray] = []
    bs = max(1, cfg.batch_size)
    for i in range(0, len(rows), bs):
        L_u8, ab_u8 = cache.read(rows[i : i + bs])
        L, ab = D.augment_batch(
            torch.from_numpy(L_u8), torch.from_numpy(ab_u8), cfg.image_size, torch.Generator(), None
        )
        L, ab = L.to(device), ab.to(device)
        x = L.contiguous(memory_format=torch.channels_last) if cfg.channels_last else L
        out = colorizer.predict(x)
        loss_sum += float(criterion(out, ab)) * len(L)
        n += len(L)
        pred = colorizer.decode(out, tuple(L.shape[-2:])).float()
        acc.add(L.cpu(), pred.cpu(), ab.cpu())
        if len(grid) < samples:
            k = min(samples - len(grid), len(L))
            gray = lab_to_rgb(torch.cat([L[:k], torch.zeros_like(ab[:k])], 1))
            col = lab_to_rgb(torch.cat([L[:k], pred[:k]], 1))
            tru = lab_to_rgb(torch.cat([L[:k], ab[:k]], 1))
            for j in range(k):
                row = torch.cat([gray[j], col[j], tru[j]], -1)
                grid.append((row.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy())
    model.train(was_training)
    metrics = acc.result()
    metrics["loss"] = loss_sum / max(1, n)
    return metrics, (np.concatenate(grid, 0) if grid else None)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """loss.png: training loss (raw and smoothed) and validation loss / AuC over steps."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        return
    steps = np.array([r["step"] for r in rows if r.get("loss") is not None])
    loss = np.array([r["loss"] for r in rows if r.get("loss") is not None])
    vrows = [r for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    if len(loss):
        ax[0].plot(steps, loss, color="0.75", lw=0.7, label="train (per step)")
        k = max(1, len(loss) // 50)
        if k > 1:
            sm = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax[0].plot(steps[k - 1 :], sm, color="C0", label=f"train (mean of {k})")
    if vrows:
        ax[0].plot(
            [r["step"] for r in vrows],
            [r["val_loss"] for r in vrows],
            "o-",
            color="C1",
            label="validation",
        )
        for key, c in (("val_auc_rebal", "C2"), ("val_auc", "C3")):
            pts = [(r["step"], r[key]) for r in vrows if r.get(key) is not None]
            if pts:
                ax[1].plot(*zip(*pts), "o-", color=c, label=key[4:])
        ax[1].set_ylabel("AuC of ab error (0-150)")
        ax[1].legend()
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("loss")
    ax[0].legend()
    ax[1].set_xlabel("step")
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def read_metrics(csv_path: Path) -> list[dict]:
    """metrics.csv as dicts of floats (None for empty cells)."""
    if not Path(csv_path).exists():
        return []
    out = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return out


def _truncate_metrics(csv_path: Path, step: int) -> None:
    """Drop rows after `step` (a run killed after its last checkpoint logged steps it will redo)."""
    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, csv_path)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.7g}"


# ---------------------------------------------------------------------------------------------
# the loop


def _build_model(cfg: TrainConfig, spec) -> nn.Module:
    from bttf.models import create_model

    kw = dict(cfg.model_kwargs)
    if cfg.init is None:
        try:
            return create_model(spec.name, pretrained=False, **kw)
        except TypeError as e:
            raise BadInputError(f"{spec.name} does not take these options: {e}") from None
    if cfg.init.lower() in OFFICIAL_INIT:
        from bttf.models import WEIGHTS_DIR

        if not spec.shipped or not (WEIGHTS_DIR / spec.shipped).is_file():
            raise BadInputError(
                f"{spec.name} has no installed weights to start from; give "
                "--init FILE (a .safetensors checkpoint or an official .pth)"
            )
        return create_model(spec.name, pretrained=True, **kw)
    path = Path(cfg.init)
    if not path.is_file():
        raise BadInputError(f"--init {path} does not exist; give a weights file or 'pretrained'")
    if path.suffix != ".safetensors":
        from bttf.models.resnet18 import is_imagenet_trunk, load_imagenet_trunk
        from bttf.models.weights import read_weights

        state, _ = read_weights(path)
        if is_imagenet_trunk(state):  # a torchvision ResNet classifier: load its trunk only
            return load_imagenet_trunk(create_model(spec.name, pretrained=False, **kw), state)
    return create_model(spec.name, weights=path, **kw)


def _ema_update(decay: float):
    """AveragedModel's update: an exponential moving average whose decay ramps up as
    (1 + n) / (10 + n) to `decay`, so that the first, near-random weights of a short run do not
    linger in it (a fixed 0.998 keeps 5% of step 1 after 1500 steps)."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # counters (BatchNorm's num_batches_tracked): the latest
            torch._foreach_copy_(averaged, current)

    return update


def _param_groups(model: nn.Module, cfg: TrainConfig, enc_names: set[str]) -> list[dict]:
    mult = (
        cfg.encoder_lr_mult
        if cfg.encoder_lr_mult is not None
        else (0.1 if cfg.init is not None else 1.0)
    )
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        decay = p.ndim > 1
        groups.setdefault((name in enc_names, decay), []).append(p)
    out = []
    for (enc, decay), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        lr = cfg.lr * (mult if enc else 1.0)
        out.append(
            {
                "params": params,
                "lr": lr,
                "base_lr": lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "encoder": enc,
            }
        )
    return out


def _check_config(cfg: TrainConfig, spec) -> None:
    if cfg.batch_size < 1:
        raise BadInputError(f"batch size {cfg.batch_size} must be at least 1")
    if cfg.image_size < spec.stride or cfg.image_size % spec.stride:
        raise BadInputError(
            f"image size {cfg.image_size} must be a multiple of {spec.stride} "
            f"(the stride of {spec.name})"
        )
    if cfg.steps is None and cfg.epochs is None:
        raise BadInputError("give the length of the run: --epochs or --steps")
    if (cfg.steps is not None and cfg.steps < 1) or (cfg.epochs is not None and cfg.epochs < 1):
        raise BadInputError("--steps and --epochs must be at least 1")
    if cfg.best_metric not in HIGHER_IS_BETTER:
        raise BadInputError(
            f"best metric {cfg.best_metric!r}: choose one of {', '.join(HIGHER_IS_BETTER)}"
        )
    if cfg.val_unit not in ("steps", "epochs"):
        raise BadInputError(f"val unit {cfg.val_unit!r}: 'steps' or 'epochs'")
    if cfg.lr <= 0:
        raise BadInputError(f"learning rate {cfg.lr} must be positive")
    if not 0.0 <= cfg.ema < 1.0:
        raise BadInputError(f"--ema {cfg.ema}: give a decay in [0, 1), e.g. 0.998 (0: off)")


def train(cfg: TrainConfig, progress: ProgressFn | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.data` into `cfg.out` (see the module docstring)."""
    from bttf.models import get_spec, save_weights

    spec = get_spec(cfg.model)
    _check_config(cfg, spec)
    out = Path(cfg.out)
    state_path = out / "state.pt"
    if cfg.resume and not state_path.exists():
        raise BadInputError(f"--resume: {state_path} does not exist; start the run without it")
    if (
        not cfg.resume
        and not cfg.overwrite
        and (state_path.exists() or (out / "last.safetensors").exists())
    ):
        raise OutputExistsError(
            f"{out} holds a run; pass --resume to continue it or --overwrite to start again"
        )
    dd = _Dist(cfg.device)
    try:
        return _train(cfg, spec, dd, progress, save_weights)
    finally:
        dd.close()


def _train(
    cfg: TrainConfig, spec, dd: _Dist, progress: ProgressFn | None, save_weights
) -> TrainResult:
    out = Path(cfg.out)
    emit = progress if (progress and dd.main) else (lambda e: None)
    device = dd.device
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cfg.threads or (cores or 1) // max(1, dd.local_world)))
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite and not cfg.resume:
            for name in (
                "state.pt",
                "last.safetensors",
                "best.safetensors",
                "metrics.csv",
                "loss.png",
            ):
                (out / name).unlink(missing_ok=True)
            for png in (out / "samples").glob("epoch_*.png"):
                png.unlink()
    dd.barrier()

    cache = _open_data(cfg, dd, emit)
    train_rows = cache.indices("train")
    val_rows = cache.indices("val")[: cfg.val_images]
    if len(train_rows) == 0:
        raise BadInputError(f"{cache.path} has no training images")
    per_step = cfg.batch_size * dd.world
    spe = (len(train_rows) // dd.world) // cfg.batch_size
    if spe < 1:
        raise BadInputError(
            f"{len(train_rows)} training images are fewer than one batch of "
            f"{per_step}; lower --batch-size"
        )
    total = cfg.steps if cfg.steps is not None else cfg.epochs * spe  # type: ignore[operator]
    epochs_total = math.ceil(total / spe)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, total * 3 // 100)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, spec)
    config = dict(getattr(model, "bttf_config", None) or dict(cfg.model_kwargs))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()

    state = (
        torch.load(out / "state.pt", map_location="cpu", weights_only=True) if cfg.resume else None
    )
    if state is not None and state.get("model_name") != spec.name:
        raise BadInputError(f"{out} is a run of {state.get('model_name')!r}, not {spec.name!r}")

    # --loss auto: the model's own objective if it names one (cnn-ae: l2, pix2pix: gan).
    loss_kind = resolve_loss(
        getattr(model, "default_loss", "auto") if cfg.loss == "auto" else cfg.loss, spec.output
    )
    prior: torch.Tensor | None = None
    if spec.output == "bins":
        prior = state["prior"] if state is not None else estimate_data_prior(cache, train_rows)
    criterion = build_loss(loss_kind, spec.output, prior, cfg.rebalance_lambda).to(device)
    bin_weights = None
    if prior is not None:
        from bttf.models.bins import rebalance_weights

        bin_weights = rebalance_weights(prior, lam=0.5)
    elif len(val_rows):
        from bttf.models.bins import rebalance_weights

        bin_weights = rebalance_weights(estimate_data_prior(cache, train_rows), lam=0.5)

    enc_names = encoder_parameter_names(model)
    if cfg.freeze_encoder and not enc_names:
        raise BadInputError(
            f"--freeze-encoder: {spec.name} has no recognisable encoder "
            "parameters (no encoder_parameters() and no encoder./backbone. names)"
        )
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg, enc_names), lr=cfg.lr, betas=(0.9, 0.99)
    )
    gan: GanObjective | None = None
    d_opt = None
    if loss_kind == "gan":
        gan = GanObjective.for_model(model)
        gan.discriminator.to(device).train()
        d_opt = torch.optim.Adam(gan.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))

    start = 0
    best_value: float | None = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if gan is not None and "discriminator" in state:
            gan.discriminator.load_state_dict(state["discriminator"])
            d_opt.load_state_dict(state["d_optimizer"])  # type: ignore[union-attr]
        start = int(state["step"])
        best_value = state.get("best_value")
        _set_rng_state(state["rng"])
        if dd.main:
            _truncate_metrics(out / "metrics.csv", start)
        log.info("resuming %s at step %d", out, start)
    ema = None
    if cfg.ema > 0:  # an exponential moving average of the weights (and BatchNorm statistics)
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(model, multi_avg_fn=_ema_update(cfg.ema), use_buffers=True)
        if state is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
    kept = model if ema is None else ema.module  # the weights validated and saved

    def set_frozen(epoch: int) -> bool:
        frozen = cfg.freeze_encoder and (cfg.unfreeze_at is None or epoch < cfg.unfreeze_at)
        for name, p in model.named_parameters():
            if name in enc_names:
                p.requires_grad_(not frozen)
        return frozen

    frozen = set_frozen(start // spe)
    net: nn.Module = model
    if dd.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        def wrap() -> nn.Module:
            ids = [device.index] if device.type == "cuda" else None
            return DDP(model, device_ids=ids)

        net = wrap()
        if gan is not None:
            gan.trainer = DDP(
                gan.discriminator, device_ids=[device.index] if device.type == "cuda" else None
            )

    use_amp = cfg.amp and device.type == "cuda"
    csv_path = out / "metrics.csv"
    if dd.main and not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(CSV_COLUMNS)

    def metadata(step: int, metrics: dict[str, float]) -> dict:
        extra = {
            "step": step,
            "epoch": step / spe,
            "loss": loss_kind,
            "val_metrics": {k: float(v) for k, v in metrics.items()},
            "train_config": _config_dict(cfg),
            "data": str(cache.path),
        }
        if prior is not None:
            extra["prior"] = [float(f"{v:.6g}") for v in prior.tolist()]
        return extra

    def save(step: int, metrics: dict[str, float], is_best: bool) -> None:
        if not dd.main:
            return
        extra = metadata(step, metrics)
        tmp = out / "last.tmp.safetensors"
        save_weights(tmp, kept, spec.name, config, extra=extra)
        os.replace(tmp, out / "last.safetensors")
        if is_best:
            tmp = out / "best.tmp.safetensors"
            save_weights(tmp, kept, spec.name, config, extra=extra)
            os.replace(tmp, out / "best.safetensors")
        st = {
            "step": step,
            "model_name": spec.name,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": {"total": total, "warmup": warmup},
            "rng": _rng_state(),
            "best_value": best_value,
            "config": json.dumps(_config_dict(cfg)),
        }
        if prior is not None:
            st["prior"] = prior
        if ema is not None:
            st["ema"] = ema.state_dict()
        if gan is not None:
            st["discriminator"] = gan.discriminator.state_dict()
            st["d_optimizer"] = d_opt.state_dict()  # type: ignore[union-attr]
        _atomic_torch_save(st, out / "state.pt")
        emit(TrainEvent("save", step=step, total_steps=total, message=str(out)))

    def val_due(step: int) -> bool:  # `step` steps are done
        if step >= total:
            return True
        if cfg.val_every <= 0:
            return step % spe == 0
        if cfg.val_unit == "epochs":
            return step % spe == 0 and (step // spe) % cfg.val_every == 0
        return step % cfg.val_every == 0

    emit(
        TrainEvent(
            "start",
            step=start,
            total_steps=total,
            epoch=start // spe,
            epochs=epochs_total,
            message=f"{len(train_rows)} train / {len(val_rows)} val "
            f"images, {spe} steps per epoch, loss {loss_kind}",
        )
    )
    last_metrics: dict[str, float] = {}
    ema_ips = 0.0
    t_run = time.perf_counter()
    t_last = time.perf_counter()
    step = start
    batches = _Batches(cache, train_rows, cfg, dd, spe, start, total)
    for L, ab in batches:
        epoch = step // spe
        if step % spe == 0 and step != start:
            now_frozen = set_frozen(epoch)
            if now_frozen != frozen:
                frozen = now_frozen
                log.info("epoch %d: encoder %s", epoch, "frozen" if frozen else "unfrozen")
                if dd.world > 1:
                    net = wrap()
        f = lr_factor(step, total, warmup, cfg.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        L, ab = L.to(device, non_blocking=True), ab.to(device, non_blocking=True)
        x = L.contiguous(memory_format=torch.channels_last) if cfg.channels_last else L
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x)
            if gan is not None:
                loss, _parts = gan.generator_loss(L, pred, ab)
            else:
                loss = criterion(pred, ab)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step + 1}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
            )
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        if gan is not None:
            for g in d_opt.param_groups:  # type: ignore[union-attr]
                g["lr"] = cfg.lr * f
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_loss = gan.discriminator_loss(L, pred, ab)
            d_opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            d_loss.backward()
            d_opt.step()  # type: ignore[union-attr]
        step += 1
        loss_value = dd.mean(float(loss.detach()))
        now = time.perf_counter()
        ips = per_step / max(1e-9, now - t_last)
        ema_ips = ips if ema_ips == 0 else 0.9 * ema_ips + 0.1 * ips
        eta = (total - step) * per_step / max(1e-9, ema_ips)
        lr_now = cfg.lr * f

        metrics: dict[str, float] = {}
        is_best = False
        validated = False
        if val_due(step) and dd.main and len(val_rows):
            metrics, grid = validate(
                kept,
                spec,
                cache,
                val_rows,
                cfg,
                criterion,
                bin_weights,
                device,
                samples=cfg.sample_images,
            )
            validated = True
            last_metrics = metrics
            v = metrics.get(cfg.best_metric, math.nan)
            if not math.isnan(v):
                better = HIGHER_IS_BETTER[cfg.best_metric]
                if best_value is None or (v > best_value if better else v < best_value):
                    best_value, is_best = float(v), True
            if grid is not None:
                e_done = step / spe
                name = (
                    f"epoch_{int(e_done)}.png"
                    if step % spe == 0
                    else f"epoch_{epoch + 1}_step_{step}.png"
                )
                _write_png(out / "samples" / name, grid)
        elif val_due(step) and dd.main and not len(val_rows):
            is_best = True  # nothing to compare on: best is the latest
        if dd.main:
            with open(csv_path, "a", newline="") as fcsv:
                csv.writer(fcsv).writerow(
                    [step, _fmt(step / spe), _fmt(loss_value), _fmt(lr_now), _fmt(ips)]
                    + [_fmt(metrics.get(m)) for m in METRIC_COLUMNS]
                )
        if dd.main and (
            is_best
            or validated
            or step >= total
            or (cfg.save_every > 0 and step % cfg.save_every == 0)
        ):
            save(step, last_metrics, is_best)
            if validated:
                plot_losses(csv_path, out / "loss.png")
        emit(
            TrainEvent(
                "val" if validated else "step",
                step=step,
                total_steps=total,
                epoch=epoch,
                epochs=epochs_total,
                loss=loss_value,
                lr=lr_now,
                images_per_s=ema_ips,
                eta_s=eta,
                metrics=metrics,
            )
        )
        t_last = time.perf_counter()  # validation and saving do not count against images/s
    dd.barrier()
    if dd.main:
        plot_losses(csv_path, out / "loss.png")
        if not (out / "best.safetensors").exists() and (out / "last.safetensors").exists():
            import shutil

            shutil.copyfile(out / "last.safetensors", out / "best.safetensors")
    elapsed = time.perf_counter() - t_run
    emit(
        TrainEvent(
            "done",
            step=step,
            total_steps=total,
            metrics=last_metrics,
            message=f"{step - start} steps in {elapsed:.0f} s",
        )
    )
    return TrainResult(
        out=out,
        steps=step,
        best=out / "best.safetensors" if dd.main else None,
        last=out / "last.safetensors" if dd.main else None,
        best_value=best_value,
        metrics=last_metrics,
    )
