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
* ``"union"`` (``members``): a pair is allowed when any member allows it.
* ``"per_head"`` (``members``): head h follows ``members[h % len(members)]``, seeing head index
  ``h // len(members)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("generic", "dense", "band", "column", "block", "summary", "union", "per_head")


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


GENERIC = Structure()
