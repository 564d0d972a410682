"""Execution plans for the pure-PyTorch blocked backend.

A plan lists *which* (query, key) pairs one part of a pattern computes (see ``Pattern.parts``), as
a few ``Task``s; *what* is allowed among those pairs always comes from the pattern's predicate
(``Task.mask``, evaluated on exactly the listed pairs). Each query row belongs to at most one
group of one task per plan, and its group lists every key the part may allow it, so a plan's
output for a row is complete and parts combine through their log-sum-exps.

The task kinds are chosen so that queries and keys are *views* of the inputs wherever possible:

* ``rows``: groups are consecutive blocks of Q query rows; a group's keys are a few contiguous
  runs ("pieces") that move with the group. Local, Block and any band-shaped block layout use it
  (no gather: the keys are shifted views of k and v). With ``compact`` the pieces index the plan's
  compact key list instead (Summary: the queries of one block against the prefix of summary keys
  that precedes it).
* ``column``: the paper's transposed view for ``Column(l)``: position i = m * l + r; group r holds
  the positions with residue r, a strided view of the (m, l) reshaped sequence, and attends among
  them.
* ``gather``: the general fallback. Groups are query blocks; each lists its active key blocks
  (``patterns.active_tiles``: the predicate on the candidate tiles the pattern's structure lists,
  so a BigBird-style layout costs O(listed tiles), not n x n), gathered by index.

Memory of every plan grows with the pairs it lists, never with n x n for a sparse pattern.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from ...patterns import Pattern, Summary, active_tiles
from ...patterns.structure import Structure

_MASK_ELEMENTS = 1 << 22  # predicate elements evaluated at once while building masks


@dataclass(frozen=True, eq=False)
class Task:
    """G groups of Q queries, each against K keys: the unit the blocked backend computes."""

    kind: str  # "rows" | "column" | "gather"
    q0: int  # rows/gather: first query row; column: first residue
    groups: int  # G
    q_len: int  # Q
    pieces: tuple[tuple[int, int], ...] = ()  # rows: (start, length) of group 0's key runs
    compact: bool = False  # rows: pieces index the plan's compact key list
    k_idx: torch.Tensor | None = None  # gather: long (Hp, G, K) positions, -1 = none
    mask: torch.Tensor | None = None  # bool (Hp or 1, G or 1, Q, K); None = every pair allowed
    stride: int = 0  # column: the stride l

    @property
    def k_len(self) -> int:
        if self.kind == "column":
            return self.q_len
        if self.kind == "gather":
            return self.k_idx.shape[-1]
        return sum(length for _, length in self.pieces)

    def q_positions(self) -> torch.Tensor:
        """long (G, Q): the query position of every row of the task."""
        if self.kind == "column":
            r = torch.arange(self.q0, self.q0 + self.groups).view(-1, 1)
            return torch.arange(self.q_len).view(1, -1) * self.stride + r
        return torch.arange(self.q0, self.q0 + self.groups * self.q_len).view(self.groups, -1)

    def k_positions(self, compact_keys: torch.Tensor | None = None) -> torch.Tensor:
        """long (Hp or 1, G, K): the key position of every column, -1 where there is none."""
        if self.kind == "column":
            return self.q_positions().unsqueeze(0)
        if self.kind == "gather":
            return self.k_idx
        shift = torch.arange(self.groups).view(-1, 1) * self.q_len
        runs = torch.cat([torch.arange(s, s + n) for s, n in self.pieces]).view(1, -1)
        slots = runs + shift  # (G, K)
        if not self.compact:
            return slots.unsqueeze(0)
        return compact_keys[:, slots]  # (Hp, G, K)

    def split(self, g0: int, g1: int) -> "Task":
        """The sub-task of groups g0 .. g1 - 1 (used to bound the memory of one step)."""
        if g0 == 0 and g1 == self.groups:
            return self
        mask = self.mask
        if mask is not None and mask.shape[1] > 1:
            mask = mask[:, g0:g1]
        if self.kind == "column":
            return replace(self, q0=self.q0 + g0, groups=g1 - g0, mask=mask)
        shift = g0 * self.q_len
        k_idx = self.k_idx[:, g0:g1] if self.k_idx is not None else None
        pieces = tuple((s + shift, n) for s, n in self.pieces)
        return replace(self, q0=self.q0 + shift, groups=g1 - g0, pieces=pieces, k_idx=k_idx,
                       mask=mask)


@dataclass(frozen=True, eq=False)
class Plan:
    seq_len: int
    padded_len: int  # inputs are zero-padded to this length (rows past seq_len are masked)
    heads: int  # Hp: 1, or the number of heads when the part varies by head
    tasks: tuple[Task, ...]
    compact_keys: torch.Tensor | None = None  # long (Hp, Kc) positions, -1 = none

    @property
    def pairs_computed(self) -> int:
        """Score elements evaluated per (batch, head)."""
        return sum(t.groups * t.q_len * t.k_len for t in self.tasks)


def build_plan(part: Pattern, seq_len: int, num_heads: int, causal: bool, device=None) -> Plan:
    plan = _build_plan_cached(part, seq_len, num_heads, causal)
    if device is not None and torch.device(device).type != "cpu":
        plan = _plan_on(plan, str(device))
    return plan


@lru_cache(maxsize=64)
def _plan_on(plan: Plan, device: str) -> Plan:
    def move(t):
        return None if t is None else t.to(device)

    tasks = tuple(replace(t, k_idx=move(t.k_idx), mask=move(t.mask)) for t in plan.tasks)
    return replace(plan, tasks=tasks, compact_keys=move(plan.compact_keys))


@lru_cache(maxsize=64)
def _build_plan_cached(part: Pattern, seq_len: int, num_heads: int, causal: bool) -> Plan:
    heads = num_heads if part.per_head else 1
    s = part.structure()
    if s.kind == "column":
        plan = _column_plan(s, seq_len)
    elif s.kind == "summary":
        plan = _summary_plan(part, s, seq_len, heads, causal)
    else:
        plan = _band_plan(part, seq_len, heads, causal) or _gather_plan(part, seq_len, heads, causal)
    tasks = []
    for t in plan.tasks:
        mask = t.mask if t.mask is not None else _task_mask(part, t, plan, causal)
        if mask is None or mask.any():
            tasks.append(replace(t, mask=_compress(mask)))
    return replace(plan, tasks=tuple(tasks))


# -- masks: the predicate on exactly the listed pairs --------------------------------------------
def _task_mask(part: Pattern, task: Task, plan: Plan, causal: bool) -> torch.Tensor:
    qpos = task.q_positions()  # (G, Q)
    kpos = task.k_positions(plan.compact_keys)  # (Hp or 1, G, K)
    hp = max(plan.heads, kpos.shape[0])
    per = max(1, _MASK_ELEMENTS // max(1, hp * task.q_len * task.k_len))
    out = []
    # int32 positions halve the predicate's memory traffic (lengths stay far below 2^31).
    qpos, kpos = qpos.to(torch.int32), kpos.to(torch.int32)
    n = plan.seq_len
    # Out-of-sequence rows and missing keys become sentinels that fail every comparison below.
    q_eff = torch.where(qpos < n, qpos, -1)
    k_eff = torch.where((kpos >= 0) & (kpos < n), kpos, torch.iinfo(torch.int32).max)
    h = torch.arange(hp, dtype=torch.int32).view(-1, 1, 1, 1)
    out = []
    for g0 in range(0, task.groups, per):
        q = qpos[g0:g0 + per].view(1, -1, task.q_len, 1)
        k = kpos[:, g0:g0 + per].unsqueeze(2)
        qe = q_eff[g0:g0 + per].view(1, -1, task.q_len, 1)
        ke = k_eff[:, g0:g0 + per].unsqueeze(2)
        inside = (ke <= qe) if causal else (ke < torch.iinfo(torch.int32).max) & (qe >= 0)
        ok = part.allowed(q, k, h) & inside
        out.append(ok.expand(hp, *ok.shape[1:]))
    return torch.cat(out, 1)


def _compress(mask: torch.Tensor | None) -> torch.Tensor | None:
    """None when every pair is allowed; one group broadcast when all groups are alike."""
    if mask is None or bool(mask.all()):
        return None
    if mask.shape[1] > 1 and bool((mask == mask[:, :1]).all()):
        mask = mask[:, :1]
    if mask.shape[0] > 1 and bool((mask == mask[:1]).all()):
        mask = mask[:1]
    return mask.contiguous()


# -- Column(l): the transposed (n/l x l) view ----------------------------------------------------
def _column_plan(s: Structure, n: int) -> Plan:
    l = s.stride
    m = -(-n // l)
    groups = min(l, n)
    task = Task("column", 0, groups, m, stride=l)
    return Plan(n, m * l, 1, (task,))


# -- Summary(l, c): each query block against the prefix of the compact summary keys --------------
def _summary_plan(part: Pattern, s: Structure, n: int, heads: int, causal: bool) -> Plan:
    k = torch.arange(n)
    whole = Summary(s.stride, s.summary, s.distinct_heads)  # every block's summary keys
    keys = [k[whole.allowed(k, k, torch.tensor(h))] for h in range(heads)]
    width = max(1, max(len(x) for x in keys))
    compact = torch.full((heads, width), -1, dtype=torch.long)
    for h, x in enumerate(keys):
        compact[h, :len(x)] = x
    rows = s.stride * max(1, -(-64 // s.stride))
    plan = Plan(n, n, heads, (), compact)
    tasks = []
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        # Causally only keys up to the block's last row can be allowed.
        reach = int(((compact >= 0) & (compact < r1)).sum(-1).max()) if causal else width
        if reach == 0:
            continue
        task = Task("rows", r0, 1, r1 - r0, ((0, reach),), compact=True)
        mask = _task_mask(part, task, plan, causal)
        used = mask.any(2).flatten(0, -2).any(0).nonzero()
        if used.numel():  # trim the keys no row of the block may use
            kmax = int(used[-1]) + 1
            tasks.append(replace(task, pieces=((0, kmax),), mask=mask[..., :kmax]))
    return replace(plan, tasks=tuple(tasks))


# -- band-shaped layouts (Local, Block, ...): shifted views of the keys --------------------------
def choose_block(part: Pattern, n: int) -> int:
    """Block size: small enough to waste little, large enough for efficient matmuls."""
    s = part.structure()
    if s.kind == "block" and s.stride <= 256:
        return s.stride
    if s.kind == "band":
        return 32 if s.window >= 64 else 16
    return 64 if n >= 256 else 32


def _band_plan(part: Pattern, n: int, heads: int, causal: bool) -> Plan | None:
    """Rows tasks when every query block's active key blocks are one run at a fixed offset.

    Consecutive query blocks with the same run (relative to the block) share one task, so a
    pattern like Local gives a few edge tasks and one body task. Returns None when the layout is
    not band-shaped (e.g. per-head layouts that differ, or too many distinct runs).
    """
    bs = choose_block(part, n)
    tiles = active_tiles(part, n, bs, heads, causal)
    qi, ki, _ = tiles[0]
    if any(not (torch.equal(t[0], qi) and torch.equal(t[1], ki)) for t in tiles[1:]):
        return None
    nb = -(-n // bs)
    count = torch.bincount(qi, minlength=nb)
    lo = torch.full((nb,), nb, dtype=torch.long).scatter_reduce(0, qi, ki, "amin")
    hi = torch.full((nb,), -1, dtype=torch.long).scatter_reduce(0, qi, ki, "amax")
    if bool(((count > 0) & (count != hi - lo + 1)).any()):
        return None
    runs = []  # [first block, last block, lo offset, hi offset]
    for b, (c, first, last) in enumerate(zip(count.tolist(), lo.tolist(), hi.tolist())):
        if c == 0:
            continue
        rel = (first - b, last - b)
        if runs and runs[-1][1] == b - 1 and runs[-1][2:] == list(rel):
            runs[-1][1] = b
        else:
            runs.append([b, b, *rel])
    tasks = _merge_single_blocks([Task("rows", b0 * bs, b1 - b0 + 1, bs,
                                       (((b0 + o0) * bs, (o1 - o0 + 1) * bs),))
                                  for b0, b1, o0, o1 in runs])
    if len(tasks) > max(8, nb // 8):
        return None
    return Plan(n, nb * bs, heads, tuple(tasks))


def _merge_single_blocks(tasks: list[Task]) -> list[Task]:
    """Join neighbouring one-block tasks (a band's edges) into one task over their rows.

    The joined task reads the union of their key ranges; it is kept only while it computes at
    most twice the pairs of the tasks it replaces, so short sequences run fewer, larger steps.
    """
    out: list[Task] = []
    areas: list[int] = []  # pairs computed by the tasks each entry of ``out`` replaces
    for t in tasks:
        prev = out[-1] if out else None
        if (prev is not None and prev.groups == 1 and t.groups == 1 and not t.compact
                and len(prev.pieces) == 1 and len(t.pieces) == 1
                and prev.q0 + prev.q_len == t.q0):
            (s0, l0), (s1, l1) = prev.pieces[0], t.pieces[0]
            start, end = min(s0, s1), max(s0 + l0, s1 + l1)
            rows = prev.q_len + t.q_len
            separate = areas[-1] + t.q_len * l1
            if rows * (end - start) <= 2 * separate:
                out[-1] = Task("rows", prev.q0, 1, rows, ((start, end - start),))
                areas[-1] = separate
                continue
        out.append(t)
        areas.append(t.q_len * t.k_len * t.groups)
    return out


# -- the general fallback: gather each query block's active key blocks ---------------------------
def _gather_plan(part: Pattern, n: int, heads: int, causal: bool) -> Plan:
    bs = choose_block(part, n)
    nb = -(-n // bs)
    blocks, counts = _key_blocks(active_tiles(part, n, bs, heads, causal), nb)  # (Hp, nb, Kb)
    offs = torch.arange(bs)
    k_idx = blocks.unsqueeze(-1) * bs + offs  # (Hp, nb, Kb, bs)
    k_idx = torch.where((blocks.unsqueeze(-1) >= 0) & (k_idx < n), k_idx, -1).flatten(-2)
    # Consecutive query blocks share a task, padded to the widest of them; causal layouts grow
    # with the block index, so runs of similar width waste little.
    width = counts.amax(0)  # (nb,)
    tasks = []
    step = max(1, min(16, nb // 8))
    for b in range(0, nb, step):
        e = min(nb, b + step)
        w = int(width[b:e].max())
        if w > 0:
            tasks.append(Task("gather", b * bs, e - b, bs, k_idx=k_idx[:, b:e, :w * bs]))
    return Plan(n, nb * bs, heads, tuple(tasks))


def _key_blocks(tiles, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded lists of active key blocks per (head, query block) from sparse active tiles
    (sorted row-major): long (Hp, nb, width) indices, -1 past a row's count, and the counts."""
    counts = torch.stack([torch.bincount(qi, minlength=nb) for qi, _, _ in tiles])
    width = max(1, int(counts.max()))
    blocks = torch.full((len(tiles), nb, width), -1, dtype=torch.long)
    for h, (qi, ki, _) in enumerate(tiles):
        first = counts[h].cumsum(0) - counts[h]
        blocks[h, qi, torch.arange(qi.numel()) - first[qi]] = ki
    return blocks, counts
