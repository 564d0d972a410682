"""The pure-PyTorch blocked backend: runs on any device, with autograd, no n x n tensor.

A pattern is split into disjoint parts (``Pattern.parts``); each part has an execution plan
(``plans.py``): a few tasks, each a batch of query groups against their keys, taken as views of
q, k, v wherever the plan allows (contiguous blocks, shifted blocks, the transposed column view)
and gathered by index otherwise. One autograd function runs every task flash-style, in steps
whose score tensor stays under ``CHUNK_SCORES`` elements:

* forward: a step's scores are masked by the pattern's predicate on exactly its pairs (the
  task's mask, plus key padding), soft-maxed, and applied to the values. Each query row lies in
  at most one task per part, so a part's output for a row is complete; parts are folded together
  through their log-sum-exps (online softmax);
* backward: each step recomputes its probabilities from the final log-sum-exp and accumulates
  dq, dk, dv into the views it read from. Nothing of size (queries x keys) outlives a step.

Peak memory is the inputs, outputs and gradients plus one step's scores; compute grows with the
pairs the plans list. Rows with no allowed key output zeros with zero gradients.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from ...patterns import Pattern
from ...patterns.layout import allowed_rows
from ..merge import lse_weights
from .plans import Plan, Task, _plan_on, build_plan

CHUNK_SCORES = 1 << 20  # most score elements (batch x heads x queries x keys) in one step
# ... and at most this fraction of the elements of q, so that short sequences keep their
# temporaries (scores, probabilities, their gradients) small next to inputs and gradients.
CHUNK_FRACTION_OF_Q = 0.5


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(x: torch.Tensor, acc, length: int) -> torch.Tensor:
    """x (B, H, n, D) in the accumulation dtype, contiguous, zero-padded to ``length`` rows.

    Returns x itself when it already is all that (the common float32 case: no copy).
    """
    x = x.to(acc).contiguous()
    if x.shape[2] < length:
        x = F.pad(x, (0, 0, 0, length - x.shape[2]))
    return x


# -- views of the queries and keys of one task ---------------------------------------------------
def _rows(x: torch.Tensor, task: Task) -> torch.Tensor:
    """(B, H, N, *) -> the task's query rows (B, H, G, Q, *), a view (writable)."""
    b, h = x.shape[:2]
    if task.kind == "column":
        full = x.view(b, h, task.q_len, task.stride, *x.shape[3:])
        return full[:, :, :, task.q0:task.q0 + task.groups].transpose(2, 3)
    end = task.q0 + task.groups * task.q_len
    return x[:, :, task.q0:end].view(b, h, task.groups, task.q_len, *x.shape[3:])


def _window(src: torch.Tensor, start: int, groups: int, step: int, width: int) -> torch.Tensor:
    """View (B, H, G, width, *) of rows start + g * step + (0 .. width - 1); may overlap."""
    st = src.stride()
    size = (*src.shape[:2], groups, width, *src.shape[3:])
    stride = (st[0], st[1], step * st[2], *st[2:])
    return src.as_strided(size, stride, src.storage_offset() + start * st[2])


