"""resnet18 / resnet18-bins: an ImageNet-style ResNet-18 trunk with an upsampling colour head.

The trunk is He et al.'s ResNet written out here with torchvision's exact state-dict key layout
(`conv1`, `bn1`, `layer1`..`layer4` `.N` `.conv1/.bn1/.conv2/.bn2[/.conv3/.bn3]`, and
`.downsample.0/.1`), so an ImageNet classification checkpoint loads into it unchanged
(`load_imagenet_trunk`, used by `bttf train --init imagenet` or `--init resnet18-f37072fd.pth`);
its `fc.*` is ignored. `ResNetColorizer` takes the depth: 18 (BasicBlock, registered here) or 50
(torchvision's Bottleneck, stride on the 3x3 conv; registered in `bttf.models.resnet50`).
The trunk sees what it was trained on: L is turned into its sRGB gray value, replicated to three
channels and normalised with ImageNet's mean and std.

A light U-Net head upsamples from stride 32, concatenating `layer3`, `layer2` and `layer1`
features (strides 16, 8, 4), to stride 4, then a 1x1 convolution gives
  - "resnet18": ab (N, 2, H/4, W/4) = 110 * tanh(x), Lab units, or
  - "resnet18-bins": 313 bin logits (N, 313, H/4, W/4) of `bttf.models.bins`.
`Colorizer.decode` upsamples either to the frame.

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 32.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bttf.errors import BadInputError, WeightsError
from bttf.models._registry import register_model

log = logging.getLogger(__name__)

AB_SCALE = 110.0
Q = 313
HEADS = ("ab", "bins")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Top-level prefixes of the trunk's keys in torchvision's layout.
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with BN, identity (or 1x1 conv + BN) shortcut."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5): 1x1, 3x3 (the stride), 1x1 x4 convs with BN."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: depth -> (block, blocks per stage), as torchvision builds them.
LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def _stage(block: type[nn.Module], cin: int, width: int, blocks: int, stride: int):
    """One `layerN`: the first block strides (and projects), the rest keep the size."""
    layers = [block(cin, width, stride)]
    cout = width * block.expansion
    layers += [block(cout, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), cout


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def l_to_gray(L: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> the sRGB value in [0, 1] of the neutral gray with that lightness."""
    fy = (L + 16.0) / 116.0
    y = torch.where(fy > 6.0 / 29.0, fy**3, (fy - 16.0 / 116.0) / 7.787)
    y = y.clamp(0.0, 1.0)
    return torch.where(y > 0.0031308, 1.055 * y.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * y)


