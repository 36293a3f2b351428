"""cnn-ae: the plain convolutional encoder-decoder the seed projects compared, in three variants.

Five stride-2 3x3 convolutions take L to stride 32; five 2x upsamplings (nearest, then a 3x3
convolution) bring it back to full resolution, and a 1x1 convolution gives ab. No skip
connections: everything the decoder knows passes through the stride-32 bottleneck, which is why
these models blur colour across edges (compare `unet-ae`). Trained with MSE on ab (`default_loss`
"l2": the loop uses it when `--loss auto`).

Variants (`create_model("cnn-ae", variant="deep")`; the variant is saved in the weights' config):
  - "plain":   one conv + ReLU per level.
  - "dropout": the same, with 2-D dropout (p = 0.2) after each level but the last decoder one.
  - "deep":    two convs per level, each with BatchNorm.

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 32. Output ("ab"): (N, 2, H, W), Lab units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.errors import BadInputError
from bttf.models._registry import register_model

AB_SCALE = 110.0
VARIANTS = ("plain", "dropout", "deep")


def _level(cin: int, cout: int, stride: int, variant: str, dropout: float) -> nn.Sequential:
    deep = variant == "deep"
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not deep)]
    if deep:
        layers += [
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        ]
    layers.append(nn.ReLU(inplace=True))
    if variant == "dropout" and dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class CnnAutoencoder(nn.Module):
    """L -> ab through a stride-32 bottleneck (about 1.5 M parameters plain or dropout, 3.2 M deep).

    Args:
        variant: "plain", "dropout" or "deep" (see the module docstring).
        widths: channels of the five encoder levels (the decoder mirrors them).
        dropout: drop probability of the "dropout" variant.
    """

    def __init__(
        self,
        variant: str = "plain",
        widths: tuple[int, ...] | list[int] = (32, 64, 128, 192, 256),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise BadInputError(f"cnn-ae variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != 5:
            raise BadInputError(f"cnn-ae needs 5 widths (one per level), got {len(widths)}")
        self.variant = variant
        self.bttf_config = {"variant": variant, "widths": list(widths), "dropout": dropout}
        chans = (1, *widths)
        self.encoder = nn.ModuleList(
            _level(chans[i], chans[i + 1], 2, variant, dropout) for i in range(5)
        )
        # Decoder level i upsamples, then maps widths[4 - i] to widths[3 - i] (the last to
        # widths[0]): the encoder mirrored.
        out_ch = (*widths[::-1][1:], widths[0])
        self.decoder = nn.ModuleList(
            _level(widths[::-1][i], out_ch[i], 1, variant, dropout if i < 4 else 0.0)
            for i in range(5)
        )
        self.head = nn.Conv2d(widths[0], 2, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def encoder_parameters(self):
        return self.encoder.parameters()

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 32 -> ab (N, 2, H, W)."""
        x = (L - 50.0) / 50.0
        for level in self.encoder:
            x = level(x)
        for level in self.decoder:
            x = level(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.head(x) * AB_SCALE

    # The loop trains with this objective when the user leaves `--loss auto`.
    default_loss = "l2"


@register_model(
    "cnn-ae",
    output="ab",
    cpu_s_360p=0.11,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=256,
    description="plain 5-down/5-up conv autoencoder, MSE on ab; variant=plain|dropout|"
    "deep (~1.5-3.2 M params)",
)
def cnn_ae(**kw) -> CnnAutoencoder:
    """Plain convolutional autoencoder (variants plain, dropout, deep)."""
    return CnnAutoencoder(**kw)
