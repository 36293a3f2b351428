"""Zhang, Isola & Efros, "Colorful Image Colorization" (ECCV 2016), in the layout of the
official PyTorch release (`colorization_release_v2-9b330a0b.pth`, richzhang/colorization,
`colorizers/eccv16.py`): same module names, same tensor shapes, so that file loads strictly.

Input L in [0, 100] is normalised as the release does, (L - 50) / 100. `forward` returns the
313 bin logits at 1/4 resolution (the output of `model8`), at temperature 1, as the registry
demands. `model_out` (a 1x1 conv holding the bin centres / 110 in the release) and `softmax`
are kept as modules so the keys match; `release_ab` runs the release's own decoding with them.

Temperature, and why `forward` divides `model8`'s output by 2.606
-----------------------------------------------------------------
The Caffe deploy net of the paper (richzhang/colorization,
`models/colorization_deploy_v2.prototxt`) ends
    conv8_313 -> conv8_313_rh (Scale, constant 2.606, no bias) -> Softmax -> class8_ab
(class8_ab: a 1x1 conv holding the bin centres), so the released colours are the mean of
softmax(2.606 * z), z the trained logits: the paper's annealed mean (eq. 5,
f_T(p) = exp(log p / T) / sum, i.e. softmax(z / T)) at T = 1 / 2.606 = 0.3837, the paper's
T = 0.38. (OpenCV's `samples/dnn/colorization.py` and every cv2.dnn port set the same 2.606
blob; chuchienshu/Colorization issue #4 spells out 2.606 = 1/0.38.)

The PyTorch port's forward is `model_out(softmax(model8(x)))`: a module for every deploy
layer except the Scale layer, and no temperature anywhere (richzhang/colorization issue #93
asks where T went; it is unanswered). The weights are a conversion of the Caffe release, not a
retraining: the README's "Sept20 update" says the repo was converted to PyTorch for test-time
use, and the file keeps the Caffe model's name (`colorization_release_v2.caffemodel` ->
`colorization_release_v2-9b330a0b.pth`). The conversion folded the deploy net's other
constants into the adjacent convolutions: Caffe took L - 50 where the port feeds
(L - 50) / 100, so `model1.0` carries the x100, and `model_out` holds the bin centres / 110,
undone by the x110 of `unnormalize_ab`. A bias-free Scale right after a 1x1 conv folds the
same way, and the port's forward has no other place for it, so `model8.6` (weight and bias)
holds 2.606 * conv8_313: softmax(model8) already *is* the deploy's annealed distribution at
T = 0.3837. No public source states the fold outright; it is an inference from the port's
structure. The check, for whoever holds both files: `model8.6.weight / conv8_313 weight` is
2.606 everywhere (or 1 if the fold did not happen: then set RELEASE_LOGIT_SCALE to 1).

So the temperature-1 logits are model8 / 2.606, which `forward` returns. `Colorizer` then
decodes with softmax(z / 0.38) = softmax(1.0098 * model8): the Caffe deploy to within 1% of
the logit scale, and the release's own PyTorch demo likewise (`release_ab`; pinned by tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.models._registry import register_model
from bttf.models.bins import AB_BINS

# The `conv8_313_rh` Scale of the Caffe deploy net, folded into `model8.6` by the port.
RELEASE_LOGIT_SCALE = 2.606
AB_NORM = 110.0


def _block(
    channels: list[int], *, first_stride: int = 1, last_stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """conv-ReLU pairs then BatchNorm, as the release's Sequential indices expect."""
    layers: list[nn.Module] = []
    n = len(channels) - 1
    for i in range(n):
        stride = last_stride if i == n - 1 else first_stride if i == 0 else 1
        layers += [
            nn.Conv2d(
                channels[i],
                channels[i + 1],
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=True,
            ),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.BatchNorm2d(channels[-1]))
    return nn.Sequential(*layers)


class Eccv16(nn.Module):
    """The ECCV16 colorizer (about 32 M parameters): L -> 313 bin logits at stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.model1 = _block([1, 64, 64], last_stride=2)
        self.model2 = _block([64, 128, 128], last_stride=2)
        self.model3 = _block([128, 256, 256, 256], last_stride=2)
        self.model4 = _block([256, 512, 512, 512])
        self.model5 = _block([512, 512, 512, 512], dilation=2)
        self.model6 = _block([512, 512, 512, 512], dilation=2)
        self.model7 = _block([512, 512, 512, 512])
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 313, 1, bias=True),
        )
        self.softmax = nn.Softmax(dim=1)
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        with torch.no_grad():
            # What the release holds: the bin centres / 110, the expectation over bins.
            self.model_out.weight.copy_(AB_BINS.t().reshape(2, 313, 1, 1) / AB_NORM)
        self.model_out.weight.requires_grad_(False)

    def _release_logits(self, L: torch.Tensor) -> torch.Tensor:
        """`model8`'s raw output (deploy-annealed logits) at H/4 x W/4."""
        h, w = L.shape[-2:]
        x = (L - 50.0) / 100.0
        # Three stride-2 convs then one x2 deconv: pad to a multiple of 8 so that the output
        # is exactly (H/4, W/4) and aligned for any H, W that are multiples of 4.
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        for block in (
            self.model1,
            self.model2,
            self.model3,
            self.model4,
            self.model5,
            self.model6,
            self.model7,
            self.model8,
        ):
            x = block(x)
        return x[..., : (h + 3) // 4, : (w + 3) // 4]

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100] -> temperature-1 logits (N, 313, H/4, W/4)."""
        return self._release_logits(L) / RELEASE_LOGIT_SCALE

    def release_ab(self, L: torch.Tensor) -> torch.Tensor:
        """The release's own decoding: `model_out(softmax(model8)) * 110`, ab at H/4 x W/4."""
        return self.model_out(self.softmax(self._release_logits(L))) * AB_NORM


@register_model(
    "eccv16",
    output="bins",
    cpu_s_360p=0.3,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=4,
    render_size=256,
    description="Zhang et al. ECCV 2016 (VGG-style, 32 M params; official weights)",
)
def eccv16(**kw) -> Eccv16:
    """Zhang et al. 2016, "Colorful Image Colorization" (official key layout)."""
    return Eccv16(**kw)