class ResNetColorizer(nn.Module):
    """ResNet trunk (torchvision key layout) + U-Net head to stride 4. About 13.5 M parameters
    at depth 18, about 32 M at depth 50 (either head).

    Args:
        head: "ab" (2 channels, tanh x 110) or "bins" (313 logits).
        decoder: channels of the head at strides 16, 8 and 4.
        depth: 18 or 50 (`LAYOUTS`); not part of the saved config: the registered name says it.
    """

    def __init__(
        self,
        head: str = "ab",
        decoder: tuple[int, ...] | list[int] = (256, 128, 64),
        depth: int = 18,
    ) -> None:
        super().__init__()
        name = f"resnet{depth}"
        if depth not in LAYOUTS:
            raise BadInputError(
                f"ResNet depth {depth}: choose one of {', '.join(map(str, LAYOUTS))}"
            )
        if head not in HEADS:
            raise BadInputError(f"{name} head {head!r}: choose one of {', '.join(HEADS)}")
        decoder = tuple(int(c) for c in decoder)
        if len(decoder) != 3:
            raise BadInputError(f"{name} needs 3 decoder widths, got {len(decoder)}")
        self.head_kind = head
        self.depth = depth
        self.bttf_config = {"head": head, "decoder": list(decoder)}
        # The trunk, attribute names as in torchvision.models.resnetN (fc and avgpool left out).
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block, counts = LAYOUTS[depth]
        self.layer1, c4 = _stage(block, 64, 64, counts[0], 1)
        self.layer2, c8 = _stage(block, c4, 128, counts[1], 2)
        self.layer3, c16 = _stage(block, c8, 256, counts[2], 2)
        self.layer4, c32 = _stage(block, c16, 512, counts[3], 2)
        d16, d8, d4 = decoder
        self.dec16 = _conv_bn_relu(c32 + c16, d16)
        self.dec8 = _conv_bn_relu(d16 + c8, d8)
        self.dec4 = _conv_bn_relu(d8 + c4, d4)
        self.head = nn.Conv2d(d4, 2 if head == "ab" else Q, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # residual branches start as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def encoder_parameters(self):
        for name, p in self.named_parameters():
            if name.startswith(TRUNK_PREFIXES):
                yield p

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """L (N, 1, H, W) in [0, 100], H and W multiples of 32 -> ab (N, 2, H/4, W/4) or logits
        (N, 313, H/4, W/4)."""
        x = (l_to_gray(L).expand(-1, 3, -1, -1) - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s4 = self.layer1(x)
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)
        y = self.dec16(torch.cat((_up(s32, s16), s16), 1))
        y = self.dec8(torch.cat((_up(y, s8), s8), 1))
        y = self.dec4(torch.cat((_up(y, s4), s4), 1))
        y = self.head(y)
        return torch.tanh(y) * AB_SCALE if self.head_kind == "ab" else y


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


#: The name used before the trunk took a depth.
ResNet18Colorizer = ResNetColorizer


def trunk_keys(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state-dict entries that belong to the ResNet trunk (torchvision names)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(TRUNK_PREFIXES)}


def is_imagenet_trunk(state: Mapping[str, object]) -> bool:
    """Whether a state dict looks like a torchvision ResNet classifier (conv1, layer4, fc): a
    trunk for `load_imagenet_trunk`, not a whole bttf model."""
    keys = set(state)
    return (
        "conv1.weight" in keys
        and any(k.startswith("layer4.") for k in keys)
        and not any(k.startswith(("dec16.", "head.")) for k in keys)
    )


def load_imagenet_trunk(
    model: nn.Module, path_or_state: str | Path | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load an ImageNet ResNet classifier's weights into `model`'s trunk (the head keeps its
    initialisation).

    Args:
        model: a `ResNetColorizer` ("resnet18", "resnet18-bins" or "resnet50").
        path_or_state: torchvision's `resnet18-*.pth` / `resnet50-*.pth` of the model's depth
            (read with weights_only), a safetensors file,
            or a state dict, in torchvision's key layout (a `module.` prefix is stripped; `fc.*`
            is ignored). A one-channel `conv1.weight` (64, 1, 7, 7) is spread over the three
            (identical, gray) input channels, a third to each.

    Returns:
        `model`, trunk loaded.

    Raises:
        WeightsError: a trunk key is missing or has the wrong shape, or there are keys that are
            neither trunk nor `fc.*`.
    """
    if isinstance(path_or_state, Mapping):
        state = dict(path_or_state)
        where = "the state dict"
    else:
        from bttf.models.weights import read_weights

        state, _ = read_weights(path_or_state)
        where = str(path_or_state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    expected = trunk_keys(model)
    arch = f"ResNet-{getattr(model, 'depth', 18)}"
    if not expected:
        raise WeightsError(f"{type(model).__name__} has no ResNet trunk to load {where} into")
    incoming = {k: v for k, v in state.items() if not k.startswith("fc.")}
    unexpected = sorted(k for k in incoming if k not in expected)
    if unexpected:
        raise WeightsError(
            f"{where} holds key {unexpected[0]!r}, not in a {arch} trunk: "
            f"not torchvision {arch.lower().replace('-', '')} weights"
        )
    missing = [k for k in expected if k not in incoming and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{where} lacks {arch} trunk key {missing[0]!r}")
    w = incoming["conv1.weight"]
    if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] == 1:
        incoming["conv1.weight"] = w.expand(-1, 3, -1, -1) / 3.0
    converted = {}
    for k, v in incoming.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        target = expected[k]
        if tuple(v.shape) != tuple(target.shape):
            raise WeightsError(
                f"{where}: key {k!r} has shape {tuple(v.shape)}, the {arch} "
                f"trunk expects {tuple(target.shape)}"
            )
        converted[k] = v.to(target.dtype) if v.is_floating_point() else v
    model.load_state_dict(converted, strict=False)
    log.info("loaded the ImageNet %s trunk (%d tensors) from %s", arch, len(converted), where)
    return model


@register_model(
    "resnet18",
    output="ab",
    cpu_s_360p=0.14,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=256,
    description="ResNet-18 trunk (ImageNet-loadable) + U-Net head, ab (~13.5 M params)",
)
def resnet18(**kw) -> ResNetColorizer:
    """ResNet-18 trunk with an upsampling ab head (tanh x 110)."""
    if kw.get("head", "ab") != "ab":
        raise BadInputError("resnet18 has the ab head; use the model resnet18-bins for bins")
    return ResNetColorizer(**kw, depth=18)


@register_model(
    "resnet18-bins",
    output="bins",
    cpu_s_360p=0.16,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=256,
    description="ResNet-18 trunk + U-Net head, 313-bin logits (~13.5 M params)",
)
def resnet18_bins(**kw) -> ResNetColorizer:
    """ResNet-18 trunk with an upsampling 313-bin head."""
    if kw.get("head", "bins") != "bins":
        raise BadInputError("resnet18-bins has the bins head; use the model resnet18 for ab")
    kw["head"] = "bins"
    return ResNetColorizer(**kw, depth=18)
