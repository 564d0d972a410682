"""Downloads: atomic, checksummed, and clear errors for missing or corrupt files."""
import hashlib
import io
import zipfile

import numpy as np
import pytest

from sparse_transformer.data.downloads import DataUnavailable, download, ensure_file
from sparse_transformer.data.enwik8 import enwik8


def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_file_url_download_verified(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello bytes" * 100)
    dest = tmp_path / "out" / "file.bin"
    got = ensure_file(dest, src.as_uri(), _sha(src.read_bytes()), download_ok=True, what="x")
    assert got.read_bytes() == src.read_bytes()
    assert not list(dest.parent.glob(".*part"))


def test_bad_checksum_discards_download(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    dest = tmp_path / "d.bin"
    with pytest.raises(DataUnavailable, match="checksum"):
        download(src.as_uri(), dest, _sha(b"other"))
    assert not dest.exists() and not list(tmp_path.glob(".*part"))


def test_interrupted_fetch_leaves_nothing(tmp_path):
    def broken(url, path):
        path.write_bytes(b"half")
        raise ConnectionError("network gone")
    with pytest.raises(ConnectionError):
        download("http://example.invalid/f", tmp_path / "f", None, fetch=broken)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_message_says_what_and_where(tmp_path):
    with pytest.raises(DataUnavailable) as e:
        ensure_file(tmp_path / "f.tgz", "http://example.invalid/f.tgz", None, download_ok=False,
                    what="Thing")
    msg = str(e.value)
    assert "http://example.invalid/f.tgz" in msg and str(tmp_path / "f.tgz") in msg
    assert "data.download=true" in msg


def test_corrupt_file_on_disk_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"corrupt")
    with pytest.raises(DataUnavailable, match="corrupt"):
        ensure_file(tmp_path / "f", "http://x/f", _sha(b"good"), download_ok=True, what="T")


def test_file_on_disk_used_without_download(tmp_path):
    (tmp_path / "f").write_bytes(b"good")
    def no_fetch(url, path):
        raise AssertionError("must not download")
    assert ensure_file(tmp_path / "f", "http://x/f", _sha(b"good"), download_ok=True, what="T",
                       fetch=no_fetch).read_bytes() == b"good"


def test_bad_checksum_spec_names_format(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="sha256:<hex>"):
        ensure_file(tmp_path / "f", None, "crc:123", download_ok=False, what="T")


def test_enwik8_download_unzip_split(tmp_path):
    data = bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("enwik8", data)
    src = tmp_path / "enwik8.zip"
    src.write_bytes(buf.getvalue())
    root = tmp_path / "root"
    with pytest.raises(DataUnavailable, match="enwik8"):
        enwik8(root)  # not there, no download asked
    md5 = "md5:" + hashlib.md5(data).hexdigest()
    zsum = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(DataUnavailable, match="checksum"):  # the zip is verified too
        enwik8(root, download=True, url=src.as_uri(), checksum=md5, zip_checksum="sha256:" + "0" * 64)
    assert not (root / "enwik8" / "enwik8.zip").exists()
    splits = enwik8(root, download=True, url=src.as_uri(), checksum=md5, zip_checksum=zsum)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [18_000, 1000, 1000]
    assert bytes(np.concatenate([splits[k] for k in ("train", "valid", "test")])) == data
    (root / "enwik8" / "enwik8").write_bytes(data[:-1] + b"\x00")
    with pytest.raises(DataUnavailable, match="corrupt"):
        enwik8(root, checksum=md5)
