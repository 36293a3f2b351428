"""Training and evaluation: the Lab cache (`data`), objectives (`losses`), the loop (`loop`),
metrics (`metrics`) and the `eval` report (`evaluate`).

    from bttf.training import PrepareConfig, TrainConfig, EvalConfig, prepare, train, evaluate

The names are imported on first use, so `import bttf.training` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bttf.training.data import LabCache, PrepareConfig, PrepareSummary, prepare
    from bttf.training.evaluate import EvalConfig, EvalReport, evaluate
    from bttf.training.loop import TrainConfig, TrainEvent, TrainResult, train

_LAZY = {
    "LabCache": "data",
    "PrepareConfig": "data",
    "PrepareSummary": "data",
    "prepare": "data",
    "EvalConfig": "evaluate",
    "EvalReport": "evaluate",
    "evaluate": "evaluate",
    "TrainConfig": "loop",
    "TrainEvent": "loop",
    "TrainResult": "loop",
    "train": "loop",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"bttf.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'bttf.training' has no attribute {name!r}")
