"""Random block attention (as in BigBird), seeded so that every rank and every run agree.

Positions are grouped in blocks of ``block_size``. Each query block b >= 1 is linked to
``num_blocks`` key blocks drawn without replacement from the earlier blocks 0 .. b-1 (all of them
when there are fewer). The link is symmetric: bidirectionally, block a also sees block b when b
drew a. The draw for block b depends only on (seed, head, b), never on the sequence length, so a
model trained at one length sees the same links at another.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .base import Pattern, check_positive_int


@lru_cache(maxsize=64)
def _links(num_blocks: int, seed: int, head: int, upto: int) -> torch.Tensor:
    """Bool (upto, upto): entry [b, a] is True when query block b drew earlier key block a."""
    table = torch.zeros(upto, upto, dtype=torch.bool)
    gen = torch.Generator()
    for b in range(1, upto):
        gen.manual_seed((seed * 1_000_003 + head) * 1_000_033 + b)
        pick = torch.randperm(b, generator=gen)[:num_blocks]
        table[b, pick] = True
    return table


@dataclass(frozen=True)
class Random(Pattern):
    num_blocks: int
    block_size: int = 64
    seed: int = 0
    distinct_heads: bool = False

    def __post_init__(self):
        check_positive_int("num_blocks", self.num_blocks)
        check_positive_int("block_size", self.block_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    @property
    def per_head(self) -> bool:
        return self.distinct_heads

    def _table(self, upto: int, heads: int, device) -> torch.Tensor:
        # Round the size up to a power of two so the cache is reused across lengths.
        size = 1 << max(upto - 1, 1).bit_length()
        hs = range(heads) if self.distinct_heads else [0]
        t = torch.stack([_links(self.num_blocks, self.seed, h, size) for h in hs])
        return (t | t.transpose(1, 2)).to(device)

    def allowed(self, q, k, h):
        qb = q.div(self.block_size, rounding_mode="floor")
        kb = k.div(self.block_size, rounding_mode="floor")
        upto = int(max(qb.max().item(), kb.max().item())) + 1
        heads = int(h.max().item()) + 1 if self.distinct_heads else 1
        table = self._table(upto, heads, q.device)
        hh = h if self.distinct_heads else torch.zeros_like(h)
        qb, kb, hh = torch.broadcast_tensors(qb, kb, hh)
        return table[hh, qb, kb]
