"""Training and evaluation: the Lab cache (`data`), objectives (`losses`), the loop (`loop`, over
`checkpoint`, `runlog`, `distributed`, `optim`, `batches`, `validation`) and the `eval` report
(`evaluate`). The metrics themselves are `bttf.metrics`.

    from bttf.training import PrepareConfig, TrainConfig, EvalConfig, prepare, train, evaluate

The names are imported on first use, so `import bttf.training` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bttf.training.data import LabCache as LabCache
    from bttf.training.data import PrepareConfig as PrepareConfig
    from bttf.training.data import PrepareSummary as PrepareSummary
    from bttf.training.data import prepare as prepare
    from bttf.training.evaluate import EvalConfig as EvalConfig
    from bttf.training.evaluate import EvalReport as EvalReport
    from bttf.training.evaluate import evaluate as evaluate
    from bttf.training.loop import TrainConfig as TrainConfig
    from bttf.training.loop import TrainEvent as TrainEvent
    from bttf.training.loop import TrainResult as TrainResult
    from bttf.training.loop import train as train

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

__all__ = [
    "EvalConfig",
    "EvalReport",
    "LabCache",
    "PrepareConfig",
    "PrepareSummary",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "evaluate",
    "prepare",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"bttf.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'bttf.training' has no attribute {name!r}")
