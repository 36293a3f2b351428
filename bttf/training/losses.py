"""Training objectives, chosen by the model's output kind (`ModelSpec.output`).

Bin models (`output="bins"`, logits (N, 313, h, w)): cross-entropy against soft-encoded targets
(`bins.soft_encode`, 5 nearest bins, Gaussian sigma 5 — `sigma` widens it), computed at the logits'
resolution (the true ab is area-averaged down to (h, w) first, which is cheap and what the model
can resolve). With `smoothing` eps the target is (1 - eps) * soft encoding + eps * the training
data's bin prior (label smoothing toward the prior: a model unsure of a pixel learns to fall back on
the data's colours rather than on a vivid guess):

- ``ce``          unweighted.
- ``rebalanced``  Zhang et al. 2016: each pixel weighted by w[nearest bin of its true ab] with
                  w = rebalance_weights(prior, lam=0.5) (prior estimated from the training data,
                  E_prior[w] = 1), plain mean over pixels.
- ``normalized``  the dataset-normalised variant: w_q = 1 / max(prior_q, 1e-4) (pure inverse
                  frequency, floored so empty bins stay finite), scaled so E_prior[w] = 1 over the
                  dataset, and the loss is the weighted mean sum(w * ce) / sum(w) over the batch,
                  so its scale does not move with how many rare colours a batch holds. Stronger
                  rebalancing than lam = 0.5: more saturated, less safe colours.

ab models (`output="ab"`, (N, 2, h, w) in Lab units): regression on ab / 110 (so values are in
about [-1, 1]): ``l2``, ``l1``, ``huber`` (delta = 10 Lab units).

Adversarial (``gan``, ab models): pix2pix — the generator minimises BCE(D(L, fake), real) +
100 * L1 (on ab / 110), the discriminator BCE on real vs fake pairs. `GanObjective` is the hook the
training loop calls; a model brings its own discriminator through a `make_discriminator()` method,
else a small `PatchDiscriminator` is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.errors import BadInputError
from bttf.models.bins import SOFT_SIGMA

AB_SCALE = 110.0
LOSSES: dict[str, tuple[str, ...]] = {
    "bins": ("rebalanced", "ce", "normalized"),
    "ab": ("huber", "l2", "l1", "gan"),
}
DEFAULT_LOSS = {"bins": "rebalanced", "ab": "huber"}


def resize_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ab (N, 2, H, W) -> (N, 2, *size): area average down, bilinear up."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    if size[0] <= ab.shape[-2] and size[1] <= ab.shape[-1]:
        return F.interpolate(ab, size=size, mode="area")
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)


def normalized_weights(prior: torch.Tensor, floor: float = 1e-4) -> torch.Tensor:
    """Inverse-frequency bin weights 1 / max(p, floor), scaled so that sum(p * w) = 1."""
    w = 1.0 / prior.clamp(min=floor)
    return w / (prior * w).sum()


class BinCrossEntropy(nn.Module):
    """Cross-entropy of 313-bin logits against soft-encoded truth, optionally class-rebalanced.

    forward(logits (N, 313, h, w), ab_true (N, 2, H, W) in Lab units) -> scalar.
    """

    def __init__(
        self,
        weights: torch.Tensor | None = None,
        weighted_mean: bool = False,
        *,
        sigma: float = SOFT_SIGMA,
        smoothing: float = 0.0,
        prior: torch.Tensor | None = None,
    ):
        super().__init__()
        if smoothing and prior is None:
            raise BadInputError("label smoothing needs the bin prior of the training data")
        self.register_buffer("weights", None if weights is None else weights.float().clone())
        self.register_buffer("prior", prior.float().clone() if smoothing else None)
        self.weighted_mean, self.sigma, self.smoothing = weighted_mean, sigma, smoothing

    def forward(self, logits: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        from bttf.models.bins import soft_encode_topk

        ab = resize_ab(ab_true.float(), tuple(logits.shape[-2:]))
        with torch.no_grad():  # sparse target: the 5 nearest bins and their weights
            idx, wk = soft_encode_topk(ab, sigma=self.sigma)
        logp = F.log_softmax(logits.float(), dim=1)
        ce = -(wk * logp.gather(1, idx)).sum(1)  # (N, h, w)
        if self.smoothing:
            ce_prior = -torch.einsum("q,nqhw->nhw", self.prior, logp)
            ce = (1 - self.smoothing) * ce + self.smoothing * ce_prior
        if self.weights is None:
            return ce.mean()
        nearest = idx.gather(1, wk.argmax(1, keepdim=True)).squeeze(1)
        w = self.weights.to(ce.device)[nearest]
        if self.weighted_mean:
            return (w * ce).sum() / w.sum().clamp(min=1e-8)
        return (w * ce).mean()


class AbRegression(nn.Module):
    """l1 / l2 / huber on ab / 110. forward(pred (N, 2, h, w), ab_true (N, 2, H, W)) -> scalar."""

    def __init__(self, kind: str = "huber", delta: float = 10.0):
        super().__init__()
        self.kind, self.delta = kind, delta / AB_SCALE

    def forward(self, pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        target = resize_ab(ab_true.float(), tuple(pred.shape[-2:])) / AB_SCALE
        pred = pred.float() / AB_SCALE
        if self.kind == "l2":
            return F.mse_loss(pred, target)
        if self.kind == "l1":
            return F.l1_loss(pred, target)
        return F.huber_loss(pred, target, delta=self.delta)


def build_loss(
    kind: str,
    output: str,
    prior: torch.Tensor | None = None,
    lam: float = 0.5,
    *,
    sigma: float = SOFT_SIGMA,
    smoothing: float = 0.0,
) -> nn.Module:
    """The criterion `kind` for a model whose `output` is "bins" or "ab".

    Rebalanced losses and label smoothing (`smoothing` > 0) need the training data's bin `prior`
    (313,); `sigma` is the soft encoding's width (bin losses only). For "gan" this returns the L1
    part; the adversarial part lives in `GanObjective`.
    """
    if output not in LOSSES:
        raise BadInputError(f"unknown model output kind {output!r}")
    if kind == "auto":
        kind = DEFAULT_LOSS[output]
    if kind not in LOSSES[output]:
        raise BadInputError(
            f"loss {kind!r} does not fit a model with {output!r} output; "
            f"choose one of: {', '.join(LOSSES[output])}"
        )
    if output == "bins":
        target = {"sigma": sigma, "smoothing": smoothing, "prior": prior}
        if kind == "ce":
            return BinCrossEntropy(**target)
        if prior is None:
            raise BadInputError(f"loss {kind!r} needs the bin prior of the training data")
        if kind == "rebalanced":
            from bttf.models.bins import rebalance_weights

            return BinCrossEntropy(rebalance_weights(prior, lam=lam), **target)
        return BinCrossEntropy(normalized_weights(prior), weighted_mean=True, **target)
    if smoothing or sigma != SOFT_SIGMA:
        raise BadInputError("label smoothing and the soft-encoding width apply to bin models only")
    if kind == "gan":
        return AbRegression("l1")
    return AbRegression(kind)


def resolve_loss(kind: str, output: str) -> str:
    """`kind` with "auto" replaced by the default for `output`; BadInputError if it does not fit."""
    if kind == "auto":
        return DEFAULT_LOSS[output]
    if kind not in LOSSES.get(output, ()):
        raise BadInputError(
            f"loss {kind!r} does not fit a model with {output!r} output; "
            f"choose one of: {', '.join(LOSSES.get(output, ()))}"
        )
    return kind


def lab_input(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L in [0, 100], ab in Lab units) -> (N, 3, H, W) in about [-1, 1] for a discriminator."""
    return torch.cat([L / 50.0 - 1.0, ab / AB_SCALE], 1)


