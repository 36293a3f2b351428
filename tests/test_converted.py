"""Loading released weights: the converted safetensors copy of a .pth (checked by hash), models
built on the meta device for loading, and files that several models' keys fit."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from bttf.cli import main
from bttf.errors import WeightsError
from bttf.models import create_model, get_spec, load_model, read_weights
from bttf.models.catalogue import Release, get_release, register_release
from bttf.models.converted import copy_paths, file_sha256


def _fastcolor_pth(path: Path, seed: int, legacy: bool = False) -> dict[str, torch.Tensor]:
    """A fastcolor state dict saved as DeOldify's files are: under 'model', beside fastai's
    optimizer state (functools.partial: only the restricted unpickler reads it)."""
    torch.manual_seed(seed)
    state = create_model("fastcolor", pretrained=False).state_dict()
    opt = {"opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99))}
    torch.save({"model": state, "opt": opt}, path, _use_new_zipfile_serialization=not legacy)
    return state


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the pickle was read")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("legacy", [False, True])
def test_second_load_reads_the_converted_copy(
    tmp_path: Path, weights_cache: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    path = tmp_path / "ColorizeArtistic_gen.pth"
    state = _fastcolor_pth(path, 0, legacy)
    first, meta = read_weights(path)
    assert _equal(first, state) and meta["sha256"] == file_sha256(path)
    copy, record = copy_paths(path)
    assert meta["converted"] == str(copy) and copy.parent == weights_cache and record.is_file()
    _no_unpickling(monkeypatch)
    again, meta = read_weights(path)
    assert _equal(again, state) and meta["converted"] == str(copy)
    model = create_model("fastcolor", weights=path)  # the whole path: meta build, assign
    assert _equal(model.state_dict(), state)


def test_changed_source_is_converted_again(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    _fastcolor_pth(path, 0)
    read_weights(path)
    stat = path.stat()
    state = _fastcolor_pth(path, 1)  # other weights under the same name, the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _equal(read_weights(path)[0], state)
    # and the copy now holds the new weights
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _equal(read_weights(path)[0], state)


def test_touched_source_keeps_its_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.pth"
    state = _fastcolor_pth(path, 0)
    read_weights(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, new mtime
    _no_unpickling(monkeypatch)
    assert _equal(read_weights(path)[0], state)


@pytest.mark.parametrize("damage", ["flipped byte", "cut short"])
def test_damaged_copy_is_replaced(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "w.pth"
    state = _fastcolor_pth(path, 0)
    read_weights(path)
    copy, _ = copy_paths(path)
    data = bytearray(copy.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:  # what a write that stopped half-way would leave, had it not gone to a temporary name
        data = data[: len(data) // 2]
    copy.write_bytes(bytes(data))
    loaded, meta = read_weights(path)
    assert _equal(loaded, state) and meta["converted"] == str(copy)
    assert _equal(read_weights(path)[0], state)  # the new copy checks out


def test_unwritable_cache_costs_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("BTTF_CACHE_DIR", str(blocker))
    path = tmp_path / "w.pth"
    state = _fastcolor_pth(path, 0)
    loaded, meta = read_weights(path)
    assert _equal(loaded, state) and meta["converted"] is None
    assert "no converted copy" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder", "w.pth"]


def test_a_file_with_more_than_tensors_is_not_converted(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"conv.weight": torch.zeros(2), "epoch": 5}, path)
    _, meta = read_weights(path)
    assert meta["converted"] is None
    with pytest.raises(WeightsError, match="'epoch' is a int, not a tensor"):
        load_model(path, name="fastcolor")


def test_shared_and_viewed_tensors_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch.arange(12.0)
    state = {"a": base, "tied": base, "view": base[2:8].view(2, 3), "t": base.view(3, 4).t()}
    path = tmp_path / "shared.pth"
    torch.save(state, path)
    read_weights(path)
    _no_unpickling(monkeypatch)
    loaded, _ = read_weights(path)
    assert _equal(loaded, {k: v.contiguous() for k, v in state.items()})


@pytest.mark.parametrize("name", ["ddcolor-tiny", "resnet18"])
def test_models_to_be_loaded_are_built_on_the_meta_device(tmp_path: Path, name: str) -> None:
    # ddcolor-tiny (55 M) is built on the meta device and gets the file's tensors assigned; its
    # BatchNorm counters, absent from the file, become 0. resnet18 is small and keeps ImageNet
    # statistics as non-persistent buffers: built on the CPU and loaded by copy.
    torch.manual_seed(0)
    reference = create_model(name, pretrained=False).eval()
    state = reference.state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters
    path = tmp_path / f"{name}.pth"
    torch.save({k: v for k, v in state.items() if k not in counters}, path)
    loaded = create_model(name, weights=path)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert all(int(loaded.state_dict()[k]) == 0 for k in counters)
    L = torch.rand(1, 1, 64, 64) * 100
    with torch.inference_mode():
        assert torch.equal(loaded(L), reference(L))


def _same_keys_file(path: Path, name: str) -> Path:
    """A file with `name`'s keys and one-element tensors: enough to be identified, not loaded."""
    with torch.device("meta"):
        keys = list(get_spec(name).factory().state_dict())
    torch.save({"model": {k: torch.zeros(1) for k in keys}}, path)
    return path


def test_stable_and_video_are_never_guessed(tmp_path: Path) -> None:
    anon = _same_keys_file(tmp_path / "generator.pth", "deoldify-stable")
    with pytest.raises(WeightsError, match=r"deoldify-stable and deoldify-video alike.*--model"):
        load_model(anon)
    with pytest.raises(WeightsError, match="does not fit 'deoldify-video'"):
        load_model(_same_keys_file(tmp_path / "ColorizeVideo_gen.pth", "deoldify-stable"))
    with pytest.raises(WeightsError, match="does not fit 'deoldify-stable'"):
        load_model(_same_keys_file(tmp_path / "ColorizeStable_gen.pth", "deoldify-video"))
    with pytest.raises(WeightsError, match="ddcolor and ddcolor-artistic and ddcolor-paper"):
        load_model(_same_keys_file(tmp_path / "ddcolor.pth", "ddcolor"))


def test_the_catalogues_hash_comes_before_the_file_name(tmp_path: Path) -> None:
    path = _same_keys_file(tmp_path / "ColorizeStable_gen.pth", "deoldify-stable")
    video = get_release("deoldify-video")
    fields = {**video.__dict__, "sha256": file_sha256(path)}
    register_release(Release(**fields), replace=True)
    try:
        with pytest.raises(WeightsError, match="does not fit 'deoldify-video'"):
            load_model(path)
    finally:
        register_release(video, replace=True)


def test_an_ambiguous_file_is_one_line_exit_2(
    tmp_path: Path, tiny_video: Path, capsys: pytest.CaptureFixture
) -> None:
    anon = _same_keys_file(tmp_path / "generator.pth", "deoldify-video")
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), "--weights", str(anon)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("bttf: error: ") and err.count("\n") == 1
    assert "--model" in err and not (tmp_path / "o.mp4").exists()
