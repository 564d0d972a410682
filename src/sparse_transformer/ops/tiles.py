"""The tile description every tiled backend shares, and the predicate evaluated over tile pairs.

A *tile* is ``block`` positions described by three ints (start, seg, jump): position t of the tile
is ``start + (t // seg) * jump + t % seg``. Contiguous tiles have ``seg = block``; the strided
column factor uses tiles of the paper's transposed (n/l x l) view (``seg = 1, jump = l``); the
fixed summary factor gathers the summary keys of several blocks into one compact tile
(``seg = c, jump = l``). Positions >= n are out of bounds.

``tile_pair_masks`` evaluates a pattern's predicate (with causality and the sequence bound) on
candidate (query tile, key tile) pairs in chunks of at most ``EVAL_ELEMENTS`` elements, so no
n x n tensor is built. The Triton plans and the flex backend's mask tables both derive from it.
"""
from __future__ import annotations

from typing import Iterator

import torch

EVAL_ELEMENTS = 1 << 20  # predicate elements evaluated at once


def tile_positions(tiles: torch.Tensor, block: int) -> torch.Tensor:
    """(..., 3) tile descriptors -> (..., block) positions."""
    t = torch.arange(block, device=tiles.device)
    start, seg, jump = tiles[..., 0:1], tiles[..., 1:2], tiles[..., 2:3]
    return start + torch.div(t, seg, rounding_mode="floor") * jump + t.remainder(seg)


def token_tiles(n: int, block: int, device) -> torch.Tensor:
    """The contiguous tiling of 0 .. n - 1: long (ceil(n / block), 3)."""
    starts = torch.arange(0, n, block, device=device)
    return torch.stack([starts, torch.full_like(starts, block), torch.full_like(starts, block)], -1)


def tile_pair_masks(pattern, n: int, causal: bool, qtiles: torch.Tensor, ktiles: torch.Tensor,
                    qi: torch.Tensor, ki: torch.Tensor, heads: torch.Tensor, block: int,
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """For the pairs (qtiles[qi], ktiles[ki]), chunk by chunk: (ok, q_in).

    ``ok`` bool (C, block, block) [query, key]: the predicate, keys inside the sequence, and
    causality; ``q_in`` bool (C, block, 1): which query rows lie inside the sequence (rows past
    it are left to the caller: the Triton plans treat them as allowed, the flex tables as not).
    ``heads`` is a 0-d head index for every pair or a (P,) one per pair."""
    step = max(1, EVAL_ELEMENTS // (block * block))
    for s in range(0, qi.numel(), step):
        # int32 positions halve the predicate's memory traffic (lengths stay far below 2^31).
        qp = tile_positions(qtiles[qi[s:s + step]], block).to(torch.int32)  # (C, B)
        kp = tile_positions(ktiles[ki[s:s + step]], block).to(torch.int32)
        h = heads if heads.dim() == 0 else heads[s:s + step, None, None]
        ok = pattern.allowed(qp[:, :, None], kp[:, None, :], h)
        ok = ok & (kp < n)[:, None, :]
        if causal:
            ok = ok & (kp[:, None, :] <= qp[:, :, None])
        yield ok, (qp < n)[:, :, None]
