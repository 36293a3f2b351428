"""mean-chroma: a global-tint regressor, the simplest system bttf grew from.

Seven 3x3 convolutions (four of them stride 2) and global average pooling summarise the frame; a
two-layer fully-connected head regresses the image's mean (a, b). As a colorizer it paints that
one tint over the whole frame, which is what a sepia or hand-tinted print looks like, and a useful
floor for `bttf compare`: a model that cannot beat its own mean colour has learnt nothing local.
`MeanChroma.tint(L)` gives the (a, b) pair alone, as a cheap prior for other stages.

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 16.
Output ("ab"): the tint broadcast to a constant map (N, 2, H/16, W/16) in Lab units, which
`Colorizer.decode` resizes; trained with the default ab regression loss, whose minimiser against
the area-averaged truth is the image's mean ab.
"""

from __future__ import annotations

import torch
from torch import nn

from bttf.models._registry import register_model

AB_SCALE = 110.0
STRIDE = 16


class MeanChroma(nn.Module):
    """L -> one (a, b) per image, broadcast to (N, 2, H/16, W/16) (about 0.27 M parameters).

    Args:
        width: channels of the first convolution; later ones double at each stride (up to 8x).
        hidden: units of the fully-connected hidden layer.
    """

    def __init__(self, width: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.bttf_config = {"width": width, "hidden": hidden}
        w = width
        # (cin, cout, stride) of the seven convolutions: output stride 16.
        plan = [
            (1, w, 2),
            (w, w, 1),
            (w, 2 * w, 2),
            (2 * w, 2 * w, 1),
            (2 * w, 4 * w, 2),
            (4 * w, 8 * w, 2),
            (8 * w, 8 * w, 1),
        ]
        layers: list[nn.Module] = []
        for cin, cout, s in plan:
            layers += [
                nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(8 * w, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Start from gray: the first predictions are (0, 0), the safest tint.
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)

    def tint(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100] (any size of at least 16 pixels) -> mean ab (N, 2)."""
        x = self.features((L - 50.0) / 50.0)
        return self.fc(x.mean(dim=(2, 3))) * AB_SCALE

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 16 -> ab (N, 2, H/16, W/16)."""
        ab = self.tint(L)
        h, w = L.shape[-2] // STRIDE, L.shape[-1] // STRIDE
        return ab[:, :, None, None].expand(-1, -1, h, w).contiguous()


@register_model(
    "mean-chroma",
    output="ab",
    cpu_s_360p=0.05,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=STRIDE,
    render_size=128,
    description="global tint: 7 convs + FC regress the mean (a, b) (~0.27 M params)",
)
def mean_chroma(**kw) -> MeanChroma:
    """Global-tint baseline: the image's mean (a, b) everywhere."""
    return MeanChroma(**kw)
