"""Dense attention: every pair allowed (causality, if asked for, applied on top)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Pattern
from .structure import Structure


@dataclass(frozen=True)
class Dense(Pattern):
    @property
    def depends_on_difference(self) -> bool:
        return True

    def structure(self):
        return Structure("dense")

    def allowed(self, q, k, h):
        return torch.ones(torch.broadcast_shapes(q.shape, k.shape), dtype=torch.bool,
                          device=q.device)
