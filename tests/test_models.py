"""The model zoo: every registered model runs, official weights load strictly, files round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from bttf.cli import cli
from bttf.errors import BadInputError, UnknownModelError, WeightsError
from bttf.models import (
    Colorizer,
    create_model,
    get_spec,
    list_models,
    load_model,
    load_state_into,
    save_weights,
    speed_class,
)
from bttf.models.bins import AB_BINS, annealed_mean
from bttf.models.eccv16 import RELEASE_LOGIT_SCALE


@pytest.fixture(scope="module")
def official_keys(shared_dir: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """{"eccv16": {key: shape}, "siggraph17": {...}} from reference/zhang/keys.txt."""
    path = shared_dir / "reference" / "zhang" / "keys.txt"
    if not path.is_file():
        pytest.skip("reference/zhang/keys.txt is not present")
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].split(":")[0].strip(), {})
        elif line.strip() and current is not None:
            key, shape = line.split(" ", 1)
            current[key] = tuple(int(d) for d in shape.strip("() \n").split(",") if d.strip())
    return out


@pytest.fixture(scope="module")
def eccv16_model() -> torch.nn.Module:
    """One randomly initialised eccv16 (32 M parameters) for the tests that only read it."""
    return create_model("eccv16", pretrained=False)


def _official_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.zeros(s, dtype=torch.int64)
        if k.endswith("num_batches_tracked")
        else torch.randn(s) * 0.01
        for k, s in shapes.items()
    }


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs(name: str) -> None:
    spec = get_spec(name)
    model = create_model(name, pretrained=False)
    size = spec.stride * max(1, -(-64 // spec.stride))  # 64, or the next multiple of stride
    L = torch.rand(2, 1, size, size) * 100
    with torch.inference_mode():
        out = model(L)
        ab = Colorizer(model, spec)(L)
    assert out.shape[:2] == (2, 313 if spec.output == "bins" else 2)
    assert 0 < out.shape[2] <= size and 0 < out.shape[3] <= size
    assert torch.isfinite(out).all()
    assert ab.shape == (2, 2, size, size)
    assert torch.isfinite(ab).all()


def test_bins_models_give_logits_at_stride_4(eccv16_model) -> None:
    fast = create_model("fastcolor", pretrained=False)
    with torch.inference_mode():
        assert fast(torch.rand(1, 1, 64, 96) * 100).shape == (1, 313, 16, 24)
        # eccv16 pads to its internal multiple of 8: any multiple of 4 works
        assert eccv16_model(torch.rand(1, 1, 36, 44) * 100).shape == (1, 313, 9, 11)


@pytest.mark.parametrize("name", ["eccv16", "siggraph17"])
def test_official_layout_loads_strictly(name: str, official_keys, tmp_path: Path) -> None:
    shapes = official_keys[name]
    model = create_model(name, pretrained=False)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    state = _official_state(shapes)
    load_state_into(model, state)
    some = next(k for k in shapes if k.endswith(".weight"))
    assert torch.equal(model.state_dict()[some], state[some])

    # As the release ships it: a torch.save'd state dict, recognised by its keys alone.
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    loaded, spec, meta = load_model(path)
    assert spec.name == name and meta["bttf_model"] == name
    assert torch.equal(loaded.state_dict()[some], state[some])
    assert not loaded.training


def test_mismatched_weights_name_the_key(official_keys, eccv16_model) -> None:
    shapes = official_keys["eccv16"]
    model = eccv16_model  # every load below fails before anything is copied
    state = _official_state(shapes)

    missing = dict(state)
    del missing["model5.2.weight"]
    with pytest.raises(WeightsError, match=r"model5\.2\.weight"):
        load_state_into(model, missing)

    with pytest.raises(WeightsError, match=r"model9\.0\.weight"):
        load_state_into(model, {**state, "model9.0.weight": torch.zeros(1)})

    wrong = {**state, "model8.6.weight": torch.zeros(310, 256, 1, 1)}
    shapes_re = r"model8\.6\.weight.*\(310, 256, 1, 1\).*\(313, 256, 1, 1\)"
    with pytest.raises(WeightsError, match=shapes_re):
        load_state_into(model, wrong)

    # siggraph17 weights are not eccv16 weights, even when asked for by name
    sig = _official_state(official_keys["siggraph17"])
    with pytest.raises(WeightsError, match="lack key .model8.0.weight"):
        load_state_into(model, sig)


def test_pth_needs_name_when_keys_are_foreign(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="cannot tell which model"):
        load_model(path)
    with pytest.raises(WeightsError, match="conv.weight|lack key"):
        load_model(path, name="fastcolor")


def test_malformed_and_unsafe_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00not a safetensors file at all")
    with pytest.raises(WeightsError, match="safetensors"):
        load_model(bad)
    bad_pth = tmp_path / "bad.pth"
    bad_pth.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="bad.pth"):
        load_model(bad_pth, name="eccv16")
    # A whole pickled module needs more than weights_only: refused, nothing runs.
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(WeightsError, match="state_dict"):
        load_model(pickled, name="fastcolor")
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("half", [False, True])
def test_safetensors_round_trip(tmp_path: Path, half: bool) -> None:
    config = {"widths": [16, 32, 32, 64, 64], "depths": [1, 1, 1], "decoder": [32, 32]}
    model = create_model("default", pretrained=False, **config)
    with torch.no_grad():  # non-trivial BN statistics, to see them come back
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "fc.safetensors"
    save_weights(path, model, "default", config, extra={"epochs": 3, "data": "photos"}, half=half)

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        dtype = f.get_tensor("head.weight").dtype
    assert meta["bttf_model"] == "fastcolor" and meta["format"] == "bttf-1"
    assert json.loads(meta["bttf_config"]) == config
    assert dtype == (torch.float16 if half else torch.float32)

    loaded, spec, info = load_model(path)  # the path alone is enough
    assert spec.name == "fastcolor"
    assert info["epochs"] == 3 and info["data"] == "photos" and info["bttf_config"] == config
    atol = 2e-3 if half else 0.0
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype  # half weights come back in the model's dtype
        assert torch.allclose(got.float(), value.float(), atol=atol, rtol=atol), key

    again = create_model("fastcolor", weights=path)
    assert torch.equal(again.state_dict()["head.bias"], loaded.state_dict()["head.bias"])
    with pytest.raises(WeightsError, match="fastcolor"):
        create_model("eccv16", weights=path)
    with pytest.raises(WeightsError, match="depths"):
        create_model("fastcolor", weights=path, depths=[2, 2, 2])


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as err:
        create_model("no-such-model")
    for name in ("eccv16", "siggraph17", "fastcolor", "default"):
        assert name in str(err.value)
    assert get_spec("default").name == "fastcolor"


def test_shipped_weights_absent_falls_back_with_warning(caplog) -> None:
    spec = get_spec("fastcolor")
    if spec.shipped and (Path(__file__).parents[1] / "bttf" / "weights" / spec.shipped).is_file():
        pytest.skip("fastcolor weights are installed")
    with caplog.at_level("WARNING"):
        create_model("fastcolor")
    assert "random" in caplog.text


def test_colorizer_validates_its_settings() -> None:
    model, spec = create_model("fastcolor", pretrained=False), get_spec("fastcolor")
    for t in (0, -1.0, math.nan, math.inf, "hot"):
        with pytest.raises(BadInputError, match="temperature"):
            Colorizer(model, spec, temperature=t)
    for k in (0, 314, 2.5):
        with pytest.raises(BadInputError, match="top_k"):
            Colorizer(model, spec, top_k=k)
    colorizer = Colorizer(model, spec, temperature=0.5, top_k=1)
    assert (colorizer.output, colorizer.stride, colorizer.render_size) == ("bins", 16, 256)
    with pytest.raises(BadInputError, match=r"\(2, 3, 32, 32\)"):
        colorizer.predict(torch.zeros(2, 3, 32, 32))
    with pytest.raises(BadInputError, match="multiples of 16"):
        colorizer.predict(torch.zeros(1, 1, 40, 32))


def test_colorizer_decode_sizes() -> None:
    colorizer = Colorizer(create_model("fastcolor", pretrained=False), get_spec("fastcolor"))
    L = torch.rand(1, 1, 48, 80) * 100
    with torch.inference_mode():
        out = colorizer.predict(L)
        assert out.shape == (1, 313, 12, 20)
        assert colorizer.decode(out, (30, 50)).shape == (1, 2, 30, 50)
        assert colorizer(L).shape == (1, 2, 48, 80)


def test_eccv16_reproduces_the_release_decoding(eccv16_model) -> None:
    """Our annealed mean at T = 1/2.606 equals the release's model_out(softmax(model8)) path,
    and T = 0.38 is that within 1% of the logit scale (see the eccv16 module docstring)."""
    model = eccv16_model
    head = model.model8[6].weight
    saved = head.detach().clone()
    torch.manual_seed(0)
    L = torch.rand(1, 1, 32, 32) * 100
    try:
        with torch.no_grad():  # peaked distributions, as a trained model gives
            head.mul_(300.0)
        with torch.inference_mode():
            logits = model(L)
            release = model.release_ab(L)
    finally:
        with torch.no_grad():
            head.copy_(saved)
    ours = annealed_mean(logits, temperature=1 / RELEASE_LOGIT_SCALE)
    at_038 = annealed_mean(logits, temperature=0.38)
    assert release.abs().max() > 5  # the test would be empty on near-uniform distributions
    assert torch.allclose(ours, release, atol=1e-3)
    assert (at_038 - release).abs().max() < 2.0
    assert torch.allclose(model.model_out.weight.view(2, 313).t() * 110, AB_BINS, atol=1e-4)


def test_siggraph17_hints() -> None:
    model = create_model("siggraph17", pretrained=False)
    L = torch.rand(1, 1, 32, 32) * 100
    hint, mask = torch.zeros(1, 2, 32, 32), torch.zeros(1, 1, 32, 32)
    hint[..., 10, 10], mask[..., 10, 10] = 40.0, 1.0
    with torch.inference_mode():
        assert torch.equal(model(L), model(L, torch.zeros_like(hint), torch.zeros_like(mask)))
        assert model(L, hint, mask).shape == (1, 2, 32, 32)
        with pytest.raises(BadInputError, match="hints"):
            model(L, hint[:, :1], mask)


def test_fastcolor_is_small_and_its_eval_path_is_exact(monkeypatch) -> None:
    from bttf.models import fastcolor as fc

    model = create_model("fastcolor", pretrained=False)
    assert sum(p.numel() for p in model.parameters()) <= 3_000_000
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.head.weight.normal_(std=0.1)
    L = torch.rand(2, 1, 64, 64) * 100
    with torch.inference_mode():
        fast = model(L)

    def plain(self, x):  # the textbook conv -> BN -> ReLU, and a conv head
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.act else y

    monkeypatch.setattr(fc.ConvBNAct, "forward", plain)
    with torch.inference_mode():
        ref = model(L)
    assert torch.allclose(fast, ref, atol=1e-4)


def test_cli_models_table_and_json() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    for name in ("eccv16", "siggraph17", "fastcolor", "default", "32,236,011"):
        assert name in result.output

    result = runner.invoke(cli, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(list_models())
    assert by_name["eccv16"]["params"] == 32_236_011
    assert by_name["siggraph17"]["params"] == 34_187_027
    assert by_name["fastcolor"]["aliases"] == ["default"]
    assert by_name["siggraph17"]["output"] == "ab"
    assert by_name["fastcolor"]["render_size"] == 256
    assert isinstance(by_name["fastcolor"]["weights_present"], bool)
    # where the weights come from, and the measured speed (bucketed)
    assert by_name["fastcolor"]["source"] == "shipped"
    assert by_name["deoldify-video"]["source"] == "bttf download deoldify-video"
    assert by_name["deoldify-video"]["url"].endswith("ColorizeVideo_gen.pth")
    assert by_name["cnn-ae"]["source"] == "train it yourself"
    for name in ("deoldify-artistic", "deoldify-stable", "deoldify-video", "ddcolor-tiny"):
        row = by_name[name]
        assert row["cpu_s_360p"] > 0 and row["speed"] == speed_class(row["cpu_s_360p"])
        assert row["file_size"] == row["size"] > 0
    assert speed_class(0.1) == "fast" and speed_class(30.0) == "very slow"
    assert speed_class(None) == "not measured"


def test_fastcolor2_is_fastcolor_with_a_stage_at_stride_32(tmp_path: Path) -> None:
    from bttf.models.weights import grow_model

    plain = create_model("fastcolor", pretrained=False)
    assert "deep" not in plain.bttf_config  # v1-v3 files keep their config
    deep = create_model("fastcolor2", pretrained=False)
    assert deep.bttf_config["deep"] == [256, 6] and get_spec("fastcolor2").grows_from == "fastcolor"
    assert sum(p.numel() for p in deep.parameters()) < 4_500_000
    L = torch.rand(1, 1, 80, 112) * 100  # multiples of 16, not of 32
    with torch.no_grad():
        assert deep(L).shape == plain(L).shape == (1, 313, 20, 28)
    path = save_weights(tmp_path / "d.safetensors", deep, "fastcolor2", deep.bttf_config)
    again, spec, _ = load_model(path)
    assert spec.name == "fastcolor2" and again.deep is not None
    assert grow_model("fastcolor2", path) is None  # its own file: a plain load
    with pytest.raises(WeightsError, match="fastcolor2"):
        create_model("fastcolor", weights=path)
    # the smaller network's options come from its file
    odd = create_model("fastcolor", pretrained=False, decoder=[32, 32])
    odd_path = save_weights(tmp_path / "odd.safetensors", odd, "fastcolor", odd.bttf_config)
    assert grow_model("fastcolor2", odd_path).bttf_config["decoder"] == [32, 32]
