"""Typed model configuration and the pattern it describes."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..patterns import Dense, Fixed, Local, Pattern, Strided

PATTERN_KINDS = ("strided", "fixed", "local", "dense")
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
    pattern: str = "fixed"  # strided | fixed | local | dense
    stride: int = 32  # l
    summary: int = 8  # c (fixed)
    distinct_heads: bool = False  # fixed: distinct summary sub-blocks per head
    window: int = 128  # local
    mode: str = "merged"  # merged | interleaved | split
    position: str = "factorized"  # factorized (i // l, i % l) | data (data_shape) | none
    data_shape: tuple[int, ...] = field(default_factory=tuple)  # e.g. (32, 32, 3) for CIFAR-10
    checkpointing: bool = False  # recompute each block in the backward pass
    backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "stride",
                     "summary", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.pattern not in PATTERN_KINDS:
            raise ValueError(f"pattern must be one of {PATTERN_KINDS}, got {self.pattern!r}")
        if self.position not in POSITION_KINDS:
            raise ValueError(f"position must be one of {POSITION_KINDS}, got {self.position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ff_mult <= 0:
            raise ValueError(f"ff_mult must be > 0, got {self.ff_mult}")
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
        if self.pattern == "strided":
            return Strided(self.stride)
        if self.pattern == "fixed":
            return Fixed(self.stride, self.summary, self.distinct_heads)
        if self.pattern == "local":
            return Local(self.window)
        return Dense()
