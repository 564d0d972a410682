"""Execution plans for the Triton kernels: which (query tile, key tile) pairs to compute.

Tiles are the shared description of ``ops/tiles.py``: ``block`` positions given by (start, seg,
jump): contiguous ones, tiles of the paper's transposed (n/l x l) view for the strided column
factor, compact tiles of the fixed summary keys. Positions >= n are masked by the kernels.

A pattern is split into disjoint parts (``Pattern.parts``); each part gets its own query and key
tilings and the list of tile pairs that hold an allowed pair. Every pair is evaluated against the
pattern's predicate (never re-derived by hand): a pair is *full* when every in-bounds query of the
tile may see every key of it, otherwise its element-wise mask is stored once (masks are
deduplicated, so diagonal tiles share one). Causality and sequence bounds are baked into those
masks; key padding is applied by the kernels. Candidate tile pairs come from the part's
structure (``patterns.candidate_blocks``: a band, global rows and columns, the tiles of linked
random blocks, unions of those), so a BigBird-style plan lists O(n) candidates, never n x n; only
a structure with no shortcut ("generic") falls back to the block layout, which evaluates the
predicate on every pair. A part whose structure is "dense", "band" or
"column" depends on q - k alone, so in-bounds tile pairs of one tiling with the same start offset
share a single evaluation (a strided plan at n = 2^20 builds in about a second, not minutes);
pairs touching the end of the sequence are evaluated one by one. A summary part's *far* tiles
(keys in stride blocks wholly before, or after, the query tile's) share one evaluation per side
and are listed as spans, one run per tile, so Fixed's n^2 / 8 tiles cost O(n) to plan.

The plan holds, per pass, a CSR list of *runs*: forward and dq passes are query-major (a program
owns one query tile and walks its key tiles), dk/dv passes are key-major. A run is either one
partial tile with its mask, or ``count`` full tiles of one shape whose starts advance by a constant
``step`` (a band's neighbours, a summary column's query tiles, the same residue's column tiles):
the kernels walk a run with affine addresses and no mask arithmetic, so the compiler can pipeline
its loads. Passes over different tilings combine through the running log-sum-exp (forward) or by
accumulation (backward). Memory is bounded by the number of computed tiles, never n x n.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch

from ...patterns import Pattern, block_layout, candidate_blocks
from ..tiles import tile_pair_masks, token_tiles


# A run: tiles start + j * step (j < count), each of ``block`` positions given by (seg, jump) as in
# ``ops/tiles.py``; mask is the partial tile's mask id (then count == 1) or -1 (every tile full).
RUN_FIELDS = ("start", "seg", "jump", "step", "count", "mask")
RUN = len(RUN_FIELDS)


@dataclass(frozen=True)
class Pass:
    """One kernel launch: programs own ``tiles``; ``entries`` list the other side's tiles."""

    tiles: torch.Tensor  # int32 (Hp, T, 3): (start, seg, jump) of each program's tile
    order: torch.Tensor  # int32 (Hp, T): tiles in launch order (most tile pairs first)
    rowptr: torch.Tensor  # int32 (Hp, T + 1): CSR offsets into entries
    entries: torch.Tensor  # int32 (Hp, R, RUN): runs of the other side's tiles (``RUN_FIELDS``)
    covers_all: bool  # the program tiles cover every position 0..n-1
    # ``split_rows``: int32 (Hp, T), the slot of a program that computes one piece of a split
    # row (its tile's dk / dv are added up across pieces), -1 for a whole row; and int32 (S,),
    # the number of pieces of each slot's row. None: no row is split.
    split: torch.Tensor | None = None
    parts: torch.Tensor | None = None

    @property
    def num_tiles(self) -> int:
        return self.tiles.shape[1]

    @cached_property
    def row_stats(self) -> tuple[int, int, int]:
        """(longest row, all rows, number of rows) in tile pairs, first head group. Read on the
        host once, when the pass is built (``_done``), so that scheduling a launch later never
        waits on the device (nor breaks a CUDA-graph capture)."""
        work = row_work(self)
        if work.numel() == 0:
            return 0, 0, 0
        return int(work.max()), int(work.sum()), work.numel()

    @cached_property
    def contiguous_runs(self) -> bool:
        """Whether every run's tiles are runs of consecutive positions (seg == jump), in every
        head group: the kernels can then read them through tensor descriptors (TMA). Read on
        the host when the pass is built, like ``row_stats``."""
        seg, jump = self.entries[..., 1], self.entries[..., 2]
        return bool(((seg <= 0) | (seg == jump)).all())  # seg <= 0: the -1 padding of a CSR


