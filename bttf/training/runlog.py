"""A run's log: metrics.csv (one row per step), loss.png, and the validation sample grids.

metrics.csv columns: step, epoch (fractional), loss, lr, images_per_s, then on validation steps
val_loss, val_psnr, val_ssim, val_colorfulness, val_auc, val_auc_rebal (empty on other steps).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np

from bttf.files import atomic_output

METRIC_COLUMNS = ("loss", "psnr", "ssim", "colorfulness", "auc", "auc_rebal")
CSV_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", *(f"val_{m}" for m in METRIC_COLUMNS))


class RunLog:
    """Appends one row per step to `path` (metrics.csv), which it creates with its header."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def create(self) -> None:
        """Write the header unless the file is there (a resumed run appends to it)."""
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(CSV_COLUMNS)

    def append(
        self,
        step: int,
        epoch: float,
        loss: float,
        lr: float,
        images_per_s: float,
        metrics: dict[str, float],
    ) -> None:
        """One row; `metrics` are the validation metrics of this step ({} when none)."""
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(
                [step, _fmt(epoch), _fmt(loss), _fmt(lr), _fmt(images_per_s)]
                + [_fmt(metrics.get(m)) for m in METRIC_COLUMNS]
            )

    def truncate(self, step: int) -> None:
        """Drop rows after `step` (a run killed after its last checkpoint logged steps it will
        redo)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
        with atomic_output(self.path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)


class Speed:
    """Images per second of the training steps alone (validation and saving excluded)."""

    def __init__(self, per_step: int):
        self.per_step = per_step
        self.mean = 0.0  # exponential moving average of the per-step values
        self.t_run = self.t_last = time.perf_counter()

    def step(self) -> float:
        """A step is done: its images per second."""
        ips = self.per_step / max(1e-9, time.perf_counter() - self.t_last)
        self.mean = ips if self.mean == 0 else 0.9 * self.mean + 0.1 * ips
        return ips

    def restart(self) -> None:
        self.t_last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_run


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.7g}"


def read_metrics(csv_path: Path) -> list[dict]:
    """metrics.csv as dicts of floats (None for empty cells)."""
    if not Path(csv_path).exists():
        return []
    out = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return out


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
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def sample_name(step: int, steps_per_epoch: int) -> str:
    """samples/ file of the grid validated after `step` steps: epoch_N.png at an epoch's end,
    else epoch_N_step_S.png (N the epoch under way, from 1)."""
    if step % steps_per_epoch == 0:
        return f"epoch_{int(step / steps_per_epoch)}.png"
    return f"epoch_{(step - 1) // steps_per_epoch + 1}_step_{step}.png"


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An (H, W, 3) uint8 RGB image to `path` (folders made)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
