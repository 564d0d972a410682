"""Attention patterns: what may attend to what.

Each pattern is a frozen dataclass with one element-wise predicate ``allowed(q, k, h)``; causality
is applied on top. Masks, block layouts and execution plans are derived from the predicate.
"""
from .base import Pattern
from .dense import Dense
from .fixed import Block, Fixed, Summary
from .global_ import Global
from .layout import (BlockLayout, active_tiles, block_layout, candidate_blocks, count_pairs,
                     dense_mask)
from .local import Local
from .per_head import PerHead
from .presets import bigbird, longformer
from .random import Random
from .strided import Column, Strided
from .structure import Structure
from .union import Union

__all__ = [
    "Pattern", "Dense", "Local", "Strided", "Column", "Fixed", "Block", "Summary", "Global",
    "Random", "Union", "PerHead", "BlockLayout", "block_layout", "candidate_blocks", "active_tiles",
    "count_pairs", "dense_mask",
    "PATTERN_KINDS", "bigbird", "longformer", "build_pattern", "Structure",
]


def __getattr__(name):
    # Patterns by name: one spec for configs, the command line and Python (``"local+global"``,
    # ``"strided,local"``), defined in ``models/pattern_spec.py`` (which imports this package,
    # hence the lazy lookup).
    if name in ("build_pattern", "PATTERN_KINDS"):
        from ..models import pattern_spec

        return getattr(pattern_spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