def _done(ps: Pass) -> Pass:
    ps.row_stats  # noqa: B018  (computed now, outside any capture)
    ps.contiguous_runs  # noqa: B018
    return ps


def pass_pairs(ps: Pass) -> int:
    """Tile pairs the pass computes for its first head group."""
    r = int(ps.rowptr[0, -1])
    return int(ps.entries[0, :r, 4].long().clamp(min=1).sum())


def row_work(ps: Pass) -> torch.Tensor:
    """Tile pairs of each row (program) of the pass's first head group."""
    rowptr = ps.rowptr[0].long()
    r = int(rowptr[-1])
    cnt = ps.entries[0, :r, 4].long().clamp(min=1)
    csum = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
    return csum[rowptr[1:]] - csum[rowptr[:-1]]


# How a dk/dv launch is scheduled (``dkdv_schedule``), against the work a slot gets in a perfectly
# balanced launch (all tile pairs over all program slots). Measured on an H100 (2026-12-06,
# docs/benchmarks.md "Launch order and split rows"): splitting halved longformer's and bigbird's
# backward at 16K, whose global key row is 2-8x a balanced slot's work; for fixed (its summary
# rows 0.3-1x) the interleaved order alone was as fast or faster, and splitting on top of it slower.
SPLIT_ABOVE = 2.0        # split rows when the longest is more than this many balanced slots
INTERLEAVE_ABOVE = 0.2   # else interleave the heads when the longest is above this share ...
INTERLEAVE_UNEVEN = 1.5  # ... and this many times the mean row (strided's and local's are even)


def dkdv_schedule(ps: Pass, batch_heads: int, slots: int, split: bool = True,
                  interleave: bool = True) -> "tuple[int | None, bool]":
    """(``split_rows`` cap or None, heads interleaved) for a dk/dv launch of ``ps`` over
    ``batch_heads`` on ``slots`` program slots. A row too long for any order to hide (a global
    key) is split; rows that are only uneven (fixed's summary columns, longest first within each
    head) start interleaved across heads, so every head's longest start together; even rows keep
    the head-after-head order, which reads K and V with better L2 locality. ``split`` /
    ``interleave`` False rule that choice out."""
    longest, total, rows = ps.row_stats
    if rows == 0:
        return None, False
    balanced = total * batch_heads / max(1, slots)
    if split and ps.tiles.shape[0] == 1 and longest > SPLIT_ABOVE * balanced:
        return auto_split_cap(ps, batch_heads, slots), False
    if (interleave and longest > INTERLEAVE_ABOVE * balanced
            and longest * rows >= INTERLEAVE_UNEVEN * total):
        return None, True
    return None, False


