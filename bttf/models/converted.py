"""A converted `.safetensors` copy of each PyTorch pickle bttf has read, checked by hash.

Reading a released `.pth` (DeOldify's fastai pickles, DDColor's, Zhang's) means unpickling it;
after the first read bttf keeps its state dict as safetensors in its weights cache
(`cache_dir()`: `$BTTF_CACHE_DIR/weights`, by default `~/.cache/bttf/weights`), with a record
beside it (`<stem>-<key>.json`): the source's path, size, mtime and SHA-256, and the copy's own
SHA-256. The next read of the same source uses the copy, with no unpickling, when

  - the source is unchanged: the same size and mtime, or, where the mtime moved (a copy, a
    touch), the same SHA-256 (the record is then brought up to date), and
  - the copy's SHA-256 still equals the record's;

otherwise the source is read and converted again. A copy is written under a temporary name and
renamed (`os.replace`) once whole, then its record likewise, so an interrupted or failed write
leaves no copy that a later read would trust. Writing is best effort: a cache that cannot be
written costs a warning, never the load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bttf.files import atomic_output, write_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "BTTF_CACHE_DIR"
FORMAT = "bttf-converted-1"
CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where converted copies live: `$BTTF_CACHE_DIR/weights`, else `$XDG_CACHE_HOME/bttf/weights`
    (`~/.cache/bttf/weights`); read at each call."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        root = str(Path(xdg) / "bttf") if xdg else str(Path.home() / ".cache" / "bttf")
    return Path(root) / "weights"


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_paths(source: Path) -> tuple[Path, Path]:
    """(copy, record) for `source`: named by its stem and a hash of its resolved path, so each
    source file has one copy and a changed source replaces it."""
    resolved = source.resolve()
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    stem = f"{resolved.stem}-{key}"
    folder = cache_dir()
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def load_converted(source: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The state dict of `source` from its converted copy, and the copy's record (source_sha256,
    copy, ...); None when there is no copy to trust (none yet, the source changed, the copy or
    its record is damaged): read the source then."""
    copy, record_path = copy_paths(source)
    record = _read_record(record_path)
    if record is None or not copy.is_file() or record.get("source") != str(source.resolve()):
        return None
    try:
        if not _source_unchanged(source, record, record_path):
            log.info("%s changed since it was converted: converting it again", source)
            return None
        if file_sha256(copy) != record["copy_sha256"]:
            log.warning(
                "%s does not match its record (damaged?): converting %s again", copy, source
            )
            return None
        with safe_open(str(copy), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no mapping
    except (SafetensorError, OSError, ValueError) as e:
        log.warning("%s cannot be read (%s): converting %s again", copy, e, source)
        return None
    log.info("%s: read from its converted copy %s", source, copy)
    return state, {**record, "copy": str(copy)}


def _source_unchanged(source: Path, record: dict[str, Any], record_path: Path) -> bool:
    """Whether `source` is the file the record was made from: the same size and mtime, or the
    same size and SHA-256 (a touched or copied file; the record then takes the new mtime)."""
    stat = source.stat()
    if (stat.st_size, stat.st_mtime_ns) == (record["source_size"], record["source_mtime_ns"]):
        return True
    if stat.st_size != record["source_size"] or file_sha256(source) != record["source_sha256"]:
        return False
    record["source_mtime_ns"] = stat.st_mtime_ns
    try:
        write_atomic(record_path, json.dumps(record, indent=1))
    except OSError as e:  # a read-only cache: the copy is still good, only the check costs more
        log.info("cannot update %s (%s)", record_path, e.strerror or type(e).__name__)
    return True


def store_converted(
    source: Path, state: Mapping[str, torch.Tensor], source_sha256: str, stat: os.stat_result
) -> Path | None:
    """Keep `state` (read from `source`, whose SHA-256 and `os.stat` before reading are given) as
    a safetensors copy with its record; the copy's path, or None where the cache cannot be
    written (a warning says why; the caller goes on with `state`)."""
    copy, record_path = copy_paths(source)
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tensors = _unshared(state)
        metadata = {"format": FORMAT, "source": source.name, "source_sha256": source_sha256}
        with atomic_output(copy) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        record = {
            "format": FORMAT,
            "source": str(source.resolve()),
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "source_sha256": source_sha256,
            "copy_sha256": file_sha256(copy),
        }
        write_atomic(record_path, json.dumps(record, indent=1))
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
        log.warning("no converted copy of %s kept in %s (%s)", source, copy.parent, reason)
        return None
    log.info("%s: converted copy kept as %s", source, copy)
    return copy


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = ("source", "source_size", "source_mtime_ns", "source_sha256", "copy_sha256")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record if all(k in record for k in keys) else None


def _unshared(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as safetensors stores them: contiguous, none sharing memory with another
    (a view or a tied weight is cloned; the rest are kept as they are, no copy)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        storage = value.untyped_storage()
        whole = value.is_contiguous() and value.storage_offset() == 0
        if not whole or storage.nbytes() != value.nbytes or storage.data_ptr() in seen:
            value = value.contiguous().clone()
            storage = value.untyped_storage()
        if value.nbytes:
            seen.add(storage.data_ptr())
        out[key] = value
    return out
