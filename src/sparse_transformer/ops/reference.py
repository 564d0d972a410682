"""The dense masked reference: the oracle every other backend is tested against.

It builds the full (heads, q_len, k_len) mask from the pattern's predicate, so it is meant for
tests and short sequences. It computes in float64 for float64 inputs and in float32 otherwise,
unless ``compute_dtype`` says otherwise (tests use ``compute_dtype=q.dtype`` to measure what
plain PyTorch achieves in a low-precision dtype).

Shapes are those of ``sparse_attention``: k and v may be shorter or longer than q and have
fewer heads (grouped-query attention, query head i reads key/value head i // (heads //
kv_heads)); query i sits at absolute position ``q_offset + i`` (default ``k_len - q_len``, or 0
when there are more queries than keys) and key j at position j.
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from ..patterns.layout import allowed_rows
from .softmax import safe_softmax_attend


def reference_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                        scale=None, return_lse: bool = False, compute_dtype=None, *,
                        q_offset: int | None = None, query_padding_mask=None):
    b, h, lq, d = q.shape
    lk = k.shape[2]
    if q_offset is None:
        q_offset = max(0, lk - lq)
    if compute_dtype is None:
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = d ** -0.5 if scale is None else scale
    if k.shape[1] != h:  # grouped-query attention: every query head reads its key/value head
        k, v = (t.repeat_interleave(h // t.shape[1], dim=1) for t in (k, v))
    rows = torch.arange(q_offset, q_offset + lq, device=q.device)
    mask = allowed_rows(pattern, rows, lk, h, causal)[None]  # (1, h, lq, lk)
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask[:, None, None, :]
    if query_padding_mask is not None:
        mask = mask & ~query_padding_mask[:, None, :, None]
    qc, kc, vc = (t.to(compute_dtype) for t in (q, k, v))
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
    out, lse = safe_softmax_attend(scores, mask, vc)
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out
