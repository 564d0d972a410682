"""Execution plans for the pure-PyTorch blocked backend.

A plan partitions the queries into groups (``q_idx``: (G, Q) positions) and gives each group, per
head, the keys it may need (``k_idx``: (Hp, G, K) positions, Hp = 1 or heads). Padding entries are
-1. ``mask`` (Hp, G, Q, K) is the pattern's predicate (and causality) on exactly those pairs, so
the plan decides only *which* pairs are computed, never *what* is allowed.

Per part of a pattern (see ``Pattern.parts``) the cheapest shape is chosen:

* ``Column(l)``: the paper's transposed view. Position i = m * l + r; group r holds the positions
  with residue r, and they attend among themselves: a dense (n/l x n/l) problem per residue.
* ``Summary(l, c)``: one group of all queries against the compact list of summary keys.
* anything else: the block layout derived from the predicate; each query block gathers its active
  key blocks.

Every plan's memory is bounded by the pairs it computes, which grow with the allowed pairs, never
with n x n for a sparse pattern.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..patterns import Block, Column, Local, Pattern, Summary, block_layout


@dataclass(frozen=True)
class GatherPlan:
    q_idx: torch.Tensor  # long (G, Q)
    k_idx: torch.Tensor  # long (Hp, G, K)
    mask: torch.Tensor  # bool (Hp, G, Q, K)
    inverse: torch.Tensor  # long (n,): flat index into G*Q of each query position

    @property
    def pairs_computed(self) -> int:
        return int(self.k_idx.shape[0]) * self.mask[0].numel()


def build_plan(part: Pattern, seq_len: int, num_heads: int, causal: bool, device) -> GatherPlan:
    return _build_plan_cached(part, seq_len, num_heads, causal, str(device))


@lru_cache(maxsize=64)
def _build_plan_cached(part, seq_len, num_heads, causal, device):
    if isinstance(part, Column):
        q_idx, k_idx = _column_indices(part.stride, seq_len)
    elif isinstance(part, Summary):
        q_idx, k_idx = _summary_indices(part, seq_len, num_heads)
    else:
        q_idx, k_idx = _block_indices(part, seq_len, num_heads, causal)
    q_idx, k_idx = q_idx.to(device), k_idx.to(device)
    heads = k_idx.shape[0]
    h = torch.arange(heads, device=device).view(-1, 1, 1, 1)
    qp = q_idx.view(1, *q_idx.shape, 1)
    kp = k_idx.unsqueeze(2)
    mask = part.allowed(qp, kp, h) & (qp >= 0) & (kp >= 0)
    if causal:
        mask = mask & (kp <= qp)
    flat = q_idx.reshape(-1)
    inverse = torch.empty(seq_len, dtype=torch.long, device=device)
    real = flat >= 0
    inverse[flat[real]] = torch.arange(flat.numel(), device=device)[real]
    return GatherPlan(q_idx, k_idx, mask.expand(heads, *mask.shape[1:]).contiguous(), inverse)


def _column_indices(stride: int, n: int):
    groups = min(stride, n)
    m = -(-n // stride)
    pos = torch.arange(m).view(1, m) * stride + torch.arange(groups).view(groups, 1)
    pos = torch.where(pos < n, pos, torch.full_like(pos, -1))
    return pos, pos.unsqueeze(0)


def _summary_indices(part: Summary, n: int, num_heads: int):
    heads = num_heads if part.per_head else 1
    k = torch.arange(n)
    keys = []
    for h in range(heads):
        ok = Summary(part.stride, part.summary, part.distinct_heads).allowed(
            k, k, torch.tensor(h))
        keys.append(k[ok])
    width = max(1, max(len(x) for x in keys))
    k_idx = torch.full((heads, 1, width), -1, dtype=torch.long)
    for h, x in enumerate(keys):
        k_idx[h, 0, :len(x)] = x
    return torch.arange(n).view(1, n), k_idx


def choose_block(part: Pattern, n: int) -> int:
    """Block size for the generic plan: small enough to waste little, large enough for matmuls."""
    if isinstance(part, Block) and part.stride <= 256:
        return part.stride
    if isinstance(part, Local):
        return 32 if part.window >= 64 else 16
    return 64 if n >= 256 else 32


def _block_indices(part: Pattern, n: int, num_heads: int, causal: bool):
    bs = choose_block(part, n)
    lay = block_layout(part, n, bs, num_heads if part.per_head else 1, causal)
    blocks, _ = lay.key_blocks()  # (Hp, nb, Kb)
    nb = lay.num_blocks
    q_idx = torch.arange(nb * bs).view(nb, bs)
    q_idx = torch.where(q_idx < n, q_idx, torch.full_like(q_idx, -1))
    offs = torch.arange(bs)
    k_idx = blocks.unsqueeze(-1) * bs + offs  # (Hp, nb, Kb, bs)
    k_idx = torch.where((blocks.unsqueeze(-1) >= 0) & (k_idx < n), k_idx, torch.full_like(k_idx, -1))
    return q_idx, k_idx.flatten(-2)
