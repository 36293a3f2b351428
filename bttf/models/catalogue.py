"""The catalogue of released weights: what `bttf download NAME` fetches, and where it lands.

One `Release` per file: its catalogue name, the file name it was released under, where to get it,
its size, its SHA-256, its licence, the wrapper key its state dict sits under, and the registered
models it serves. Files go to torch hub's checkpoints folder (`torch.hub.get_dir()/checkpoints`,
so `TORCH_HOME` is honoured and files that Zhang's own code or torchvision already fetched are
found) under their released names.

Two roles:
  - "colorizer": the whole model's weights; `create_model(name)` without a file loads the cached
    file, and says which `bttf download` to run when it is missing (`bttf.models.weights`);
  - "imagenet": an ImageNet classifier whose trunk `bttf train --model resnet18 --init imagenet`
    starts from.

Hashes: Zhang's, DeOldify's and DDColor's entries carry a full SHA-256 (DeOldify's from copies on
public mirrors: no official hash is published). torchvision publishes only the first 8 hex digits
of each file's SHA-256, in its name; for those, the download checks that prefix of the whole
file's SHA-256, exactly the check `torch.hub.download_url_to_file(hash_prefix=...)` makes.

`BTTF_WEIGHTS_BASE_URL` replaces every entry's URLs with `BASE/FILE` (a mirror, an offline
install). `register_release` adds or replaces an entry (a mirror of one's own, tests).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from bttf.errors import MissingWeightsError, UnknownModelError

Role = Literal["colorizer", "imagenet"]
BASE_URL_ENV = "BTTF_WEIGHTS_BASE_URL"

ZHANG = "https://colorizers.s3.us-east-2.amazonaws.com/"
DDCOLOR = "https://huggingface.co/piddnad/DDColor-models/resolve/main/"
DEOLDIFY = "https://data.deepai.org/deoldify/"
TORCHVISION = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Release:
    """One released weights file.

    Attributes:
        name: catalogue name (`bttf download NAME`); for a colorizer, its registered model name.
        file: the released file name, kept in the cache.
        urls: where to get it, tried in order.
        size: bytes, as published (approximate where only "123.0 MB" is known): for messages and
            for progress when the server sends no length. The hash is the check.
        sha256: the whole file's SHA-256 (64 hex digits), or its first digits (at least 8) where
            only those are published (torchvision).
        licence: SPDX identifier of the weights' licence.
        wrapper: the key the state dict sits under inside the file (None: the file is the state
            dict).
        models: the registered models the file serves.
        role: "colorizer" (the models' own weights) or "imagenet" (a trunk to start training from).
        note: one line for listings.
    """

    name: str
    file: str
    urls: tuple[str, ...]
    size: int
    sha256: str
    licence: str
    wrapper: str | None = None
    models: tuple[str, ...] = field(default=())
    role: Role = "colorizer"
    note: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 8 to 64 lowercase hex digits")
        if not self.file or "/" in self.file or "\\" in self.file or self.file.startswith("."):
            raise ValueError(f"{self.name}: {self.file!r} is not a plain file name")
        if not self.urls:
            raise ValueError(f"{self.name}: give at least one URL")
        if self.role not in ("colorizer", "imagenet"):
            raise ValueError(f"{self.name}: role {self.role!r} is not colorizer or imagenet")

    @property
    def full_hash(self) -> bool:
        """Whether `sha256` is the whole digest (else a prefix, checked as torch hub does)."""
        return len(self.sha256) == 64


_RELEASES: dict[str, Release] = {}


def register_release(release: Release, *, replace: bool = False) -> Release:
    """Add `release` to the catalogue; an existing name is refused unless `replace`."""
    if release.name in _RELEASES and not replace:
        raise ValueError(f"release {release.name!r} is already in the catalogue")
    _RELEASES[release.name] = release
    return release


def unregister_release(name: str) -> None:
    """Remove an entry (tests that registered one of their own); unknown names are ignored."""
    _RELEASES.pop(name, None)


def list_releases() -> list[str]:
    """Catalogue names, in catalogue order."""
    return list(_RELEASES)


def get_release(name: str) -> Release:
    """The entry called `name`; unknown names list the valid ones."""
    if name not in _RELEASES:
        raise UnknownModelError(
            f"no released weights called {name!r}; choose from: {', '.join(_RELEASES)} or all"
        )
    return _RELEASES[name]


def release_for_model(model: str, role: Role = "colorizer") -> Release | None:
    """The entry serving registered model `model` in `role`, or None."""
    for release in _RELEASES.values():
        if release.role == role and model in release.models:
            return release
    return None


def checkpoints_dir() -> Path:
    """torch hub's checkpoints folder: `$TORCH_HOME/hub/checkpoints` (by default
    `~/.cache/torch/hub/checkpoints`), read at each call."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(release: Release) -> Path:
    """Where `release` lives once downloaded (whether or not it is there)."""
    return checkpoints_dir() / release.file


def cached_file(release: Release) -> Path | None:
    """The downloaded file of `release`, or None when it is not there."""
    path = cached_path(release)
    return path if path.is_file() else None


