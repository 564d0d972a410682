"""Masked softmax-attention that never produces NaN: rows with no allowed key give zeros.

Used by the reference; the weights and log-sum-exp come from the one rule every backend shares
(``merge.lse_weights``), so empty rows are treated alike everywhere and their gradient is exactly
zero.
"""
from __future__ import annotations

import torch

from .merge import lse_weights


def safe_softmax_attend(scores: torch.Tensor, mask: torch.Tensor, v: torch.Tensor):
    """scores (..., q, k) in the compute dtype; mask bool broadcastable to scores; v (..., k, d).

    Returns (out (..., q, d), lse (..., q) in float32 or float64, -inf for empty rows).
    """
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    p, lse = lse_weights(scores.to(acc).masked_fill(~mask, float("-inf")), -1)
    return torch.matmul(p.to(v.dtype), v), lse
