"""pix2pix: Isola et al. 2017's conditional GAN, as a colorizer (L -> ab).

The generator (the registered model) is pix2pix's U-Net: each encoder level is LeakyReLU(0.2),
a 4x4 stride-2 convolution and BatchNorm (none on the first and the innermost); each decoder level
is ReLU, a 4x4 stride-2 transposed convolution, BatchNorm and, on the three levels after the
innermost, dropout 0.5 (training only), concatenated with the encoder's features of the same
scale. The output is tanh(x) * 110, ab in Lab units (the scale the training losses normalise by).
The paper's generator has 8 levels of 64..512 channels (54 M parameters); the defaults here are
6 levels of 32..256 (about 7.3 M), usable on a CPU, with the same structure.

`PatchGAN70` is the paper's 70x70 PatchGAN discriminator (C64-C128-C256-C512, 4x4 kernels): it
scores overlapping 70x70 patches of the Lab image (L and ab, 3 channels, as
`bttf.training.losses.lab_input` scales them) as real or fake. The generator offers it to the
training loop through `make_discriminator()`; `default_loss` "gan" makes `bttf train --model
pix2pix` train adversarially (BCE-with-logits) + 100 * L1 (`bttf.training.losses.GanObjective`).
Only the generator goes into the `.safetensors`; the discriminator and its optimizer are in the
run's `state.pt` for `--resume`.

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 2^depth (64 by default).
Output ("ab"): (N, 2, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from bttf.errors import BadInputError
from bttf.models._registry import register_model

AB_SCALE = 110.0


class _Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, outermost: bool = False, innermost: bool = False):
        layers: list[nn.Module] = []
        if not outermost:
            # Not in place: its input is also the skip tensor the decoder concatenates.
            layers.append(nn.LeakyReLU(0.2))
        # A conv followed by BatchNorm needs no bias.
        norm = not (outermost or innermost)
        layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        super().__init__(*layers)


class _Up(nn.Sequential):
    def __init__(self, cin: int, cout: int, outermost: bool = False, dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.ReLU(),
            nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=outermost),
        ]
        if not outermost:
            layers.append(nn.BatchNorm2d(cout))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Pix2PixGenerator(nn.Module):
    """pix2pix's U-Net generator, L -> ab (about 7.3 M parameters with the defaults).

    Args:
        width: channels of the first level; each next level doubles them, up to `max_width`.
        depth: number of stride-2 levels (the input must be a multiple of 2^depth); >= 2.
        max_width: the cap on channels.
        dropout: dropout of the three decoder levels after the innermost (0.5 in the paper).
    """

    default_loss = "gan"

    def __init__(
        self, width: int = 32, depth: int = 6, max_width: int = 256, dropout: float = 0.5
    ) -> None:
        super().__init__()
        if depth < 2:
            raise BadInputError(f"pix2pix depth {depth} must be at least 2")
        self.bttf_config = {
            "width": width,
            "depth": depth,
            "max_width": max_width,
            "dropout": dropout,
        }
        chans = [min(width * 2**i, max_width) for i in range(depth)]
        self.down = nn.ModuleList(
            _Down(
                1 if i == 0 else chans[i - 1], chans[i], outermost=i == 0, innermost=i == depth - 1
            )
            for i in range(depth)
        )
        ups: list[nn.Module] = []
        for i in reversed(range(depth)):  # from the innermost level out
            cin = chans[i] if i == depth - 1 else 2 * chans[i]
            if i == 0:
                ups.append(_Up(cin, 2, outermost=True))
            else:
                # As in the paper: dropout on the three levels after the innermost one.
                drop = dropout if 1 <= depth - 1 - i <= 3 else 0.0
                ups.append(_Up(cin, chans[i - 1], dropout=drop))
        self.up = nn.ModuleList(ups)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)  # the paper's init
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def encoder_parameters(self):
        return self.down.parameters()

    def make_discriminator(self) -> PatchGAN70:
        """A fresh discriminator for adversarial training (the loop's GAN hook)."""
        return PatchGAN70()

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 2^depth -> ab (N, 2, H, W)."""
        x = (L - 50.0) / 50.0
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = block(x)
            if skips:
                x = torch.cat((x, skips.pop()), dim=1)
        return torch.tanh(x) * AB_SCALE


class PatchGAN70(nn.Module):
    """pix2pix's 70x70 PatchGAN: Lab (N, 3, H, W) scaled to about [-1, 1] -> logits
    (N, 1, H/8 - 2, W/8 - 2), one per overlapping 70x70 patch (about 2.8 M parameters at width 64).

    Args:
        width: channels of the first layer (64 in the paper); doubled per layer up to 8x.
        in_channels: 3 (L and ab).
    """

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1, bias=False),
            nn.BatchNorm2d(8 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(8 * w, 1, 4, 1, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        """lab (N, 3, H, W), H and W at least 32 -> patch logits (N, 1, H/8 - 2, W/8 - 2)."""
        return self.net(lab)


@register_model(
    "pix2pix",
    output="ab",
    cpu_s_360p=0.11,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=64,
    render_size=256,
    description="pix2pix U-Net generator, trained with a 70x70 PatchGAN + 100 L1 (~7.3 M params)",
)
def pix2pix(**kw) -> Pix2PixGenerator:
    """pix2pix U-Net generator (adversarial + L1 training), ab output tanh x 110."""
    return Pix2PixGenerator(**kw)
