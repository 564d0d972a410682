"""Forms derived from a pattern's predicate: dense masks, pair counts and block layouts.

Everything here evaluates ``pattern.allowed`` in chunks of query rows, so memory stays at
(chunk x seq_len) however long the sequence. Block layouts are cached by value (patterns are
frozen dataclasses), keyed by pattern, length, block, heads and causality.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .base import Pattern

_CHUNK_ELEMENTS = 1 << 22  # predicate elements evaluated at once


def _rows_per_chunk(seq_len: int, num_heads: int, multiple: int = 1) -> int:
    rows = max(1, _CHUNK_ELEMENTS // max(1, seq_len * num_heads))
    return max(multiple, rows // multiple * multiple)


def allowed_rows(pattern: Pattern, rows: torch.Tensor, seq_len: int, num_heads: int,
                 causal: bool) -> torch.Tensor:
    """Bool (num_heads, len(rows), seq_len): the predicate (and causality) for some query rows."""
    dev = rows.device
    # int32 positions halve the memory traffic of the predicate (lengths stay far below 2^31).
    q = rows.to(torch.int32).view(1, -1, 1)
    k = torch.arange(seq_len, device=dev, dtype=torch.int32).view(1, 1, -1)
    h = torch.arange(num_heads, device=dev, dtype=torch.int32).view(-1, 1, 1)
    ok = pattern.allowed(q, k, h).expand(num_heads, rows.numel(), seq_len)
    if causal:
        ok = ok & (k <= q)
    return ok


def dense_mask(pattern: Pattern, seq_len: int, num_heads: int = 1, causal: bool = True,
               device=None) -> torch.Tensor:
    _check_len("seq_len", seq_len)
    _check_len("num_heads", num_heads)
    out = torch.empty(num_heads, seq_len, seq_len, dtype=torch.bool, device=device)
    step = _rows_per_chunk(seq_len, num_heads)
    for s in range(0, seq_len, step):
        rows = torch.arange(s, min(s + step, seq_len), device=device)
        out[:, s:s + rows.numel()] = allowed_rows(pattern, rows, seq_len, num_heads, causal)
    return out


def count_pairs(pattern: Pattern, seq_len: int, num_heads: int = 1, causal: bool = True) -> int:
    """Number of allowed (head, query, key) triples."""
    total = 0
    step = _rows_per_chunk(seq_len, num_heads)
    for s in range(0, seq_len, step):
        rows = torch.arange(s, min(s + step, seq_len))
        total += int(allowed_rows(pattern, rows, seq_len, num_heads, causal).sum())
    return total


@dataclass(frozen=True)
class BlockLayout:
    """Which (query block, key block) tiles hold an allowed pair, per head.

    ``active[h, i, j]``: tile (i, j) has at least one allowed pair; ``full[h, i, j]``: every pair of
    the tile that lies inside the sequence is allowed, so a kernel may skip the element-wise mask.
    The last block may be partial when ``seq_len`` is not a multiple of ``block``.
    """

    seq_len: int
    block: int
    causal: bool
    active: torch.Tensor  # bool (heads, n_blocks, n_blocks)
    full: torch.Tensor  # bool (heads, n_blocks, n_blocks)

    @property
    def num_blocks(self) -> int:
        return self.active.shape[-1]

    @property
    def block_density(self) -> float:
        n = self.num_blocks
        tiles = n * (n + 1) // 2 if self.causal else n * n
        return float(self.active.sum()) / (tiles * self.active.shape[0])

    def key_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded lists of active key blocks per (head, query block): (indices, counts).

        indices: long (heads, n_blocks, max_count), -1 where a row has fewer blocks.
        """
        counts = self.active.sum(-1)
        width = max(1, int(counts.max()))
        # Sort so that active blocks come first, in increasing key-block order.
        n = self.num_blocks
        keyed = torch.where(self.active, torch.arange(n), n + torch.arange(n))
        order = keyed.sort(-1).values[..., :width]
        idx = torch.where(order < n, order, torch.full_like(order, -1))
        return idx, counts


def block_layout(pattern: Pattern, seq_len: int, block: int, num_heads: int = 1,
                 causal: bool = True, device=None) -> BlockLayout:
    _check_len("seq_len", seq_len)
    _check_len("block", block)
    _check_len("num_heads", num_heads)
    heads = num_heads if pattern.per_head else 1
    active, full = _block_layout_cached(pattern, seq_len, block, heads, causal,
                                        str(device) if device is not None else "cpu")
    if heads != num_heads:
        active = active.expand(num_heads, -1, -1)
        full = full.expand(num_heads, -1, -1)
    return BlockLayout(seq_len, block, causal, active, full)


