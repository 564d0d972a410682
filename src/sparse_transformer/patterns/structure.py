"""What a backend may know about a pattern beyond its predicate: ``Pattern.structure()``.

Backends take shortcuts for some shapes of pattern (the transposed view of a strided column,
compact tiles of fixed summary keys, a band of key blocks around the diagonal, closed-form KV-cache
eviction). They ask the pattern for a ``Structure`` instead of testing its class, so a new pattern
gets a shortcut by answering, and a pattern's answer lives next to its predicate.

A ``Structure`` is a claim about the predicate, stated by ``Structure.allowed``; tests hold every
built-in pattern's answer equal to its predicate. Kinds and the fields each uses:

* ``"generic"``: nothing beyond the predicate (the default).
* ``"dense"``: every pair.
* ``"band"`` (``window``): ``|q - k| < window``.
* ``"column"`` (``stride``, ``min_distance``): ``(q - k) mod stride == 0`` and
  ``|q - k| >= min_distance``.
* ``"block"`` (``stride``): ``q // stride == k // stride``.
* ``"summary"`` (``stride``, ``summary``, ``distinct_heads``, ``exclude_own_block``): keys at
  offsets ``stride - summary .. stride - 1`` of every stride block (with ``distinct_heads``, head
  h's sub-block ``o = h mod (stride // summary)`` places them ``o * summary`` earlier), outside
  the query's own block when ``exclude_own_block``.
* ``"global"`` (``tokens``): ``q`` or ``k`` is one of the (sorted, distinct) global positions.
* ``"random"`` (``block_size``, ``distinct_heads``, ``links``): blocks of ``block_size``
  positions; ``links(blocks, head)`` is a long (blocks, m) tensor whose row b lists the earlier
  blocks query block b drew (-1 past its draws; the head is ignored unless ``distinct_heads``).
  Query block qb and key block kb are linked when one drew the other (symmetric).
* ``"union"`` (``members``): a pair is allowed when any member allows it.
* ``"per_head"`` (``members``): head h follows ``members[h % len(members)]``, seeing head index
  ``h // len(members)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

KINDS = ("generic", "dense", "band", "column", "block", "summary", "global", "random", "union",
         "per_head")


@dataclass(frozen=True)
class Structure:
    kind: str = "generic"
    window: int = 0
    stride: int = 0
    min_distance: int = 0
    summary: int = 0
    distinct_heads: bool = False
    exclude_own_block: bool = False
    members: tuple = ()  # union / per_head: Patterns
    tokens: tuple = ()  # global: positions
    block_size: int = 0  # random
    links: Optional[Callable[[int, int], torch.Tensor]] = None  # random: (blocks, head) -> picks

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")

    def summary_low(self, head: int) -> int:
        """summary: the first offset (within a stride block) of head ``head``'s summary keys."""
        off = head % (self.stride // self.summary) if self.distinct_heads else 0
        return self.stride - (off + 1) * self.summary

    def allowed(self, q: torch.Tensor, k: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The predicate this description claims (None for "generic": it claims nothing)."""
        d = q - k
        if self.kind == "dense":
            return torch.ones(torch.broadcast_shapes(q.shape, k.shape), dtype=torch.bool,
                              device=q.device)
        if self.kind == "band":
            return d.abs() < self.window
        if self.kind == "column":
            return (d.remainder(self.stride) == 0) & (d.abs() >= self.min_distance)
        if self.kind == "block":
            return q.div(self.stride, rounding_mode="floor") == k.div(self.stride,
                                                                      rounding_mode="floor")
        if self.kind == "summary":
            pos = k.remainder(self.stride)
            off = h.remainder(self.stride // self.summary) if self.distinct_heads else 0
            hi = self.stride - off * self.summary
            ok = (pos >= hi - self.summary) & (pos < hi)
            if self.exclude_own_block:
                ok = ok & (q.div(self.stride, rounding_mode="floor")
                           != k.div(self.stride, rounding_mode="floor"))
            return ok
        if self.kind == "global":
            g = torch.tensor(self.tokens, dtype=q.dtype, device=q.device)
            return torch.isin(q, g) | torch.isin(k, g)
        if self.kind == "random":
            return self._random_allowed(q, k, h)
        if self.kind == "union":
            out = self.members[0].allowed(q, k, h)
            for m in self.members[1:]:
                out = out | m.allowed(q, k, h)
            return out
        if self.kind == "per_head":
            n = len(self.members)
            shape = torch.broadcast_shapes(q.shape, k.shape, h.shape)
            out = torch.zeros(shape, dtype=torch.bool, device=q.device)
            for i, m in enumerate(self.members):
                sel = (h.remainder(n) == i).expand(shape)
                out = torch.where(sel, m.allowed(q, k, h.div(n, rounding_mode="floor")).expand(shape),
                                  out)
            return out
        return None

    def random_pairs(self, blocks: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        """random: the linked (query block, key block) pairs among blocks 0 .. blocks - 1, both
        directions, O(blocks * m): (drawing block, drawn block) and its mirror."""
        picks = self.links(blocks, head if self.distinct_heads else 0)
        b = torch.arange(blocks).view(-1, 1).expand_as(picks)
        keep = picks >= 0
        qb, kb = b[keep], picks[keep]
        return torch.cat([qb, kb]), torch.cat([kb, qb])

    def _random_allowed(self, q, k, h):
        # Membership of (head, qb, kb) in the sorted list of linked block pairs.
        qb = q.div(self.block_size, rounding_mode="floor").long()
        kb = k.div(self.block_size, rounding_mode="floor").long()
        h = torch.as_tensor(h, device=q.device).long()
        shape = torch.broadcast_shapes(qb.shape, kb.shape, h.shape)
        none = torch.zeros(shape, dtype=torch.bool, device=q.device)
        if not qb.numel() or not kb.numel():
            return none
        blocks = int(max(qb.max().item(), kb.max().item(), 0)) + 1
        heads = int(h.max().item()) + 1 if self.distinct_heads else 1
        keys = [(i * blocks + a) * blocks + b
                for i in range(heads) for a, b in [self.random_pairs(blocks, i)]]
        table = torch.cat(keys).sort().values.to(q.device)
        if not table.numel():
            return none
        hh = h if self.distinct_heads else torch.zeros_like(h)
        key = ((hh * blocks + qb) * blocks + kb).expand(shape).reshape(-1)
        hit = table[torch.searchsorted(table, key).clamp(max=table.numel() - 1)] == key
        return hit.view(shape) & (qb >= 0) & (kb >= 0)

GENERIC = Structure()