def release_urls(release: Release) -> tuple[str, ...]:
    """Where to fetch `release` from: `$BTTF_WEIGHTS_BASE_URL/FILE` when that is set, else the
    entry's own URLs."""
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        return (f"{base.rstrip('/')}/{quote(release.file)}",)
    return release.urls


def human_size(size: int) -> str:
    """Bytes as the catalogue's sources write them: 123.0 MB, 912.0 MB (decimal units)."""
    if size >= 10**9:
        return f"{size / 1e9:.1f} GB"
    if size >= 10**6:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.1f} kB" if size >= 10**3 else f"{size} B"


def require_cached(release: Release, needed_by: str, instead: str = "--weights FILE") -> Path:
    """The cached file of `release`; missing: MissingWeightsError (exit 2) naming the download
    (and `instead`, the option that gives a file of one's own)."""
    path = cached_file(release)
    if path is None:
        raise MissingWeightsError(
            f"{needed_by} needs {release.file} ({human_size(release.size)}, {release.licence}), "
            f"not downloaded yet: run `bttf download {release.name}` (it goes to "
            f"{checkpoints_dir()}), or give {instead}"
        )
    return path


def _zhang(name: str, file: str, size: int, sha256: str, note: str) -> Release:
    return Release(
        name, file, (ZHANG + file,), size, sha256, "BSD-2-Clause", None, (name,), note=note
    )


def _deoldify(name: str, file: str, url: str, sha256: str, note: str) -> Release:
    size = 255_144_681 if name == "deoldify-artistic" else 874_066_230
    return Release(name, file, (url,), size, sha256, "MIT", "model", (name,), note=note)


def _ddcolor(name: str, file: str, size: int, sha256: str, note: str) -> Release:
    return Release(
        name, file, (DDCOLOR + file,), size, sha256, "Apache-2.0", "params", (name,), note=note
    )


def _torchvision(depth: int, file: str, size: int, models: tuple[str, ...]) -> Release:
    prefix = file.rsplit("-", 1)[1].split(".")[0]
    return Release(
        f"resnet{depth}-imagenet",
        file,
        (TORCHVISION + file,),
        size,
        prefix,
        "BSD-3-Clause",
        None,
        models,
        role="imagenet",
        note=f"torchvision ResNet-{depth} IMAGENET1K_V1, for `bttf train --init imagenet`",
    )


for _entry in (
    _zhang(
        "eccv16",
        "colorization_release_v2-9b330a0b.pth",
        123_000_000,
        "9b330a0bae53f4ded77b1e23defbf78beaa09c10ebc4c4999e8e4f4a160b93f9",
        "Zhang et al. ECCV 2016",
    ),
    _zhang(
        "siggraph17",
        "siggraph17-df00044c.pth",
        130_500_000,
        "df00044c0a4d7c3edcecf6f75437ce346a66e7a42612d9b968e1a7e17dbc6f66",
        "Zhang et al. SIGGRAPH 2017",
    ),
    _deoldify(
        "deoldify-artistic",
        "ColorizeArtistic_gen.pth",
        DEOLDIFY + "ColorizeArtistic_gen.pth",
        "3f750246fa220529323b85a8905f9b49c0e5d427099185334d048fb5b5e22477",
        "DeOldify artistic (hash of public mirrors' copies)",
    ),
    _deoldify(
        "deoldify-stable",
        "ColorizeStable_gen.pth",
        "https://www.dropbox.com/s/axsd2g85uyixaho/ColorizeStable_gen.pth?dl=1",
        "ca9cd7f43fb8b222c9a70f7b292e305a000694b0ff9d2ae4a6747b1a2e1ee5af",
        "DeOldify stable (hash of public mirrors' copies)",
    ),
    _deoldify(
        "deoldify-video",
        "ColorizeVideo_gen.pth",
        DEOLDIFY + "ColorizeVideo_gen.pth",
        "e3d98bb6a222354c79f95485c2f078a89dc724e9183662506d9e0f5aafac83ad",
        "DeOldify video (hash of public mirrors' copies)",
    ),
    _ddcolor(
        "ddcolor",
        "ddcolor_modelscope.pth",
        912_000_000,
        "17c460d7e55b32a598370621d77173be59e03c24b0823f06821db23a50c263ce",
        "DDColor large, ModelScope-trained",
    ),
    _ddcolor(
        "ddcolor-paper",
        "ddcolor_paper.pth",
        912_000_000,
        "789781789db1bafc2165e1cf9658580f871cce64a81901ec49127877813f10b9",
        "DDColor large, paper",
    ),
    _ddcolor(
        "ddcolor-artistic",
        "ddcolor_artistic.pth",
        911_950_059,
        "a591ee5beedad36de703d8977e92d0c30c1eedc6453fd1b300f3b460842a23a9",
        "DDColor large, artistic",
    ),
    _ddcolor(
        "ddcolor-tiny",
        "ddcolor_paper_tiny.pth",
        220_000_000,
        "81dd643904f4664c3718513e3320ae3db0c567f0d3e18398606659adee7bfc17",
        "DDColor tiny, paper",
    ),
    _torchvision(18, "resnet18-f37072fd.pth", 46_830_571, ("resnet18", "resnet18-bins")),
    _torchvision(50, "resnet50-0676ba61.pth", 102_530_333, ("resnet50",)),
):
    register_release(_entry)
