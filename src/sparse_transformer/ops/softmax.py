"""Masked softmax-attention that never produces NaN: rows with no allowed key give zeros.

Shared by the reference and the blocked backend so both treat empty rows the same way; the
gradient of an empty row is exactly zero (every ``where`` keeps the unused branch finite).
"""
from __future__ import annotations

import torch


def safe_softmax_attend(scores: torch.Tensor, mask: torch.Tensor, v: torch.Tensor):
    """scores (..., q, k) in the compute dtype; mask bool broadcastable to scores; v (..., k, d).

    Returns (out (..., q, d), lse (..., q) in float32 or float64, -inf for empty rows).
    """
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    s = scores.to(acc).masked_fill(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    p = torch.exp(s - m)
    denom = p.sum(-1, keepdim=True)
    nonempty = denom > 0
    safe = torch.where(nonempty, denom, torch.ones_like(denom))
    out = torch.matmul((p / safe).to(v.dtype), v)
    lse = torch.where(nonempty, torch.log(safe) + m, torch.full_like(m, float("-inf")))
    return out, lse.squeeze(-1)
