"""DeOldify (Jason Antic, jantic/DeOldify, MIT), in the key layout of its released generators, so
that `ColorizeArtistic_gen.pth`, `ColorizeStable_gen.pth` and `ColorizeVideo_gen.pth` load
strictly and unchanged (their `'model'` entry).

  - "deoldify-artistic": `DynamicUnetDeep` on a ResNet-34 body, `nf_factor=1.5` (63.6 M params);
  - "deoldify-stable", "deoldify-video": `DynamicUnetWide` on a ResNet-101 body, `nf_factor=2`
    (218 M params); the same architecture, different weights.

Written in plain torch after the fastai v1 code the release was trained with (`DynamicUnet*`,
`UnetBlock*`, `CustomPixelShuffle_ICNR`, `SelfAttention`, `res_block`): the top-level
`layers.N` indices are the fastai `SequentialEx` ones. Spectral norm is evaluated as torch's
eval mode does: weight = weight_orig / sigma, sigma = u . (W v) with the stored u and v (no power
iteration), W = weight_orig reshaped to (out, -1).

DeOldify's own pipeline feeds a gray image as ImageNet-normalised RGB (a square of side
`render_factor * 16`) and gets normalised RGB back in (-3, 3). Here `forward(L)` makes that gray
RGB from L (sRGB gray R = G = B whose L* is L: the film's own luma), runs the network at the
size it is given (any even H, W: skips that differ from the upsampled map are met with nearest
resizing, as the original does), de-normalises and clamps the RGB, and returns its Lab ab. The
engine puts that chroma on the film's own luma, as DeOldify puts its U, V on the original Y.

The building blocks (`SpectralConv`, `conv_block`, `PixelShuffleICNR`, `UnetBlockWide`) are
shared with DDColor, whose pixel decoder is DeOldify's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bttf.color import lab_to_rgb, rgb_to_lab
from bttf.models._registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Y_RANGE = (-3.0, 3.0)


def imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std, (1, 3, 1, 1) float32 on `device`. Made at each call rather than
    kept as buffers: no weights file holds them, and a model built on the meta device to be
    loaded (`bttf.models.weights.build_loaded`) must get every tensor from its file."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)


class SpectralConv(nn.Module):
    """A 1-D or 2-D convolution under eval-mode spectral norm (keys `weight_orig`, `weight_u`,
    `weight_v`, optional `bias`, as `torch.nn.utils.spectral_norm` stores them)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, *, bias: bool, dims: int = 2, padding: int = 0
    ) -> None:
        super().__init__()
        self.dims = dims
        self.padding = padding
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, *(kernel,) * dims))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("weight_u", torch.empty(cout))
        self.register_buffer("weight_v", torch.empty(cin * kernel**dims))
        if not self.weight_orig.is_meta:  # see `WeightNormConv`
            nn.init.kaiming_normal_(self.weight_orig)
        self.power_iteration(steps=3, seed=True)

    @torch.no_grad()
    def power_iteration(self, steps: int, seed: bool = False) -> None:
        """Refresh u, v (only for a freshly initialised module; loaded weights bring theirs)."""
        if self.weight_orig.is_meta:  # shapes only (parameter counts): nothing to compute
            return
        w = self.weight_orig.flatten(1)
        if seed:
            self.weight_u.copy_(F.normalize(torch.randn_like(self.weight_u), dim=0))
        for _ in range(steps):
            self.weight_v.copy_(F.normalize(w.t() @ self.weight_u, dim=0))
            self.weight_u.copy_(F.normalize(w @ self.weight_v, dim=0))

    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        # sigma in float32 even under autocast: a bf16 sigma would scale the whole layer off
        with torch.autocast(w.device.type, enabled=False):
            sigma = torch.dot(self.weight_u.float(), w.float().flatten(1) @ self.weight_v.float())
        return w / sigma.to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, self.weight(), self.bias, padding=self.padding)


