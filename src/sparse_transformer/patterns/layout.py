"""Forms derived from a pattern's predicate: dense masks, pair counts and block layouts.

Everything here evaluates ``pattern.allowed`` in chunks of query rows, so memory stays at
(chunk x seq_len) however long the sequence. Block layouts are cached by value (patterns are
frozen dataclasses), keyed by pattern, length, block, heads and causality.

``candidate_blocks`` lists, from ``pattern.structure()`` alone, the tile pairs that may hold an
allowed pair (a band, global rows and columns, the tiles of linked random blocks, and unions and
per-head assignments of those); ``active_tiles`` evaluates the predicate on exactly those pairs.
So the layout of a BigBird-style pattern costs O(listed tiles) predicate work, not O(n^2).
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
    s = pattern.structure()
    if pattern.depends_on_difference:
        active, full = _difference_block_layout(pattern, seq_len, block, causal)
        active, full = active.expand(heads, -1, -1), full.expand(heads, -1, -1)
    elif s.kind == "block":
        active, full = _same_block_layout(s.stride, seq_len, block, causal)
        active, full = active.expand(heads, -1, -1), full.expand(heads, -1, -1)
    else:
        cands = [candidate_blocks(pattern, seq_len, block, h, causal) for h in range(heads)]
        if any(c is None for c in cands):
            active, full = _generic_block_layout(pattern, seq_len, block, heads, causal)
        else:  # the predicate on the listed tiles only
            nb = -(-seq_len // block)
            active = torch.zeros(heads, nb, nb, dtype=torch.bool)
            full = torch.zeros_like(active)
            for h, (qi, ki) in enumerate(cands):
                active[h, qi, ki], full[h, qi, ki] = _evaluate_tiles(pattern, seq_len, block, h,
                                                                     causal, qi, ki)
    return active.contiguous().to(device), full.contiguous().to(device)


# -- sparse layouts: candidate tile pairs from the structure, the predicate on exactly those ----
def candidate_blocks(pattern: Pattern, seq_len: int, block: int, head: int = 0,
                     causal: bool = True):
    """Long (qi, ki): the (query tile, key tile) pairs of the contiguous tiling (tiles of
    ``block`` positions) that may hold an allowed pair for head ``head``, unique and sorted
    row-major, read from ``pattern.structure()``; None when the structure gives no shortcut
    ("generic", "column"). A superset of the active tiles: the predicate decides. Its size is
    O(listed tiles): a band's neighbours, the global tiles' rows and columns, the tiles of each
    query block's linked random blocks."""
    nb = -(-seq_len // block)
    pairs = _candidates(pattern.structure(), seq_len, block, nb, head, causal)
    if pairs is None:
        return None
    qi, ki = pairs
    keep = (qi >= 0) & (qi < nb) & (ki >= 0) & (ki < nb)
    if causal:
        keep &= ki <= qi
    code = torch.unique(qi[keep] * nb + ki[keep])
    return code // nb, code % nb


def _candidates(s, n, block, nb, head, causal):
    if s.kind == "dense":
        qi = torch.arange(nb).repeat_interleave(nb)
        return qi, torch.arange(nb).repeat(nb)
    # Tiles t apart hold distances >= (t - 1) * block + 1: a band |q - k| < w reaches
    # (w - 2) // block + 1 tiles; a same-block pattern is within the band w = stride.
    if s.kind == "band":
        return _band_pairs(nb, (s.window - 2) // block + 1)
    if s.kind == "block":
        return _band_pairs(nb, (s.stride - 2) // block + 1)
    if s.kind == "summary":
        # Every query tile against the key tiles that hold a summary position of this head.
        low = s.summary_low(head)

        def before(x):  # summary positions < x
            return (x // s.stride) * s.summary + (x % s.stride - low).clamp(0, s.summary)

        lo = torch.arange(nb) * block
        kt = ((before((lo + block).clamp(max=n)) - before(lo)) > 0).nonzero().flatten()
        return torch.arange(nb).repeat_interleave(kt.numel()), kt.repeat(nb)
    if s.kind == "global":
        g = torch.tensor(s.tokens, dtype=torch.long)
        t = torch.unique(g[g < n] // block)
        every = torch.arange(nb)
        rows = (t.repeat_interleave(nb), every.repeat(t.numel()))
        cols = (every.repeat_interleave(t.numel()), t.repeat(nb))
        return torch.cat([rows[0], cols[0]]), torch.cat([rows[1], cols[1]])
    if s.kind == "random":
        bs = s.block_size
        qb, kb = s.random_pairs(-(-n // bs), head)
        if causal:  # a block only drew earlier ones: the mirrored links look ahead
            keep = kb < qb
            qb, kb = qb[keep], kb[keep]

        def tiles(b):  # first and last tile of random block b
            return b * bs // block, (torch.clamp((b + 1) * bs, max=n) - 1) // block

        (q0, q1), (k0, k1) = tiles(qb), tiles(kb)
        return _range_pairs(q0, q1, k0, k1)
    if s.kind == "union":
        got = [_candidates(m.structure(), n, block, nb, head, causal) for m in s.members]
        if any(g is None for g in got):
            return None
        return torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])
    if s.kind == "per_head":
        m = s.members[head % len(s.members)]
        return _candidates(m.structure(), n, block, nb, head // len(s.members), causal)
    return None


def _band_pairs(nb: int, width: int):
    qi = torch.arange(nb).repeat_interleave(2 * width + 1)
    return qi, qi + torch.arange(-width, width + 1).repeat(nb)


def _range_pairs(q0, q1, k0, k1):
    """Every (q, k) with q0[i] <= q <= q1[i] and k0[i] <= k <= k1[i], for each i."""
    nq, nk = q1 - q0 + 1, k1 - k0 + 1
    cnt = nq * nk
    row = torch.arange(cnt.numel()).repeat_interleave(cnt)
    j = torch.arange(row.numel()) - (cnt.cumsum(0) - cnt)[row]
    return q0[row] + j // nk[row], k0[row] + j % nk[row]


def _evaluate_tiles(pattern, seq_len, block, head, causal, qi, ki):
    """Active and full flags of tile pairs (qi, ki), from the predicate on their pairs."""
    act, full = [], []
    off = torch.arange(block, dtype=torch.int32)
    h = torch.tensor(head, dtype=torch.int32)
    step = max(1, _CHUNK_ELEMENTS // (block * block))
    for s in range(0, qi.numel(), step):
        qp = (qi[s:s + step].to(torch.int32) * block).view(-1, 1) + off  # (C, block)
        kp = (ki[s:s + step].to(torch.int32) * block).view(-1, 1) + off
        ok = pattern.allowed(qp[:, :, None], kp[:, None, :], h)
        inside = (qp < seq_len)[:, :, None] & (kp < seq_len)[:, None, :]
        ok = ok & inside
        if causal:
            ok = ok & (kp[:, None, :] <= qp[:, :, None])
        a = ok.any(dim=(1, 2))
        act.append(a)
        full.append((ok | ~inside).all(dim=(1, 2)) & a)
    if not act:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)
    return torch.cat(act), torch.cat(full)


@lru_cache(maxsize=32)
def active_tiles(pattern: Pattern, seq_len: int, block: int, num_heads: int = 1,
                 causal: bool = True) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]:
    """The active tile pairs, sparse: per head group (one when every head shares the layout,
    else ``num_heads``), long (qi, ki) sorted row-major and bool ``full`` (see ``BlockLayout``).

    Memory and predicate work grow with the candidate tiles (``candidate_blocks``); patterns
    without a shortcut fall back to the dense ``block_layout``."""
    _check_len("seq_len", seq_len)
    _check_len("block", block)
    _check_len("num_heads", num_heads)
    heads = num_heads if pattern.per_head else 1
    out = []
    for h in range(heads):
        cand = candidate_blocks(pattern, seq_len, block, h, causal)
        if cand is None:
            lay = block_layout(pattern, seq_len, block, heads, causal)
            qi, ki = lay.active[h].nonzero(as_tuple=True)
            out.append((qi, ki, lay.full[h, qi, ki]))
            continue
        qi, ki = cand
        if pattern.depends_on_difference:
            a, f = _difference_tiles(pattern, seq_len, block, causal, qi, ki)
        else:
            a, f = _evaluate_tiles(pattern, seq_len, block, h, causal, qi, ki)
        out.append((qi[a], ki[a], f[a]))
    return tuple(out)


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
    prefix = _difference_prefix(pattern, seq_len, causal)
    lo, hi = _tile_bounds(seq_len, block)
    dmin = (lo.view(-1, 1) - hi.view(1, -1)) + seq_len - 1  # index into d
    dmax = (hi.view(-1, 1) - lo.view(1, -1)) + seq_len - 1
    count = prefix[dmax + 1] - prefix[dmin]
    return (count > 0).unsqueeze(0), (count == dmax - dmin + 1).unsqueeze(0)


def _difference_prefix(pattern, seq_len, causal):
    """Prefix counts of the allowed differences d = -(seq_len - 1) .. seq_len - 1."""
    d = torch.arange(-(seq_len - 1), seq_len)
    q, k = d.clamp(min=0), (-d).clamp(min=0)  # real positions with q - k = d
    ok = pattern.allowed(q, k, torch.zeros_like(d)).expand(d.shape)
    if causal:
        ok = ok & (d >= 0)
    return torch.cat([torch.zeros(1, dtype=torch.long), ok.long().cumsum(0)])


def _difference_tiles(pattern, seq_len, block, causal, qi, ki):
    """``_difference_block_layout`` on the tile pairs (qi, ki) only: O(n + pairs)."""
    prefix = _difference_prefix(pattern, seq_len, causal)
    lo, hi = _tile_bounds(seq_len, block)
    dmin = lo[qi] - hi[ki] + seq_len - 1
    dmax = hi[qi] - lo[ki] + seq_len - 1
    count = prefix[dmax + 1] - prefix[dmin]
    return count > 0, count == dmax - dmin + 1


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