@lru_cache(maxsize=128)
def _block_layout_cached(pattern, seq_len, block, heads, causal, device):
    if pattern.depends_on_difference:
        active, full = _difference_block_layout(pattern, seq_len, block, causal)
        active, full = active.expand(heads, -1, -1), full.expand(heads, -1, -1)
    elif type(pattern).__name__ == "Block":
        active, full = _same_block_layout(pattern.stride, seq_len, block, causal)
        active, full = active.expand(heads, -1, -1), full.expand(heads, -1, -1)
    else:
        active, full = _generic_block_layout(pattern, seq_len, block, heads, causal)
    return active.contiguous().to(device), full.contiguous().to(device)


def _tile_bounds(seq_len: int, block: int):
    """First and last position of every block (the last block may be partial)."""
    nb = -(-seq_len // block)
    lo = torch.arange(nb) * block
    hi = torch.clamp(lo + block, max=seq_len) - 1
    return lo, hi


def _difference_block_layout(pattern, seq_len, block, causal):
    """Layout of a pattern that depends on q - k only, from its predicate on the differences.

    A tile with rows qlo..qhi and keys klo..khi holds every difference in qlo - khi .. qhi - klo,
    so it is active when one of them is allowed and full when all of them are.
    """
    d = torch.arange(-(seq_len - 1), seq_len)
    q, k = d.clamp(min=0), (-d).clamp(min=0)  # real positions with q - k = d
    ok = pattern.allowed(q, k, torch.zeros_like(d)).expand(d.shape)
    if causal:
        ok = ok & (d >= 0)
    prefix = torch.cat([torch.zeros(1, dtype=torch.long), ok.long().cumsum(0)])
    lo, hi = _tile_bounds(seq_len, block)
    dmin = (lo.view(-1, 1) - hi.view(1, -1)) + seq_len - 1  # index into d
    dmax = (hi.view(-1, 1) - lo.view(1, -1)) + seq_len - 1
    count = prefix[dmax + 1] - prefix[dmin]
    return (count > 0).unsqueeze(0), (count == dmax - dmin + 1).unsqueeze(0)


def _same_block_layout(stride, seq_len, block, causal):
    """Layout of ``Block(stride)`` (q // stride == k // stride), tile by tile.

    A tile is active when its row and key ranges share a stride-block (and, causally, its first
    key is not after its last row); full when both lie in one stride-block (and, causally, its
    last key is not after its first row).
    """
    lo, hi = _tile_bounds(seq_len, block)
    qlo, qhi = lo.view(-1, 1), hi.view(-1, 1)
    klo, khi = lo.view(1, -1), hi.view(1, -1)
    active = torch.maximum(qlo // stride, klo // stride) <= torch.minimum(qhi // stride,
                                                                          khi // stride)
    one = (qlo // stride == qhi // stride) & (klo // stride == khi // stride) & (
        qlo // stride == klo // stride)
    if causal:
        active = active & (klo <= qhi)
        one = one & (khi <= qlo)
    return active.unsqueeze(0), one.unsqueeze(0)


def _generic_block_layout(pattern, seq_len, block, heads, causal, device="cpu"):
    """Layout from the predicate on every pair, in chunks of query rows (any pattern)."""
    nb = -(-seq_len // block)
    active = torch.zeros(heads, nb, nb, dtype=torch.bool, device=device)
    full = torch.zeros(heads, nb, nb, dtype=torch.bool, device=device)
    step = _rows_per_chunk(nb * block, heads, block)
    valid_k = torch.arange(nb * block, device=device) < seq_len
    for s in range(0, seq_len, step):
        rows = torch.arange(s, min(s + step, nb * block), device=device)
        ok = allowed_rows(pattern, rows, nb * block, heads, causal)
        ok = ok & valid_k & (rows < seq_len).view(1, -1, 1)
        qb = rows.numel() // block
        tiles = ok.view(heads, qb, block, nb, block)
        # In-sequence pairs of each tile; a tile is "full" when all of them are allowed.
        qv = (rows < seq_len).view(1, qb, block, 1, 1)
        kv = valid_k.view(1, 1, 1, nb, block)
        inside = qv & kv
        b0 = s // block
        active[:, b0:b0 + qb] = tiles.any(dim=(2, 4))
        full[:, b0:b0 + qb] = (tiles | ~inside).all(dim=(2, 4)) & tiles.any(dim=(2, 4))
    return active, full


def _check_len(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
