import numpy as np
import pytest

from sparse_transformer.data import batch_generator, embedded_splits, file_splits, random_batch
from sparse_transformer.data.text import TEST_DOCS, VALID_DOCS, corpus_documents


def test_embedded_corpus_is_the_42_plays():
    docs = corpus_documents()
    assert len(docs) == 42 and all(n.endswith("_gut.txt") for n in docs)
    assert sum(len(d) for d in docs.values()) == 5_057_198
    assert set(VALID_DOCS + TEST_DOCS) <= set(docs)


def test_splits_are_disjoint_documents():
    s = embedded_splits()
    docs = corpus_documents()
    macbeth = docs["macbeth_gut.txt"][:2000]
    assert macbeth in s["test"].tobytes() and macbeth not in s["train"].tobytes()
    caesar = docs["julius_caesar_gut.txt"][:2000]
    assert caesar in s["valid"].tobytes() and caesar not in s["train"].tobytes()
    assert len(s["train"]) > 4_000_000


def test_batches_are_deterministic_and_shifted():
    data = np.arange(1000, dtype=np.uint8)
    a = random_batch(data, 16, 4, batch_generator(0, 7))
    b = random_batch(data, 16, 4, batch_generator(0, 7))
    c = random_batch(data, 16, 4, batch_generator(0, 8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    x, y = a
    assert (x[:, 1:] == y[:, :-1]).all()


def test_file_and_folder_splits(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(bytes(range(256)) * 40)
    s = file_splits(f)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [9216, 512, 512]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(60):
        (folder / f"doc{i}.txt").write_bytes(f"document {i} ".encode() * 50)
    s = file_splits(folder)
    assert all(len(s[k]) for k in ("train", "valid", "test"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_splits(tmp_path / "missing")
    with pytest.raises(ValueError, match="seq_len"):
        random_batch(np.zeros(10, np.uint8), 16, 2, batch_generator(0, 0))
