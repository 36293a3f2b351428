"""The seed model zoo: every model trains a few steps and colorizes; configs and trunks load."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bttf.errors import BadInputError, WeightsError
from bttf.models import Colorizer, create_model, get_spec, load_model, save_weights
from bttf.models.pix2pix import PatchGAN70
from bttf.models.resnet18 import is_imagenet_trunk, load_imagenet_trunk

ZOO = ("mean-chroma", "cnn-ae", "unet-ae", "resnet18", "resnet18-bins", "pix2pix")


def _colour_image(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 BGR: a flat background and two saturated rectangles."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    for _ in range(2):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y : y + 16, x : x + 20] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared Lab cache of 10 tiny colour images (64 x 64)."""
    from bttf.training.data import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    for i in range(10):
        cv2.imwrite(str(root / "img" / f"{i:02d}.png"), _colour_image(rng))
    prepare(
        PrepareConfig(
            inputs=(root / "img",), out=root / "cache", size=64, val_fraction=0.3, workers=1
        )
    )
    return root / "cache"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_trains_and_colorizes(
    name: str, zoo_cache: Path, tmp_path: Path, gray_png: Path
) -> None:
    from bttf.training.loop import TrainConfig, train

    spec = get_spec(name)
    out = tmp_path / "run"
    cfg = TrainConfig(
        data=(zoo_cache,),
        model=name,
        out=out,
        steps=2,
        batch_size=2,
        image_size=max(32, spec.stride),
        workers=0,
        threads=1,
        val_images=2,
        sample_images=1,
        channels_last=False,
    )
    result = train(cfg)
    assert result.steps == 2
    model, loaded_spec, meta = load_model(out / "last.safetensors")
    assert loaded_spec.name == spec.name
    expected_loss = {"cnn-ae": "l2", "pix2pix": "gan", "resnet18-bins": "rebalanced"}
    assert meta["loss"] == expected_loss.get(name, "huber")
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    if name == "pix2pix":
        # The discriminator resumes from state.pt; the weights file holds the generator only.
        assert any(k.startswith("net.") for k in state["discriminator"])
        assert "d_optimizer" in state
        assert set(model.state_dict()) == set(create_model(name).state_dict())
    else:
        assert "discriminator" not in state

    colorizer = Colorizer(model, loaded_spec)
    L = torch.rand(1, 1, spec.stride * 2, spec.stride * 3) * 100
    with torch.inference_mode():
        ab = colorizer(L)
    assert ab.shape == (1, 2, spec.stride * 2, spec.stride * 3)
    assert torch.isfinite(ab).all()

    from bttf import ColorizeConfig, colorize_image

    dst = tmp_path / "photo_color.png"
    colorize_image(
        gray_png, dst, ColorizeConfig(weights=out / "last.safetensors", device="cpu", threads=1)
    )
    img = cv2.imread(str(dst))
    assert img is not None and img.shape[:2] == cv2.imread(str(gray_png)).shape[:2]


def test_zoo_model_colorizes_a_clip(tiny_video: Path, tmp_path: Path) -> None:
    from bttf import ColorizeConfig, colorize_video

    path = tmp_path / "unet.safetensors"
    save_weights(
        path, create_model("unet-ae", widths=[8, 16, 32]), "unet-ae", {"widths": [8, 16, 32]}
    )
    dst = tmp_path / "clip_color.mp4"
    stats = colorize_video(
        tiny_video,
        dst,
        ColorizeConfig(weights=path, device="cpu", threads=1, render_size=32, preset="ultrafast"),
    )
    assert dst.is_file() and stats.frames == 24


@pytest.mark.parametrize("variant", ["plain", "dropout", "deep"])
def test_cnn_ae_variant_round_trips(variant: str, tmp_path: Path) -> None:
    model = create_model("cnn-ae", variant=variant, widths=[4, 8, 8, 8, 8])
    assert model.bttf_config["variant"] == variant
    path = save_weights(tmp_path / "w.safetensors", model, "cnn-ae", model.bttf_config)
    loaded, _spec, meta = load_model(path)
    assert meta["bttf_config"]["variant"] == variant and loaded.variant == variant
    again = create_model("cnn-ae", weights=path)
    assert again.variant == variant
    L = torch.rand(1, 1, 32, 64) * 100
    with torch.inference_mode():
        torch.testing.assert_close(loaded(L), model(L))
        assert loaded(L).shape == (1, 2, 32, 64)
    if variant == "deep":
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    with pytest.raises(WeightsError, match="variant"):
        create_model("cnn-ae", weights=path, variant="plain" if variant != "plain" else "deep")


def test_cnn_ae_rejects_an_unknown_variant() -> None:
    with pytest.raises(BadInputError, match="plain, dropout, deep"):
        create_model("cnn-ae", variant="wide")


