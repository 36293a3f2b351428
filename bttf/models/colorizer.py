"""`Colorizer`: one interface over every registered model, whatever its output kind.

The pipeline calls `predict` (the raw output, which a stabilizer may fuse across frames) and
`decode` (raw output -> ab at the wanted size) separately; `forward` does both.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bttf.errors import BadInputError
from bttf.models._registry import ModelSpec, get_spec
from bttf.models.bins import AB_BINS, annealed_mean, check_unsure
from bttf.models.weights import create_model, load_model

Q = AB_BINS.shape[0]


def resolve_unsure(
    unsure: tuple[float, float] | str | None, spec: ModelSpec
) -> tuple[float, float] | None:
    """The (lo, hi) entropy range of `unsure` decoding: "auto" is the model's own default
    (`spec.unsure`; none for ab models), "off" or None is none."""
    if isinstance(unsure, str):
        if unsure not in ("auto", "off"):
            raise BadInputError(f"unsure must be 'auto', 'off' or LO,HI, got {unsure!r}")
        unsure = spec.unsure if unsure == "auto" else None
    if spec.output != "bins":
        return None
    try:
        return check_unsure(unsure, "unsure")
    except ValueError as e:
        raise BadInputError(str(e)) from None


def check_saturation(saturation: float | str) -> float | str:
    """`saturation` checked: "auto", or a finite number >= 0 as a float; ValueError otherwise.
    The one check of the option (CLI, `ColorizeConfig`, `Colorizer`)."""
    if isinstance(saturation, str) and saturation == "auto":
        return saturation
    if (
        isinstance(saturation, bool)
        or not isinstance(saturation, numbers.Real)
        or not (math.isfinite(saturation) and saturation >= 0)
    ):
        raise ValueError(f"saturation must be 'auto' or a number >= 0, got {saturation!r}")
    return float(saturation)


def resolve_saturation(saturation: float | str, spec: ModelSpec) -> float:
    """The gain on decoded ab: "auto" is the model's own (`spec.saturation`), else a number
    >= 0 (1: the model's colours as they are, 0: gray)."""
    try:
        saturation = check_saturation(saturation)
    except ValueError as e:
        raise BadInputError(str(e)) from None
    return float(spec.saturation) if saturation == "auto" else saturation


class Colorizer(nn.Module):
    """A registered model plus its decoding: L in [0, 100] -> ab in Lab units.

    Args:
        model: the network (its `forward(L)` follows the registry contract).
        spec: its `ModelSpec` (output kind, stride, render size).
        temperature: annealed-mean temperature for "bins" models (> 0; 0.38 as in Zhang et al.
            2016: lower is more saturated, 1 is the plain mean).
        top_k: decode from the k most likely bins only (1..313; 1 is the mode), or None.
        unsure: "auto" (the model's own default, `ModelSpec.unsure`), None or "off" (T for
            every pixel, as Zhang et al.), or (lo, hi): the temperature rises per pixel from T
            to 1 as the model's entropy goes from lo to hi (`bins.annealed_mean`), so colours
            the model is unsure of come out muted rather than vivid and wrong.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        temperature: float = 0.38,
        top_k: int | None = None,
        unsure: tuple[float, float] | str | None = "auto",
        saturation: float | str = "auto",
    ) -> None:
        super().__init__()
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not (math.isfinite(temperature) and temperature > 0)
        ):
            raise BadInputError(f"temperature must be a number > 0, got {temperature!r}")
        if top_k is not None and (
            isinstance(top_k, bool)
            or not isinstance(top_k, numbers.Integral)
            or not 1 <= top_k <= Q
        ):
            raise BadInputError(f"top_k must be an integer in 1..{Q} or unset, got {top_k!r}")
        self.model = model
        self.spec = spec
        self.temperature = float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.unsure = resolve_unsure(unsure, spec)
        self.saturation = resolve_saturation(saturation, spec)

    @classmethod
    def create(
        cls,
        name: str | None = None,
        weights: str | Path | None = None,
        pretrained: bool = True,
        temperature: float = 0.38,
        top_k: int | None = None,
        unsure: tuple[float, float] | str | None = "auto",
        saturation: float | str = "auto",
    ) -> Colorizer:
        """A ready Colorizer (eval mode) from a model name and/or a weights file.

        A bttf safetensors file names its model, so `weights` alone is enough.
        """
        if name is None and weights is None:
            name = "default"
        if name is None:
            model, spec, _ = load_model(weights)
        else:
            spec = get_spec(name)
            model = create_model(name, weights=weights, pretrained=pretrained)
        return cls(
            model, spec, temperature=temperature, top_k=top_k, unsure=unsure, saturation=saturation
        ).eval()

    @property
    def output(self) -> str:
        """ "bins" (313 logits) or "ab"."""
        return self.spec.output

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this."""
        return self.spec.stride

    @property
    def render_size(self) -> int:
        """The model's default working size (short side, pixels)."""
        return self.spec.render_size

    @property
    def render_square(self) -> bool:
        """Whether the model is fed a square by default (`ModelSpec.render_square`)."""
        return self.spec.render_square

    def predict(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of `stride` -> the model's raw output:
        logits (N, 313, h, w) or ab (N, 2, h, w), (h, w) possibly smaller than (H, W)."""
        if L.ndim != 4 or L.shape[1] != 1:
            raise BadInputError(f"L must be (N, 1, H, W), got {tuple(L.shape)}")
        h, w = L.shape[-2:]
        if h % self.stride or w % self.stride:
            raise BadInputError(
                f"{self.spec.name} needs H and W multiples of {self.stride}, got {h}x{w}"
            )
        return self.model(L)

    def decode_bins(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, 313, h, w) -> ab (N, 2, h, w): the annealed mean at this colorizer's
        temperature and top-k."""
        if logits.ndim != 4 or logits.shape[1] != Q:
            raise BadInputError(f"expected logits (N, {Q}, h, w), got {tuple(logits.shape)}")
        return annealed_mean(
            logits, temperature=self.temperature, top_k=self.top_k, unsure=self.unsure
        )

    @staticmethod
    def resize_ab(ab: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """ab (N, 2, h, w) -> (N, 2, *size), bilinear (align_corners=False)."""
        if ab.ndim != 4 or ab.shape[1] != 2:
            raise BadInputError(f"expected ab (N, 2, h, w), got {tuple(ab.shape)}")
        size = (int(size[0]), int(size[1]))
        if tuple(ab.shape[-2:]) != size:
            ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
        return ab

    def saturate(self, ab: torch.Tensor) -> torch.Tensor:
        """Decoded ab times the colorizer's `saturation` (ab itself at 1): the chroma of every
        pixel scaled alike, its hue kept. The last step before ab meets L."""
        return ab if self.saturation == 1.0 else ab * self.saturation

    def decode(self, out: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """The raw output of `predict` -> ab (N, 2, *size) in Lab units: the annealed mean for
        "bins" models (at the model's resolution), a bilinear resize, then `saturate`."""
        ab = self.decode_bins(out) if self.output == "bins" else out
        return self.saturate(self.resize_ab(ab, size))

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100] -> ab (N, 2, H, W)."""
        return self.decode(self.predict(L), L.shape[-2:])

    def extra_repr(self) -> str:
        return (
            f"name={self.spec.name}, temperature={self.temperature}, top_k={self.top_k}, "
            f"unsure={self.unsure}, saturation={self.saturation}"
        )
