"""An encoder classifier: bidirectional sparse attention over padded token sequences.

    H_0 = tok(x) + pos(i);  H_k = H_{k-1} + a(H_{k-1}) + b(H_{k-1})   (the paper's pre-norm block)
    a(H) = dropout(attention(norm(H), padding));  b(H) = dropout(ff(norm(H + a(H))))
    logits = head(pool(norm(H_N)))   pool: the [CLS] position (0) or the mean over real tokens

Attention is ``SparseSelfAttention(causal=False)`` with the batch's padding mask, so no query
attends to padding. The pattern is named as in ``ModelConfig`` (``models/pattern_spec.py``): a
kind, a union ``"local+global+random"`` or one per head ``"local,strided"``, each kind reading the
shared fields. The presets, bidirectional:

* ``dense``:      every pair;
* ``local``:      ``Local(window)``, keys with |i - j| < window;
* ``longformer``: ``Local(window) | Global(global_tokens)`` (the global positions, [CLS] at 0
                  by default, attend to all and are attended by all);
* ``bigbird``:    ``Local(window) | Global(global_tokens) | Random(random_blocks,
                  random_block_size, pattern_seed)``;
* ``strided``:    the paper's ``Strided(stride)``;  ``fixed``: ``Fixed(stride, summary)``.

The fields' earlier names ``n_global`` (the first n positions global), ``n_random``,
``block_size`` and ``seed`` are still taken by the constructor, so configs saved with them load.

Initialisation follows ``models.transformer``: weights N(0, sqrt(0.125 / fan_in)), the attention
output and W2 scaled by 1 / sqrt(2 N), biases and the classifier head zero.
"""
from __future__ import annotations

import math
from dataclasses import InitVar, dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import SparseSelfAttention
from ..patterns import Pattern
from .pattern_spec import (apply_legacy_fields, build_pattern, config_pattern,
                           normalize_pattern_fields)
from .transformer import FeedForward

# The presets the benchmarks compare; any spec of PATTERN_KINDS works (models/pattern_spec.py).
ENCODER_PATTERNS = ("dense", "local", "longformer", "bigbird", "strided", "fixed")
POOLINGS = ("cls", "mean")


def encoder_pattern(name: str, window: int = 64, n_global: int = 1, n_random: int = 2,
                    block_size: int = 64, stride: int = 64, summary: int = 8,
                    seed: int = 0) -> Pattern:
    """The pattern ``name`` (a spec of ``PATTERN_KINDS``) with the encoder's earlier parameter
    names: the first ``n_global`` positions global, ``n_random`` random blocks of
    ``block_size``, seeded by ``seed``."""
    return build_pattern(name, window=window, global_tokens=tuple(range(n_global)),
                         random_blocks=n_random, random_block_size=block_size, stride=stride,
                         summary=summary, pattern_seed=seed)


@dataclass
class EncoderConfig:
    vocab_size: int = 4096
    n_classes: int = 2
    max_len: int = 512  # the longest input, [CLS] included
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: float = 4.0
    dropout: float = 0.1
    # The pattern and its fields, as in ModelConfig (models/pattern_spec.py): a kind, a union
    # "local+global+random", or one per head "local,strided".
    pattern: str = "bigbird"
    stride: int = 64  # strided, fixed, column, block, summary
    summary: int = 8  # fixed, summary
    distinct_heads: bool = False  # fixed, summary: a sub-block per head; random: draws per head
    window: int = 64  # local, longformer, bigbird
    global_tokens: tuple[int, ...] = (0,)  # global, longformer, bigbird: positions ([CLS] is 0)
    random_blocks: int = 2  # random, bigbird: random key blocks per query block
    random_block_size: int = 64  # random, bigbird: random-block size
    pattern_seed: int = 0  # random, bigbird: seed of the random blocks
    mode: str = "merged"  # merged | interleaved | split (strided, fixed)
    pooling: str = "cls"  # cls | mean
    checkpointing: bool = False
    backend: str = "auto"
    # Earlier names, read from old saved configs: n_global (global_tokens = the first n),
    # n_random (random_blocks), block_size (random_block_size), seed (pattern_seed).
    n_global: InitVar[int | None] = None
    n_random: InitVar[int | None] = None
    block_size: InitVar[int | None] = None
    seed: InitVar[int | None] = None

    def __post_init__(self, n_global, n_random, block_size, seed):
        for name in ("vocab_size", "n_classes", "max_len", "d_model", "n_layers", "n_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        apply_legacy_fields(self, _DEFAULTS, n_global=n_global, n_random=n_random,
                            block_size=block_size, seed=seed)
        normalize_pattern_fields(self)  # every pattern field, and the pattern they name
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads})")

    def build_pattern(self) -> Pattern:
        return config_pattern(self)


_DEFAULTS = {f: EncoderConfig.__dataclass_fields__[f].default
             for f in ("global_tokens", "random_blocks", "random_block_size", "pattern_seed")}


class EncoderBlock(nn.Module):
    def __init__(self, cfg: EncoderConfig, index: int, pattern: Pattern):
        super().__init__()
        self.norm_a = nn.LayerNorm(cfg.d_model)
        self.attn = SparseSelfAttention(cfg.d_model, cfg.n_heads, pattern, cfg.mode,
                                        layer_index=index, causal=False, backend=cfg.backend)
        self.norm_b = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, padding_mask):
        a = self.drop(self.attn(self.norm_a(h), padding_mask))
        b = self.drop(self.ff(self.norm_b(h + a)))
        return h + a + b


class EncoderClassifier(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        pattern = cfg.build_pattern()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.empty(cfg.max_len, cfg.d_model))
        self.blocks = nn.ModuleList([EncoderBlock(cfg, i, pattern) for i in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)
        self.reset_parameters()

    def reset_parameters(self):
        cfg = self.cfg
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=math.sqrt(0.125 / m.in_features))
                nn.init.zeros_(m.bias)
        resid = 1.0 / math.sqrt(2 * cfg.n_layers)
        for blk in self.blocks:
            blk.attn.proj.weight.data.mul_(resid)
            blk.ff.w2.weight.data.mul_(resid)
        nn.init.normal_(self.tok.weight, std=math.sqrt(0.125 / cfg.d_model))
        nn.init.normal_(self.pos, std=0.125 / math.sqrt(cfg.d_model))
        nn.init.zeros_(self.head.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def features(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """The pooled representation (batch, d_model)."""
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be a long tensor (batch, seq), got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        b, n = ids.shape
        if n > self.cfg.max_len:
            raise ValueError(f"sequence length {n} exceeds the model's max_len {self.cfg.max_len}")
        if padding_mask is not None and (padding_mask.dtype != torch.bool
                                         or tuple(padding_mask.shape) != (b, n)):
            raise ValueError(f"padding_mask must be bool of shape {(b, n)} (True at padding), "
                             f"got {padding_mask.dtype} {tuple(padding_mask.shape)}")
        h = self.tok(ids) + self.pos[:n]
        for blk in self.blocks:
            if self.cfg.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(blk, h, padding_mask, use_reentrant=False)
            else:
                h = blk(h, padding_mask)
        h = self.norm(h)
        if self.cfg.pooling == "cls":
            return h[:, 0]
        if padding_mask is None:
            return h.mean(1)
        keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """ids long (batch, seq), padding_mask bool (batch, seq) True at padding -> logits
        (batch, n_classes) in float32."""
        return self.head(self.features(ids, padding_mask)).float()