def auto_split_cap(ps: Pass, batch_heads: int, slots: int) -> int:
    """The ``split_rows`` cap for a launch of ``ps`` over ``batch_heads`` on ``slots`` program
    slots: an eighth of the work each slot gets in a balanced launch, at least 16 tile pairs.
    The launch model (``benchmarks/launch_order.py``) found about that best for fixed,
    longformer and bigbird at 16K positions and longformer at 1M; on an H100 it beat a fixed cap
    of 32 for fixed, longformer and bigbird at 16K (docs/benchmarks.md)."""
    return max(16, ps.row_stats[1] * batch_heads // (8 * max(1, slots)))


def split_rows(ps: Pass, cap: int) -> Pass | None:
    """``ps`` (a key-major pass of one head group) with every row of more than ``cap`` tile
    pairs cut into pieces of ``cap`` (the last shorter), each piece a program of its own; runs
    that cross a cut are split into two runs. A key tile every query tile sees (a global
    position, a fixed summary column) is otherwise one program looping over the whole sequence
    while the rest of the launch has finished. Its pieces add their dk / dv into float32 slots
    and the last piece to finish writes the result (``kernels._dkdv_tile``). None when no row
    is longer than ``cap`` or the pass has several head groups. Vectorised: O(runs)."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if ps.tiles.shape[0] != 1:
        return None
    dev = ps.tiles.device
    rowptr = ps.rowptr[0].long()
    t = ps.num_tiles
    n_runs = rowptr[1:] - rowptr[:-1]
    r = int(rowptr[-1])
    ent = ps.entries[0, :r].long()
    cnt = ent[:, 4].clamp(min=1)  # tile pairs of each run
    row = torch.repeat_interleave(torch.arange(t, device=dev), n_runs)
    csum = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
    work = csum[rowptr[1:]] - csum[rowptr[:-1]]  # tile pairs of each row
    if t == 0 or int(work.max()) <= cap:
        return None
    w0 = csum[:-1] - csum[rowptr[:-1]][row]  # a run's first tile pair within its row
    first, last = w0 // cap, (w0 + cnt - 1) // cap
    n_sub = last - first + 1
    sub = torch.repeat_interleave(torch.arange(r, device=dev), n_sub)
    j = torch.arange(sub.numel(), device=dev) - torch.repeat_interleave(n_sub.cumsum(0) - n_sub, n_sub)
    piece = first[sub] + j
    a = (piece * cap - w0[sub]).clamp(min=0)
    b = torch.minimum(cnt[sub], (piece + 1) * cap - w0[sub])
    e = ent[sub].clone()
    e[:, 0] += a * e[:, 3]  # start of the piece's share of the run
    e[:, 4] = b - a
    pieces = torch.where(work > 0, (work + cap - 1) // cap, torch.ones_like(work))
    base = pieces.cumsum(0) - pieces  # first program of each row
    prog = base[row[sub]] + piece
    total = int(pieces.sum())
    prog_row = torch.repeat_interleave(torch.arange(t, device=dev), pieces)
    n_prog_runs = torch.bincount(prog, minlength=total)
    new_rowptr = torch.cat([n_prog_runs.new_zeros(1), n_prog_runs.cumsum(0)])
    k = torch.arange(total, device=dev) - base[prog_row]  # piece index within its row
    piece_work = torch.minimum(work[prog_row] - k * cap, torch.full_like(k, cap)).clamp(min=0)
    many = pieces > 1
    slot_of_row = torch.where(many, many.long().cumsum(0) - 1, torch.full_like(pieces, -1))
    i32 = torch.int32
    out = Pass(ps.tiles[0, prog_row][None].contiguous(),
               torch.argsort(-piece_work, stable=True)[None].to(i32).contiguous(),
               new_rowptr[None].to(i32).contiguous(), e[None].to(i32).contiguous(),
               ps.covers_all, split=slot_of_row[prog_row][None].to(i32).contiguous(),
               parts=pieces[many].to(i32).contiguous())
    out.__dict__["contiguous_runs"] = ps.contiguous_runs  # pieces of the same runs
    return out


@dataclass(frozen=True)
class TritonPlan:
    seq_len: int
    block: int
    causal: bool
    heads: int  # Hp: 1 when every head shares the layout, else the number of heads
    masks: torch.Tensor  # int8 (U, block, block), [query, key]; at least one (unused) tile
    fwd: tuple[Pass, ...]  # query-major passes (forward and dq)
    bwd: tuple[Pass, ...]  # key-major passes (dk and dv)
    tiles_computed: int  # (query tile, key tile) pairs computed per head group
    kind: str = ""  # the pattern's class name: the launch settings are tuned per kind
    # The masks stored [key, query], for key-major passes that read them through a tensor
    # descriptor (TMA); None: not built (then those passes read ``masks`` element-wise).
    masks_kt: torch.Tensor | None = None

    @property
    def pairs_computed(self) -> int:
        return self.tiles_computed * self.block * self.block


@dataclass
class _PartPairs:
    """A part's tilings and active tile pairs (before the masks are deduplicated globally)."""

    qtiles: torch.Tensor  # long (Hp, Tq, 3)
    ktiles: torch.Tensor  # long (Hp, Tk, 3)
    hp: torch.Tensor  # long (P,)
    qi: torch.Tensor  # long (P,)
    ki: torch.Tensor  # long (P,)
    mid: torch.Tensor  # long (P,): index into ``masks`` or -1
    masks: torch.Tensor  # bool (M, block, block)
    token_q: bool  # query tiling is the contiguous one
    covers_k: bool  # key tiling covers every position
    # Full tile pairs listed as spans instead of one by one (a summary part's far tiles): query-
    # and key-major views of the same pairs, each (hp, own tile, first other tile, count) long
    # tensors; the other tiles of a span are consecutive and their starts advance by one step.
    qspans: tuple | None = None
    kspans: tuple | None = None

    @property
    def tiles(self) -> int:
        return self.hp.numel() + (int(self.qspans[3].sum()) if self.qspans is not None else 0)


def _column_tiles(n: int, stride: int, block: int, device):
    """Tiles of the transposed view: residue r, rows m0 .. m0 + block - 1 (position m * l + r)."""
    rows = -(-n // stride)
    per = -(-rows // block)
    r = torch.arange(min(stride, n), device=device).repeat_interleave(per)
    m0 = torch.arange(per, device=device).repeat(min(stride, n)) * block
    start = r + m0 * stride
    keep = start < n
    r, start = r[keep], start[keep]
    tiles = torch.stack([start, torch.ones_like(start), torch.full_like(start, stride)], -1)
    return tiles, r


def _summary_tiles(n: int, stride: int, summary: int, low: int, block: int, device):
    """Compact tiles of the summary keys (offsets low .. low + summary - 1 of every stride block)."""
    groups = -(-n // stride)
    if block % summary == 0:
        per = block // summary
        g0 = torch.arange(0, groups, per, device=device)
        start = g0 * stride + low
        tiles = torch.stack([start, torch.full_like(start, summary),
                             torch.full_like(start, stride)], -1)
    else:  # summary is a multiple of block: several tiles per group
        g = torch.arange(groups, device=device).repeat_interleave(summary // block)
        i = torch.arange(summary // block, device=device).repeat(groups)
        start = g * stride + low + i * block
        tiles = torch.stack([start, torch.full_like(start, block), torch.full_like(start, block)], -1)
    return tiles[tiles[:, 0] < n]


def _same_residue_pairs(r: torch.Tensor):
    """Every (i, j) with r[i] == r[j], for a non-decreasing r, in row-major order (no T x T)."""
    cnt = torch.bincount(r)
    first = cnt.cumsum(0) - cnt
    size = cnt[r]
    qi = torch.arange(r.numel(), device=r.device).repeat_interleave(size)
    start = (size.cumsum(0) - size).repeat_interleave(size)
    ki = first[r].repeat_interleave(size) + torch.arange(qi.numel(), device=r.device) - start
    return qi, ki


def _last_position(tiles: torch.Tensor, block: int) -> torch.Tensor:
    start, seg, jump = tiles[:, 0], tiles[:, 1], tiles[:, 2]
    return start + torch.div(block - 1, seg, rounding_mode="floor") * jump + (block - 1) % seg


def _evaluate(part: Pattern, head: int, n: int, causal: bool, qtiles, ktiles, qi, ki, block,
              invariant: bool = False):
    """Active / full flags of candidate tile pairs (qi, ki), the masks of the partial ones, and
    for each pair the index of its mask (-1: none). ``invariant``: the part's predicate depends
    on q - k alone (what its structure claims for "dense", "band" and "column"), so pairs of
    in-bounds tiles with the same tiling and the same start offset share one evaluation."""
    if invariant and qi.numel():
        inside = ((_last_position(qtiles, block) < n)[qi] & (_last_position(ktiles, block) < n)[ki]
                  & (qtiles[qi, 1:] == ktiles[ki, 1:]).all(-1))
        if inside.any():
            return _evaluate_shared(part, head, n, causal, qtiles, ktiles, qi, ki, block, inside)
    dev = qtiles.device
    # Results go into tensors allocated up front (the masks into a buffer grown by doubling):
    # small pieces kept between the chunks' large temporaries would fragment the heap, hundreds
    # of MB of resident memory at n = 2^20.
    act = torch.zeros(qi.shape, dtype=torch.bool, device=dev)
    full = torch.zeros_like(act)
    which = torch.full(qi.shape, -1, dtype=torch.long, device=dev)
    masks = torch.empty(16, block, block, dtype=torch.bool, device=dev)
    stored, at = 0, 0
    h = torch.tensor(head, device=dev)
    for ok, qin in tile_pair_masks(part, n, causal, qtiles, ktiles, qi, ki, h, block):
        c = ok.shape[0]
        a = (ok & qin).any(dim=(1, 2))
        f = (ok | ~qin).all(dim=(1, 2))
        act[at:at + c] = a
        full[at:at + c] = f & a
        partial = a & ~f
        if partial.any():
            # Identical masks (a band's diagonal, a global column) are stored once per chunk,
            # so memory follows the distinct masks, not the partial tiles.
            m = (ok | ~qin)[partial]
            uniq, inv = torch.unique(m.reshape(m.shape[0], -1), dim=0, return_inverse=True)
            u = uniq.shape[0]
            if stored + u > masks.shape[0]:
                grown = torch.empty(max(2 * masks.shape[0], stored + u), block, block,
                                    dtype=torch.bool, device=dev)
                grown[:stored] = masks[:stored]
                masks = grown
            masks[stored:stored + u] = uniq.view(-1, block, block)
            which[at:at + c][partial] = inv + stored
            stored += u
        at += c
    return act, full, masks[:stored], which


def _evaluate_shared(part, head, n, causal, qtiles, ktiles, qi, ki, block, inside):
    """``_evaluate`` for a shift-invariant part: one representative per start offset among the
    in-bounds pairs, every other pair evaluated on its own."""
    sel = inside.nonzero(as_tuple=True)[0]
    offset = qtiles[qi[sel], 0] - ktiles[ki[sel], 0]
    sig = torch.stack([offset, qtiles[qi[sel], 1], qtiles[qi[sel], 2]], -1)
    uniq, inv = torch.unique(sig, dim=0, return_inverse=True)
    rep = torch.full((uniq.shape[0],), sel.numel(), dtype=torch.long, device=sel.device)
    rep = rep.scatter_reduce(0, inv, torch.arange(sel.numel(), device=sel.device), "amin")
    a_u, f_u, m_u, w_u = _evaluate(part, head, n, causal, qtiles, ktiles, qi[sel[rep]],
                                   ki[sel[rep]], block)
    rest = (~inside).nonzero(as_tuple=True)[0]
    a_r, f_r, m_r, w_r = _evaluate(part, head, n, causal, qtiles, ktiles, qi[rest], ki[rest],
                                   block)
    act = torch.zeros(qi.shape, dtype=torch.bool, device=qi.device)
    full = torch.zeros_like(act)
    which = torch.full(qi.shape, -1, dtype=torch.long, device=qi.device)
    act[sel], full[sel], which[sel] = a_u[inv], f_u[inv], w_u[inv]
    act[rest], full[rest] = a_r, f_r
    which[rest] = torch.where(w_r >= 0, w_r + m_u.shape[0], w_r)
    return act, full, torch.cat([m_u, m_r]), which


def _band(tq: int, tk: int, width: int, causal: bool, device):
    qb = torch.arange(tq, device=device).repeat_interleave(2 * width + 1)
    kb = qb + torch.arange(-width, width + 1, device=device).repeat(tq)
    keep = (kb >= 0) & (kb < tk)
    if causal:
        keep &= kb <= qb
    return qb[keep], kb[keep]


def _pairs_for_part(part: Pattern, n: int, heads: int, causal: bool, block: int, device,
                    compact_summary: bool) -> _PartPairs:
    hp = heads if part.per_head else 1
    tok = token_tiles(n, block, device)
    token_q, covers_k = True, True
    qt_heads, kt_heads, cands, spans = [], [], [], []
    s = part.structure()  # the shortcuts below are candidate lists; the predicate decides
    for h in range(hp):
        qt, kt = tok, tok
        if s.kind == "column" and n >= 2 * s.stride:
            qt, r = _column_tiles(n, s.stride, block, device)
            kt = qt
            qi, ki = _same_residue_pairs(r)
            if causal:
                keep = qt[ki, 0] <= qt[qi, 0] + (block - 1) * s.stride
                qi, ki = qi[keep], ki[keep]
            token_q = False
        elif s.kind == "summary" and compact_summary and block % s.summary == 0:
            kt = _summary_tiles(n, s.stride, s.summary, s.summary_low(h), block, device)
            (qi, ki), far = _summary_near_far(part, h, n, causal, s.stride, block // s.summary,
                                              qt, kt, block)
            spans.append(far)
            covers_k = False
        elif s.kind == "summary" and compact_summary and s.summary % block == 0:
            kt = _summary_tiles(n, s.stride, s.summary, s.summary_low(h), block, device)
            ok = torch.ones(qt.shape[0], kt.shape[0], dtype=torch.bool, device=device)
            if causal:
                ok &= kt[None, :, 0] <= qt[:, None, 0] + block - 1
            qi, ki = ok.nonzero(as_tuple=True)
            covers_k = False
        elif s.kind == "band":
            qi, ki = _band(qt.shape[0], kt.shape[0], -(-(s.window - 1) // block) + 1, causal,
                           device)
        elif s.kind == "block":
            qi, ki = _band(qt.shape[0], kt.shape[0], -(-s.stride // block) + 1, causal, device)
        else:  # "global", "random", unions and per-head mixes of them: listed directly
            cand = candidate_blocks(part, n, block, h, causal)
            if cand is None:
                lay = block_layout(part, n, block, hp, causal, device=device)
                cand = lay.active[h].nonzero(as_tuple=True)
            qi, ki = (c.to(device) for c in cand)
        qt_heads.append(qt)
        kt_heads.append(kt)
        cands.append((qi, ki))
    hps, qis, kis, mids, masks = [], [], [], [], []
    n_masks = 0
    for h, (qi, ki) in enumerate(cands):
        a, f, m, which = _evaluate(part, h, n, causal, qt_heads[h], kt_heads[h], qi, ki, block,
                                   invariant=s.kind in ("dense", "band", "column"))
        qi, ki, which = qi[a], ki[a], which[a]
        mid = torch.where(which >= 0, which + n_masks, which)
        n_masks += m.shape[0]
        hps.append(torch.full_like(qi, h))
        qis.append(qi)
        kis.append(ki)
        mids.append(mid)
        masks.append(m)
    qspans = kspans = None
    if spans:
        spans = [(torch.full_like(q[0], h), *q, torch.full_like(k[0], h), *k)
                 for h, (q, k) in enumerate(spans)]
        cat = [torch.cat(x) for x in zip(*spans)]
        qspans, kspans = tuple(cat[:4]), tuple(cat[4:])
    return _PartPairs(_stack_ragged(qt_heads), _stack_ragged(kt_heads), torch.cat(hps),
                      torch.cat(qis), torch.cat(kis), torch.cat(mids), torch.cat(masks),
                      token_q, covers_k, qspans, kspans)


def _row_ranges(lo: torch.Tensor, hi: torch.Tensor):
    """(row, j) for every row and lo[row] <= j < hi[row]."""
    cnt = (hi - lo).clamp(min=0)
    row = torch.arange(lo.numel(), device=lo.device).repeat_interleave(cnt)
    first = (cnt.cumsum(0) - cnt)[row]
    return row, lo[row] + torch.arange(row.numel(), device=lo.device) - first


def _summary_near_far(part, head, n, causal, stride, per, qt, kt, block):
    """Candidates of a summary part over compact key tiles (``per`` stride blocks per tile),
    split in two. *Far* pairs: both tiles inside the sequence, and every key of the key tile in
    a stride block before (or, bidirectionally, after) every row of the query tile. By the
    structure's claim ("summary": the predicate reads the key's offset in its stride block and
    whether q and k share one), every far pair has the same mask as one representative on its
    side; when the predicate finds the representatives full, the far pairs are returned as spans
    (key tiles 0 .. F(i) - 1 of query tile i, and query tiles G(j) .. of key tile j), O(tiles)
    instead of O(tiles^2). *Near* pairs (a few per query tile) are candidates evaluated one by
    one. Returns ((qi, ki) near candidates, (query-major spans, key-major spans))."""
    dev = qt.device
    tq, tk = qt.shape[0], kt.shape[0]
    t_in = n // block  # query tiles inside the sequence (the last may be partial)
    k_in = int((_last_position(kt, block) < n).sum())  # key tiles inside (a prefix)
    g_first = torch.arange(tk, device=dev) * per  # stride blocks a key tile reads
    g_last = g_first + per - 1
    rows = torch.arange(tq, device=dev) * block
    s0, s1 = rows // stride, (rows + block - 1) // stride  # stride blocks of a query tile
    inside = torch.arange(tq, device=dev) < t_in
    before = torch.searchsorted(g_last[:k_in].contiguous(), s0)  # far-before: j < before
    after = torch.searchsorted(g_first[:k_in].contiguous(), s1, right=True)  # far-after: j >= after
    before = torch.where(inside, before, 0)
    after = torch.where(inside & (not causal), after, k_in)
    # One representative per side decides for all far pairs of that side.
    reps = []
    i_b = int(inside.nonzero()[-1]) if t_in else -1
    if t_in and int(before[i_b]) > 0:
        reps.append((i_b, 0))
    i_a = int(inside.nonzero()[0]) if t_in else -1
    if t_in and not causal and int(after[i_a]) < k_in:
        reps.append((i_a, k_in - 1))
    if reps:
        rq = torch.tensor([r[0] for r in reps], device=dev)
        rk = torch.tensor([r[1] for r in reps], device=dev)
        a, f, _, _ = _evaluate(part, head, n, causal, qt, kt, rq, rk, block)
        if not bool(f.all()):  # the claim does not hold: no pair is far, every one a candidate
            inside = torch.zeros_like(inside)
            t_in = 0
            before = torch.zeros_like(before)
            after = torch.full_like(after, k_in)
    # Near candidates: between the two far ranges, and the key tiles past the sequence;
    # causally only key tiles that start by the query tile's last row (starts increase).
    end = torch.full_like(before, tk)
    if causal:
        end = torch.searchsorted(kt[:, 0].contiguous(), qt[:, 0] + block - 1, right=True)
    qi1, ki1 = _row_ranges(before, torch.minimum(torch.where(inside, after, tk), end))
    qi2, ki2 = _row_ranges(torch.where(inside, k_in, tk), end)
    qi, ki = torch.cat([qi1, qi2]), torch.cat([ki1, ki2])
    order = (qi * (tk + 1) + ki).argsort()
    qi, ki = qi[order], ki[order]
    # Far spans, query-major and key-major (the same pairs).
    own = torch.arange(tq, device=dev)
    q_major = [own, torch.zeros_like(own), before]
    kj = torch.arange(k_in, device=dev)
    # Query tiles whose first stride block is after key tile j's last: i >= G(j).
    g_start = torch.searchsorted(s0[:t_in].contiguous(), g_last[:k_in], right=True)
    k_major = [kj, g_start, (t_in - g_start).clamp(min=0)]
    if not causal:
        q_major = [torch.cat([own, own]), torch.cat([q_major[1], after]),
                   torch.cat([before, k_in - after])]
        g_end = torch.searchsorted(s1[:t_in].contiguous(), g_first[:k_in])  # i < G2(j)
        k_major = [torch.cat([kj, kj]), torch.cat([g_start, torch.zeros_like(g_end)]),
                   torch.cat([k_major[2], g_end])]
    q_keep, k_keep = q_major[2] > 0, k_major[2] > 0
    return (qi, ki), ([x[q_keep] for x in q_major], [x[k_keep] for x in k_major])


def _stack_ragged(tiles: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-head tile lists, padding short ones with tiles that start out of range."""
    width = max(t.shape[0] for t in tiles)
    out = []
    for t in tiles:
        pad = torch.tensor([[1 << 30, 1, 1]], device=t.device).expand(width - t.shape[0], 3)
        out.append(torch.cat([t, pad]))
    return torch.stack(out)


def _broadcast_heads(p: _PartPairs, heads: int) -> _PartPairs:
    if p.qtiles.shape[0] == heads:
        return p
    reps = heads
    k = p.hp.numel()
    def spans(sp):
        if sp is None:
            return None
        m = sp[0].numel()
        return (torch.arange(heads, device=sp[0].device).repeat_interleave(m),
                *(x.repeat(reps) for x in sp[1:]))

    return _PartPairs(p.qtiles.expand(heads, -1, -1), p.ktiles.expand(heads, -1, -1),
                      torch.arange(heads, device=p.hp.device).repeat_interleave(k),
                      p.qi.repeat(reps), p.ki.repeat(reps), p.mid.repeat(reps), p.masks,
                      p.token_q, p.covers_k, spans(p.qspans), spans(p.kspans))


def _csr(own_tiles, other_tiles, hp, own, other, mid, heads, covers_all,
         merge_runs: bool = True, spans=None) -> Pass:
    """CSR of runs grouped by ``own`` tile (per head), sorted by ``other`` tile; ``spans``
    (hp, own, first other tile, count) add one run of full tiles each."""
    t = own_tiles.shape[1]
    dev = own_tiles.device
    rowptrs, ents, orders = [], [], []
    for h in range(heads):
        sel = hp == h
        o, x, m = own[sel], other[sel], mid[sel]
        key = o * (other_tiles.shape[1] + 1) + x
        srt = key.argsort(stable=True)
        o, x, m = o[srt], x[srt], m[srt]
        runs, run_own = _runs(other_tiles[h, x], o, m, merge_runs)
        counts = torch.bincount(o, minlength=t)  # tile pairs per program: the launch order
        if spans is not None:
            ssel = spans[0] == h
            so, lo, cnt = spans[1][ssel], spans[2][ssel], spans[3][ssel]
            first = other_tiles[h, lo]
            nxt = other_tiles[h, (lo + 1).clamp(max=other_tiles.shape[1] - 1), 0]
            step = torch.where(cnt > 1, nxt - first[:, 0], torch.zeros_like(cnt))
            extra = torch.cat([first, step[:, None], cnt[:, None], torch.full_like(cnt, -1)[:, None]],
                              -1)
            runs, run_own = torch.cat([runs, extra]), torch.cat([run_own, so])
            srt = run_own.argsort(stable=True)
            runs, run_own = runs[srt], run_own[srt]
            counts = counts + torch.bincount(so, weights=cnt, minlength=t).long()
        n_runs = torch.bincount(run_own, minlength=t)
        rowptrs.append(torch.cat([n_runs.new_zeros(1), n_runs.cumsum(0)]))
        ents.append(runs)
        orders.append(torch.argsort(-counts, stable=True))
    width = max(1, max(e.shape[0] for e in ents))
    entries = torch.full((heads, width, RUN), -1, dtype=torch.long, device=dev)
    for h, e in enumerate(ents):
        entries[h, :e.shape[0]] = e
    i32 = torch.int32
    return _done(Pass(own_tiles.to(i32).contiguous(), torch.stack(orders).to(i32).contiguous(),
                      torch.stack(rowptrs).to(i32).contiguous(), entries.to(i32).contiguous(),
                      covers_all))


def _runs(tiles: torch.Tensor, own: torch.Tensor, mid: torch.Tensor, merge: bool):
    """Group sorted entries (their tiles (E, 3), owner and mask id) into runs (R, RUN) and each
    run's owner. Entry i continues the run of entry i - 1 when both are full tiles of the same
    owner and shape, and its start advances by the same step as the run's previous entry; a
    partial tile is always a run of its own. (Greedy, without a sequential scan: a run may end
    one entry early where a new step begins, which costs a run, never a wrong tile.)"""
    e = tiles.shape[0]
    if e == 0:
        return torch.zeros(0, RUN, dtype=torch.long, device=tiles.device), own
    link = torch.zeros(e, dtype=torch.bool, device=tiles.device)
    diff = torch.zeros(e, dtype=torch.long, device=tiles.device)
    if merge and e > 1:
        diff[1:] = tiles[1:, 0] - tiles[:-1, 0]
        link[1:] = ((own[1:] == own[:-1]) & (mid[1:] < 0) & (mid[:-1] < 0)
                    & (tiles[1:, 1:] == tiles[:-1, 1:]).all(-1) & (diff[1:] > 0))
        same_step = torch.ones_like(link)
        same_step[2:] = ~link[1:-1] | (diff[2:] == diff[1:-1])
        link &= same_step
    first = (~link).nonzero(as_tuple=True)[0]  # each run's first entry
    count = torch.diff(torch.cat([first, first.new_tensor([e])]))
    step = torch.where(count > 1, diff[(first + 1).clamp(max=e - 1)], torch.zeros_like(count))
    runs = torch.cat([tiles[first], step[:, None], count[:, None], mid[first, None]], -1)
    return runs, own[first]


def build_plan(pattern: Pattern, seq_len: int, num_heads: int, causal: bool, device,
               block: int) -> TritonPlan:
    """The plan for ``pattern`` at this length (cached by value)."""
    return _build_cached(pattern, seq_len, num_heads if pattern.per_head else 1, causal,
                         str(torch.device(device)), block)


@lru_cache(maxsize=64)
def _build_cached(pattern, n, heads, causal, device, block):
    parts = pattern.parts()
    covering = any(p.structure().kind != "summary" for p in parts)
    sets = [_broadcast_heads(_pairs_for_part(p, n, heads, causal, block, device, covering), heads)
            for p in parts]
    # Global mask deduplication: identical tiles (all diagonals, say) are stored once.
    all_masks = [s.masks for s in sets]
    offs = [0]
    for m in all_masks:
        offs.append(offs[-1] + m.shape[0])
    stacked = torch.cat(all_masks) if offs[-1] else torch.zeros(0, block, block, dtype=torch.bool,
                                                                device=device)
    if stacked.shape[0]:
        uniq, inv = torch.unique(stacked.reshape(stacked.shape[0], -1), dim=0, return_inverse=True)
        masks = uniq.view(-1, block, block)
    else:
        masks, inv = torch.ones(1, block, block, dtype=torch.bool, device=device), None
    for i, s in enumerate(sets):
        if inv is not None:
            local = s.mid >= 0
            s.mid = torch.where(local, inv[(s.mid + offs[i]).clamp(min=0)], s.mid)
    # Backward (key-major): one pass per part; the last one must cover every key position.
    sets.sort(key=lambda s: (s.covers_k, s.token_q))
    bwd = tuple(_csr(s.ktiles, s.qtiles, s.hp, s.ki, s.qi, s.mid, heads, s.covers_k,
                     spans=s.kspans) for s in sets)
    # Forward (query-major): parts sharing the contiguous query tiling run as one pass.
    fwd = []
    token = [s for s in sets if s.token_q]
    for s in sets:
        if not s.token_q:
            fwd.append(_csr(s.qtiles, s.ktiles, s.hp, s.qi, s.ki, s.mid, heads, True,
                            spans=s.qspans))
    if token:
        fwd.append(_merged_token_pass(token, heads))
    tiles = sum(s.tiles for s in sets) // heads
    masks = masks.to(torch.int8).contiguous()
    return TritonPlan(n, block, causal, heads, masks, tuple(fwd), bwd, tiles,
                      type(pattern).__name__, masks.transpose(1, 2).contiguous())


def _merged_token_pass(sets: list[_PartPairs], heads: int) -> Pass:
    """Concatenate the entries of parts that share the contiguous query tiling."""
    qt = sets[0].qtiles
    offs, kts, hp, qi, ki, mid, spans = 0, [], [], [], [], [], []
    for s in sets:
        kts.append(s.ktiles)
        hp.append(s.hp)
        qi.append(s.qi)
        ki.append(s.ki + offs)
        mid.append(s.mid)
        if s.qspans is not None:
            spans.append((s.qspans[0], s.qspans[1], s.qspans[2] + offs, s.qspans[3]))
        offs += s.ktiles.shape[1]
    kt = torch.cat(kts, 1)
    spans = tuple(torch.cat(x) for x in zip(*spans)) if spans else None
    return _csr(qt, kt, torch.cat(hp), torch.cat(qi), torch.cat(ki), torch.cat(mid), heads, True,
                spans=spans)