def test_mean_chroma_paints_one_tint() -> None:
    model = create_model("mean-chroma")
    torch.nn.init.normal_(model.fc[-1].weight)
    L = torch.rand(2, 1, 64, 96) * 100
    with torch.inference_mode():
        out = model(L)
        tint = model.tint(L)
    assert out.shape == (2, 2, 4, 6)
    torch.testing.assert_close(out, tint[:, :, None, None].expand_as(out))


def test_bounded_heads_stay_in_range() -> None:
    L = torch.rand(1, 1, 64, 64) * 100
    for name, kw in (("unet-ae", {}), ("pix2pix", {}), ("resnet18", {})):
        model = create_model(name, **kw)
        for m in model.modules():  # push the pre-tanh activations far out
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.normal_(m.weight, std=1.0)
        with torch.inference_mode():
            ab = model(L)
        assert ab.abs().max() <= 110.0 + 1e-4, name


def test_patchgan70_sees_70x70_patches() -> None:
    d = PatchGAN70(width=8).eval()
    x = torch.zeros(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    assert out.shape == (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    assert int(ys.max() - ys.min()) + 1 == 70 and int(xs.max() - xs.min()) + 1 == 70


def test_pix2pix_brings_its_discriminator() -> None:
    from bttf.training.losses import GanObjective

    gen = create_model("pix2pix")
    gan = GanObjective.for_model(gen)
    assert isinstance(gan.discriminator, PatchGAN70) and gan.lambda_l1 == 100.0


# --- resnet18's ImageNet trunk -----------------------------------------------------------------


def _torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under torchvision.models.resnet18()'s state-dict keys and shapes (written
    out from its definition, so this does not depend on bttf's model)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.bias"] = torch.randn(c, generator=g) * 0.1
        state[f"{prefix}.running_mean"] = torch.randn(c, generator=g) * 0.1
        state[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    def conv(key: str, cout: int, cin: int, k: int) -> None:
        state[key] = torch.randn(cout, cin, k, k, generator=g) * 0.05

    conv("conv1.weight", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for i, c in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            p = f"layer{i}.{j}"
            conv(f"{p}.conv1.weight", c, cin if j == 0 else c, 3)
            bn(f"{p}.bn1", c)
            conv(f"{p}.conv2.weight", c, c, 3)
            bn(f"{p}.bn2", c)
            if j == 0 and i > 1:
                conv(f"{p}.downsample.0.weight", c, cin, 1)
                bn(f"{p}.downsample.1", c)
        cin = c
    state["fc.weight"] = torch.randn(1000, 512, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    return state


@pytest.mark.parametrize("name", ["resnet18", "resnet18-bins"])
def test_resnet18_loads_a_torchvision_trunk(name: str, tmp_path: Path) -> None:
    tv = _torchvision_resnet18_state()
    assert is_imagenet_trunk(tv)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(tv, path)
    model = create_model(name)
    head_before = model.head.weight.clone()
    load_imagenet_trunk(model, path)
    sd = model.state_dict()
    for k, v in tv.items():
        if not k.startswith("fc."):
            assert torch.equal(sd[k], v), k
    assert torch.equal(model.head.weight, head_before)
    with torch.inference_mode():
        assert torch.isfinite(model.eval()(torch.rand(1, 1, 64, 64) * 100)).all()


def test_train_init_accepts_a_torchvision_trunk(tmp_path: Path) -> None:
    from bttf.training.loop import TrainConfig, build_model

    tv = _torchvision_resnet18_state(seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save({"module." + k: v for k, v in tv.items()}, path)  # as saved from DataParallel
    cfg = TrainConfig(
        data=(tmp_path,),
        model="resnet18",
        out=tmp_path / "run",
        steps=1,
        image_size=192,  # a multiple of resnet18's stride, 32
        init=str(path),
    )
    model = build_model(cfg, get_spec("resnet18"))
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], tv["layer4.1.conv2.weight"])


def test_resnet18_trunk_errors_are_clear() -> None:
    tv = _torchvision_resnet18_state()
    one_channel = dict(tv, **{"conv1.weight": tv["conv1.weight"].sum(1, keepdim=True)})
    model = load_imagenet_trunk(create_model("resnet18"), one_channel)
    torch.testing.assert_close(model.conv1.weight.sum(1), tv["conv1.weight"].sum(1))
    missing = {k: v for k, v in tv.items() if not k.startswith("layer4.1.")}
    with pytest.raises(WeightsError, match="layer4.1"):
        load_imagenet_trunk(create_model("resnet18"), missing)
    wrong = dict(tv, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    with pytest.raises(WeightsError, match="shape"):
        load_imagenet_trunk(create_model("resnet18"), wrong)
    with pytest.raises(WeightsError, match="no ResNet trunk"):
        load_imagenet_trunk(create_model("unet-ae"), tv)
    with pytest.raises(BadInputError, match="resnet18-bins"):
        create_model("resnet18", head="bins")
