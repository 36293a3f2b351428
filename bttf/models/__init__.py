"""The colorizer zoo: a registry of architectures, their weights, and `Colorizer`.

Importing this package registers every architecture, one module each (`list_models()`),
among them:
  - "fastcolor" (alias "default"): bttf's small real-time CPU model, 313-bin head.
  - "fastcolor2": fastcolor with a deeper stage at stride 32; grows from fastcolor's weights.
  - "eccv16": Zhang et al. 2016, official PyTorch key layout, 313-bin head.
  - "siggraph17": Zhang et al. 2017, official PyTorch key layout, ab regression head.
  - "deoldify-artistic", "deoldify-stable", "deoldify-video": DeOldify's released generators.
  - "ddcolor", "ddcolor-paper", "ddcolor-artistic", "ddcolor-tiny": DDColor's released models.

Released weights (Zhang's, DeOldify's, DDColor's, torchvision's ImageNet trunks) are listed in
`bttf.models.catalogue` and fetched by `bttf download NAME` (`bttf.models.download`) into torch
hub's cache, where `create_model(name)` finds them (`official_weights`).

    model = create_model("eccv16", weights="colorization_release_v2-9b330a0b.pth")
    colorizer = Colorizer(model, get_spec("eccv16"))
    ab = colorizer(L)            # L (N, 1, H, W) in [0, 100] -> ab (N, 2, H, W)
"""

# Importing each architecture's module registers it (the shipped models and the seed zoo).
from bttf.models import (  # noqa: F401
    cnn_ae,
    ddcolor,
    deoldify,
    eccv16,
    fastcolor,
    mean_chroma,
    pix2pix,
    resnet18,
    resnet50,
    siggraph17,
    unet_ae,
)
from bttf.models._registry import (
    ModelSpec,
    get_spec,
    list_models,
    register_model,
    speed_class,
)
from bttf.models.colorizer import Colorizer
from bttf.models.weights import (
    WEIGHTS_DIR,
    create_model,
    describe_models,
    imagenet_weights,
    load_model,
    load_state_into,
    official_weights,
    read_weights,
    save_weights,
)

__all__ = [
    "WEIGHTS_DIR",
    "Colorizer",
    "ModelSpec",
    "create_model",
    "describe_models",
    "get_spec",
    "imagenet_weights",
    "list_models",
    "load_model",
    "load_state_into",
    "official_weights",
    "read_weights",
    "register_model",
    "save_weights",
    "speed_class",
]
