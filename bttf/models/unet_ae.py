"""unet-ae: the convolutional autoencoder with U-Net skip connections.

Four levels of (3x3 conv, BatchNorm, ReLU) x 2, max-pooled down to stride 16, and a decoder that
upsamples (bilinear) and concatenates the encoder's features of the same scale before its two
convolutions: edges reach the output directly, so colour stops where objects do (compare
`cnn-ae`, which has no skips). The output is tanh(x) * 110: ab is bounded to the range the
training losses normalise by (`bttf.training.losses.AB_SCALE`), which covers the sRGB gamut
(a in about [-86, 98], b in about [-108, 95]) with tanh far from saturation for common colours.

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 16. Output ("ab"): (N, 2, H, W), Lab units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.errors import BadInputError
from bttf.models._registry import register_model

AB_SCALE = 110.0


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNetAutoencoder(nn.Module):
    """L -> ab, U-Net with `len(widths) - 1` poolings (about 2.0 M parameters by default).

    Args:
        widths: channels per level, full resolution first; the last is the bottleneck's.
    """

    def __init__(self, widths: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise BadInputError(f"unet-ae needs at least 2 widths, got {len(widths)}")
        self.bttf_config = {"widths": list(widths)}
        self.down = nn.ModuleList(
            DoubleConv(1 if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)
        )
        self.up = nn.ModuleList(
            DoubleConv(widths[i + 1] + widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 2, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def encoder_parameters(self):
        return self.down.parameters()

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 2^(levels - 1) -> ab (N, 2, H, W)."""
        x = (L - 50.0) / 50.0
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat((x, skip), dim=1))
        return torch.tanh(self.head(x)) * AB_SCALE


@register_model(
    "unet-ae",
    output="ab",
    cpu_s_360p=0.13,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=256,
    description="U-Net autoencoder with skips, tanh x 110 ab output (~2.0 M params)",
)
def unet_ae(**kw) -> UNetAutoencoder:
    """U-Net autoencoder (skip connections), tanh output scaled to +-110."""
    return UNetAutoencoder(**kw)
