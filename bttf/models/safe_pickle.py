"""Reading PyTorch pickles that `torch.load(weights_only=True)` refuses, without running their code.

DeOldify's released generators are fastai v1 `Learner.save` files in torch's legacy format: a
dict whose `'model'` entry is the state dict, beside an `'opt'` entry holding the optimizer,
whose pickle names `functools.partial` (fastai's `opt_func`) and so is refused by
`weights_only=True` (jantic/DeOldify's users meet "Unsupported global: GLOBAL functools.partial").

`restricted_load` unpickles such a file with an unpickler that imports nothing but what tensors
are made of: torch's storage types and `torch._utils._rebuild_*` functions (exactly what
`weights_only` admits for tensors) and `collections.OrderedDict`. Every other global the file
names (`functools.partial`, fastai classes, or `os.system` in a malicious file) is replaced by an
inert stand-in class, `Refused`, that ignores its arguments and state and runs no code: it is
never the global itself, so nothing from the file is executed. Stand-ins may appear only outside
the state dict; `state_dict_of` checks that the state dict is plain tensors.
"""

from __future__ import annotations

import collections
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch._utils as torch_utils

from bttf.errors import WeightsError

# Globals that make tensors (the same ones `weights_only` allows for them), and OrderedDict.
ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch_utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch_utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch_utils._rebuild_parameter,
}


class Refused:
    """Stands in for a global the unpickler would not import; holds nothing, runs nothing."""

    refused = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<refused {self.refused}>"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports only `ALLOWED` and stands `Refused` in for everything else.

    torch's own wrapper resolves storage types (`torch.FloatStorage` ...) before this is asked.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is not None:
            return found
        return type("Refused", (Refused,), {"refused": f"{module}.{name}"})


def _load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# What `torch.load(pickle_module=...)` needs of a pickle module (the legacy format calls `load`).
RESTRICTED_PICKLE = SimpleNamespace(
    __name__="bttf_restricted_pickle", Unpickler=RestrictedUnpickler, load=_load
)


def restricted_load(path: str | Path) -> Any:
    """The object pickled in a torch file (zip or legacy format), tensors on the CPU, every
    global other than tensor makers and OrderedDict replaced by an inert `Refused`.

    Raises:
        WeightsError: the file cannot be read.
    """
    try:
        with warnings.catch_warnings():  # the weights_only=False warning: not what happens here
            warnings.simplefilter("ignore")
            return torch.load(
                str(path), map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE
            )
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a readable PyTorch file ({first[:160]})") from None


def state_dict_of(obj: Any, path: str | Path, wrappers: tuple[str, ...]) -> dict[str, Any]:
    """The state dict inside `obj` (under the first of `wrappers` it has, else `obj` itself),
    checked to hold only tensors under string keys.

    Raises:
        WeightsError: no state dict, or an entry that is not a plain tensor.
    """
    if isinstance(obj, Mapping):
        for key in wrappers:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
    return dict(obj)