class WeightNormConv(nn.Module):
    """A 1x1 convolution under weight norm (keys `weight_g`, `weight_v`, `bias`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(cout, cin, 1, 1))
        self.weight_g = nn.Parameter(torch.empty(cout, 1, 1, 1))
        # No init on the meta device, where a model to be loaded is built: torch's meta
        # `normal_` and `norm` import sympy (1.3 s, once a process); the file brings the values.
        if not self.weight_v.is_meta:
            nn.init.kaiming_normal_(self.weight_v)
            with torch.no_grad():
                self.weight_g.copy_(self.weight_v.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        w = v * (self.weight_g / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        return F.conv2d(x, w, self.bias)


class SelfAttention(nn.Module):
    """fastai's SAGAN self-attention: spectral 1-D query/key/value convs, a learned `gamma`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = SpectralConv(channels, channels // 8, 1, bias=False, dims=1)
        self.key = SpectralConv(channels, channels // 8, 1, bias=False, dims=1)
        self.value = SpectralConv(channels, channels, 1, bias=False, dims=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape
        x = x.flatten(2)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        return (self.gamma * torch.bmm(h, beta) + x).view(size)


def conv_block(
    cin: int,
    cout: int,
    kernel: int = 3,
    *,
    activ: bool = True,
    batchnorm: bool = True,
    attention: bool = False,
) -> nn.Sequential:
    """fastai's `custom_conv_layer` with spectral norm: [conv, ReLU?, BatchNorm?, attention?];
    the conv has a bias exactly when there is no BatchNorm."""
    layers: list[nn.Module] = [
        SpectralConv(cin, cout, kernel, bias=not batchnorm, padding=(kernel - 1) // 2)
    ]
    if activ:
        layers.append(nn.ReLU(inplace=True))
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    if attention:
        layers.append(SelfAttention(cout))
    return nn.Sequential(*layers)


def blur(x: torch.Tensor) -> torch.Tensor:
    """The anti-checkerboard blur after a pixel shuffle: replicate-pad left/top, 2x2 mean."""
    return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


class PixelShuffleICNR(nn.Module):
    """`CustomPixelShuffle_ICNR`: 1x1 conv to cout * scale^2 (spectral, with BatchNorm when
    `batchnorm`), ReLU, pixel shuffle, blur. fastai's blur flag is a module, always true, so
    the blur is always applied."""

    def __init__(self, cin: int, cout: int, scale: int = 2, *, batchnorm: bool = True) -> None:
        super().__init__()
        self.conv = conv_block(cin, cout * scale**2, 1, activ=False, batchnorm=batchnorm)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur(F.pixel_shuffle(F.relu(self.conv(x)), self.scale))


class WeightNormShuffle(nn.Module):
    """fastai's own `PixelShuffle_ICNR` (weight norm, bias), the last upsampler of the U-Net."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(WeightNormConv(channels, channels * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur(F.pixel_shuffle(F.relu(self.conv(x)), 2))


def _merge(up: torch.Tensor, skip: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    if up.shape[-2:] != skip.shape[-2:]:
        up = F.interpolate(up, skip.shape[-2:], mode="nearest")
    return F.relu(torch.cat([up, bn(skip)], dim=1))


class UnetBlockWide(nn.Module):
    """Upsample (`shuf`), concatenate the normalised skip (`bn`), one conv (`conv`)."""

    def __init__(
        self, up_c: int, skip_c: int, up_out: int, out_c: int, attention: bool = False
    ) -> None:
        super().__init__()
        self.shuf = PixelShuffleICNR(up_c, up_out)
        self.bn = nn.BatchNorm2d(skip_c)
        self.conv = conv_block(up_out + skip_c, out_c, attention=attention)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(_merge(self.shuf(x), skip, self.bn))


class UnetBlockDeep(nn.Module):
    """Upsample (`shuf`) to half the channels, concatenate the skip, two convs."""

    def __init__(self, up_c: int, skip_c: int, out_c: int, attention: bool = False) -> None:
        super().__init__()
        self.shuf = PixelShuffleICNR(up_c, up_c // 2)
        self.bn = nn.BatchNorm2d(skip_c)
        self.conv1 = conv_block(up_c // 2 + skip_c, out_c)
        self.conv2 = conv_block(out_c, out_c, attention=attention)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(_merge(self.shuf(x), skip, self.bn)))


class ResBlock(nn.Module):
    """fastai's `res_block` with spectral norm: x + conv(conv(x)), each conv with bias + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [conv_block(channels, channels, batchnorm=False) for _ in range(2)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers[1](self.layers[0](x))


# ---- the torchvision ResNet body (conv1, bn1, relu, maxpool, layer1..layer4) ------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = _downsample(cin, width * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def resnet_body(block: type[BasicBlock | Bottleneck], depths: tuple[int, ...]) -> nn.Sequential:
    """torchvision's ResNet without avgpool and fc, as one Sequential (indices 0..7)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, depth in enumerate(depths):
        width = 64 * 2**i
        blocks = []
        for j in range(depth):
            blocks.append(block(cin, width, stride=2 if (i > 0 and j == 0) else 1))
            cin = width * block.expansion
        layers.append(nn.Sequential(*blocks))
    return nn.Sequential(*layers)


# ---- the U-Nets --------------------------------------------------------------------------------

# Encoder indices whose outputs are the skips, deepest first (relu at 1/2, layer1..layer3).
SKIP_INDICES = (6, 5, 4, 2)


class DeOldify(nn.Module):
    """A DeOldify generator: L (N, 1, H, W) in [0, 100] -> ab (N, 2, H, W); H, W even.

    The state dict (`layers.*`) is exactly the release's `'model'` entry. `generate` is the
    generator itself, on ImageNet-normalised RGB; `rgb` is DeOldify's colour image.

    Args:
        variant: "deep" (DynamicUnetDeep, ResNet-34, nf_factor 1.5) or "wide"
            (DynamicUnetWide, ResNet-101, nf 1024).
    """

    def __init__(self, variant: str = "deep") -> None:
        super().__init__()
        if variant not in ("deep", "wide"):
            raise ValueError(f"variant must be 'deep' or 'wide', got {variant!r}")
        self.variant = variant
        if variant == "deep":
            body, expansion = resnet_body(BasicBlock, (3, 4, 6, 3)), 1
        else:
            body, expansion = resnet_body(Bottleneck, (3, 4, 23, 3)), 4
        skips = [64 * 2**i * expansion for i in (2, 1, 0)] + [64]  # channels at SKIP_INDICES
        ni = 512 * expansion
        middle = nn.Sequential(conv_block(ni, ni * 2), conv_block(ni * 2, ni))
        blocks, up = self._blocks(variant, ni, skips)
        self.layers = nn.ModuleList(
            [
                body,
                nn.BatchNorm2d(ni),
                nn.ReLU(),
                middle,
                *blocks,
                WeightNormShuffle(up),
                nn.Identity(),  # 9: fastai's MergeLayer(dense=True), concatenating the input
                ResBlock(up + 3),
                conv_block(up + 3, 3, 1, activ=False, batchnorm=False),
            ]
        )

    @staticmethod
    def _blocks(variant: str, ni: int, skips: list[int]) -> tuple[list[nn.Module], int]:
        """The four U-Net blocks (layers 4..7) and the channels they end with."""
        blocks: list[nn.Module] = []
        up = ni
        for i, skip in enumerate(skips):
            final = i == len(skips) - 1
            attention = i == 1
            if variant == "deep":
                cat = up // 2 + skip
                out = int((cat // 2 if final else cat) * 1.5)
                blocks.append(UnetBlockDeep(up, skip, out, attention=attention))
            else:
                out = 256 if final else 512  # half of nf = 512 * nf_factor, halved for the last
                blocks.append(UnetBlockWide(up, skip, out, out, attention=attention))
            up = out
        return blocks, up

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB (N, 3, H, W) -> normalised RGB in (-3, 3), the raw output."""
        body = self.layers[0]
        skips: dict[int, torch.Tensor] = {}
        h = x
        for i, module in enumerate(body):
            h = module(h)
            if i in SKIP_INDICES:
                skips[i] = h
        h = self.layers[3](self.layers[2](self.layers[1](h)))
        for block, index in zip(self.layers[4:8], SKIP_INDICES, strict=True):
            h = block(h, skips[index])
        h = self.layers[8](h)
        h = self.layers[10](torch.cat([h, x], dim=1))
        h = self.layers[11](h)
        lo, hi = Y_RANGE
        return torch.sigmoid(h) * (hi - lo) + lo

    def normalise(self, L: torch.Tensor) -> torch.Tensor:
        """L -> the generator's input: gray sRGB (R = G = B) normalised with ImageNet statistics."""
        zeros = torch.zeros_like(L)
        gray = lab_to_rgb(torch.cat([L, zeros, zeros], dim=1))
        mean, std = imagenet_stats(L.device)
        return (gray - mean) / std

    def rgb(self, L: torch.Tensor) -> torch.Tensor:
        """DeOldify's colour image for L: sRGB (N, 3, H, W) in [0, 1]."""
        out = self.generate(self.normalise(L))
        mean, std = imagenet_stats(L.device)
        return (out * std + mean).clamp(0, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100] -> ab (N, 2, H, W) of DeOldify's colour image."""
        rgb = self.rgb(L).float()
        return rgb_to_lab(rgb)[:, 1:].to(L.dtype)


@register_model(
    "deoldify-artistic",
    output="ab",
    cpu_s_360p=19.4,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=560,
    description="DeOldify artistic (U-Net, ResNet-34, 64 M params; ColorizeArtistic_gen.pth)",
)
def deoldify_artistic(**kw) -> DeOldify:
    """DeOldify's artistic generator (DynamicUnetDeep, ResNet-34)."""
    return DeOldify("deep", **kw)


@register_model(
    "deoldify-stable",
    output="ab",
    cpu_s_360p=16.3,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=560,
    description="DeOldify stable (wide U-Net, ResNet-101, 218 M params; ColorizeStable_gen.pth)",
)
def deoldify_stable(**kw) -> DeOldify:
    """DeOldify's stable generator (DynamicUnetWide, ResNet-101)."""
    return DeOldify("wide", **kw)


@register_model(
    "deoldify-video",
    output="ab",
    cpu_s_360p=6.6,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=16,
    render_size=336,
    description="DeOldify video (wide U-Net, ResNet-101, 218 M params; ColorizeVideo_gen.pth)",
)
def deoldify_video(**kw) -> DeOldify:
    """DeOldify's video generator (DynamicUnetWide, ResNet-101), render factor 21."""
    return DeOldify("wide", **kw)
