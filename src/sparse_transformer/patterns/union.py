"""Unions of patterns: a pair is allowed when any member allows it (e.g. Local | Global | Random)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pattern
from .structure import Structure


@dataclass(frozen=True)
class Union(Pattern):
    members: tuple[Pattern, ...]

    def __post_init__(self):
        flat = []
        for m in self.members:
            if not isinstance(m, Pattern):
                raise ValueError(f"members must be Patterns, got {type(m).__name__}")
            flat.extend(m.members if isinstance(m, Union) else [m])
        if not flat:
            raise ValueError("members must hold at least one Pattern")
        object.__setattr__(self, "members", tuple(flat))

    @property
    def traceable(self) -> bool:
        return all(m.traceable for m in self.members)

    @property
    def per_head(self) -> bool:
        return any(m.per_head for m in self.members)

    def structure(self):
        return Structure("union", members=self.members)

    def allowed(self, q, k, h):
        out = self.members[0].allowed(q, k, h)
        for m in self.members[1:]:
            out = out | m.allowed(q, k, h)
        return out
