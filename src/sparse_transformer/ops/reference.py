"""The dense masked reference: the oracle every other backend is tested against.

It builds the full (heads, n, n) mask from the pattern's predicate, so it is meant for tests and
short sequences. It computes in float64 for float64 inputs and in float32 otherwise, unless
``compute_dtype`` says otherwise (tests use ``compute_dtype=q.dtype`` to measure what plain
PyTorch achieves in a low-precision dtype).
"""
from __future__ import annotations

import torch

from ..patterns import Pattern
from .softmax import safe_softmax_attend


def reference_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                        scale=None, return_lse: bool = False, compute_dtype=None):
    b, h, n, d = q.shape
    if compute_dtype is None:
        compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = d ** -0.5 if scale is None else scale
    mask = pattern.mask(n, h, causal, device=q.device)[None]  # (1, h, n, n)
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask[:, None, None, :]
    qc, kc, vc = (t.to(compute_dtype) for t in (q, k, v))
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
    out, lse = safe_softmax_attend(scores, mask, vc)
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out
