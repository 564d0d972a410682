"""Per-head assignment: head h follows ``patterns[h % len(patterns)]``.

This is how the paper's "multi-head" integration splits heads between factors, and how users
give heads different patterns in general.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern
from .structure import Structure


@dataclass(frozen=True)
class PerHead(Pattern):
    patterns: tuple[Pattern, ...]

    def __post_init__(self):
        pats = tuple(self.patterns)
        if not pats or not all(isinstance(p, Pattern) for p in pats):
            raise ValueError("patterns must be a non-empty sequence of Patterns")
        object.__setattr__(self, "patterns", pats)

    @property
    def per_head(self) -> bool:
        return True

    def structure(self):
        return Structure("per_head", members=self.patterns)

    def allowed(self, q, k, h):
        h = torch.as_tensor(h, device=q.device)
        shape = torch.broadcast_shapes(q.shape, k.shape, h.shape)
        out = torch.zeros(shape, dtype=torch.bool, device=q.device)
        which = h.remainder(len(self.patterns)).expand(shape)
        for i, p in enumerate(self.patterns):
            # Each member sees the head index it has among the heads assigned to it.
            local_h = h.div(len(self.patterns), rounding_mode="floor")
            out = torch.where(which == i, p.allowed(q, k, local_h).expand(shape), out)
        return out
