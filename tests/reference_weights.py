"""Deterministic weights by the rule of ../shared/reference/deoldify/README.md, and key lists.

The reference outputs of DeOldify and DDColor were computed with these weights; building them
here (never committing them) lets a test compare our architectures with the official ones.
"""

from __future__ import annotations

import ast
import json
import zlib
from pathlib import Path

import numpy as np
import torch

DTYPES = {"torch.float32": torch.float32, "torch.int64": torch.int64}


def read_keys(path: Path) -> dict[str, tuple[tuple[int, ...], str | None]]:
    """A key list (`name<TAB>(shape)[<TAB>dtype]` per line) -> {name: (shape, dtype or None)}."""
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        shape = tuple(ast.literal_eval(parts[1]))
        keys[parts[0]] = (shape, parts[2] if len(parts) > 2 else None)
    return keys


def _value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    x = np.random.RandomState(zlib.crc32(name.encode()) & 0xFFFFFFFF).standard_normal(shape)
    x = x.astype(np.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 0.5 + 0.5 * np.abs(x)
    if leaf == "running_mean":
        return 0.1 * x
    if leaf == "weight_g":
        return 1 + 0.1 * np.abs(x)
    if leaf == "gamma":
        return 0.5 + 0.1 * x
    if leaf == "weight" and len(shape) == 1:
        return 1 + 0.1 * x
    if leaf == "bias" or len(shape) <= 1:
        return 0.1 * x
    return x / np.sqrt(np.prod(shape[1:]))


def _power_iteration(w: torch.Tensor, u: torch.Tensor, steps: int = 10) -> tuple:
    """u, v after `steps` rounds in float64; W (out, -1) is used in row chunks to save memory."""
    w = w.flatten(1)
    u = u.double() / u.double().norm()
    v = None
    for _ in range(steps):
        wtu = torch.zeros(w.shape[1], dtype=torch.float64)
        for r in range(0, w.shape[0], 256):
            wtu += w[r : r + 256].double().t() @ u[r : r + 256]
        v = wtu / wtu.norm()
        wv = torch.cat([w[r : r + 256].double() @ v for r in range(0, w.shape[0], 256)])
        u = wv / wv.norm()
    return u.float(), v.float()


def reference_state(keys_file: Path, keep: dict[str, torch.Tensor] | None = None) -> dict:
    """The state dict the rule makes for every key of `keys_file`; `keep` entries (e.g. DDColor's
    `mean` and `std` buffers) are taken as given."""
    keep = keep or {}
    state: dict[str, torch.Tensor] = {}
    keys = read_keys(keys_file)
    for name, (shape, _) in keys.items():
        if name in keep:
            state[name] = keep[name].clone()
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.int64)
        else:
            state[name] = torch.from_numpy(np.ascontiguousarray(_value(name, shape)))
    for name in keys:
        if name.endswith(".weight_orig"):
            prefix = name[: -len("weight_orig")]
            u0 = torch.from_numpy(
                np.random.RandomState(zlib.crc32((prefix + "weight_u").encode()) & 0xFFFFFFFF)
                .standard_normal(keys[prefix + "weight_u"][0])
                .astype(np.float32)
            )
            u, v = _power_iteration(state[name], u0)
            state[prefix + "weight_u"], state[prefix + "weight_v"] = u, v
    return state


def check_stats(state: dict[str, torch.Tensor], stats_file: Path, rtol: float = 1e-4) -> None:
    """Each tensor's shape, sum and sum of squares against `<model>_weight_stats.json`."""
    stats = json.loads(stats_file.read_text())
    assert set(stats) <= set(state), sorted(set(stats) - set(state))[:5]
    for name, (shape, total, squares) in stats.items():
        t = state[name].double()
        assert tuple(t.shape) == tuple(shape), name
        scale = max(1.0, float(t.abs().sum()))
        assert abs(float(t.sum()) - total) <= rtol * scale, (name, float(t.sum()), total)
        assert abs(float((t * t).sum()) - squares) <= rtol * max(1.0, squares), name
