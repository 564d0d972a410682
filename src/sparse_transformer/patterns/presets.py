"""Named encoder and decoder patterns built from the pattern families, by kind and parameters.

* ``bigbird(window, global_tokens, random_blocks, block_size, seed)``: BigBird-style: a sliding
  window, the first ``global_tokens`` positions global, and ``random_blocks`` seeded random key
  blocks per query block (``Local | Global.first | Random``).
* ``longformer(window, global_positions)``: Longformer-style: a sliding window and chosen global
  positions, e.g. ``(0,)`` for a [CLS] token (``Local | Global``).
* The paper's ``Strided`` and ``Fixed`` are bidirectional when called with ``causal=False``:
  strided reads ``|i - j| <= l`` or ``(i - j) mod l == 0`` on both sides; fixed reads the query's
  own block and the summary positions of every block, earlier or later.

Every preset and pattern class is also reachable by name (``patterns.build_pattern("bigbird",
window=64)``, ``model.pattern=bigbird``): see ``models/pattern_spec.py``.
"""
from __future__ import annotations

from .base import Pattern, check_positive_int
from .global_ import Global
from .local import Local
from .random import Random

def bigbird(window: int, global_tokens: int | tuple[int, ...] = 1, random_blocks: int = 2,
            block_size: int = 64, seed: int = 0) -> Pattern:
    """Window (``Local(window)``) | global tokens | seeded random key blocks.

    ``global_tokens``: an int n for the first n positions, or a tuple of positions. ``0``, ``()``
    or ``random_blocks=0`` leaves that part out.
    """
    check_positive_int("window", window)
    check_positive_int("random_blocks", random_blocks, allow_zero=True)
    parts: list[Pattern] = [Local(window)]
    if isinstance(global_tokens, int):
        check_positive_int("global_tokens", global_tokens, allow_zero=True)
        if global_tokens:
            parts.append(Global.first(global_tokens))
    elif tuple(global_tokens):
        parts.append(Global(tuple(global_tokens)))
    if random_blocks:
        parts.append(Random(random_blocks, block_size, seed))
    return parts[0] if len(parts) == 1 else _union(parts)


def longformer(window: int, global_positions: tuple[int, ...] = (0,)) -> Pattern:
    """Window (``Local(window)``) | the chosen global positions (none when empty)."""
    check_positive_int("window", window)
    positions = tuple(global_positions)
    return Local(window) if not positions else Local(window) | Global(positions)


def _union(parts: list[Pattern]) -> Pattern:
    out = parts[0]
    for p in parts[1:]:
        out = out | p
    return out
