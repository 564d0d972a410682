"""Strided attention (Child et al. 2019, section 4.3), for data with a period such as images.

Factor 1 (row):    A1_i = {max(0, i - l), ..., i}            -> ``Local(stride + 1)``
Factor 2 (column): A2_i = {j : (i - j) mod l == 0}           -> ``Column(stride)``
``Strided`` is the merged head (A1 union A2). Bidirectionally both factors are mirrored.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pattern, check_positive_int
from .local import Local
from .structure import Structure


@dataclass(frozen=True)
class Column(Pattern):
    """Every ``stride``-th position, optionally only at distance >= ``min_distance``.

    ``min_distance`` exists so that ``Strided.parts()`` can leave out the keys that the row factor
    already covers (the merged head counts each key once).
    """

    stride: int
    min_distance: int = 0

    def __post_init__(self):
        check_positive_int("stride", self.stride)
        check_positive_int("min_distance", self.min_distance, allow_zero=True)

    @property
    def depends_on_difference(self) -> bool:
        return True

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("column", stride=self.stride, min_distance=self.min_distance)

    def allowed(self, q, k, h):
        d = q - k
        ok = d.remainder(self.stride) == 0
        if self.min_distance:
            ok = ok & (d.abs() >= self.min_distance)
        return ok


@dataclass(frozen=True)
class Strided(Pattern):
    """Merged strided pattern: A1 union A2 with stride ``stride`` (the paper's l, about sqrt(n))."""

    stride: int

    def __post_init__(self):
        check_positive_int("stride", self.stride)

    @property
    def depends_on_difference(self) -> bool:
        return True

    @property
    def factors(self) -> tuple[Pattern, Pattern]:
        return (Local(self.stride + 1), Column(self.stride))

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("union", members=self.factors)

    def allowed(self, q, k, h):
        d = q - k
        return (d.abs() <= self.stride) | (d.remainder(self.stride) == 0)

    def parts(self):
        return [Local(self.stride + 1), Column(self.stride, min_distance=self.stride + 1)]
