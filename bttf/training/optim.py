"""What the optimizer sees: the learning-rate schedule, parameter groups (encoder / decoder, with
and without weight decay), the frozen encoder, and the moving average (EMA) of the weights."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

_ENCODER_RE = re.compile(
    r"^(encoder|backbone|stem|features|enc\w*|down\w*|layer[1-4]|conv1|bn1|model[1-5])[._]"
)


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


def param_groups(
    model: nn.Module, enc_names: set[str], lr: float, weight_decay: float, encoder_lr_mult: float
) -> list[dict]:
    """AdamW groups: encoder first, its LR `lr * encoder_lr_mult`; no weight decay on biases
    and norms (parameters of one dimension). `base_lr` is the LR before the schedule."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        decay = p.ndim > 1
        groups.setdefault((name in enc_names, decay), []).append(p)
    out = []
    for (enc, decay), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        group_lr = lr * (encoder_lr_mult if enc else 1.0)
        out.append(
            {
                "params": params,
                "lr": group_lr,
                "base_lr": group_lr,
                "weight_decay": weight_decay if decay else 0.0,
                "encoder": enc,
            }
        )
    return out


def set_schedule(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group at its `base_lr` times `factor`."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor


def freeze(model: nn.Module, names: set[str], frozen: bool) -> None:
    """Stop (or restart) training the parameters `names` of `model`."""
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(not frozen)


def make_ema(model: nn.Module, decay: float, state: dict | None = None) -> nn.Module:
    """An exponential moving average of `model`'s weights and BatchNorm statistics
    (`AveragedModel`; `.module` is the averaged network), restored from `state` if given."""
    from torch.optim.swa_utils import AveragedModel

    ema = AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)
    if state is not None:
        ema.load_state_dict(state)
    return ema


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
