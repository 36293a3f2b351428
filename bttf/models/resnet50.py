"""resnet50: seed 002's encoder, torchvision's ResNet-50 (Bottleneck, key layout unchanged), with
the U-Net ab head of `bttf.models.resnet18` (`ResNetColorizer(depth=50)`).

`bttf train DATA --model resnet50 --init imagenet` starts the trunk from torchvision's
IMAGENET1K_V1 checkpoint (`resnet50-0676ba61.pth`, `bttf download resnet50-imagenet`).

Input: L (N, 1, H, W) in [0, 100], H and W multiples of 32 -> ab (N, 2, H/4, W/4).
"""

from __future__ import annotations

from bttf.errors import BadInputError
from bttf.models._registry import register_model
from bttf.models.resnet18 import ResNetColorizer


@register_model(
    "resnet50",
    output="ab",
    cpu_s_360p=0.26,  # benchmarks/model_speed.py --pipeline (README "Models")
    stride=32,
    render_size=256,
    description="ResNet-50 trunk (ImageNet-loadable) + U-Net head, ab (~32 M params)",
)
def resnet50(**kw) -> ResNetColorizer:
    """ResNet-50 trunk with an upsampling ab head (tanh x 110)."""
    if kw.get("head", "ab") != "ab":
        raise BadInputError("resnet50 has the ab head only")
    return ResNetColorizer(**kw, depth=50)
