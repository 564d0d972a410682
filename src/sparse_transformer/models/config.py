"""Typed model configuration and the pattern it describes."""
from __future__ import annotations

from dataclasses import dataclass, field

from .memory import normalize_checkpointing
from ..patterns import PATTERN_KINDS, Pattern, build_pattern
POSITION_KINDS = ("factorized", "data", "none")


@dataclass
class ModelConfig:
    vocab_size: int = 256
    seq_len: int = 1024  # context length
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: float = 4.0  # 2.0 for the paper's "half-size" models
    qk_ratio: float = 1.0  # 0.5 halves the query/key width (CIFAR-10)
    dropout: float = 0.0
    pattern: str = "fixed"  # strided | fixed | local | dense | bigbird | longformer
    stride: int = 32  # l (strided, fixed)
    summary: int = 8  # c (fixed)
    distinct_heads: bool = False  # fixed: distinct summary sub-blocks per head
    window: int = 128  # local, bigbird, longformer
    global_tokens: tuple[int, ...] = (0,)  # bigbird, longformer: global positions (() = none)
    random_blocks: int = 2  # bigbird: random key blocks per query block (0 = none)
    random_block_size: int = 64  # bigbird: size of the random blocks
    pattern_seed: int = 0  # bigbird: seed of the random blocks (saved with the config)
    mode: str = "merged"  # merged | interleaved | split
    position: str = "factorized"  # factorized (i // l, i % l) | data (data_shape) | none
    data_shape: tuple[int, ...] = field(default_factory=tuple)  # e.g. (32, 32, 3) for CIFAR-10
    # Activation checkpointing: none | attention | block | auto (models/memory.py; true / false
    # are read as block / none).
    checkpointing: str = "none"
    backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "stride",
                     "summary", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.pattern not in PATTERN_KINDS:
            raise ValueError(f"pattern must be one of {PATTERN_KINDS}, got {self.pattern!r}")
        for name in ("random_blocks", "pattern_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if isinstance(self.random_block_size, bool) or not isinstance(self.random_block_size, int) \
                or self.random_block_size < 1:
            raise ValueError(f"random_block_size must be an int >= 1, got {self.random_block_size!r}")
        toks = (self.global_tokens,) if isinstance(self.global_tokens, int) else self.global_tokens
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in toks) \
                or len(set(toks)) != len(toks):
            raise ValueError(f"global_tokens must be distinct ints >= 0, got {self.global_tokens!r}")
        self.global_tokens = tuple(toks)
        if self.position not in POSITION_KINDS:
            raise ValueError(f"position must be one of {POSITION_KINDS}, got {self.position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ff_mult <= 0:
            raise ValueError(f"ff_mult must be > 0, got {self.ff_mult}")
        self.checkpointing = normalize_checkpointing(self.checkpointing)
        self.data_shape = tuple(int(x) for x in self.data_shape)
        if self.position == "data":
            size = 1
            for x in self.data_shape:
                size *= x
            if not self.data_shape or size < self.seq_len:
                raise ValueError(f"position='data' needs data_shape whose product covers seq_len "
                                 f"({self.seq_len}), got {self.data_shape}")
        self.build_pattern()  # validates stride/summary/window

    def build_pattern(self) -> Pattern:
        return build_pattern(self.pattern, stride=self.stride, summary=self.summary,
                             distinct_heads=self.distinct_heads, window=self.window,
                             global_tokens=self.global_tokens, random_blocks=self.random_blocks,
                             random_block_size=self.random_block_size, seed=self.pattern_seed)
