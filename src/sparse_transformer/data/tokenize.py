"""Text to padded id tensors with Hugging Face ``tokenizers``.

Three kinds, all one ``tokenizers.Tokenizer`` saved as ``tokenizer.json``:

* ``bpe``:   byte-level BPE trained on the training texts (any text encodes, nothing is unknown);
* ``bytes``: plain bytes, the byte-level alphabet of 256 symbols with no merges;
* ``word``:  a fixed word list split on whitespace (ListOps' 18 symbols, for example).

Ids 0, 1, 2 are always ``[PAD]``, ``[CLS]``, ``[UNK]``. ``encode`` puts ``[CLS]`` first,
truncates to ``max_length`` (``[CLS]`` included), pads to the longest sequence of the batch
(rounded up to ``pad_multiple``) and returns the ids with the padding mask (True at padding, the
convention of ``sparse_attention``'s ``key_padding_mask``); ``attention_mask`` is its negation
(1 at real tokens), as Hugging Face writes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PAD, CLS, UNK = "[PAD]", "[CLS]", "[UNK]"
SPECIALS = (PAD, CLS, UNK)
KINDS = ("bpe", "bytes", "word")


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("tokenization needs the 'tokenizers' package: "
                          "pip install 'sparse-transformer[classify]'") from None
    return tokenizers


@dataclass
class Encoded:
    ids: torch.Tensor  # long (batch, length)
    padding_mask: torch.Tensor  # bool (batch, length), True at padding
    truncated: int = 0  # how many texts were cut to max_length

    @property
    def attention_mask(self) -> torch.Tensor:
        return (~self.padding_mask).long()


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the project's special tokens, plus batch encoding."""

    def __init__(self, tokenizer, kind: str):
        self.tok = tokenizer
        self.kind = kind
        for i, s in enumerate(SPECIALS):
            if tokenizer.token_to_id(s) != i:
                raise ValueError(f"tokenizer must map {s} to id {i}, got {tokenizer.token_to_id(s)}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, kind: str = "bpe", vocab_size: int = 4096,
              min_frequency: int = 2) -> "TextTokenizer":
        """A tokenizer for ``texts`` (an iterable of str): ``bpe`` learns merges from them,
        ``bytes`` needs none of them, ``word`` keeps every whitespace-separated word."""
        tk = _tokenizers()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "bytes":
            return cls.byte_level()
        if kind == "word":
            words = sorted({w for t in texts for w in t.split()} - set(SPECIALS))
            return cls.word_level(list(SPECIALS) + words)
        alphabet = tk.pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(SPECIALS) + len(alphabet):
            raise ValueError(f"vocab_size must be >= {len(SPECIALS) + len(alphabet)} for byte-level "
                             f"BPE (the specials and 256 bytes), got {vocab_size}")
        t = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
        t.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=list(SPECIALS), initial_alphabet=alphabet,
                                         show_progress=False)
        t.train_from_iterator(texts, trainer=trainer)
        return cls(t, "bpe")

    @classmethod
    def byte_level(cls) -> "TextTokenizer":
        tk = _tokenizers()
        alphabet = sorted(tk.pre_tokenizers.ByteLevel.alphabet())
        vocab = {s: i for i, s in enumerate(list(SPECIALS) + alphabet)}
        t = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        t.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = tk.decoders.ByteLevel()
        t.add_special_tokens(list(SPECIALS))
        return cls(t, "bytes")

    @classmethod
    def word_level(cls, words: list[str]) -> "TextTokenizer":
        """Whitespace-separated words; ``words`` starts with the three specials in order."""
        tk = _tokenizers()
        if tuple(words[:3]) != SPECIALS:
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        vocab = {w: i for i, w in enumerate(words)}
        if len(vocab) != len(words):
            raise ValueError("words must be distinct")
        t = tk.Tokenizer(tk.models.WordLevel(vocab=vocab, unk_token=UNK))
        t.pre_tokenizer = tk.pre_tokenizers.WhitespaceSplit()
        t.add_special_tokens(list(SPECIALS))
        return cls(t, "word")

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (a folder path gets that file name)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        tmp = path.with_name(f".{path.name}.part")
        self.tok.save(str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        tk = _tokenizers()
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}")
        t = tk.Tokenizer.from_file(str(path))
        model = type(t.model).__name__
        kind = "word" if model == "WordLevel" else ("bytes" if t.get_vocab_size() <= 259 else "bpe")
        return cls(t, kind)

    # -- encoding -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, no [CLS], no truncation."""
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: list[str], max_length: int, pad_multiple: int = 1,
               pad_to: int | None = None) -> Encoded:
        """[CLS] + ids, truncated to ``max_length``, padded to the batch (or to ``pad_to``)."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and one token), got {max_length}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        return pad_ids(self.ids(texts), max_length, pad_multiple, pad_to)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


def pad_ids(seqs, max_length: int, pad_multiple: int = 1, pad_to: int | None = None) -> Encoded:
    """Id sequences (without [CLS]) -> an ``Encoded`` batch: [CLS] first, truncated, padded."""
    import numpy as np

    cut = [np.asarray(s[:max_length - 1], dtype=np.int64) for s in seqs]
    truncated = sum(len(s) > max_length - 1 for s in seqs)
    longest = 1 + max((len(s) for s in cut), default=0)
    if pad_to is None:
        length = min(max_length, -(-longest // pad_multiple) * pad_multiple)
    else:
        if pad_to < longest:
            raise ValueError(f"pad_to ({pad_to}) is shorter than the longest sequence ({longest})")
        length = pad_to
    ids = torch.zeros(len(cut), length, dtype=torch.long)
    pad = torch.ones(len(cut), length, dtype=torch.bool)
    ids[:, 0] = SPECIALS.index(CLS)
    for i, s in enumerate(cut):
        ids[i, 1:1 + len(s)] = torch.from_numpy(s)
        pad[i, :1 + len(s)] = False
    return Encoded(ids, pad, truncated)
