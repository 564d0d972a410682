"""Files a data set needs: found on disk, or downloaded, always verified by checksum.

``ensure_file`` is the one entry point. A file already in place is used without any download once
its checksum matches. A missing file is downloaded only when asked (``download=True``); otherwise
the error says which URL to fetch and where to put the file. Downloads go to a temporary file in
the destination folder, are verified, then renamed into place, so a half-finished download never
looks like a finished one. ``fetch`` may be replaced (tests pass a fake or a ``file://`` URL).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Callable

Fetch = Callable[[str, Path], None]


class DataUnavailable(FileNotFoundError):
    """A data file is missing or corrupt; the message says what to fetch and where to put it."""


def default_root() -> Path:
    """Where data sets live: $SPARSE_TRANSFORMER_DATA, else ~/.cache/sparse-transformer."""
    env = os.environ.get("SPARSE_TRANSFORMER_DATA")
    return Path(env) if env else Path.home() / ".cache" / "sparse-transformer"


def file_digest(path: str | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_digest(path: Path, checksum: str | None) -> bool:
    """``checksum`` is "md5:<hex>" or "sha256:<hex>" (None: nothing to check)."""
    if not checksum:
        return True
    algorithm, _, want = checksum.partition(":")
    if algorithm not in ("md5", "sha1", "sha256") or not want:
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', got {checksum!r}")
    return file_digest(path, algorithm) == want.lower()


def urllib_fetch(url: str, dest: Path) -> None:
    """Stream ``url`` (http, https or file) into ``dest``."""
    with urllib.request.urlopen(url) as src, open(dest, "wb") as out:  # noqa: S310 (by design)
        shutil.copyfileobj(src, out, length=1 << 20)


def download(url: str, dest: str | Path, checksum: str | None = None,
             fetch: Fetch | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it; raise if the checksum differs."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        (fetch or urllib_fetch)(url, tmp)
        if not check_digest(tmp, checksum):
            raise DataUnavailable(
                f"the download of {url} does not match its checksum {checksum}; it was discarded. "
                f"Try again, or fetch it by hand and put it at {dest}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def ensure_file(path: str | Path, url: str | None, checksum: str | None, *, download_ok: bool,
                what: str, fetch: Fetch | None = None, hint: str = "") -> Path:
    """Return ``path`` once it exists with the right checksum, downloading it if allowed."""
    path = Path(path)
    where = f"fetch {url} and put it at {path}" if url else f"put it at {path}"
    if path.exists():
        if check_digest(path, checksum):
            return path
        raise DataUnavailable(
            f"{what}: {path} is corrupt or incomplete (its checksum is not {checksum}). Delete it "
            f"and {'download again (data.download=true)' if url else where}. {hint}".strip())
    if download_ok and url:
        return download(url, path, checksum, fetch)
    how = " or pass data.download=true to download it" if url else ""
    raise DataUnavailable(f"{what}: {path} not found. {where[0].upper() + where[1:]}{how}. "
                          f"{hint}".strip())
