"""Validation during training: loss and image metrics of the kept weights on a fixed set of
validation images, and the gray | prediction | truth sample grid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bttf.training import data as D

if TYPE_CHECKING:
    from bttf.training.loop import TrainConfig


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
