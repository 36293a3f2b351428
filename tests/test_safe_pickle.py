"""The restricted unpickler for released pickles (DeOldify's fastai files): tensors come out,
nothing the file names is ever run."""

from __future__ import annotations

import functools
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from bttf.errors import WeightsError
from bttf.models.safe_pickle import Refused, restricted_load, state_dict_of


def touch(path: str) -> None:
    Path(path).touch()


class Payload:
    """Runs `touch(marker)` when unpickled by an ordinary unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (touch, (self.marker,))


def _learner_file(path: Path, marker: Path, legacy: bool) -> OrderedDict:
    """Like fastai v1's `Learner.save`: {'model': state dict, 'opt': optimizer state}."""
    state = OrderedDict(
        [("layers.0.weight", torch.randn(4, 3)), ("layers.0.num_batches_tracked", torch.tensor(7))]
    )
    opt = {
        "opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99)),
        "payload": Payload(marker),
        "param_groups": [{"lr": 1e-3, "params": [0, 1]}],
    }
    torch.save({"model": state, "opt": opt}, path, _use_new_zipfile_serialization=not legacy)
    return state


@pytest.mark.parametrize("legacy", [True, False])
def test_learner_pickle_loads_without_running_its_code(tmp_path: Path, legacy: bool) -> None:
    path, marker = tmp_path / "gen.pth", tmp_path / "ran"
    state = _learner_file(path, marker, legacy)
    with pytest.raises(pickle.UnpicklingError):  # why the fallback exists
        torch.load(path, weights_only=True)
    obj = restricted_load(path)
    assert not marker.exists()
    assert isinstance(obj["opt"]["opt_func"], Refused)
    assert isinstance(obj["opt"]["payload"], Refused)
    got = state_dict_of(obj, path, ("model",))
    assert list(got) == list(state)
    for key, value in state.items():
        assert torch.equal(got[key], value) and got[key].dtype == value.dtype


def test_state_dict_must_be_plain_tensors(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"model": {"w": torch.zeros(2), "evil": Payload(tmp_path / "ran")}}, path)
    with pytest.raises(WeightsError, match="'evil' is a Refused"):
        state_dict_of(restricted_load(path), path, ("model",))
    assert not (tmp_path / "ran").exists()
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        state_dict_of([1, 2], path, ("model",))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a readable PyTorch file"):
        restricted_load(tmp_path / "junk.pth")
