"""A run folder's checkpoints: `last` / `best.safetensors` (weights + metadata) and `state.pt`.

`state.pt` holds what a resumed run needs besides the weights: optimizer, schedule, step, best
value, RNG states, and the EMA / discriminator when there are ones. Everything in it is a plain
tensor, number, string, list or dict, so `torch.load(weights_only=True)` reads it. Every file is
written beside its destination and renamed, so a kill never leaves half a checkpoint.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bttf.errors import BadInputError, OutputExistsError
from bttf.files import atomic_output

#: What a run writes at the top of its folder (samples/ aside).
RUN_FILES = ("state.pt", "last.safetensors", "best.safetensors", "metrics.csv", "loss.png")


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to resume a run that is not there, or to start over one without `overwrite`."""
    state_path = out / "state.pt"
    if resume and not state_path.exists():
        raise BadInputError(f"--resume: {state_path} does not exist; start the run without it")
    if (
        not resume
        and not overwrite
        and (state_path.exists() or (out / "last.safetensors").exists())
    ):
        raise OutputExistsError(
            f"{out} holds a run; pass --resume to continue it or --overwrite to start again"
        )


def clear_run_folder(out: Path) -> None:
    """Delete an earlier run's files (for `overwrite`); other files are left alone."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for png in (out / "samples").glob("epoch_*.png"):
        png.unlink()


def load_state(out: Path, model_name: str) -> dict:
    """The `state.pt` of the run in `out`, which must be a run of `model_name`."""
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    if state.get("model_name") != model_name:
        raise BadInputError(f"{out} is a run of {state.get('model_name')!r}, not {model_name!r}")
    return state


def rng_state() -> dict:
    """torch, CUDA, numpy and Python RNG states, as plain tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(s: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_state(state: dict, out: Path) -> None:
    """Write `state` to out/state.pt atomically."""
    with atomic_output(out / "state.pt") as tmp:
        torch.save(state, tmp)


def save_checkpoints(
    out: Path,
    model: nn.Module,
    model_name: str,
    model_config: dict,
    extra: dict[str, Any],
    is_best: bool,
) -> None:
    """out/last.safetensors, and out/best.safetensors too when `is_best`, each written atomically."""
    from bttf.models import save_weights

    names = ("last", "best") if is_best else ("last",)
    for name in names:
        with atomic_output(out / f"{name}.safetensors") as tmp:
            save_weights(tmp, model, model_name, model_config, extra=extra)


def ensure_best(out: Path) -> None:
    """A run that never validated keeps its last weights as its best."""
    if not (out / "best.safetensors").exists() and (out / "last.safetensors").exists():
        shutil.copyfile(out / "last.safetensors", out / "best.safetensors")
