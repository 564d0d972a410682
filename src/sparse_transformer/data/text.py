"""Byte-level text data: the embedded corpus, or any file / folder (memory-mapped).

A data set is a dict of splits, each a 1-D uint8 array. Batches are random windows drawn from a
generator seeded by (seed, step), so a resumed run draws exactly the batches the uninterrupted run
would have.

Splits:
* the embedded corpus: by document (two plays for valid, two for test, the rest for training);
* a folder of files: by document, each file assigned by a hash of its name (90 / 5 / 5);
* a single file: by position, the first 90% train, the next 5% valid, the last 5% test (the
  standard enwik8 protocol).
"""
from __future__ import annotations

import hashlib
import io
import tarfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .files import data_files

CORPUS_SHA256 = "df0d84fd4a4e7f5ecd5afb620c9348cf55c756af4b0952aa25d6a4819de2049e"
VALID_DOCS = ("julius_caesar_gut.txt", "twelfth_night_gut.txt")
TEST_DOCS = ("macbeth_gut.txt", "much_ado_about_nothing_gut.txt")
SPLITS = ("train", "valid", "test")
DOC_SEPARATOR = b"\n\n"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def corpus_documents() -> dict[str, bytes]:
    """The embedded corpus as {file name: bytes}, verified against its checksum."""
    raw = resources.files("sparse_transformer.data").joinpath("corpus/shakespeare.tar.xz").read_bytes()
    if sha256_bytes(raw) != CORPUS_SHA256:
        raise RuntimeError("the embedded corpus is corrupt (sha256 mismatch); reinstall the package")
    docs = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:xz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                docs[member.name] = tar.extractfile(member).read()
    return docs


def _join(docs: list[bytes]) -> np.ndarray:
    return np.frombuffer(DOC_SEPARATOR.join(docs), dtype=np.uint8)


def embedded_splits() -> dict[str, np.ndarray]:
    docs = corpus_documents()
    names = sorted(docs)
    split = {"train": [], "valid": [], "test": []}
    for n in names:
        key = "valid" if n in VALID_DOCS else "test" if n in TEST_DOCS else "train"
        split[key].append(docs[n])
    return {k: _join(v) for k, v in split.items()}


def _hash_split(name: str) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 100
    return "valid" if h < 5 else "test" if h < 10 else "train"


def file_splits(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        files = data_files(path)  # links inside the folder are skipped (see data.files)
        if not files:
            raise ValueError(f"data folder {str(path)!r} holds no files")
        split = {"train": [], "valid": [], "test": []}
        for p in files:
            split[_hash_split(str(p.relative_to(path)))].append(p.read_bytes())
        if not split["train"] or not split["valid"]:
            # Too few documents for a hash split: fall back to splitting the joined bytes.
            return _position_splits(_join([p.read_bytes() for p in files]))
        if not split["test"]:
            split["test"] = split["valid"]
        return {k: _join(v) for k, v in split.items()}
    if not path.is_file():
        raise ValueError(f"data path {str(path)!r} is neither a regular file nor a folder")
    if path.stat().st_size < 1000:  # (an empty file cannot even be memory-mapped)
        raise ValueError(f"data must hold at least 1000 bytes, got {path.stat().st_size} in "
                         f"{str(path)!r}")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    return _position_splits(data)


def _position_splits(data: np.ndarray) -> dict[str, np.ndarray]:
    n = len(data)
    if n < 1000:
        raise ValueError(f"data must hold at least 1000 bytes, got {n}")
    a, b = int(n * 0.9), int(n * 0.95)
    return {"train": data[:a], "valid": data[a:b], "test": data[b:]}


def load_text(source: str = "embedded") -> dict[str, np.ndarray]:
    return embedded_splits() if source == "embedded" else file_splits(source)


def batch_generator(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, stream])


def random_batch(data: np.ndarray, seq_len: int, batch_size: int, rng: np.random.Generator):
    """Random windows: inputs (B, seq_len) and next-byte targets (B, seq_len), long tensors."""
    if len(data) < seq_len + 1:
        raise ValueError(f"split of {len(data)} bytes is shorter than seq_len + 1 = {seq_len + 1}")
    starts = rng.integers(0, len(data) - seq_len, size=batch_size)
    windows = np.stack([np.asarray(data[s:s + seq_len + 1]) for s in starts]).astype(np.int64)
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]
