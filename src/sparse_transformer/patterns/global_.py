"""Global tokens (as in Longformer and BigBird): they attend to all and all attend to them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern
from .structure import Structure


@dataclass(frozen=True)
class Global(Pattern):
    """``tokens``: the global positions, a tuple of distinct non-negative ints."""

    tokens: tuple[int, ...]

    def __post_init__(self):
        toks = tuple(self.tokens) if not isinstance(self.tokens, int) else None
        if toks is None or not toks:
            raise ValueError(f"tokens must be a non-empty sequence of positions, got {self.tokens!r}")
        for t in toks:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise ValueError(f"tokens must hold non-negative ints, got {t!r}")
        if len(set(toks)) != len(toks):
            raise ValueError(f"tokens must be distinct, got {toks}")
        object.__setattr__(self, "tokens", tuple(sorted(toks)))

    @classmethod
    def first(cls, count: int) -> "Global":
        """The first ``count`` positions are global (e.g. a [CLS] token)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        return cls(tuple(range(count)))

    def structure(self):
        return Structure("global", tokens=self.tokens)

    def allowed(self, q, k, h):
        g = torch.tensor(self.tokens, dtype=q.dtype, device=q.device)
        return torch.isin(q, g) | torch.isin(k, g)
