"""Fixed attention (Child et al. 2019, section 4.3), for text.

Factor 1 (block):   A1_i = {j : floor(j / l) == floor(i / l)}             -> ``Block(stride)``
Factor 2 (summary): A2_i = {j : j mod l in {l - c, ..., l - 1}}           -> ``Summary(stride, c)``
``Fixed`` is the merged head. With ``distinct_heads=True`` head h reads its own summary sub-block:
offset o = h mod (l // c) and positions j mod l in {l - (o + 1) c, ..., l - o c - 1}, the paper's
"distinct sub-blocks of length c within the block of size l" (head 0 gets the last c positions).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Pattern, check_positive_int
from .structure import Structure


def _check_stride_summary(stride, summary, distinct_heads):
    check_positive_int("stride", stride)
    check_positive_int("summary", summary)
    if summary > stride:
        raise ValueError(f"summary must be <= stride ({stride}), got {summary}")
    if distinct_heads and stride % summary:
        raise ValueError(
            f"with distinct_heads=True, summary ({summary}) must divide stride ({stride})")


def _summary_ok(k, h, stride, summary, distinct_heads):
    pos = k.remainder(stride)
    if not distinct_heads:
        return pos >= stride - summary
    offset = h.remainder(stride // summary)
    hi = stride - offset * summary  # exclusive
    return (pos >= hi - summary) & (pos < hi)


@dataclass(frozen=True)
class Block(Pattern):
    """Positions in the same block of length ``stride``."""

    stride: int

    def __post_init__(self):
        check_positive_int("stride", self.stride)

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("block", stride=self.stride)

    def allowed(self, q, k, h):
        return q.div(self.stride, rounding_mode="floor") == k.div(self.stride, rounding_mode="floor")


@dataclass(frozen=True)
class Summary(Pattern):
    """The summary positions of every block; ``exclude_own_block`` leaves out the query's block."""

    stride: int
    summary: int
    distinct_heads: bool = False
    exclude_own_block: bool = False

    def __post_init__(self):
        _check_stride_summary(self.stride, self.summary, self.distinct_heads)

    @property
    def per_head(self) -> bool:
        return self.distinct_heads

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("summary", stride=self.stride, summary=self.summary,
                         distinct_heads=self.distinct_heads,
                         exclude_own_block=self.exclude_own_block)

    def allowed(self, q, k, h):
        ok = _summary_ok(k, h, self.stride, self.summary, self.distinct_heads)
        if self.exclude_own_block:
            ok = ok & (q.div(self.stride, rounding_mode="floor")
                       != k.div(self.stride, rounding_mode="floor"))
        return ok


@dataclass(frozen=True)
class Fixed(Pattern):
    """Merged fixed pattern with stride ``stride`` (l) and ``summary`` (c) positions per block."""

    stride: int
    summary: int
    distinct_heads: bool = False

    def __post_init__(self):
        _check_stride_summary(self.stride, self.summary, self.distinct_heads)

    @property
    def per_head(self) -> bool:
        return self.distinct_heads

    @property
    def factors(self) -> tuple[Pattern, Pattern]:
        return (Block(self.stride), Summary(self.stride, self.summary, self.distinct_heads))

    @property
    def traceable(self) -> bool:
        return True

    def structure(self):
        return Structure("union", members=self.factors)

    def allowed(self, q, k, h):
        same = q.div(self.stride, rounding_mode="floor") == k.div(self.stride, rounding_mode="floor")
        return same | _summary_ok(k, h, self.stride, self.summary, self.distinct_heads)

    def parts(self):
        return [Block(self.stride),
                Summary(self.stride, self.summary, self.distinct_heads, exclude_own_block=True)]
