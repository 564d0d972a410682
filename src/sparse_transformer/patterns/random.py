"""Random block attention (as in BigBird), seeded so that every rank and every run agree.

Positions are grouped in blocks of ``block_size``. Each query block b >= 1 is linked to
``num_blocks`` key blocks drawn without replacement from the earlier blocks 0 .. b-1 (all of them
when there are fewer). The link is symmetric: bidirectionally, block a also sees block b when b
drew a. The draw for block b depends only on (seed, head, b), never on the sequence length, so a
model trained at one length sees the same links at another.

The draws are kept as a (blocks, num_blocks) matrix of picks per head (O(blocks * num_blocks)
memory), never as a blocks x blocks table; ``drawn_blocks`` hands them to the backends through
``structure()`` (kind "random"), so plans list each block's linked blocks directly.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .base import Pattern, check_positive_int
from .structure import Structure

_PICKS: "OrderedDict[tuple[int, int, int], torch.Tensor]" = OrderedDict()
_PICKS_MAX = 64  # (num_blocks, seed, head) entries kept, least recently used dropped first
_PICKS_LOCK = threading.Lock()


def _draw(num_blocks: int, seed: int, head: int, b: int) -> torch.Tensor:
    """The earlier blocks query block ``b`` drew (the draw every checkpoint depends on)."""
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + head) * 1_000_033 + b)
    return torch.randperm(b, generator=gen)[:num_blocks]


def drawn_picks(num_blocks: int, seed: int, head: int, upto: int) -> torch.Tensor:
    """Long (upto, num_blocks): row b holds the blocks query block b drew, -1 past its draws.

    Each row depends only on (num_blocks, seed, head, b), so one matrix per (num_blocks, seed,
    head) is kept and grown on demand; shorter lengths read its first rows. Drawing row b costs
    O(b) (``randperm(b)``): all rows up to B cost O(B^2) scalar work, about 0.7 s for B = 16384.
    """
    key = (num_blocks, seed, head)
    with _PICKS_LOCK:
        have = _PICKS.get(key)
        if have is not None:
            _PICKS.move_to_end(key)
    if have is None or have.shape[0] < upto:
        size = max(upto, 2 * have.shape[0] if have is not None else 1)
        grown = torch.full((size, num_blocks), -1, dtype=torch.long)
        start = 1
        if have is not None:
            grown[:have.shape[0]] = have
            start = max(1, have.shape[0])
        for b in range(start, size):
            pick = _draw(num_blocks, seed, head, b)
            grown[b, :pick.numel()] = pick
        with _PICKS_LOCK:
            _PICKS[key] = grown
            _PICKS.move_to_end(key)
            while len(_PICKS) > _PICKS_MAX:
                _PICKS.popitem(last=False)
        have = grown
    return have[:upto]


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

    def drawn_blocks(self, blocks: int, head: int = 0) -> torch.Tensor:
        """Long (blocks, num_blocks): the earlier key blocks each query block 0 .. blocks - 1
        drew for head ``head`` (-1 past a block's draws; every head draws as head 0 unless
        ``distinct_heads``)."""
        return drawn_picks(self.num_blocks, self.seed, head if self.distinct_heads else 0, blocks)

    def structure(self):
        return Structure("random", block_size=self.block_size, distinct_heads=self.distinct_heads,
                         links=self.drawn_blocks)

    def allowed(self, q, k, h):
        return _linked(self.drawn_blocks, self.block_size, self.distinct_heads,
                                    q, k, h)


def _linked(links, block_size: int, distinct_heads: bool, q, k, h) -> torch.Tensor:
    """The symmetric random-block predicate from ``links(blocks, head)`` (``drawn_blocks``): query
    block qb and key block kb are linked when one drew the other. The picks are gathered at the
    query (and key) positions alone, so memory is the broadcast shape times ``num_blocks``."""
    qb = q.div(block_size, rounding_mode="floor").long()
    kb = k.div(block_size, rounding_mode="floor").long()
    h = torch.as_tensor(h, device=q.device).long()
    if qb.numel() == 0 or kb.numel() == 0:
        return torch.zeros(torch.broadcast_shapes(q.shape, k.shape, h.shape), dtype=torch.bool,
                           device=q.device)
    upto = int(max(qb.max().item(), kb.max().item(), 0)) + 1
    hs = int(h.max().item()) + 1 if distinct_heads else 1
    # (H, upto, m), a view of the kept draws when all heads share them (no copy per call).
    picks = (links(upto, 0).unsqueeze(0) if hs == 1
             else torch.stack([links(upto, i) for i in range(hs)])).to(q.device)
    hh = h if distinct_heads else torch.zeros_like(h)
    sh_q = torch.broadcast_shapes(hh.shape, qb.shape)
    sh_k = torch.broadcast_shapes(hh.shape, kb.shape)

    def drew(sh, b):  # what block b drew (*sh, m); padding and negative positions match nothing
        d = picks[hh.expand(sh), b.clamp(min=0).expand(sh)]
        return torch.where((d >= 0) & (b >= 0).unsqueeze(-1), d, upto)

    drew_q, drew_k = drew(sh_q, qb), drew(sh_k, kb)
    out = torch.zeros(torch.broadcast_shapes(sh_q, sh_k), dtype=torch.bool, device=q.device)
    for j in range(picks.shape[-1]):  # a few draws: one comparison each, no reduction
        out |= drew_q[..., j] == kb
        out |= drew_k[..., j] == qb
    return out
