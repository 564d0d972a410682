"""Typed model configuration and the pattern it describes."""
from __future__ import annotations

from dataclasses import dataclass, field

from .memory import normalize_checkpointing
from ..patterns import Pattern
from .pattern_spec import config_pattern, normalize_pattern_fields
POSITION_KINDS = ("factorized", "data", "none")
CHECKPOINT_STORAGE = ("auto", "float32")


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
    # The pattern: a kind, a union "local+global+random", or one per head "local,strided"; the
    # kinds and the fields each reads: models/pattern_spec.py (shared with EncoderConfig).
    pattern: str = "fixed"
    stride: int = 32  # l (strided, fixed, column, block, summary)
    summary: int = 8  # c (fixed, summary)
    distinct_heads: bool = False  # fixed, summary: a sub-block per head; random: draws per head
    window: int = 128  # local, bigbird, longformer
    global_tokens: tuple[int, ...] = (0,)  # global, bigbird, longformer: positions (() = none)
    random_blocks: int = 2  # random, bigbird: random key blocks per query block (0 = none)
    random_block_size: int = 64  # random, bigbird: size of the random blocks
    pattern_seed: int = 0  # random, bigbird: seed of the random blocks (saved with the config)
    mode: str = "merged"  # merged | interleaved | split
    position: str = "factorized"  # factorized (i // l, i % l) | data (data_shape) | none
    data_shape: tuple[int, ...] = field(default_factory=tuple)  # e.g. (32, 32, 3) for CIFAR-10
    # Activation checkpointing: none | attention | block | full | auto (models/memory.py; true /
    # false are read as block / none).
    checkpointing: str = "none"
    # What "block" (and "full") checkpointing stores of each block's input (the float32
    # residual stream):
    # "auto" stores it in bfloat16 when the step runs under bf16 autocast (half the memory of
    # long contexts; the blocks then read their input rounded to bf16, as the paper's
    # half-precision activations did), "float32" stores it exactly.
    checkpoint_storage: str = "auto"
    backend: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        normalize_pattern_fields(self)  # every pattern field, and the pattern they name
        if self.position not in POSITION_KINDS:
            raise ValueError(f"position must be one of {POSITION_KINDS}, got {self.position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ff_mult <= 0:
            raise ValueError(f"ff_mult must be > 0, got {self.ff_mult}")
        self.checkpointing = normalize_checkpointing(self.checkpointing)
        if self.checkpoint_storage not in CHECKPOINT_STORAGE:
            raise ValueError(f"checkpoint_storage must be one of {CHECKPOINT_STORAGE}, got "
                             f"{self.checkpoint_storage!r}")
        self.data_shape = tuple(int(x) for x in self.data_shape)
        if self.position == "data":
            size = 1
            for x in self.data_shape:
                size *= x
            if not self.data_shape or size < self.seq_len:
                raise ValueError(f"position='data' needs data_shape whose product covers seq_len "
                                 f"({self.seq_len}), got {self.data_shape}")

    def build_pattern(self) -> Pattern:
        return config_pattern(self)
