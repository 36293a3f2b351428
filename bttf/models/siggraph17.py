"""Zhang, Zhu, Isola et al., "Real-Time User-Guided Image Colorization with Learned Deep
Priors" (SIGGRAPH 2017), in the layout of the official PyTorch release
(`siggraph17-df00044c.pth`, richzhang/colorization, `colorizers/siggraph17.py`): same module
names, same tensor shapes, so that file loads strictly.

Used here for automatic colorization: the user hints default to none (zero ab, zero mask).
Inputs are normalised as the release does, L: (L - 50) / 100, ab hints: ab / 110, mask as is
(1 where a hint is given). The output is the release's regression head (`model_out`, tanh)
times 110: ab in Lab units at full input resolution. The 529-way class head `model_class`
(a distribution over the paper's 23x23 ab grid at 1/4 resolution) is kept so that the keys
match, and is not used.
"""

from __future__ import annotations

import torch
from torch import nn

from bttf.errors import BadInputError
from bttf.models._registry import register_model

AB_NORM = 110.0


def _convs(channels: list[int], *, init_relu: bool = False, norm: bool = True) -> nn.Sequential:
    """[ReLU] (conv ReLU)* [BN]: the release's Sequential indices."""
    layers: list[nn.Module] = [nn.ReLU(inplace=True)] if init_relu else []
    for i in range(len(channels) - 1):
        layers += [
            nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
        ]
    if norm:
        layers.append(nn.BatchNorm2d(channels[-1]))
    return nn.Sequential(*layers)


def _dilated(channels: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(channels) - 1):
        layers += [
            nn.Conv2d(channels[i], channels[i + 1], 3, padding=2, dilation=2, bias=True),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.BatchNorm2d(channels[-1]))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=True))


def _short(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=True))


class Siggraph17(nn.Module):
    """The SIGGRAPH17 colorizer (about 34 M parameters): L (+ optional hints) -> ab."""

    def __init__(self) -> None:
        super().__init__()
        self.model1 = _convs([4, 64, 64])
        self.model2 = _convs([64, 128, 128])
        self.model3 = _convs([128, 256, 256, 256])
        self.model4 = _convs([256, 512, 512, 512])
        self.model5 = _dilated([512, 512, 512, 512])
        self.model6 = _dilated([512, 512, 512, 512])
        self.model7 = _convs([512, 512, 512, 512])
        self.model8up = _up(512, 256)
        self.model3short8 = _short(256, 256)
        self.model8 = _convs([256, 256, 256], init_relu=True)
        self.model9up = _up(256, 128)
        self.model2short9 = _short(128, 128)
        self.model9 = _convs([128, 128], init_relu=True)
        self.model10up = _up(128, 128)
        self.model1short10 = _short(64, 128)
        self.model10 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, padding=1, bias=True),
            nn.LeakyReLU(negative_slope=0.2),
        )
        self.model_class = nn.Sequential(nn.Conv2d(256, 529, 1, bias=True))
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1, bias=True), nn.Tanh())
        self.softmax = nn.Sequential(nn.Softmax(dim=1))

    def forward(
        self,
        L: torch.Tensor,
        ab_hint: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 8; optional ab hints (N, 2, H, W)
        in Lab units and their mask (N, 1, H, W), 1 where a hint is given -> ab (N, 2, H, W)."""
        n, _, h, w = L.shape
        if ab_hint is None:
            ab_hint = L.new_zeros(n, 2, h, w)
        if mask is None:
            mask = L.new_zeros(n, 1, h, w)
        if ab_hint.shape != (n, 2, h, w) or mask.shape != (n, 1, h, w):
            raise BadInputError(
                f"hints must be (N, 2, H, W) and mask (N, 1, H, W) for L {tuple(L.shape)}; "
                f"got {tuple(ab_hint.shape)} and {tuple(mask.shape)}"
            )
        x = torch.cat(((L - 50.0) / 100.0, ab_hint / AB_NORM, mask), dim=1)
        conv1_2 = self.model1(x)
        conv2_2 = self.model2(conv1_2[:, :, ::2, ::2])
        conv3_3 = self.model3(conv2_2[:, :, ::2, ::2])
        conv4_3 = self.model4(conv3_3[:, :, ::2, ::2])
        conv7_3 = self.model7(self.model6(self.model5(conv4_3)))
        conv8_3 = self.model8(self.model8up(conv7_3) + self.model3short8(conv3_3))
        conv9_3 = self.model9(self.model9up(conv8_3) + self.model2short9(conv2_2))
        conv10_2 = self.model10(self.model10up(conv9_3) + self.model1short10(conv1_2))
        return self.model_out(conv10_2) * AB_NORM


@register_model(
    "siggraph17",
    output="ab",
    cpu_s_360p=0.61,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=8,
    render_size=256,
    description="Zhang et al. SIGGRAPH 2017 (U-Net, 34 M params; official weights)",
)
def siggraph17(**kw) -> Siggraph17:
    """Zhang et al. 2017, "Real-Time User-Guided Image Colorization" (official key layout)."""
    return Siggraph17(**kw)