def _key_views(x: torch.Tensor, compact: torch.Tensor | None, task: Task,
               writable: bool = False) -> list[torch.Tensor]:
    """The task's keys as views (B, H, G, len, *) to concatenate along dim 3.

    Read views may overlap between groups (a band's windows); ``writable`` views never do, so
    gradients can be added into them.
    """
    if task.kind == "column":
        return [_rows(x, task)]
    src = compact if task.compact else x
    g, qn = task.groups, task.q_len
    views = []
    for s, length in task.pieces:
        if g == 1 or not writable:
            views.append(_window(src, s, g, qn, length))
            continue
        for j in range(0, length, qn):
            views.append(_window(src, s + j, g, qn, min(qn, length - j)))
    return views


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, D), idx long (Hp, M) (clamped to valid rows) -> (B, H, M, D)."""
    if idx.shape[0] == 1:
        return x.index_select(2, idx[0])
    b, h, _, d = x.shape
    return x.expand(b, idx.shape[0], *x.shape[2:]).gather(
        2, idx.view(1, -1, idx.shape[1], 1).expand(b, -1, -1, d))


def _scatter_rows(dx: torch.Tensor, idx: torch.Tensor, g: torch.Tensor) -> None:
    if idx.shape[0] == 1:
        dx.index_add_(2, idx[0], g)
    else:
        dx.scatter_add_(2, idx.view(1, -1, idx.shape[1], 1).expand_as(g), g)


def _keys(x, compact, task: Task) -> torch.Tensor:
    if task.kind == "gather":
        idx = task.k_idx.clamp(min=0)
        hp, g, kn = idx.shape
        # -1: the heads of x, or Hp when x has one (the key padding mask of a per-head plan)
        return _gather_rows(x, idx.view(hp, g * kn)).view(x.shape[0], -1, g, kn, x.shape[-1])
    views = _key_views(x, compact, task)
    return views[0] if len(views) == 1 else torch.cat(views, 3)


def _add_keys(dx, dcompact, task: Task, grad: torch.Tensor) -> None:
    """Adjoint of ``_keys``: add ``grad`` (B, H, G, K, D) into the rows the keys came from."""
    if task.kind == "gather":
        idx = task.k_idx.clamp(min=0)
        hp, g, kn = idx.shape
        _scatter_rows(dx, idx.view(hp, g * kn), grad.reshape(*dx.shape[:2], g * kn, dx.shape[-1]))
        return
    at = 0
    for view in _key_views(dx, dcompact, task, writable=True):
        width = view.shape[3]
        view.add_(grad[:, :, :, at:at + width])
        at += width


_LOOP_BATCH_HEADS = 16  # up to this many (batch, head) pairs, multiply per pair on views


def _bmm(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0, into=None) -> torch.Tensor:
    """alpha * a @ b for (B, H, G, X, Y) @ (B, H|1, G, Y, Z); added into ``into`` when given.

    On the CPU, for a few (batch, head) pairs, each is one 3-D bmm on strided views (overlapping
    key windows, the transposed column view), which BLAS reads in place; ``torch.matmul`` would
    first copy operands whose (B, H, G) dims do not merge. Elsewhere (many pairs, GPUs: launch
    count matters more) it is one ``torch.matmul``.
    """
    bsz, heads = a.shape[:2]
    if bsz * heads > _LOOP_BATCH_HEADS or a.device.type != "cpu":
        r = torch.matmul(a, b)
        if alpha != 1.0:
            r.mul_(alpha)
        return r if into is None else into.add_(r)
    if into is None:
        out = torch.empty(*a.shape[:-1], b.shape[-1], dtype=a.dtype, device=a.device)
        for i in range(bsz):
            for j in range(heads):
                torch.baddbmm(out[i, j], a[i, j], b[i, min(j, b.shape[1] - 1)], beta=0,
                              alpha=alpha, out=out[i, j])
        return out
    for i in range(bsz):
        for j in range(heads):
            into[i, j].baddbmm_(a[i, j], b[i, min(j, b.shape[1] - 1)], alpha=alpha)
    return into


def _budget(q: torch.Tensor) -> int:
    return max(1 << 16, min(CHUNK_SCORES, int(q.numel() * CHUNK_FRACTION_OF_Q)))


def _steps(task: Task, batch_heads: int, budget: int):
    per = max(1, budget // max(1, batch_heads * task.q_len * task.k_len))
    for g0 in range(0, task.groups, per):
        yield task.split(g0, min(task.groups, g0 + per))


def _masked_scores(qt, kt, task: Task, kpm, kpm_compact, scale):
    """Scores (B, H, G, Q, K) with disallowed pairs (predicate, causality, padding) at -inf."""
    s = _bmm(qt, kt.transpose(-1, -2), scale)
    block = None if task.mask is None else ~task.mask.unsqueeze(0)
    if kpm is not None:
        pad = _keys(kpm, kpm_compact, task).squeeze(-1).unsqueeze(3)  # (B, 1|Hp, G, 1, K)
        block = pad if block is None else block | pad
    if block is not None:
        s.masked_fill_(block, float("-inf"))
    return s


class _Inputs:
    """The inputs of one call, padded per plan length, with compact key lists per plan."""

    def __init__(self, tensors, acc, kpm):
        self.tensors, self.acc, self.kpm = tensors, acc, kpm
        self._padded = {}

    def padded(self, length):
        if length not in self._padded:
            xs = [_prepare(t, self.acc, length) for t in self.tensors]
            kpm = None
            if self.kpm is not None:
                extra = self.kpm.new_ones(self.kpm.shape[0], length - self.kpm.shape[1])
                kpm = torch.cat([self.kpm, extra], 1)[:, None, :, None]
            self._padded[length] = (xs, kpm)
        return self._padded[length]


def _compacts(plan: Plan, xs, kpm):
    if plan.compact_keys is None:
        return [None] * len(xs), None
    idx = plan.compact_keys.clamp(min=0)
    cx = [_gather_rows(x, idx) for x in xs]
    ckpm = None
    if kpm is not None:
        ckpm = _gather_rows(kpm.expand(-1, idx.shape[0], -1, -1), idx)
    return cx, ckpm


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kpm, plans, scale):
        b, h, n, d = q.shape
        acc = _acc_dtype(q.dtype)
        length = max(p.padded_len for p in plans)
        out = torch.zeros(b, h, length, d, dtype=acc, device=q.device)
        lse = torch.full((b, h, length), float("-inf"), dtype=acc, device=q.device)
        inputs = _Inputs((k, v, q), acc, kpm)
        tiny = torch.finfo(acc).tiny
        budget = _budget(q)
        for first, plan in zip([True] + [False] * len(plans), plans):
            (kp, vp, qp), kpmp = inputs.padded(plan.padded_len)
            (kc, vc, _), kpmc = _compacts(plan, (kp, vp, qp), kpmp)
            o_all, l_all = out[:, :, :plan.padded_len], lse[:, :, :plan.padded_len]
            for task in plan.tasks:
                for t in _steps(task, b * h, budget):
                    s = _masked_scores(_rows(qp, t), _keys(kp, kc, t), t, kpmp, kpmc, scale)
                    m = s.amax(-1, keepdim=True).clamp_(min=torch.finfo(acc).min)
                    p = s.sub_(m).exp_()
                    den = p.sum(-1, keepdim=True)
                    lse_t = den.log().add_(m).squeeze(-1)
                    o = _bmm(p, _keys(vp, vc, t)).div_(den.clamp_(min=tiny))
                    _fold(_rows(o_all, t), _rows(l_all, t), o, lse_t, first)
        out, lse = out[:, :, :n], lse[:, :, :n]
        ctx.save_for_backward(q, k, v, out, lse, kpm)
        ctx.plans, ctx.scale = plans, scale
        return out.to(q.dtype), (lse if acc == torch.float64 else lse.float())

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, kpm = ctx.saved_tensors
        plans, scale = ctx.plans, ctx.scale
        b, h, n, d = q.shape
        acc = out.dtype
        length = max(p.padded_len for p in plans)
        dout = torch.zeros_like(out) if dout is None else dout.to(acc)
        delta = (dout * out).sum(-1)
        if dlse is not None:
            delta = delta - dlse.to(acc)
        # Empty rows have lse = -inf; +inf there makes their probabilities exactly zero.
        lse_b = torch.where(torch.isfinite(lse), lse, float("inf"))
        lse_b = F.pad(lse_b, (0, length - n), value=float("inf")).unsqueeze(-1)
        delta = F.pad(delta, (0, length - n)).unsqueeze(-1)
        grads = [torch.zeros(b, h, length, d, dtype=acc, device=q.device) for _ in range(3)]
        inputs = _Inputs((q, k, v, dout), acc, kpm)
        budget = _budget(q)
        for plan in plans:
            pl = plan.padded_len
            (qp, kp, vp, dop), kpmp = inputs.padded(pl)
            (_, kc, vc, _), kpmc = _compacts(plan, (qp, kp, vp, dop), kpmp)
            dq, dk, dv = (g[:, :, :pl] for g in grads)
            dkc, dvc = (None, None) if kc is None else (torch.zeros_like(kc), torch.zeros_like(vc))
            for task in plan.tasks:
                for t in _steps(task, b * h, budget):
                    qt, kt, vt, dot = _rows(qp, t), _keys(kp, kc, t), _keys(vp, vc, t), _rows(dop, t)
                    s = _masked_scores(qt, kt, t, kpmp, kpmc, scale)
                    p = s.sub_(_rows(lse_b[:, :, :pl], t)).exp_()
                    ds = _bmm(dot, vt.transpose(-1, -2))
                    ds.sub_(_rows(delta[:, :, :pl], t)).mul_(p)
                    _bmm(ds, kt, scale, into=_rows(dq, t))
                    _add_keys(dk, dkc, t, _bmm(ds.transpose(-1, -2), qt, scale))
                    _add_keys(dv, dvc, t, _bmm(p.transpose(-1, -2), dot))
            if dkc is not None:
                idx = plan.compact_keys.clamp(min=0)
                _scatter_rows(dk, idx, dkc)
                _scatter_rows(dv, idx, dvc)
        dq, dk, dv = (g[:, :, :n].to(x.dtype) for g, x in zip(grads, (q, k, v)))
        return dq, dk, dv, None, None, None


def _fold(out, lse, o, lse_t, first: bool) -> None:
    """Online-softmax merge of one step's normalised output into the running (out, lse) views
    (the shared log-sum-exp rule, ``merge.lse_weights``, applied in place)."""
    if first:
        out.copy_(o)
        lse.copy_(lse_t)
        return
    w, new = lse_weights(torch.stack([lse, lse_t]), 0)
    out.mul_(w[0].unsqueeze(-1))
    out.add_(o.mul_(w[1].unsqueeze(-1)))
    lse.copy_(new)


def blocked_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                      scale=None, return_lse: bool = False, *, q_offset: int | None = None,
                      query_padding_mask=None):
    """See ``sparse_attention`` for the arguments (k/v of another length or fewer heads,
    ``q_offset``, ``query_padding_mask``)."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else float(scale)
    q_offset = max(0, lk - lq) if q_offset is None else q_offset
    if k.shape[1] != h:  # grouped-query attention; autograd sums the expanded heads' gradients
        k, v = (t.repeat_interleave(h // t.shape[1], dim=1) for t in (k, v))
    if q_offset == 0 and lq == lk:
        plans = [build_plan(part, lq, h, causal, q.device) for part in pattern.parts()]
        out, lse = _BlockedAttention.apply(q, k, v, key_padding_mask, plans, scale)
    else:
        out, lse = _offset_attention(q, k, v, pattern, causal, key_padding_mask, scale, q_offset)
    if query_padding_mask is not None:
        out = out.masked_fill(query_padding_mask[:, None, :, None], 0.0)
        lse = lse.masked_fill(query_padding_mask[:, None, :], float("-inf"))
    return (out, lse) if return_lse else out


# -- queries at an offset (decoding against a cache, prefixes, other key lengths) ----------------
def _offset_attention(q, k, v, pattern, causal, kpm, scale, q_offset):
    """Queries at positions q_offset .. q_offset + q_len - 1 against keys 0 .. k_len - 1.

    q, k, v are placed in one frame of positions (q's rows at their positions, zero rows
    elsewhere; no task reads those), and a gather plan lists, for each query block that holds a
    query, the key blocks its predicate allows. The plan's masks come from the predicate on
    exactly those rows, so only the queries' own (block x k_len) pairs are ever evaluated.
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    plan = _offset_plan(pattern, q_offset, lq, lk, h, causal)
    if q.device.type != "cpu":
        plan = _plan_on(plan, str(q.device))
    n = plan.padded_len
    qf = F.pad(q, (0, 0, q_offset, n - q_offset - lq))
    kf, vf = (F.pad(t, (0, 0, 0, n - lk)) for t in (k, v))
    if kpm is not None:
        kpm = torch.cat([kpm, kpm.new_ones(b, n - lk)], 1)
    out, lse = _BlockedAttention.apply(qf, kf, vf, kpm, [plan], scale)
    return out[:, :, q_offset:q_offset + lq], lse[:, :, q_offset:q_offset + lq]


def _offset_block(k_len: int) -> int:
    return 64 if k_len >= 256 else 16


@lru_cache(maxsize=64)
def _offset_plan(pattern: Pattern, q_offset: int, q_len: int, k_len: int, heads: int,
                 causal: bool) -> Plan:
    hp = heads if pattern.per_head else 1
    bs = _offset_block(k_len)
    q_end = q_offset + q_len
    nbk = -(-k_len // bs)
    first, last = q_offset // bs, (q_end - 1) // bs
    length = max(nbk, last + 1) * bs
    tasks = []
    for b0 in range(first, last + 1, _OFFSET_BLOCKS_PER_TASK):
        b1 = min(last + 1, b0 + _OFFSET_BLOCKS_PER_TASK)
        rows = torch.arange(b0 * bs, b1 * bs)
        ok = allowed_rows(pattern, rows, k_len, hp, causal)  # (hp, rows, k_len)
        ok = ok & ((rows >= q_offset) & (rows < q_end)).view(1, -1, 1)
        ok = F.pad(ok, (0, nbk * bs - k_len)).view(hp, b1 - b0, bs, nbk, bs)
        active = ok.any(dim=(0, 2, 4))  # (groups, nbk): key blocks of each query block
        width = int(active.sum(-1).max())
        if width == 0:
            continue
        order = torch.where(active, torch.arange(nbk), nbk + torch.arange(nbk)).sort(-1).values
        blocks = order[:, :width]  # active blocks first, in increasing order
        used = blocks < nbk
        blocks = torch.where(used, blocks, 0)
        k_idx = (blocks.unsqueeze(-1) * bs + torch.arange(bs)).flatten(1)  # (groups, width * bs)
        k_idx = torch.where(used.repeat_interleave(bs, 1) & (k_idx < k_len), k_idx, -1)
        g = torch.arange(b1 - b0).view(-1, 1)
        mask = ok.permute(0, 1, 3, 2, 4)[:, g, blocks]  # (hp, G, width, Q, bs)
        mask = mask.permute(0, 1, 3, 2, 4).reshape(hp, b1 - b0, bs, width * bs)
        mask = mask & (k_idx >= 0).view(1, b1 - b0, 1, -1)
        tasks.append(Task("gather", b0 * bs, b1 - b0, bs, k_idx=k_idx.unsqueeze(0),
                          mask=mask.contiguous()))
    return Plan(length, length, hp, tuple(tasks))


_OFFSET_BLOCKS_PER_TASK = 16
