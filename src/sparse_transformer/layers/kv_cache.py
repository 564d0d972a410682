"""A key/value cache for incremental decoding whose contents follow the attention pattern.

While decoding position ``cur`` (0-based, inside a context of ``horizon`` positions), a cached key
``j <= cur`` must be kept only while some *future* query ``i`` in ``cur + 1 .. horizon - 1`` may
still attend to it. That set is defined by the pattern's predicate:

    needed(j, cur) = any(allowed(i, j, h) for i in (cur, horizon) for h in heads)

``needed_keys`` evaluates it directly from the predicate (exact for any pattern, in chunks).
``keep_rule`` states it in closed form for patterns whose ``structure()`` names their shape, so eviction costs O(cache) per
step; tests hold every rule equal to the predicate-derived set. What the rules imply:

* Dense: every key is kept (n keys).
* Local(w): the last w - 1 keys.
* Block(l) (fixed, factor 1): the keys of the current block, until the block ends.
* Summary(l, c) (fixed, factor 2): the c summary keys of every block (per head offsets unioned).
  So a merged fixed layer holds about n / l * c + l keys instead of n.
* Column(l) (strided, factor 2): *every* key. The next l queries between them visit every residue
  mod l, so each earlier key is still needed by some future query; only the last l positions of
  the context let keys go. A strided layer (merged, or the column heads in split mode) therefore
  keeps a dense cache; its saving is compute, since each query reads only about l + n / l of the
  cached keys. Interleaved strided layers alternate between l keys (row) and n keys (column).

Eviction happens after the current query has read the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..patterns import Pattern, Structure

KeepRule = Callable[[torch.Tensor, int, int, int], torch.Tensor]


def needed_keys(pattern: Pattern, positions: torch.Tensor, cur: int, horizon: int,
                n_heads: int = 1, chunk: int = 256) -> torch.Tensor:
    """Bool (m,): which cached key positions some query in ``cur + 1 .. horizon - 1`` allows.

    Derived from the predicate alone; works for any pattern (O(m * (horizon - cur)) work)."""
    out = torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)
    h = torch.arange(n_heads, device=positions.device)[:, None, None]
    k = positions[None, None, :]
    for start in range(cur + 1, horizon, chunk):
        q = torch.arange(start, min(horizon, start + chunk), device=positions.device)[None, :, None]
        ok = pattern.allowed(q, k, h) & (k <= q)
        out |= ok.reshape(-1, positions.shape[0]).any(0)
    return out


def _summary_mask(st: Structure, j: torch.Tensor, n_heads: int) -> torch.Tensor:
    pos = j.remainder(st.stride)
    if not st.distinct_heads:
        return pos >= st.stride - st.summary
    ok = torch.zeros_like(j, dtype=torch.bool)
    for off in range(min(n_heads, st.stride // st.summary)):
        hi = st.stride - off * st.summary
        ok |= (pos >= hi - st.summary) & (pos < hi)
    return ok


def keep_rule(pattern: Pattern) -> KeepRule | None:
    """Closed-form ``needed_keys`` for a pattern whose ``structure()`` has one, else None.

    The returned function takes (positions, cur, horizon, n_heads) -> bool mask."""
    s = pattern.structure()
    if s.kind == "dense":
        return lambda j, cur, hz, nh: torch.full_like(j, cur + 1 < hz, dtype=torch.bool)
    if s.kind == "band":
        w = s.window
        return lambda j, cur, hz, nh: (j > cur + 1 - w) & (cur + 1 < hz)
    if s.kind == "column":
        stride, md = s.stride, s.min_distance

        def column(j, cur, hz, nh):
            lo = torch.clamp(j + md, min=cur + 1)
            first = lo + (j - lo).remainder(stride)  # smallest future query with (i - j) % l == 0
            return first < hz
        return column
    if s.kind == "block":
        l = s.stride
        return lambda j, cur, hz, nh: (j.div(l, rounding_mode="floor") == (cur + 1) // l) & (cur + 1 < hz)
    if s.kind == "summary":
        l = s.stride

        def summary(j, cur, hz, nh):
            first = torch.full_like(j, cur + 1)
            if s.exclude_own_block:
                first = torch.clamp((j.div(l, rounding_mode="floor") + 1) * l, min=cur + 1)
            return _summary_mask(s, j, nh) & (first < hz)
        return summary
    if s.kind == "union":
        return _union_rule([keep_rule(m) for m in s.members])
    if s.kind == "per_head":
        rules = [keep_rule(p) for p in s.members]
        if any(r is None for r in rules):
            return None
        P = len(rules)

        def per_head(j, cur, hz, nh):
            out = torch.zeros_like(j, dtype=torch.bool)
            for i, r in enumerate(rules):
                heads = len(range(i, nh, P))  # heads h < nh with h % P == i
                if heads:
                    out |= r(j, cur, hz, heads)
            return out
        return per_head
    return None


def _union_rule(rules: list[KeepRule | None]) -> KeepRule | None:
    if any(r is None for r in rules):
        return None

    def union(j, cur, hz, nh):
        out = rules[0](j, cur, hz, nh)
        for r in rules[1:]:
            out = out | r(j, cur, hz, nh)
        return out
    return union


def _wide(s: torch.Tensor) -> torch.Tensor:
    """Scores in at least float32 (half-precision models), float64 kept as is."""
    return s.float() if s.dtype in (torch.float16, torch.bfloat16) else s


@dataclass
class GroupCache:
    """Keys, values and their positions for the heads of one layer that share one pattern."""

    pattern: Pattern
    n_heads: int
    horizon: int
    k: torch.Tensor | None = None  # (batch, heads, m, d_qk)
    v: torch.Tensor | None = None  # (batch, heads, m, d_v)
    pos: torch.Tensor | None = None  # (m,) long
    rule: KeepRule | None = field(default=None, init=False)

    def __post_init__(self):
        self.rule = keep_rule(self.pattern)

    def append(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        if self.k is None:  # clone: never keep a view into the whole projection alive
            self.k, self.v, self.pos = k.clone(), v.clone(), pos.clone()
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
            self.pos = torch.cat([self.pos, pos])

    def evict(self, cur: int) -> None:
        """Drop the keys no query after ``cur`` can attend to."""
        if self.pos is None or self.pos.numel() == 0:
            return
        if self.rule is not None:
            keep = self.rule(self.pos, cur, self.horizon, self.n_heads)
        else:
            keep = needed_keys(self.pattern, self.pos, cur, self.horizon, self.n_heads)
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(1)
            self.k, self.v, self.pos = self.k[:, :, idx], self.v[:, :, idx], self.pos[idx]

    def attend(self, q: torch.Tensor, cur: int, scale: float) -> torch.Tensor:
        """q (batch, heads, 1, d_qk) at position ``cur`` -> (batch, heads, 1, d_v)."""
        qi = torch.tensor(cur, device=self.pos.device)
        if self.pattern.per_head:
            h = torch.arange(self.n_heads, device=self.pos.device)[:, None]
            mask = self.pattern.allowed(qi, self.pos[None, :], h) & (self.pos <= cur)  # (H, m)
            s = _wide(q @ self.k.transpose(-1, -2)) * scale
            s = s.masked_fill(~mask[None, :, None, :], float("-inf"))
            p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a row with no key outputs zeros
            return (p.to(self.v.dtype) @ self.v)
        mask = self.pattern.allowed(qi, self.pos, qi) & (self.pos <= cur)
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return q.new_zeros(*q.shape[:-1], self.v.shape[-1])
        k, v = self.k[:, :, idx], self.v[:, :, idx]
        s = _wide(q @ k.transpose(-1, -2)) * scale
        return torch.softmax(s, dim=-1).to(v.dtype) @ v

    def nbytes(self) -> int:
        if self.k is None:
            return 0
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def size(self) -> int:
        return 0 if self.pos is None else int(self.pos.numel())


@dataclass
class LayerCache:
    """The cache of one attention layer: one ``GroupCache`` per group of heads (see
    ``SparseSelfAttention.head_patterns``)."""

    groups: list[tuple[slice, GroupCache]]
    peak: int = 0  # largest size seen, measured after a new key is appended (before eviction)

    def nbytes(self) -> int:
        return sum(g.nbytes() for _, g in self.groups)


@dataclass
class KVCache:
    """The caches of every layer of a model and the next position to decode."""

    layers: list[LayerCache]
    horizon: int
    length: int = 0  # positions decoded so far (the next one to decode)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def peak_bytes(self) -> int:
        """Sum of each layer's peak: an upper bound on the cache's largest size so far."""
        return sum(layer.peak for layer in self.layers)

    def keys_per_layer(self) -> list[int]:
        return [sum(g.size() for _, g in layer.groups) for layer in self.layers]
