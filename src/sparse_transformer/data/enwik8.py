"""enwik8: the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize).

Standard split by position: the first 90M bytes train, the next 5M valid, the last 5M test.
The zip from mattmahoney.net is downloaded when asked (``data.download=true``) and verified by
sha256; the extracted file is verified by sha256 before use, and written atomically.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .downloads import DataUnavailable, check_digest, default_root, ensure_file

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
# sha256 of the 10^8-byte file (its published md5 is a1fa5ffddb56f4953e226637dabbb36a) and of the
# zip (36,445,475 bytes)
ENWIK8_CHECKSUM = "sha256:2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"
ENWIK8_ZIP_CHECKSUM = "sha256:547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
ENWIK8_BYTES = 100_000_000
TRAIN, VALID = 90_000_000, 5_000_000


def enwik8_path(root: str | Path | None = None, download: bool = False, fetch=None,
                url: str = ENWIK8_URL, checksum: str | None = ENWIK8_CHECKSUM,
                zip_checksum: str | None = ENWIK8_ZIP_CHECKSUM) -> Path:
    folder = (Path(root) if root else default_root()) / "enwik8"
    target = folder / "enwik8"
    if target.exists():
        if not check_digest(target, checksum):
            raise DataUnavailable(f"enwik8: {target} is corrupt (checksum is not {checksum}); "
                                  f"delete it and fetch {url} again (data.download=true)")
        return target
    if not (folder / "enwik8.zip").exists() and not download:
        raise DataUnavailable(f"enwik8: {target} not found. Fetch {url}, unzip it and put the file "
                              f"'enwik8' at {target} (or pass data.download=true)")
    zpath = ensure_file(folder / "enwik8.zip", url, zip_checksum, download_ok=download,
                        what="enwik8", fetch=fetch)
    tmp = folder / ".enwik8.part"
    try:
        with zipfile.ZipFile(zpath) as z, open(tmp, "wb") as out:
            out.write(z.read("enwik8"))
        if not check_digest(tmp, checksum):
            raise DataUnavailable(f"enwik8: the file inside {zpath} does not match {checksum}; "
                                  f"delete {zpath} and download again")
        os.replace(tmp, target)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataUnavailable(f"enwik8: {zpath} is not a zip holding 'enwik8' ({e}); delete it "
                              f"and fetch {url} again") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def enwik8(root: str | Path | None = None, download: bool = False, fetch=None, **kw) -> dict:
    data = np.memmap(enwik8_path(root, download, fetch, **kw), dtype=np.uint8, mode="r")
    n = len(data)
    a, b = (TRAIN, TRAIN + VALID) if n == ENWIK8_BYTES else (int(n * 0.9), int(n * 0.95))
    return {"train": data[:a], "valid": data[a:b], "test": data[b:]}
