"""Local (sliding-window) attention: each query sees the ``window`` nearest positions on each side.

Causal: keys ``i - window + 1 .. i`` (``window`` keys, itself included).
Bidirectional: keys with ``|i - j| < window``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pattern, check_positive_int
from .structure import Structure


@dataclass(frozen=True)
class Local(Pattern):
    window: int

    def __post_init__(self):
        check_positive_int("window", self.window)

    @property
    def depends_on_difference(self) -> bool:
        return True

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("band", window=self.window)

    def allowed(self, q, k, h):
        return (q - k).abs() < self.window
