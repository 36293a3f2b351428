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

Where things are: the batches in `batches`, the schedule, parameter groups and EMA in `optim`,
checkpoints in `checkpoint`, metrics.csv / loss.png / sample grids in `runlog`, torchrun in
`distributed`. This module holds the config, the setup (`_Trainer`) and the loop (`_train`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bttf.errors import BadInputError
from bttf.models.bins import SOFT_SIGMA
from bttf.training import checkpoint as ckpt
from bttf.training import data as D
from bttf.training.batches import TrainBatches
from bttf.training.distributed import Dist
from bttf.training.losses import GanObjective, build_loss, resolve_loss
from bttf.training.optim import (
    encoder_parameter_names,
    freeze,
    lr_factor,
    make_ema,
    param_groups,
    set_schedule,
)
from bttf.training.runlog import RunLog, Speed, plot_losses, sample_name, write_png
from bttf.training.validation import validate

__all__ = [
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "build_model",
    "encoder_parameter_names",
    "estimate_data_prior",
    "lr_factor",
    "train",
]

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {
    "loss": False,
    "psnr": True,
    "ssim": True,
    "auc": True,
    "auc_rebal": True,
    "colorfulness": True,
}
OFFICIAL_INIT = ("pretrained", "official", "shipped")


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
    soft_sigma: float = SOFT_SIGMA  # bin models: width of the soft-encoded target, ab units
    label_smoothing: float = 0.0  # bin models: share of the target given to the data's prior
    temperature: float = 0.38  # annealed mean when validating a bin model
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True
    seed: int = 0
    workers: int = 1  # background threads preparing batches (0: in the training thread)
    threads: int | None = None  # torch CPU threads (None: the cores this process may use)
    init: str | None = None  # weights file, "pretrained" (official/shipped), "imagenet" (trunk)
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

    def __post_init__(self) -> None:
        """Every check of the options that needs no data: BadInputError, one line."""
        from bttf.models import get_spec

        spec = get_spec(self.model)  # UnknownModelError lists the registered names
        if self.steps is None and self.epochs is None:
            raise BadInputError("give the length of the run: --epochs or --steps")
        if (self.steps is not None and self.steps < 1) or (
            self.epochs is not None and self.epochs < 1
        ):
            raise BadInputError("--steps and --epochs must be at least 1")
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size {self.batch_size} must be at least 1")
        if self.image_size < spec.stride or self.image_size % spec.stride:
            raise BadInputError(
                f"--image-size {self.image_size} must be a multiple of {spec.stride} "
                f"(the stride of {spec.name})"
            )
        if not self.lr > 0:
            raise BadInputError(f"--lr {self.lr} must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise BadInputError(
                f"--label-smoothing {self.label_smoothing}: give a share in [0, 1), e.g. 0.1"
            )
        if not self.soft_sigma > 0:
            raise BadInputError(f"--soft-sigma {self.soft_sigma} must be positive")
        if spec.output != "bins" and (self.label_smoothing or self.soft_sigma != SOFT_SIGMA):
            raise BadInputError(
                f"--label-smoothing and --soft-sigma apply to bin models; {spec.name} predicts ab"
            )
        if not 0.0 <= self.ema < 1.0:
            raise BadInputError(f"--ema {self.ema}: give a decay in [0, 1), e.g. 0.998 (0: off)")
        if self.workers < 0:
            raise BadInputError(f"--workers {self.workers} must be 0 or more")
        if self.best_metric not in HIGHER_IS_BETTER:
            raise BadInputError(
                f"--best-metric {self.best_metric!r}: choose one of {', '.join(HIGHER_IS_BETTER)}"
            )
        if self.val_unit not in ("steps", "epochs"):
            raise BadInputError(f"val unit {self.val_unit!r}: 'steps' or 'epochs'")
        if self.unfreeze_at is not None and not self.freeze_encoder:
            raise BadInputError("--unfreeze-at needs --freeze-encoder")
        if self.resume and self.overwrite:
            raise BadInputError("--resume and --overwrite exclude each other")
        if self.init is not None and self.init.lower() == "imagenet":
            from bttf.models import imagenet_weights

            imagenet_weights(spec.name)  # no trunk, or not downloaded: say so before any data


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


def _open_data(cfg: TrainConfig, dd: Dist, progress: ProgressFn | None) -> D.LabCache:
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


def build_model(cfg: TrainConfig, spec) -> nn.Module:
    """The model to train: fresh, or from `cfg.init` (a checkpoint, an official .pth, a
    torchvision ResNet trunk, "pretrained" for the installed weights, or "imagenet" for the
    cached torchvision checkpoint of a ResNet model's trunk)."""
    from bttf.models import create_model

    kw = dict(cfg.model_kwargs)
    if cfg.init is None:
        try:
            return create_model(spec.name, pretrained=False, **kw)
        except TypeError as e:
            raise BadInputError(f"{spec.name} does not take these options: {e}") from None
    if cfg.init.lower() in OFFICIAL_INIT:
        from bttf.models import official_weights

        if official_weights(spec.name) is None:  # a released file not downloaded: says which
            smaller = official_weights(spec.grows_from) if spec.grows_from else None
            if smaller is not None:  # e.g. fastcolor2 from the shipped fastcolor
                from bttf.models.weights import grow_model

                return grow_model(spec.name, smaller, **kw)
            raise BadInputError(
                f"{spec.name} has no installed weights to start from; give "
                "--init FILE (a .safetensors checkpoint or an official .pth)"
            )
        return create_model(spec.name, pretrained=True, **kw)
    if cfg.init.lower() == "imagenet":  # torchvision's checkpoint, from torch hub's cache
        from bttf.models import imagenet_weights
        from bttf.models.resnet18 import load_imagenet_trunk

        trunk = imagenet_weights(spec.name)
        return load_imagenet_trunk(create_model(spec.name, pretrained=False, **kw), trunk)
    path = Path(cfg.init)
    if not path.is_file():
        raise BadInputError(
            f"--init {path} does not exist; give a weights file, 'pretrained' or 'imagenet'"
        )
    if path.suffix == ".safetensors":
        from bttf.models.weights import grow_model

        grown = grow_model(spec.name, path, **kw)  # a smaller model's run: this one grows from it
        if grown is not None:
            return grown
    else:
        from bttf.models.resnet18 import is_imagenet_trunk, load_imagenet_trunk
        from bttf.models.weights import read_weights

        state, _ = read_weights(path)
        if is_imagenet_trunk(state):  # a torchvision ResNet classifier: load its trunk only
            return load_imagenet_trunk(create_model(spec.name, pretrained=False, **kw), state)
    return create_model(spec.name, weights=path, **kw)


# ---------------------------------------------------------------------------------------------
# setup


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["data"] = [str(p) for p in cfg.data]
    d["out"] = str(cfg.out)
    d["model_kwargs"] = dict(cfg.model_kwargs)
    return d


@dataclass(frozen=True)
class _Schedule:
    """The run's length in steps, cut into epochs, and when it validates."""

    steps_per_epoch: int
    total: int
    warmup: int
    per_step: int  # images per step, all processes together
    val_every: int
    val_unit: str

    @classmethod
    def of(cls, cfg: TrainConfig, train_images: int, world: int) -> _Schedule:
        per_step = cfg.batch_size * world
        spe = (train_images // world) // cfg.batch_size
        if spe < 1:
            raise BadInputError(
                f"{train_images} training images are fewer than one batch of "
                f"{per_step}; lower --batch-size"
            )
        total = cfg.steps if cfg.steps is not None else cfg.epochs * spe  # type: ignore[operator]
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, total * 3 // 100)
        return cls(spe, total, warmup, per_step, cfg.val_every, cfg.val_unit)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.steps_per_epoch)

    def val_due(self, step: int) -> bool:
        """Whether to validate once `step` steps are done."""
        spe = self.steps_per_epoch
        if step >= self.total:
            return True
        if self.val_every <= 0:
            return step % spe == 0
        if self.val_unit == "epochs":
            return step % spe == 0 and (step // spe) % self.val_every == 0
        return step % self.val_every == 0


class _Trainer:
    """One run's model, objective, optimizers, EMA and DDP wrapper, built (or resumed) in a fixed
    order so that a seed gives the same run; `step`, `validate` and `save` are the loop's work."""

    def __init__(
        self,
        cfg: TrainConfig,
        spec,
        dd: Dist,
        cache: D.LabCache,
        train_rows: np.ndarray,
        val_rows: np.ndarray,
        sched: _Schedule,
    ):
        self.cfg, self.spec, self.dd, self.cache = cfg, spec, dd, cache
        self.val_rows, self.sched, self.out = val_rows, sched, Path(cfg.out)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, spec)
        self.model_config = dict(getattr(model, "bttf_config", None) or dict(cfg.model_kwargs))
        model.to(dd.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        state = ckpt.load_state(self.out, spec.name) if cfg.resume else None
        self._build_objective(state, train_rows)
        self.enc_names = encoder_parameter_names(model)
        if cfg.freeze_encoder and not self.enc_names:
            raise BadInputError(
                f"--freeze-encoder: {spec.name} has no recognisable encoder "
                "parameters (no encoder_parameters() and no encoder./backbone. names)"
            )
        self._build_optimizers()
        self.start, self.best_value = 0, None
        self.last_metrics: dict[str, float] = {}  # of the latest validation
        if state is not None:
            self._resume(state)
        self.ema = None
        if cfg.ema > 0:
            self.ema = make_ema(model, cfg.ema, state.get("ema") if state is not None else None)
        self.frozen = self._frozen_at(self.start // sched.steps_per_epoch)
        freeze(model, self.enc_names, self.frozen)
        self.net: nn.Module = model
        if dd.world > 1:
            self.net = dd.wrap(model)
            if self.gan is not None:
                self.gan.trainer = dd.wrap(self.gan.discriminator)

    def _build_objective(self, state: dict | None, train_rows: np.ndarray) -> None:
        from bttf.models.bins import rebalance_weights

        cfg, spec = self.cfg, self.spec
        # --loss auto: the model's own objective if it names one (cnn-ae: l2, pix2pix: gan).
        wanted = getattr(self.model, "default_loss", "auto") if cfg.loss == "auto" else cfg.loss
        self.loss_kind = resolve_loss(wanted, spec.output)
        self.prior: torch.Tensor | None = None
        if spec.output == "bins":
            if state is not None:
                self.prior = state["prior"]
            else:
                self.prior = estimate_data_prior(self.cache, train_rows)
        self.criterion = build_loss(
            self.loss_kind,
            spec.output,
            self.prior,
            cfg.rebalance_lambda,
            sigma=cfg.soft_sigma,
            smoothing=cfg.label_smoothing,
        ).to(self.dd.device)
        self.bin_weights = None  # of the validation AuC: the training data's prior
        if self.prior is not None:
            self.bin_weights = rebalance_weights(self.prior, lam=0.5)
        elif len(self.val_rows):
            prior = estimate_data_prior(self.cache, train_rows)
            self.bin_weights = rebalance_weights(prior, lam=0.5)

    def _build_optimizers(self) -> None:
        cfg = self.cfg
        mult = cfg.encoder_lr_mult
        if mult is None:
            mult = 0.1 if cfg.init is not None else 1.0
        groups = param_groups(self.model, self.enc_names, cfg.lr, cfg.weight_decay, mult)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
        self.gan: GanObjective | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.loss_kind == "gan":
            self.gan = GanObjective.for_model(self.model)
            self.gan.discriminator.to(self.dd.device).train()
            self.d_opt = torch.optim.Adam(
                self.gan.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999)
            )

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.gan is not None and "discriminator" in state:
            self.gan.discriminator.load_state_dict(state["discriminator"])
            self.d_opt.load_state_dict(state["d_optimizer"])  # type: ignore[union-attr]
        self.start = int(state["step"])
        self.best_value = state.get("best_value")
        ckpt.set_rng_state(state["rng"])
        if self.dd.main:
            RunLog(self.out / "metrics.csv").truncate(self.start)
        log.info("resuming %s at step %d", self.out, self.start)

    @property
    def kept(self) -> nn.Module:
        """The weights validated and saved: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def _frozen_at(self, epoch: int) -> bool:
        cfg = self.cfg
        return cfg.freeze_encoder and (cfg.unfreeze_at is None or epoch < cfg.unfreeze_at)

    def start_epoch(self, epoch: int) -> None:
        """Freeze or unfreeze the encoder as `epoch` wants (DDP re-wrapped on a change)."""
        frozen = self._frozen_at(epoch)
        freeze(self.model, self.enc_names, frozen)
        if frozen != self.frozen:
            self.frozen = frozen
            log.info("epoch %d: encoder %s", epoch, "frozen" if frozen else "unfrozen")
            if self.dd.world > 1:
                self.net = self.dd.wrap(self.model)

    def step(self, L: torch.Tensor, ab: torch.Tensor, step: int) -> tuple[float, float]:
        """Train on one batch as step `step` (0-based): (loss, mean over processes; lr)."""
        cfg, device = self.cfg, self.dd.device
        f = lr_factor(step, self.sched.total, self.sched.warmup, cfg.min_lr_ratio)
        set_schedule(self.optimizer, f)
        L, ab = L.to(device, non_blocking=True), ab.to(device, non_blocking=True)
        x = L.contiguous(memory_format=torch.channels_last) if cfg.channels_last else L
        use_amp = cfg.amp and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = self.net(x)
            if self.gan is not None:
                loss, _parts = self.gan.generator_loss(L, pred, ab)
            else:
                loss = self.criterion(pred, ab)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step + 1}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            params = [p for p in self.model.parameters() if p.requires_grad]
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.gan is not None:
            for g in self.d_opt.param_groups:  # type: ignore[union-attr]
                g["lr"] = cfg.lr * f
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_loss = self.gan.discriminator_loss(L, pred, ab)
            self.d_opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            d_loss.backward()
            self.d_opt.step()  # type: ignore[union-attr]
        return self.dd.mean(float(loss.detach())), cfg.lr * f

    def validate(self, step: int) -> tuple[dict[str, float], bool]:
        """Validate the kept weights once `step` steps are done and write the sample grid:
        (metrics, whether they are the best so far)."""
        cfg = self.cfg
        metrics, grid = validate(
            self.kept,
            self.spec,
            self.cache,
            self.val_rows,
            cfg,
            self.criterion,
            self.bin_weights,
            self.dd.device,
            samples=cfg.sample_images,
        )
        is_best = False
        v = metrics.get(cfg.best_metric, math.nan)
        if not math.isnan(v):
            higher = HIGHER_IS_BETTER[cfg.best_metric]
            if self.best_value is None or (v > self.best_value if higher else v < self.best_value):
                self.best_value, is_best = float(v), True
        if grid is not None:
            name = sample_name(step, self.sched.steps_per_epoch)
            write_png(self.out / "samples" / name, grid)
        return metrics, is_best

    def save(self, step: int, metrics: dict[str, float], is_best: bool) -> None:
        """last (and best) .safetensors with their metadata, then state.pt."""
        extra = {
            "step": step,
            "epoch": step / self.sched.steps_per_epoch,
            "loss": self.loss_kind,
            "val_metrics": {k: float(v) for k, v in metrics.items()},
            "train_config": _config_dict(self.cfg),
            "data": str(self.cache.path),
        }
        if self.prior is not None:
            extra["prior"] = [float(f"{v:.6g}") for v in self.prior.tolist()]
        ckpt.save_checkpoints(
            self.out, self.kept, self.spec.name, self.model_config, extra, is_best
        )
        ckpt.save_state(self.state_dict(step), self.out)

    def state_dict(self, step: int) -> dict:
        """What `state.pt` holds after `step` steps."""
        st = {
            "step": step,
            "model_name": self.spec.name,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"total": self.sched.total, "warmup": self.sched.warmup},
            "rng": ckpt.rng_state(),
            "best_value": self.best_value,
            "config": json.dumps(_config_dict(self.cfg)),
        }
        if self.prior is not None:
            st["prior"] = self.prior
        if self.ema is not None:
            st["ema"] = self.ema.state_dict()
        if self.gan is not None:
            st["discriminator"] = self.gan.discriminator.state_dict()
            st["d_optimizer"] = self.d_opt.state_dict()  # type: ignore[union-attr]
        return st


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg: TrainConfig, progress: ProgressFn | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.data` into `cfg.out` (see the module docstring)."""
    from bttf.models import get_spec

    spec = get_spec(cfg.model)
    ckpt.check_run_folder(Path(cfg.out), cfg.resume, cfg.overwrite)
    dd = Dist(cfg.device)
    try:
        return _train(cfg, spec, dd, progress)
    finally:
        dd.close()


def _after_step(
    trainer: _Trainer, runlog: RunLog, step: int, loss: float, lr: float, ips: float
) -> tuple[dict[str, float], bool, bool]:
    """Rank 0, once `step` steps are done: validate if due, log the row, checkpoint if due.
    Returns (this step's validation metrics or {}, validated, saved)."""
    cfg, sched = trainer.cfg, trainer.sched
    metrics: dict[str, float] = {}
    validated = is_best = False
    if sched.val_due(step):
        if len(trainer.val_rows):
            metrics, is_best = trainer.validate(step)
            validated, trainer.last_metrics = True, metrics
        else:
            is_best = True  # nothing to compare on: best is the latest
    runlog.append(step, step / sched.steps_per_epoch, loss, lr, ips, metrics)
    periodic = cfg.save_every > 0 and step % cfg.save_every == 0
    saved = is_best or validated or step >= sched.total or periodic
    if saved:
        trainer.save(step, trainer.last_metrics, is_best)
        if validated:
            plot_losses(runlog.path, Path(cfg.out) / "loss.png")
    return metrics, validated, saved


def _train(cfg: TrainConfig, spec, dd: Dist, progress: ProgressFn | None) -> TrainResult:
    out = Path(cfg.out)
    emit = progress if (progress and dd.main) else (lambda e: None)
    dd.set_threads(cfg.threads)
    made = not out.exists()
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite and not cfg.resume:
            ckpt.clear_run_folder(out)
    dd.barrier()

    try:
        cache = _open_data(cfg, dd, emit)
    except BadInputError:  # no usable data: leave no empty run folder behind
        if dd.main and made and not any(out.iterdir()):
            out.rmdir()
        raise
    train_rows = cache.indices("train")
    val_rows = cache.indices("val")[: cfg.val_images]
    if len(train_rows) == 0:
        raise BadInputError(f"{cache.path} has no training images")
    sched = _Schedule.of(cfg, len(train_rows), dd.world)
    spe, total = sched.steps_per_epoch, sched.total
    trainer = _Trainer(cfg, spec, dd, cache, train_rows, val_rows, sched)
    runlog = RunLog(out / "metrics.csv")
    if dd.main:
        runlog.create()
    start = step = trainer.start
    emit(
        TrainEvent(
            "start",
            step=start,
            total_steps=total,
            epoch=start // spe,
            epochs=sched.epochs,
            message=f"{len(train_rows)} train / {len(val_rows)} val "
            f"images, {spe} steps per epoch, loss {trainer.loss_kind}",
        )
    )
    speed = Speed(sched.per_step)
    for L, ab in TrainBatches(cache, train_rows, cfg, dd, spe, start, total):
        epoch = step // spe
        if step % spe == 0 and step != start:
            trainer.start_epoch(epoch)
        loss_value, lr_now = trainer.step(L, ab, step)
        step += 1
        ips = speed.step()
        metrics, validated = {}, False
        if dd.main:
            metrics, validated, saved = _after_step(trainer, runlog, step, loss_value, lr_now, ips)
            if saved:
                emit(TrainEvent("save", step=step, total_steps=total, message=str(out)))
        emit(
            TrainEvent(
                "val" if validated else "step",
                step=step,
                total_steps=total,
                epoch=epoch,
                epochs=sched.epochs,
                loss=loss_value,
                lr=lr_now,
                images_per_s=speed.mean,
                eta_s=(total - step) * sched.per_step / max(1e-9, speed.mean),
                metrics=metrics,
            )
        )
        speed.restart()  # validation and saving do not count against images/s
    dd.barrier()
    if dd.main:
        plot_losses(runlog.path, out / "loss.png")
        ckpt.ensure_best(out)
    emit(
        TrainEvent(
            "done",
            step=step,
            total_steps=total,
            metrics=trainer.last_metrics,
            message=f"{step - start} steps in {speed.elapsed():.0f} s",
        )
    )
    return TrainResult(
        out=out,
        steps=step,
        best=out / "best.safetensors" if dd.main else None,
        last=out / "last.safetensors" if dd.main else None,
        best_value=trainer.best_value,
        metrics=trainer.last_metrics,
    )
