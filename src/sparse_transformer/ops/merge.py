"""Combine attention computed over disjoint key sets through their log-sum-exps.

If out_i = softmax over keys K_i and lse_i = logsumexp of the scores over K_i, then attention over
the union is sum_i out_i * exp(lse_i - lse) with lse = logaddexp of all lse_i. Empty parts
(lse = -inf) get weight zero, and a row empty in every part stays zero with zero gradient.
"""
from __future__ import annotations

import torch


def merge_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]):
    """outs: each (..., n, d) float; lses: each (..., n). Returns (out, lse)."""
    if len(outs) == 1:
        return outs[0], lses[0]
    stacked = torch.stack(lses)
    m = stacked.amax(0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(stacked - m)
    denom = e.sum(0)
    nonempty = denom > 0
    safe = torch.where(nonempty, denom, torch.ones_like(denom))
    out = 0
    for o, e_i in zip(outs, e):
        out = out + o * (e_i / safe).unsqueeze(-1).to(o.dtype)
    lse = torch.where(nonempty, torch.log(safe) + m, torch.full_like(m, float("-inf")))
    return out, lse
