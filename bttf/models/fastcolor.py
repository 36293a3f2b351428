"""fastcolor: bttf's small default colorizer, built to run in real time on a laptop CPU.

A MobileNetV2-style encoder (inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1 project)
takes L to stride 16; two dilated blocks and a global-context branch (image pooling, as in
DeepLabV3's ASPP) give each pixel the whole frame's context, which decides colour more than
local texture does. A light U-Net decoder brings the features back to stride 4 through skip
connections from strides 8 and 4, and a 1x1 convolution gives the 313 bin logits of
`bttf.models.bins` (temperature 1, trained with cross-entropy on soft-encoded targets).

`fastcolor2` adds a stage at stride 32 (six inverted residual blocks of 256 channels) after the
context blocks, brought back up and added to the stride-16 features: 4 M parameters instead of
1 M for about 20% more compute. Its output projection starts at zero, so it grows from a fastcolor
file (`ModelSpec.grows_from`: `bttf train --model fastcolor2 --init fastcolor.safetensors` starts
as that network's exact function).

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 16. Output: logits (N, 313, H/4, W/4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.models._registry import register_model
from bttf.models.bins import is_pixel_major

Q = 313


class ConvBNAct(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU (or no activation).

    In eval mode the BatchNorm is folded into the convolution on the fly (a few thousand
    weights per call), which saves a pass over the activations; the state dict and training
    behaviour are those of the plain conv + BN.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            cin,
            cout,
            k,
            stride=stride,
            padding=dilation * (k // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            y = self.bn(self.conv(x))
        else:
            bn = self.bn
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            weight = self.conv.weight * scale.view(-1, 1, 1, 1)
            bias = bn.bias - bn.running_mean * scale
            y = _fused_conv(x, weight, bias, self.conv, self.act)
            if y is not None:
                return y
            y = self.conv._conv_forward(x, weight, bias)
        return F.relu_(y) if self.act else y


_FUSED = [hasattr(torch.backends, "mkldnn") and torch.backends.mkldnn.is_available()]


def _fused_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d, relu: bool
) -> torch.Tensor | None:
    """conv + bias (+ ReLU) as one oneDNN call, for float32 inference on the CPU; None where
    that call is not available (then the caller runs the plain conv).

    Measured on one CPU thread (benchmarks/README.md): torch sends a 1x1 convolution of fewer
    than 16 images to its slow im2col path, with channels_last <-> NCHW copies around it, and
    runs ReLU as a pass of its own; this oneDNN primitive (the one torch.compile fuses to) does
    neither: fastcolor runs about 1.5x faster. Under `torch.compile` the compiler does this
    fusion itself (it cannot trace this op's channels_last output).
    """
    if not (
        _FUSED[0]
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    ):
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            weight,
            bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            "relu" if relu else "none",
            [],
            "",
        )
    except (AttributeError, RuntimeError, NotImplementedError):  # another torch: plain conv
        _FUSED[0] = False
        return None


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of channels_last `x` as one GEMM over its pixels, channels_last out."""
    n, c, h, w = x.shape
    y = torch.addmm(bias, x.permute(0, 2, 3, 1).reshape(-1, c), weight.view(-1, c).t())
    return y.view(n, h, w, -1).permute(0, 3, 1, 2)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; the residual path is taken when shapes allow."""

    def __init__(
        self, cin: int, cout: int, stride: int = 1, expand: int = 4, dilation: int = 1
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBNAct(cin, mid, 1),
            ConvBNAct(mid, mid, 3, stride=stride, dilation=dilation, groups=mid),
            ConvBNAct(mid, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class SepConv(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, each with BN + ReLU: the decoder's cheap conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(ConvBNAct(cin, cin, 3, groups=cin), ConvBNAct(cin, cout, 1))


class FastColor(nn.Module):
    """L -> 313 bin logits at stride 4 (1.03 M parameters, 1.1 GFLOPs at 256x256 by default).

    Args:
        widths: channels at strides 2, 4, 8, 16 and of the dilated context blocks.
        depths: blocks at strides 4, 8, 16 (the first of each strides down).
        decoder: channels of the decoder at strides 8 and 4.
        expand: inverted-residual expansion ratio.
        deep: (channels, blocks) of a stage at stride 32 after the context blocks, added back
            into stride 16 (`fastcolor2`); None: no such stage (`fastcolor`, v1-v3).
        out_channels: 313 for the bin head; 2 for the `fastcolor-l2` variant, which regresses
            ab (returned in Lab units).

    `bttf_config` holds every argument, so that saved weights name their architecture in full
    and keep loading if the defaults change.
    """

    def __init__(
        self,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 128, 160),
        depths: tuple[int, ...] | list[int] = (1, 3, 4),
        decoder: tuple[int, ...] | list[int] = (96, 64),
        expand: int = 4,
        out_channels: int = Q,
        deep: tuple[int, int] | list[int] | None = None,
    ) -> None:
        super().__init__()
        self.bttf_config = {
            "widths": list(widths),
            "depths": list(depths),
            "decoder": list(decoder),
            "expand": expand,
            "out_channels": out_channels,
        }
        if deep is not None:  # only where set: files of the plain network stay as they were
            self.bttf_config["deep"] = list(deep)
        c2, c4, c8, c16, cctx = widths
        d4, d8, d16 = depths
        d8c, d4c = decoder

        def stage(cin: int, cout: int, n: int) -> nn.Sequential:
            blocks = [InvertedResidual(cin, cout, stride=2, expand=expand)]
            blocks += [InvertedResidual(cout, cout, expand=expand) for _ in range(n - 1)]
            return nn.Sequential(*blocks)

        self.stem = nn.Sequential(ConvBNAct(1, c2, 3, stride=2), ConvBNAct(c2, c4, 3, stride=2))
        self.enc4 = nn.Sequential(*[InvertedResidual(c4, c4, expand=expand) for _ in range(d4)])
        self.enc8 = stage(c4, c8, d8)
        self.enc16 = stage(c8, c16, d16)
        self.context = nn.Sequential(
            InvertedResidual(c16, cctx, expand=expand, dilation=2),
            InvertedResidual(cctx, cctx, expand=expand, dilation=4),
        )
        self.deep = None
        if deep is not None:
            c32, d32 = deep
            # Its output projection starts at zero (BN weight 0): the network starts as the
            # plain one, so a plain network's weights are a start for this one.
            self.deep = nn.Sequential(stage(cctx, c32, d32), ConvBNAct(c32, cctx, 1, act=False))
        self.pool = nn.Sequential(nn.Conv2d(cctx, cctx, 1, bias=False), nn.ReLU(inplace=True))
        self.lat16 = ConvBNAct(cctx, d8c, 1)
        self.dec8 = SepConv(d8c + c8, d8c)
        self.lat8 = ConvBNAct(d8c, d4c, 1)
        self.dec4 = nn.Sequential(SepConv(d4c + c4, d4c), SepConv(d4c, d4c))
        self.head = nn.Conv2d(d4c, out_channels, 1, bias=True)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            # Residual branches start near identity: the last BN of each block at zero.
            if isinstance(m, InvertedResidual) and m.use_res:
                nn.init.zeros_(m.block[-1].bn.weight)
        if self.deep is not None:
            nn.init.zeros_(self.deep[-1].bn.weight)
        # Logits start small and flat: the first predictions are near the uniform distribution.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 16 -> logits (N, 313, H/4, W/4)."""
        x = self.stem((L - 50.0) / 50.0)
        s4 = self.enc4(x)
        s8 = self.enc8(s4)
        s16 = self.context(self.enc16(s8))
        if self.deep is not None:
            s32 = self.deep(s16)
            s16 = s16 + F.interpolate(
                s32, size=s16.shape[-2:], mode="bilinear", align_corners=False
            )
        s16 = s16 + self.pool(s16.mean(dim=(2, 3), keepdim=True))
        y = F.interpolate(self.lat16(s16), size=s8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec8(torch.cat((y, s8), dim=1))
        y = F.interpolate(self.lat8(y), size=s4.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec4(torch.cat((y, s4), dim=1))
        # The 1x1 head as one GEMM: oneDNN's convolution is slow for 313 channels.
        n, c, h, w = y.shape
        q = self.head.out_channels
        if is_pixel_major(y):  # channels_last in, pixel-major logits out
            out = _pointwise(y, self.head.weight, self.head.bias)
        else:
            out = torch.baddbmm(
                self.head.bias.view(1, q, 1),
                self.head.weight.view(1, q, c).expand(n, q, c),
                y.reshape(n, c, h * w),
            ).view(n, q, h, w)
        # The ab variant regresses ab / 110 (the seeds' normalisation), returned in Lab units.
        return out if q == Q else out * 110.0


#: fastcolor's default `unsure` decoding: none. Measured on v2 (model card): (0.3, 0.6) moved the
#: validation AuC by -0.4 points and the films' colour statistics the wrong way (JS to the ImageNet
#: prior 0.19 -> 0.25, greens gone); on v1 it paid (+0.8 rebalanced AuC). `--unsure LO,HI` keeps it.
UNSURE = None


@register_model(
    "fastcolor",
    output="bins",
    cpu_s_360p=0.11,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=256,
    shipped="fastcolor.safetensors",
    unsure=UNSURE,
    aliases=("default",),
    description="bttf's fast default (MobileNetV2-style U-Net, 1 M params)",
)
def fastcolor(**kw) -> FastColor:
    """bttf's small, fast default colorizer (313-bin head)."""
    return FastColor(**kw)


@register_model(
    "fastcolor-l2",
    output="ab",
    cpu_s_360p=0.09,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=256,
    description="fastcolor's network regressing ab directly (trained with L2)",
)
def fastcolor_l2(**kw) -> FastColor:
    """fastcolor's network with a 2-channel ab head: the baseline for its L2-vs-bins comparison."""
    return FastColor(**{"out_channels": 2, **kw})


#: fastcolor2's stage at stride 32: (channels, blocks). 4 M parameters in all; the network alone
#: runs at 0.83x fastcolor's speed (448x256, batch 8, 2 threads), `bttf colorize` at 0.89x.
DEEP = (256, 6)


@register_model(
    "fastcolor2",
    output="bins",
    # fastcolor's 0.11 x 1.14: benchmarks/model_speed.py --pipeline, 360p, 96 frames, -b 8,
    # alternated with fastcolor three times (2026-12-06, quiet host): 0.08 vs 0.07 CPU s per frame,
    # 19.2-20.7 vs 22.2-22.8 fps.
    cpu_s_360p=0.125,
    stride=16,
    render_size=256,
    grows_from="fastcolor",
    description="fastcolor with a deeper context stage at stride 32 (4 M params)",
)
def fastcolor2(**kw) -> FastColor:
    """fastcolor's network with a stage at stride 32 for more of the scene's context."""
    return FastColor(**{"deep": DEEP, **kw})
