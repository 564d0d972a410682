"""The pure-PyTorch blocked backend: runs on any device, with autograd, no n x n tensor.

A pattern is split into disjoint parts (``Pattern.parts``), each with a gather plan
(``plans.py``) that lists, per group of queries, the keys it may need. One autograd function runs
all parts flash-style, in chunks of groups:

* forward: for each chunk, gather its queries and keys, take the masked scores, and fold them into
  a running (output, log-sum-exp) per query (online softmax across chunks and parts);
* backward: recompute each chunk's probabilities from the final log-sum-exp and accumulate
  dq, dk, dv. Nothing of size (queries x keys) is kept between chunks.

So peak memory is the inputs, the outputs and gradients, plus one chunk of scores, and compute
grows with the pairs the plans list. Rows with no allowed key output zeros with zero gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..patterns import Pattern
from .plans import GatherPlan, build_plan

CHUNK_SCORES = 1 << 21  # score elements computed at once (8 MB in float32)


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(plan: GatherPlan, rows_per_group: int):
    g, q = plan.q_idx.shape
    k = plan.k_idx.shape[-1]
    per = max(1, CHUNK_SCORES // max(1, rows_per_group * q * k))
    for g0 in range(0, g, per):
        g1 = min(g, g0 + per)
        mask = plan.mask[:, g0:g1]
        # Trim key columns that no query of this chunk may use (e.g. future keys when causal).
        used = mask.any(dim=(0, 1, 2)).nonzero()
        kmax = int(used[-1]) + 1 if used.numel() else 0
        if kmax == 0:
            continue
        yield plan.q_idx[g0:g1], plan.k_idx[:, g0:g1, :kmax], mask[..., :kmax]


def _flat_index(idx: torch.Tensor, heads: int, n: int) -> torch.Tensor:
    """(Hp, G, K) positions (-1 = padding) -> flat indices into a (heads * (n + 1)) axis."""
    idx = torch.where(idx < 0, n, idx)
    h = torch.arange(heads, device=idx.device).view(heads, 1, 1)
    return (h * (n + 1) + idx).reshape(-1)


def _gather(x_flat, flat, shape):
    b, d = x_flat.shape[0], x_flat.shape[-1]
    return x_flat.index_select(1, flat).view(b, *shape, d)


def _pad_flat(x, acc):
    """(B, H, n, d) -> (B, H * (n + 1), d) in the accumulation dtype, with a zero row per head."""
    b, h, n, d = x.shape
    return F.pad(x.to(acc), (0, 0, 0, 1)).reshape(b, h * (n + 1), d)


def _chunk_scores(qf, kf, q_idx, k_idx, mask, kpm, h, n, scale):
    """Gathered (q, k) of one chunk and its masked scores (B, H, Gc, Q, Kc)."""
    gc, qn = q_idx.shape
    kn = k_idx.shape[-1]
    q_flat = _flat_index(q_idx.unsqueeze(0).expand(h, gc, qn), h, n)
    k_flat = _flat_index(k_idx.expand(h, gc, kn), h, n)
    qg = _gather(qf, q_flat, (h, gc, qn))
    kg = _gather(kf, k_flat, (h, gc, kn))
    s = torch.matmul(qg, kg.transpose(-1, -2)).mul_(scale)
    m = mask.unsqueeze(0)
    if kpm is not None:
        pad = F.pad(kpm, (0, 1), value=True)[:, torch.where(k_idx < 0, n, k_idx)]
        m = m & ~pad.unsqueeze(-2)
    s.masked_fill_(~m, float("-inf"))
    return s, qg, kg, q_flat, k_flat


class _BlockedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kpm, plans, scale):
        b, h, n, d = q.shape
        acc = _acc_dtype(q.dtype)
        qf, kf, vf = (_pad_flat(t, acc) for t in (q, k, v))
        out = torch.zeros(b, h * (n + 1), d, dtype=acc, device=q.device)
        lse = torch.full((b, h * (n + 1)), float("-inf"), dtype=acc, device=q.device)
        for plan in plans:
            for q_idx, k_idx, mask in _chunks(plan, b * h):
                s, _, _, q_flat, k_flat = _chunk_scores(qf, kf, q_idx, k_idx, mask, kpm, h, n, scale)
                m = s.amax(-1, keepdim=True)
                m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
                p = s.sub_(m).exp_()
                denom = p.sum(-1, keepdim=True)
                vg = _gather(vf, k_flat, s.shape[1:3] + (s.shape[-1],))
                o = torch.matmul(p, vg)
                lse_c = torch.where(denom > 0, denom.log() + m, torch.full_like(m, float("-inf")))
                _fold(out, lse, q_flat, o.reshape(b, -1, d), lse_c.reshape(b, -1), denom.reshape(b, -1))
        out = out.view(b, h, n + 1, d)[:, :, :n]
        lse = lse.view(b, h, n + 1)[:, :, :n]
        ctx.save_for_backward(q, k, v, out, lse, kpm)
        ctx.plans, ctx.scale = plans, scale
        return out.to(q.dtype), lse.float() if acc != torch.float64 else lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, kpm = ctx.saved_tensors
        b, h, n, d = q.shape
        acc = out.dtype
        scale = ctx.scale
        qf, kf, vf = (_pad_flat(t, acc) for t in (q, k, v))
        dout = torch.zeros_like(out) if dout is None else dout.to(acc)
        delta = (dout * out).sum(-1)
        if dlse is not None:
            delta = delta - dlse.to(acc)
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))
        dof = _pad_flat(dout, acc)
        lsef = F.pad(lse_safe, (0, 1), value=float("inf")).reshape(b, -1)
        deltaf = F.pad(delta, (0, 1)).reshape(b, -1)
        dq = torch.zeros_like(qf)
        dk = torch.zeros_like(kf)
        dv = torch.zeros_like(vf)
        for plan in ctx.plans:
            for q_idx, k_idx, mask in _chunks(plan, b * h):
                s, qg, kg, q_flat, k_flat = _chunk_scores(qf, kf, q_idx, k_idx, mask, kpm, h, n, scale)
                shp = s.shape[1:4]
                p = s.sub_(lsef[:, q_flat].view(b, *shp, 1)).exp_()
                dog = _gather(dof, q_flat, shp)
                vg = _gather(vf, k_flat, shp[:2] + (s.shape[-1],))
                dp = torch.matmul(dog, vg.transpose(-1, -2))
                ds = p * (dp - deltaf[:, q_flat].view(b, *shp, 1))
                ds.mul_(scale)
                dq.index_add_(1, q_flat, torch.matmul(ds, kg).reshape(b, -1, d))
                dk.index_add_(1, k_flat, torch.matmul(ds.transpose(-1, -2), qg).reshape(b, -1, d))
                dv.index_add_(1, k_flat, torch.matmul(p.transpose(-1, -2), dog).reshape(b, -1, d))

        def unflat(x, like):
            return x.view(b, h, n + 1, d)[:, :, :n].to(like.dtype)

        return unflat(dq, q), unflat(dk, k), unflat(dv, v), None, None, None


def _fold(out, lse, idx, o, lse_c, denom):
    """Online-softmax merge of a chunk's normalised-later output into the running accumulators.

    ``o`` is the chunk's unnormalised sum p @ v with p = exp(s - m); ``lse_c`` its log-sum-exp.
    """
    old = lse[:, idx]
    new = torch.logaddexp(old, lse_c)
    finite = torch.isfinite(new)
    new_safe = torch.where(finite, new, torch.zeros_like(new))
    w_old = torch.exp(old - new_safe)
    # o / denom is the chunk's normalised output; its weight is exp(lse_c - new).
    safe_denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    w_new = torch.exp(lse_c - new_safe) / safe_denom
    out[:, idx] = out[:, idx] * w_old.unsqueeze(-1) + o * w_new.unsqueeze(-1)
    lse[:, idx] = new


def blocked_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                      scale=None, return_lse: bool = False):
    b, h, n, d = q.shape
    scale = d ** -0.5 if scale is None else float(scale)
    plans = [build_plan(part, n, h, causal, q.device) for part in pattern.parts()]
    out, lse = _BlockedAttention.apply(q, k, v, key_padding_mask, plans, scale)
    return (out, lse) if return_lse else out