class PatchDiscriminator(nn.Module):
    """A small pix2pix PatchGAN: Lab (N, 3, H, W) -> real/fake logits (N, 1, H/8, W/8)."""

    def __init__(self, width: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for i in range(1, layers):
            n = min(width * 2**i, 512)
            mods += [
                nn.Conv2d(c, n, 4, 2, 1, bias=False),
                nn.BatchNorm2d(n),
                nn.LeakyReLU(0.2, True),
            ]
            c = n
        mods += [
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 1, 3, 1, 1),
        ]
        self.net = nn.Sequential(*mods)

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        return self.net(lab)


class GanObjective:
    """The adversarial hook of the training loop (pix2pix: vanilla GAN + lambda * L1).

    The loop calls `generator_loss` in place of the criterion, steps the generator, then calls
    `discriminator_loss` with the detached prediction and steps `self.discriminator`.
    """

    def __init__(self, discriminator: nn.Module, lambda_l1: float = 100.0):
        self.discriminator = discriminator
        # What `discriminator_loss` calls: the loop puts a DDP wrapper here under torchrun; the
        # generator's pass uses the bare module (frozen there, so DDP must not see it).
        self.trainer: nn.Module = discriminator
        self.lambda_l1 = lambda_l1
        self.l1 = AbRegression("l1")

    @staticmethod
    def for_model(model: nn.Module, lambda_l1: float = 100.0) -> GanObjective:
        make = getattr(model, "make_discriminator", None)
        return GanObjective(make() if callable(make) else PatchDiscriminator(), lambda_l1)

    def generator_loss(
        self, L: torch.Tensor, fake_ab: torch.Tensor, true_ab: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        fake_full = resize_ab(fake_ab, tuple(L.shape[-2:]))
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        logits = self.discriminator(lab_input(L, fake_full))
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        adv = F.binary_cross_entropy_with_logits(logits.float(), torch.ones_like(logits.float()))
        l1 = self.l1(fake_ab, true_ab)
        return adv + self.lambda_l1 * l1, {"g_adv": float(adv.detach()), "l1": float(l1.detach())}

    def discriminator_loss(
        self, L: torch.Tensor, fake_ab: torch.Tensor, true_ab: torch.Tensor
    ) -> torch.Tensor:
        fake_full = resize_ab(fake_ab.detach(), tuple(L.shape[-2:]))
        real_in, fake_in = lab_input(L, true_ab), lab_input(L, fake_full)
        if self.trainer is self.discriminator:  # as pix2pix: two passes, BatchNorm per pass
            real, fake = self.trainer(real_in).float(), self.trainer(fake_in).float()
        else:  # DDP allows one forward per backward: one pass over both halves
            real, fake = self.trainer(torch.cat([real_in, fake_in])).float().chunk(2)
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
