"""The one log-sum-exp rule every backend shares: softmax weights that never produce NaN.

``lse_weights(x, dim)`` returns ``exp(x - lse)`` and ``lse = logsumexp(x)`` along ``dim``, with
entries of -inf weighing zero and a slice that is -inf everywhere giving weights of zero and a
log-sum-exp of -inf (never NaN, in values or gradients). The shift by the maximum is detached:
any shift gives the same values, so no gradient flows through it.

Two uses of the same rule:

* softmax over masked scores (``softmax.py``: the reference), ``dim`` the key axis;
* merging attention computed over disjoint key sets (``merge_partials``: the blocked backend's
  online fold, FlexAttention's transposed and summary calls, users' own partial results). If
  out_i is attention over keys K_i and lse_i its log-sum-exp, attention over the union is
  sum_i out_i * exp(lse_i - lse) with lse the log-sum-exp of all lse_i: the weights of the
  stacked lse_i. A row empty in every part stays zero with zero gradient.
"""
from __future__ import annotations

import torch


def lse_weights(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights shaped like x, lse with ``dim`` reduced) along ``dim``; see the module doc."""
    m = x.amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(x - m)
    total = e.sum(dim, keepdim=True)
    nonempty = total > 0
    safe = torch.where(nonempty, total, torch.ones_like(total))
    lse = torch.where(nonempty, torch.log(safe) + m, torch.full_like(m, float("-inf")))
    return e / safe, lse.squeeze(dim)


def merge_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]):
    """outs: each (..., n, d); lses: each (..., n). Returns (out, lse), out in outs[0]'s dtype.

    The sum runs in float32 at least (half-precision parts keep their precision when merged)."""
    if len(outs) == 1:
        return outs[0], lses[0]
    acc = torch.promote_types(outs[0].dtype, torch.float32)
    w, lse = lse_weights(torch.stack([l.to(torch.promote_types(l.dtype, torch.float32))
                                      for l in lses]), 0)
    out = 0
    for o, w_i in zip(outs, w):
        out = out + o.to(acc) * w_i.unsqueeze(-1).to(acc)
    return out.to(outs[0].dtype), lse
