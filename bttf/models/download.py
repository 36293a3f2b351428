"""Fetching a catalogue entry (`bttf.models.catalogue`) into torch hub's checkpoints folder.

The transfer is the standard library's (`urllib.request`: http, https with the system's
certificates, redirects, proxies from the environment, and `file://` for an offline mirror). The
file is written to a hidden temporary file beside its final name, hashed as it arrives, and
renamed (`os.replace`, atomic on one file system) only once the whole file's SHA-256 matches the
catalogue; a refused, short, wrong or interrupted download (Ctrl-C included) leaves nothing
behind. Errors are `DownloadError`, one line each.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from bttf.errors import DownloadError
from bttf.models.catalogue import BASE_URL_ENV, Release, checkpoints_dir, release_urls

log = logging.getLogger(__name__)

#: progress(done_bytes, total_bytes or None), called after every chunk.
ProgressFn = Callable[[int, "int | None"], None]
CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadResult:
    """What `download` did: `fetched` is False when the file was already there."""

    release: Release
    path: Path
    fetched: bool
    size: int


def download(
    release: Release,
    *,
    force: bool = False,
    directory: str | Path | None = None,
    progress: ProgressFn | None = None,
    timeout: float = 60.0,
) -> DownloadResult:
    """Fetch `release` into `directory` (default: `checkpoints_dir()`) under its released name.

    Args:
        release: the catalogue entry (`get_release(name)`, or one of the caller's own).
        force: fetch again even when the file is there (the old file stays until the new one
            has passed the hash check).
        directory: where the file goes.
        progress: called with (bytes so far, total bytes or None) after every chunk.
        timeout: seconds a connection may stay silent.

    Returns:
        A `DownloadResult`.

    Raises:
        DownloadError: the folder cannot be written, no URL answers, the server refuses or
            breaks off, or the file's SHA-256 differs from the catalogue's. Nothing is left.
    """
    folder = Path(directory) if directory is not None else checkpoints_dir()
    target = folder / release.file
    if target.is_file() and not force:
        return DownloadResult(release, target, False, target.stat().st_size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create {folder} ({e.strerror or type(e).__name__}); set TORCH_HOME to a "
            "folder you can write"
        ) from None
    urls = release_urls(release)  # never empty: a Release has at least one
    errors: list[DownloadError] = []
    for url in urls:
        try:
            size = _fetch(release, url, target, progress, timeout)
            return DownloadResult(release, target, True, size)
        except DownloadError as e:
            if len(urls) > 1:
                log.warning("%s", e)
            errors.append(e)
    raise errors[0]


def _fetch(
    release: Release, url: str, target: Path, progress: ProgressFn | None, timeout: float
) -> int:
    """One URL into `target` through a temporary file beside it; the byte count."""
    tmp = target.with_name(f".{release.file}.{secrets.token_hex(4)}.part")
    try:  # 0o666 less the umask, as any file the user writes (mkstemp would make it 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise DownloadError(
            f"cannot write in {target.parent} ({e.strerror or type(e).__name__}); set TORCH_HOME "
            "to a folder you can write"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:
            done, digest = _transfer(url, out, release, progress, timeout)
        _check_hash(release, url, digest)
        os.replace(tmp, target)
        log.info("%s: %d bytes from %s", target, done, url)
        return done
    finally:
        tmp.unlink(missing_ok=True)  # gone already after os.replace


def _transfer(
    url: str, out: BinaryIO, release: Release, progress: ProgressFn | None, timeout: float
) -> tuple[int, str]:
    """Stream `url` into the open file `out`, hashing; (bytes, hex SHA-256)."""
    host = urlsplit(url).netloc or url
    digest = hashlib.sha256()
    done = 0
    request = urllib.request.Request(url, headers={"User-Agent": "bttf (urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(0, total or release.size)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total or max(release.size, done))
    except urllib.error.HTTPError as e:
        raise DownloadError(
            f"{url}: the server answered {e.code} {e.reason}; nothing was kept"
        ) from None
    except urllib.error.URLError as e:
        reason = getattr(e.reason, "strerror", None) or str(e.reason)
        raise DownloadError(
            f"cannot reach {host} ({reason}): check the network, or set {BASE_URL_ENV} to a "
            "mirror holding the released files"
        ) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise DownloadError(
            f"the download from {host} broke off after {done:,} bytes "
            f"({type(e).__name__}); nothing was kept, run the command again"
        ) from None
    except OSError as e:  # writing the temporary file: disk full, quota
        raise DownloadError(
            f"cannot write {release.file} ({e.strerror or type(e).__name__}); nothing was kept"
        ) from None
    if total is not None and done != total:
        raise DownloadError(
            f"the download from {host} broke off after {done:,} of {total:,} bytes; nothing "
            "was kept, run the command again"
        )
    return done, digest.hexdigest()


def _check_hash(release: Release, url: str, digest: str) -> None:
    """The whole file's SHA-256 against the catalogue (a prefix only where that is all it has,
    the check torch hub makes)."""
    if digest[: len(release.sha256)] == release.sha256:
        return
    what = "SHA-256" if release.full_hash else f"SHA-256 prefix ({len(release.sha256)} digits)"
    raise DownloadError(
        f"{release.file} from {url} is not the released file: its {what} is "
        f"{digest[: len(release.sha256)]}, the catalogue says {release.sha256}; nothing was kept"
    )
