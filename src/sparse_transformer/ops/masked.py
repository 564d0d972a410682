"""The "sdpa-masked" backend: PyTorch's SDPA with the pattern's boolean mask, for short sequences.

Below some length a fused sparse kernel's fixed costs (launches, host work, tiles that are only
partly allowed) outweigh the pairs it skips, and PyTorch's memory-efficient SDPA kernel over every
pair with the pattern as a mask is faster. ``backend="auto"`` picks this backend only where the
crossover table (``crossover.py``) measured it fastest, and never beyond ``MAX_N`` positions: it
is the one path besides the reference that holds an n x n tensor (the mask, bool, per head where
the pattern varies by head), so it is bounded by length and its masks are cached in a small LRU.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from ..patterns import Pattern

MAX_N = 4096  # longest sequence this backend takes (a 16 MiB mask per distinct head pattern)
_CACHE_SIZE = 16
_MASKS: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()


def pattern_mask(pattern: Pattern, n: int, heads: int, causal: bool, device) -> torch.Tensor:
    """Bool (heads or 1, n, n), True where attention is allowed; cached (LRU, bounded)."""
    key = (pattern, n, heads if pattern.per_head else 1, causal, str(device))
    mask = _MASKS.get(key)
    if mask is not None:
        _MASKS.move_to_end(key)
        return mask
    mask = pattern.mask(n, num_heads=key[2], causal=causal).to(device)
    _MASKS[key] = mask
    if len(_MASKS) > _CACHE_SIZE:
        _MASKS.popitem(last=False)
    return mask


def masked_sdpa_attention(q, k, v, pattern: Pattern, causal: bool = True, key_padding_mask=None,
                          scale=None, return_lse: bool = False):
    """Same arguments and result as every backend (square q, k, v; see ``dispatch``)."""
    b, h, n, d = q.shape
    if n > MAX_N:
        raise ValueError(f"the sdpa-masked backend takes sequences of at most {MAX_N} positions "
                         f"(it builds an n x n mask), got {n}; use backend='auto'")
    if return_lse:  # SDPA does not return it: the blocked path does, with the same result
        from .blocked import blocked_attention

        return blocked_attention(q, k, v, pattern, causal, key_padding_mask, scale, True)
    keep = pattern_mask(pattern, n, h, causal, q.device)[None]  # (1, h or 1, n, n)
    if key_padding_mask is not None:
        keep = keep & ~key_padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
    # SDPA gives NaN for rows with no allowed key; they must be zeros (and so their gradients).
    return torch.where(keep.any(-1, keepdim=True), out, torch.zeros_like(out))
