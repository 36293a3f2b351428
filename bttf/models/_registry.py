"""The colorizer registry, in the manner of timm: one decorator per architecture file.

    @register_model("eccv16", output="bins", stride=4, render_size=256)
    def eccv16(**kw) -> nn.Module: ...

Every model's `forward(L)` takes lightness `(N, 1, H, W)` with L in [0, 100] (H and W multiples
of `stride`) and returns either
  - `output="bins"`: logits `(N, 313, h, w)` over the bins of `bttf.models.bins.AB_BINS`, scaled so
    that softmax(logits) is the model's predicted distribution (temperature 1), or
  - `output="ab"`: chrominance `(N, 2, h, w)` in Lab units,
where (h, w) may be smaller than (H, W): `Colorizer` upsamples.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from bttf.errors import UnknownModelError

OutputKind = Literal["bins", "ab"]


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline needs to know about a registered architecture."""

    name: str
    factory: Callable[..., nn.Module]
    output: OutputKind
    stride: int
    render_size: int
    shipped: str | None = None  # file name under bttf/weights/, if weights ship with the package
    unsure: tuple[float, float] | None = None  # default per-pixel decoding (`bins.annealed_mean`)
    saturation: float = 1.0  # default gain on the decoded ab (`Colorizer.saturate`)
    aliases: tuple[str, ...] = field(default=())
    description: str = ""
    # Measured CPU seconds per 360p frame through `bttf colorize` at the default settings
    # (benchmarks/model_speed.py --pipeline; the machine is named in the README); None: not
    # measured. `bttf models` buckets it with `speed_class`.
    cpu_s_360p: float | None = None
    # True: the model is fed a square of side render_size (the frame squashed or stretched, as
    # DeOldify's own pipeline does); False: aspect kept at short side render_size. A run's
    # `render_square` option overrides it.
    render_square: bool = False
    # A model whose weights files this one's training may start from (`bttf train --init`):
    # every tensor of such a file is this model's under the same name; the rest keep their init.
    grows_from: str | None = None


# Upper bounds (CPU s per 360p frame) of each speed class, the last one open.
SPEED_CLASSES = ((0.5, "fast"), (2.0, "medium"), (10.0, "slow"), (float("inf"), "very slow"))


def speed_class(cpu_s_360p: float | None) -> str:
    """ "fast" (< 0.5 CPU s per 360p frame), "medium" (< 2), "slow" (< 10), "very slow", or
    "not measured"."""
    if cpu_s_360p is None:
        return "not measured"
    return next(name for bound, name in SPEED_CLASSES if cpu_s_360p < bound)


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    name: str,
    *,
    output: OutputKind,
    stride: int,
    render_size: int,
    shipped: str | None = None,
    unsure: tuple[float, float] | None = None,
    saturation: float = 1.0,
    aliases: tuple[str, ...] = (),
    description: str = "",
    cpu_s_360p: float | None = None,
    render_square: bool = False,
    grows_from: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under `name` (and `aliases`); duplicates are refused."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"model name {key!r} is already registered")
        doc = description or (factory.__doc__ or "").strip().splitlines()[0:1]
        spec = ModelSpec(
            name=name,
            factory=factory,
            output=output,
            stride=stride,
            render_size=render_size,
            shipped=shipped,
            unsure=unsure,
            saturation=saturation,
            aliases=tuple(aliases),
            description=doc if isinstance(doc, str) else "".join(doc),
            cpu_s_360p=cpu_s_360p,
            render_square=render_square,
            grows_from=grows_from,
        )
        _REGISTRY[name] = spec
        for alias in aliases:
            _ALIASES[alias] = name
        return factory

    return decorate


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model or alias; unknown names list the valid ones."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        valid = ", ".join(sorted([*_REGISTRY, *_ALIASES]))
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {valid}")
    return _REGISTRY[key]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names (not aliases) matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
