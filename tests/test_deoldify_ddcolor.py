"""DeOldify and DDColor: their released key layouts, and the official architectures' outputs.

The numerics tests build the deterministic weights of ../shared/reference/deoldify/README.md
(never committed) and compare with the reference outputs; they skip without ../shared.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from reference_weights import check_stats, read_keys, reference_state

from bttf.color import rgb_to_lab
from bttf.models import Colorizer, create_model, get_spec, list_models
from bttf.models.ddcolor import DDColor
from bttf.models.deoldify import DeOldify, imagenet_stats

# registered name -> (reference folder, key list)
RELEASES = {
    "deoldify-artistic": ("deoldify", "keys_deep.txt"),
    "deoldify-stable": ("deoldify", "keys_wide.txt"),
    "deoldify-video": ("deoldify", "keys_wide.txt"),
    "ddcolor": ("ddcolor", "keys_large.txt"),
    "ddcolor-paper": ("ddcolor", "keys_large.txt"),
    "ddcolor-artistic": ("ddcolor", "keys_large.txt"),
    "ddcolor-tiny": ("ddcolor", "keys_tiny.txt"),
}
# The released DDColor files carry the (unused) classifier too; the key lists leave it out.
HEAD_CLS = {"encoder.arch.head_cls.weight", "encoder.arch.head_cls.bias"}
# Parameter counts of the official architectures (the READMEs), plus DDColor's head_cls.
PARAMS = {
    "deoldify-artistic": 63_646_881,
    "deoldify-video": 218_222_197,
    "ddcolor-tiny": 55_006_640 + 768 * 4 + 4,
    "ddcolor": 227_869_328 + 1536 * 4 + 4,
}


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return get_spec(name).factory().state_dict()


def test_registered_with_their_conventions() -> None:
    assert set(RELEASES) <= set(list_models())
    for name in RELEASES:
        spec = get_spec(name)
        assert spec.output == "ab"
        assert spec.render_size % spec.stride == 0
    assert get_spec("deoldify-video").render_size == 21 * 16
    assert get_spec("ddcolor").render_size == 512
    for name, count in PARAMS.items():
        with torch.device("meta"):
            model = get_spec(name).factory()
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_deoldify_runs_at_sizes_that_are_no_multiple_of_32() -> None:
    # DeOldify's video render size, 21 * 16 = 336, is no multiple of 32 either: the U-Net meets
    # the skips with nearest resizing. Random weights: only shape and finiteness are checked.
    torch.manual_seed(0)
    model = create_model("deoldify-artistic", pretrained=False)
    L = torch.rand(1, 1, 48, 80) * 100
    with torch.inference_mode():
        ab = Colorizer(model, get_spec("deoldify-artistic"))(L)
    assert ab.shape == (1, 2, 48, 80)
    assert torch.isfinite(ab).all()


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_state_dict_is_the_release_layout(name: str, shared_dir) -> None:
    folder, keys_file = RELEASES[name]
    keys = read_keys(shared_dir / "reference" / folder / keys_file)
    state = _meta_state(name)
    extra = HEAD_CLS if folder == "ddcolor" else set()
    assert set(state) == set(keys) | extra
    for key, (shape, dtype) in keys.items():
        assert tuple(state[key].shape) == shape, key
        if dtype is not None:
            assert str(state[key].dtype) == dtype, key


def test_released_wrappers_load_strictly(tmp_path) -> None:
    # The files as released: DeOldify's state dict under 'model' beside fastai's optimizer
    # state (which names functools.partial: weights_only refuses it, the restricted unpickler
    # reads it), in torch's legacy format; DDColor's under 'params' with the unused head_cls.
    torch.manual_seed(0)
    deoldify = DeOldify("deep").eval()
    path = tmp_path / "ColorizeArtistic_gen.pth"
    opt = {"opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99))}
    torch.save(
        {"model": deoldify.state_dict(), "opt": opt}, path, _use_new_zipfile_serialization=False
    )
    loaded = create_model("deoldify-artistic", weights=path)
    L = torch.rand(1, 1, 32, 32) * 100
    with torch.inference_mode():
        assert torch.equal(loaded(L), deoldify(L))
    ddcolor = DDColor("tiny").eval()
    path = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": ddcolor.state_dict()}, path)
    loaded = create_model("ddcolor-tiny", weights=path)
    with torch.inference_mode():
        assert torch.equal(loaded(L), ddcolor(L))


def _reference_model(shared_dir, folder: str, variant: str) -> torch.nn.Module:
    ref = shared_dir / "reference" / folder
    model = DeOldify(variant) if folder == "deoldify" else DDColor(variant)
    own = model.state_dict()
    keep = {k: own[k] for k in ("mean", "std") if folder == "ddcolor"}
    state = reference_state(ref / f"keys_{variant}.txt", keep=keep)
    check_stats(state, ref / f"{folder}-{variant}_weight_stats.json")
    state.update({k: own[k] for k in HEAD_CLS if k in own})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("variant", ["deep", "wide"])
def test_deoldify_reproduces_the_official_architecture(variant: str, shared_dir) -> None:
    ref = shared_dir / "reference" / "deoldify"
    x = torch.from_numpy(np.load(ref / f"deoldify-{variant}_in80.npy"))
    want = torch.from_numpy(np.load(ref / f"deoldify-{variant}_out80.npy"))
    model = _reference_model(shared_dir, "deoldify", variant)
    with torch.inference_mode():
        raw = model.generate(x)
        assert (raw - want).abs().max() < 1e-4
        # bttf's path: L of the gray input -> the same normalised input -> DeOldify's RGB -> ab
        mean, std = imagenet_stats(x.device)
        gray = (x * std + mean)[:, :1]
        L = rgb_to_lab(gray.expand(-1, 3, -1, -1))[:, :1]
        assert (model.normalise(L) - x).abs().max() < 1e-3
        rgb = (want * std + mean).clamp(0, 1)
        assert (model(L) - rgb_to_lab(rgb)[:, 1:]).abs().max() < 1e-2


@pytest.mark.parametrize("variant", ["tiny", "large"])
def test_ddcolor_reproduces_the_official_architecture(variant: str, shared_dir) -> None:
    ref = shared_dir / "reference" / "ddcolor"
    x = torch.from_numpy(np.load(ref / f"ddcolor-{variant}_in128.npy"))
    want = torch.from_numpy(np.load(ref / f"ddcolor-{variant}_out128.npy"))
    model = _reference_model(shared_dir, "ddcolor", variant)
    with torch.inference_mode():
        assert (model.colorize(x) - want).abs().max() < 1e-4
        # bttf's path: L of the gray input, made gray RGB again inside forward
        L = rgb_to_lab(x)[:, :1]
        assert (model(L) - want).abs().max() < 1e-2


def test_ddcolor_keeps_float32_under_float16_autocast() -> None:
    torch.manual_seed(0)
    model = DDColor("tiny").eval()
    L = torch.rand(1, 1, 64, 64) * 100
    with torch.inference_mode():
        full = model(L)
        with torch.autocast("cpu", dtype=torch.float16):
            half = model(L)
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 1e-2 * max(1.0, float(full.abs().max()))
