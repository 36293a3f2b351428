"""Reading and writing colorizer weights, and finding a model's official ones.

`official_weights(name)` is the one place that says which file a model loads when no file is
given: the weights shipped in `bttf/weights/`, or the released file of the catalogue
(`bttf.models.catalogue`) in torch hub's cache; `imagenet_weights(name)` likewise finds the
ImageNet checkpoint `bttf train --init imagenet` starts a trunk from. `create_model`, the
colorizer, training, `eval` and `compare` all ask these two.

Two formats come in:
  - bttf's own `.safetensors`: the metadata names the model and the keyword arguments it was
    built with, so a path alone is enough to rebuild it (`format = "bttf-1"`);
  - an official PyTorch `.pth` / `.pt` state dict (Zhang et al.'s, DeOldify's, DDColor's
    releases), read with `torch.load(weights_only=True)` or the restricted unpickler
    (`safe_pickle`): no pickle ever runs code here. After the first read a converted
    safetensors copy is kept in bttf's weights cache and read instead while the source is
    unchanged (`bttf.models.converted`). The architecture is recognised from the key set when
    the caller does not name it; where several models share the keys (DeOldify stable and
    video, DDColor's three large models) the file's SHA-256 or released name must tell which.

A large model that is about to get weights is built on the meta device (no random init, no
memory) and the file's tensors are assigned into it (`build_loaded`).

Loading is strict: every key must be there with the right shape, and nothing extra may come
with it. The errors name the first key that does not fit.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from bttf.errors import BadInputError, UnknownModelError, WeightsError
from bttf.files import usual_mode
from bttf.models._registry import ModelSpec, get_spec, list_models, speed_class
from bttf.models.catalogue import (
    cached_file,
    get_release,
    list_releases,
    release_for_model,
    require_cached,
)
from bttf.models.converted import file_sha256, load_converted, store_converted
from bttf.models.safe_pickle import restricted_load, state_dict_of

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
FORMAT = "bttf-1"
_RESERVED = ("bttf_model", "bttf_config", "format")
# Elements from which a model to be loaded is built on the meta device. Below, random init
# costs under 0.3 s (eccv16 0.15, resnet50 0.28 CPU s), less than the first meta build of a
# process can: torch's meta kernels for `normal_` and `norm` import sympy (about 1 s, once).
META_BUILD_MIN = 50_000_000
# BatchNorm's step counter is never used at inference; older files lack it.
_OPTIONAL_SUFFIX = "num_batches_tracked"


def create_model(
    name: str, weights: str | Path | None = None, pretrained: bool = True, **kw: Any
) -> nn.Module:
    """Build a registered model (eval mode), with weights.

    Args:
        name: registered name or alias (`list_models()`).
        weights: a weights file to load (see `load_model`); a bttf safetensors file brings
            its own config, which `kw` may not contradict.
        pretrained: without `weights`, load the model's official weights (`official_weights`):
            the file shipped in `bttf/weights/`, or its released file from torch hub's cache
            (missing: MissingWeightsError naming `bttf download NAME`). A model with neither
            keeps its random init (with a warning when shipped weights were expected but are
            absent).
        **kw: architecture keyword arguments for the model's factory.

    Raises:
        UnknownModelError: `name` is not registered (the message lists the valid names).
        MissingWeightsError: released weights not downloaded yet (exit 2, one line).
        WeightsError: the weights are missing, malformed or do not fit.
    """
    spec = get_spec(name)
    if weights is None and pretrained:
        weights = official_weights(spec.name)
        if weights is None and spec.shipped:
            shipped = WEIGHTS_DIR / spec.shipped
            log.warning(
                "model %s has no trained weights installed (%s is absent): it runs with random "
                "weights and its colours mean nothing",
                spec.name,
                shipped,
            )
    if weights is None:
        return spec.factory(**kw).eval()
    state, meta = read_weights(weights)
    if meta.get("format") == FORMAT:
        if get_spec(meta["bttf_model"]).name != spec.name:
            raise WeightsError(f"{weights} holds {meta['bttf_model']!r} weights, not {spec.name!r}")
        config = meta["bttf_config"]
        clash = {k for k in kw if k in config and _jsonish(kw[k]) != config[k]}
        if clash:
            raise WeightsError(
                f"{weights} was saved with {', '.join(f'{k}={config[k]!r}' for k in sorted(clash))}"
                "; drop those options"
            )
        kw = {**config, **kw}
    try:
        model = build_loaded(spec, kw, state)
    except WeightsError as e:
        raise WeightsError(f"{weights} does not fit {spec.name!r}: {e}") from None
    return model.eval()


def grow_model(name: str, weights: str | Path, **kw: Any) -> nn.Module | None:
    """Model `name` started from a weights file of the model it grows from (`ModelSpec.grows_from`),
    or None where `weights` is not such a file.

    The file's architecture options (its `bttf_config`, then `kw`) build the model; every tensor
    of the file is copied in under its own name (shapes must agree), and the tensors only the
    larger model has keep their initialisation (`fastcolor2`'s extra stage starts at zero, so it
    starts as the smaller model's function).
    """
    spec = get_spec(name)
    if spec.grows_from is None:
        return None
    state, meta = read_weights(weights)
    if meta.get("format") != FORMAT or get_spec(meta["bttf_model"]).name != spec.grows_from:
        return None
    model = spec.factory(**{**meta["bttf_config"], **kw})
    try:
        load_state_into(model, {**model.state_dict(), **state})
    except WeightsError as e:
        raise WeightsError(f"{weights} does not fit {spec.name!r}: {e}") from None
    return model.eval()


def build_loaded(spec: ModelSpec, config: Mapping[str, Any], state: Mapping[str, Any]) -> nn.Module:
    """`spec`'s model with `config`, holding `state` (strictly, as `load_state_into`).

    A large model (`state` of `META_BUILD_MIN` elements or more: DeOldify's, DDColor's) is
    built on the meta device, so no random init runs and no memory is taken, and the file's
    tensors are assigned into it. A smaller one, or one that keeps tensors outside its state
    dict (non-persistent buffers, which no file brings), is built on the CPU and loaded by copy.

    Raises:
        WeightsError: `state` does not fit; TypeError: `config` does not fit the factory.
    """
    size = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    if size >= META_BUILD_MIN:
        with torch.device("meta"):
            model = spec.factory(**config)
        saved = set(model.state_dict())
        held = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        if not held - saved:
            return load_state_into(model, state, assign=True)
    return load_state_into(spec.factory(**config), state)


def official_weights(name: str) -> Path | None:
    """The file `create_model(name)` loads when no weights are given.

    The weights shipped in `bttf/weights/` (None when that file is absent), or the model's
    released file in torch hub's cache (`bttf.models.catalogue`); None for a model that has
    neither (it runs untrained).

    Raises:
        MissingWeightsError: the model has released weights that are not downloaded yet; the
            message names `bttf download NAME` and the size.
    """
    spec = get_spec(name)
    if spec.shipped:
        shipped = WEIGHTS_DIR / spec.shipped
        return shipped if shipped.is_file() else None
    release = release_for_model(spec.name)
    return None if release is None else require_cached(release, spec.name)


def imagenet_weights(name: str) -> Path:
    """The cached torchvision ImageNet checkpoint whose trunk model `name` can start from
    (`bttf train --init imagenet`).

    Raises:
        BadInputError: the model has no ImageNet trunk.
        MissingWeightsError: the checkpoint is not downloaded yet (names `bttf download`).
    """
    spec = get_spec(name)
    release = release_for_model(spec.name, role="imagenet")
    if release is None:
        releases = [get_release(r) for r in list_releases()]
        able = [m for r in releases if r.role == "imagenet" for m in r.models]
        raise BadInputError(
            f"--init imagenet: {spec.name} has no ImageNet trunk; models with one: "
            f"{', '.join(able)}"
        )
    return require_cached(release, f"--init imagenet for {spec.name}", "--init FILE")


def describe_models(pattern: str = "*") -> list[dict[str, Any]]:
    """One record per registered model matching `pattern`, for listings (`bttf models`).

    Keys: name, aliases (list), output ("bins"|"ab"), params (int, default config), stride,
    render_size, shipped (file name under bttf/weights/ or None), release (catalogue name of
    its released weights, or None), weights ("shipped", "missing" (shipped file absent),
    "cached", "not downloaded" or "none"), weights_present (bool: shipped or cached), size
    (bytes of the released file, or None), file_size (bytes of the weights file: shipped,
    released, or None), cpu_s_360p (measured CPU s per 360p frame, `ModelSpec.cpu_s_360p`, or
    None), speed (its class, `speed_class`), source (where the weights come from: "shipped",
    "bttf download NAME" or "train it yourself"), url (the released file's first URL, or None),
    description.
    """
    rows = []
    for name in list_models(pattern):
        spec = get_spec(name)
        release = release_for_model(spec.name)
        file_size = release.size if release else None
        if spec.shipped:
            shipped = WEIGHTS_DIR / spec.shipped
            weights = "shipped" if shipped.is_file() else "missing"
            file_size = shipped.stat().st_size if shipped.is_file() else None
            source = "shipped"
        elif release is not None:
            weights = "cached" if cached_file(release) else "not downloaded"
            source = f"bttf download {release.name}"
        else:
            weights, source = "none", "train it yourself"
        with torch.device("meta"):  # counts parameters without allocating them
            params = sum(p.numel() for p in spec.factory().parameters())
        rows.append(
            {
                "name": spec.name,
                "aliases": list(spec.aliases),
                "output": spec.output,
                "params": params,
                "stride": spec.stride,
                "render_size": spec.render_size,
                "shipped": spec.shipped,
                "release": release.name if release else None,
                "weights": weights,
                "weights_present": weights in ("shipped", "cached"),
                "size": release.size if release else None,
                "file_size": file_size,
                "cpu_s_360p": spec.cpu_s_360p,
                "speed": speed_class(spec.cpu_s_360p),
                "source": source,
                "url": release.urls[0] if release else None,
                "description": spec.description,
            }
        )
    return rows


def save_weights(
    path: str | Path,
    model: nn.Module,
    name: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write `model`'s state dict as safetensors that `load_model(path)` rebuilds alone.

    Args:
        path: destination file (conventionally `*.safetensors`).
        model: the module whose `state_dict()` is saved.
        name: registered model name (an alias is stored as its canonical name).
        config: the keyword arguments `create_model(name, **config)` needs to rebuild the
            architecture (JSON-serialisable; `{}` for the defaults).
        extra: more metadata (training recipe, dataset, metrics); each value is stored
            JSON-encoded under its key. Keys may not shadow the reserved ones.
        half: store floating tensors as float16 (half the size; cast back on load).

    Returns:
        The path written.
    """
    spec = get_spec(name)
    metadata = {"bttf_model": spec.name, "bttf_config": json.dumps(config), "format": FORMAT}
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[str(key)] = json.dumps(value)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous().clone()
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    usual_mode(path)  # safetensors writes 0o600
    return path


def load_state_into(
    model: nn.Module, state_dict: Mapping[str, Any], assign: bool = False
) -> nn.Module:
    """Copy `state_dict` into `model`, strictly; floating tensors are cast to the model's dtype.

    With `assign`, the tensors are assigned instead of copied (a model built on the meta
    device); missing `num_batches_tracked` counters are then set to 0.

    Raises:
        WeightsError: naming the first missing or unexpected key, or the first shape mismatch
            (key, expected shape, shape found). Missing `num_batches_tracked` counters are
            tolerated.
    """
    expected = model.state_dict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
    missing = [k for k in expected if k not in state_dict and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"the weights lack key {missing[0]!r}{more}: not this model's weights")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise WeightsError(
            f"the weights hold unexpected key {unexpected[0]!r}{more}: not this model's weights"
        )
    converted = {}
    for key, value in state_dict.items():
        target = expected[key]
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(
                f"key {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target.shape)}"
            )
        if value.is_floating_point() and target.is_floating_point():
            value = value.to(target.dtype)
        converted[key] = value
    model.load_state_dict(converted, strict=False, assign=assign)
    if assign:
        for key in expected:
            if key not in converted:  # an optional counter the file lacks
                owner, _, name = key.rpartition(".")
                setattr(model.get_submodule(owner), name, torch.zeros((), dtype=torch.long))
    return model


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and decoded metadata of a weights file, without building a model.

    Metadata of a bttf safetensors file: `bttf_model` (str), `bttf_config` (dict), `format`,
    plus every extra key JSON-decoded. A `.pth` state dict gives `{"format": "torch",
    "sha256": the file's SHA-256, "converted": path of its converted copy or None}`.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return _read_safetensors(path)
    return _read_pickle(path)


def _read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A `.pth` state dict: from its converted copy where that can be trusted, else unpickled
    and converted for next time (`bttf.models.converted`)."""
    found = load_converted(path)
    if found is not None:
        state, record = found
        return state, {
            "format": "torch",
            "sha256": record["source_sha256"],
            "converted": record["copy"],
        }
    stat = path.stat()
    try:
        sha256 = file_sha256(path)
    except OSError as e:
        raise WeightsError(f"cannot read {path} ({e.strerror or type(e).__name__})") from None
    state = _read_torch(path)
    copy = None
    after = path.stat()
    plain = all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if plain and (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        copy = store_converted(path, state, sha256, stat)  # else: loading will say what is wrong
    return state, {"format": "torch", "sha256": sha256, "converted": str(copy) if copy else None}


def load_model(
    path: str | Path, name: str | None = None
) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Build the model a weights file belongs to and load it (eval mode).

    Args:
        path: a bttf `.safetensors` (its metadata names the model and config) or an official
            `.pth`/`.pt` state dict.
        name: the registered model the file is for. Needed for a `.pth` whose keys match no
            registered architecture's defaults; for a safetensors file it is only checked.

    Returns:
        (model, spec, metadata) where metadata is as `read_weights` describes.

    Raises:
        WeightsError: the file is missing, malformed, not a plain state dict, for another
            model than `name`, or does not fit the architecture.
    """
    path = Path(path)
    state, meta = read_weights(path)
    config: dict[str, Any] = {}
    if meta.get("format") == FORMAT:
        try:
            spec = get_spec(meta["bttf_model"])
        except UnknownModelError as e:
            raise WeightsError(
                f"{path} holds weights of a model this bttf does not have ({e})"
            ) from None
        config = meta["bttf_config"]
        if name is not None and get_spec(name).name != spec.name:
            raise WeightsError(
                f"{path} holds {spec.name!r} weights, not {get_spec(name).name!r}; "
                f"drop the model name or pick another file"
            )
    elif name is not None:
        spec = get_spec(name)
    else:
        spec = _identify(state, path, meta.get("sha256"))
        meta["bttf_model"] = spec.name
    meta.setdefault("bttf_config", config)
    try:
        model = build_loaded(spec, config, state)
    except TypeError as e:
        raise WeightsError(f"{path}: its config does not fit {spec.name!r}: {e}") from None
    except WeightsError as e:
        raise WeightsError(f"{path} does not fit {spec.name!r}: {e}") from None
    return model.eval(), spec, meta


def _looks_like_safetensors(path: Path) -> bool:
    """An 8-byte little-endian header length, then the JSON header's opening brace."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _jsonish(value: Any) -> Any:
    """`value` as it reads back from the metadata (tuples become lists)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no mapping
    except (SafetensorError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a readable safetensors file ({first})") from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("bttf_model", "format"):
            meta[key] = value
            continue
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            if key == "bttf_config":
                raise WeightsError(f"{path}: metadata 'bttf_config' is not JSON") from None
            meta[key] = value
    if meta.get("format") != FORMAT or "bttf_model" not in meta:
        # A foreign safetensors file: plain tensors, the caller must name the model.
        return state, {**meta, "format": meta.get("format", "safetensors")}
    if not isinstance(meta.get("bttf_config", {}), dict):
        raise WeightsError(f"{path}: metadata 'bttf_config' is not a JSON object")
    meta.setdefault("bttf_config", {})
    return state, meta


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # More than tensors (DeOldify's fastai files name functools.partial): read it again
        # with the restricted unpickler, which imports tensor makers only and runs nothing else.
        obj = _read_restricted(path, e)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path} is not a readable PyTorch weights file ({first[:160]})"
        ) from None
    if isinstance(obj, Mapping):
        # the wrappers of the catalogue's files and of common training scripts
        for wrapper in ("state_dict", "model", "params"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner:
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _read_restricted(path: Path, error: pickle.UnpicklingError) -> Any:
    """The file through `safe_pickle.restricted_load` if it holds a state dict of plain tensors
    (at the top or under a known wrapper); otherwise the weights_only refusal."""
    obj = restricted_load(path)
    try:
        state_dict_of(obj, path, ("state_dict", "model", "params"))
    except WeightsError:
        text = str(error).strip()
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        first = f"it refers to {found.group(1)}" if found else (text.splitlines() or [""])[0]
        raise WeightsError(
            f"{path} is a pickle that needs more than plain tensors to load ({first[:120]}); "
            "bttf only reads state dicts of tensors: re-save it with "
            "torch.save(model.state_dict(), path)"
        ) from None
    log.info("%s: read with the restricted unpickler (it names more than tensors)", path)
    return obj


def _identify(state: Mapping[str, Any], path: Path, sha256: str | None) -> ModelSpec:
    """The registered architecture whose default key set equals the file's. Where several
    share that key set (DeOldify stable and video; DDColor's large models), the catalogue
    decides by the file's SHA-256, else by its released file name; never by a guess."""
    keys = {k for k in state if not k.endswith(_OPTIONAL_SUFFIX)}
    fits = []
    for candidate in list_models():
        spec = get_spec(candidate)
        try:
            with torch.device("meta"):
                ref = spec.factory().state_dict()
        except (TypeError, RuntimeError, UnknownModelError):
            continue
        if keys == {k for k in ref if not k.endswith(_OPTIONAL_SUFFIX)}:
            fits.append(spec.name)
    if not fits:
        raise WeightsError(
            f"cannot tell which model {path} is for (its keys match none of: "
            f"{', '.join(list_models())}); name the model"
        )
    name = fits[0] if len(fits) == 1 else _released_as(path, sha256, fits)
    if name is None:
        raise WeightsError(
            f"{path} fits {' and '.join(fits)} alike (the same keys, other weights) and is none "
            "of their released files by SHA-256 or name: name the model (--model NAME)"
        )
    log.info("%s: identified as model %s", path, name)
    return get_spec(name)


def _released_as(path: Path, sha256: str | None, names: list[str]) -> str | None:
    """Which of `names` the catalogue says `path` is: its SHA-256 first, then its file name."""
    releases = [get_release(r) for r in list_releases()]
    colorizers = [r for r in releases if r.role == "colorizer" and set(r.models) & set(names)]
    for release in colorizers:
        if sha256 is not None and release.full_hash and sha256 == release.sha256:
            return next(m for m in release.models if m in names)
    for release in colorizers:
        if path.name == release.file:
            return next(m for m in release.models if m in names)
    return None
