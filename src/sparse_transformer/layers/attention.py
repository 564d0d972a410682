"""Sparse self-attention with the paper's three ways to combine the factors of a pattern.

* ``merged``:      every head attends to the whole pattern (for Strided/Fixed: A1 union A2).
* ``interleaved``: layer r uses factor r mod 2 (Eq. 6); needs a pattern with ``factors``.
* ``split``:       the heads are divided between the two factors (the first half uses factor 1,
                   the second half factor 2) and their outputs concatenated (Eq. 8).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import sparse_attention
from ..ops.dispatch import sparse_attention_packed
from ..patterns import Pattern

MODES = ("merged", "interleaved", "split")


def check_mode(mode: str, pattern: Pattern, n_heads: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "merged" and not hasattr(pattern, "factors"):
        raise ValueError(f"mode={mode!r} needs a factorized pattern (Strided or Fixed); "
                         f"{pattern.name} has no factors: use mode='merged'")
    if mode == "split" and n_heads < 2:
        raise ValueError(f"mode='split' needs n_heads >= 2, got {n_heads}")


class SparseSelfAttention(nn.Module):
    """Multi-head self-attention restricted to a sparse pattern.

    ``qk_ratio`` shrinks the query/key width (the paper halves it for CIFAR-10). Inputs are
    (batch, seq, d_model); ``key_padding_mask`` is bool (batch, seq), True at padding.
    """

    def __init__(self, d_model: int, n_heads: int, pattern: Pattern, mode: str = "merged",
                 layer_index: int = 0, causal: bool = True, qk_ratio: float = 1.0,
                 backend: str = "auto"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        d_qk = int(d_model * qk_ratio)
        if d_qk < n_heads or d_qk % n_heads:
            raise ValueError(f"qk_ratio={qk_ratio} gives a query/key width {d_qk} that "
                             f"n_heads ({n_heads}) does not divide")
        check_mode(mode, pattern, n_heads)
        self.n_heads, self.d_model, self.d_qk = n_heads, d_model, d_qk
        self.mode, self.causal, self.backend = mode, causal, backend
        self.pattern = pattern
        self.layer_index = layer_index
        self.qkv = nn.Linear(d_model, 2 * d_qk + d_model)
        self.proj = nn.Linear(d_model, d_model)

    def head_patterns(self) -> list[tuple[slice, Pattern]]:
        """Which heads use which pattern in this layer."""
        h = self.n_heads
        if self.mode == "merged":
            return [(slice(0, h), self.pattern)]
        f1, f2 = self.pattern.factors
        if self.mode == "interleaved":
            return [(slice(0, h), (f1, f2)[self.layer_index % 2])]
        half = (h + 1) // 2
        return [(slice(0, half), f1), (slice(half, h), f2)]

    def prepare(self, seq_len: int, device) -> None:
        """Build the backends' plans for sequences of ``seq_len`` now (before a CUDA-graph
        capture or a timed step), instead of on the first call."""
        from ..ops.dispatch import prepare_attention

        head_dim = self.d_model // self.n_heads  # q and k are padded to v's width if narrower
        for heads, pat in self.head_patterns():
            prepare_attention(pat, seq_len, len(range(self.n_heads)[heads]), self.causal, device,
                              head_dim)

    def project(self, x: torch.Tensor):
        b, n, _ = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).split([self.d_qk, self.d_qk, self.d_model], dim=-1)
        q = q.view(b, n, h, -1).transpose(1, 2)
        k = k.view(b, n, h, -1).transpose(1, 2)
        v = v.view(b, n, h, -1).transpose(1, 2)
        return q, k, v

    def attend(self, q, k, v, key_padding_mask=None):
        scale = 1.0 / math.sqrt(q.shape[-1])
        dv = v.shape[-1]
        if q.shape[-1] < dv:  # zero-padding q and k leaves every dot product unchanged
            q, k = (F.pad(t, (0, dv - t.shape[-1])) for t in (q, k))
        outs = []
        for heads, pat in self.head_patterns():
            outs.append(sparse_attention(q[:, heads], k[:, heads], v[:, heads], pat,
                                         causal=self.causal, key_padding_mask=key_padding_mask,
                                         scale=scale, backend=self.backend))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor, key_padding_mask=None, cache=None) -> torch.Tensor:
        """``cache``: an empty ``LayerCache`` (from ``new_cache``) to fill with this prefix's keys
        and values, positions 0 .. n - 1, for incremental decoding after it."""
        b, n, _ = x.shape
        groups = self.head_patterns()
        if cache is None and self.d_qk == self.d_model and len(groups) == 1:
            # One pattern over all heads, q/k/v of one width: the projection goes in packed
            # (the Triton kernels then write its gradient whole; other backends take views).
            out = sparse_attention_packed(self.qkv(x), self.n_heads, groups[0][1],
                                          causal=self.causal, key_padding_mask=key_padding_mask,
                                          scale=1.0 / math.sqrt(self.d_model // self.n_heads),
                                          backend=self.backend)
            return self.proj(out.transpose(1, 2).reshape(b, n, self.d_model))
        q, k, v = self.project(x)
        if q.shape[-1] > v.shape[-1]:
            raise ValueError("qk_ratio > 1 is not supported")
        out = self.attend(q, k, v, key_padding_mask)
        if cache is not None:
            pos = torch.arange(n, device=x.device)
            for heads, group in cache.groups:
                group.append(k[:, heads], v[:, heads], pos)
            cache.peak = max(cache.peak, cache.nbytes())
            for _, group in cache.groups:
                group.evict(n - 1)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.d_model))

    # -- incremental decoding ------------------------------------------------------------------
    def new_cache(self, horizon: int):
        """An empty KV cache for this layer, one group per pattern its heads use; ``horizon`` is
        the context length (no query at or beyond it will be decoded)."""
        from .kv_cache import GroupCache, LayerCache

        groups = []
        for heads, pat in self.head_patterns():
            groups.append((heads, GroupCache(pat, len(range(self.n_heads)[heads]), horizon)))
        return LayerCache(groups)

    def decode_step(self, x: torch.Tensor, cache, position: int) -> torch.Tensor:
        """One new position: x (batch, 1, d_model) at ``position`` -> (batch, 1, d_model).

        Appends this position's key and value, attends over the cached keys the pattern allows,
        then evicts the keys no later query can use. Causal models only."""
        if not self.causal:
            raise ValueError("decode_step needs a causal layer (causal=True)")
        b = x.shape[0]
        q, k, v = self.project(x)
        scale = 1.0 / math.sqrt(q.shape[-1])
        pos = torch.tensor([position], device=x.device)
        outs = []
        for heads, group in cache.groups:
            group.append(k[:, heads], v[:, heads], pos)
            outs.append(group.attend(q[:, heads], position, scale))
        cache.peak = max(cache.peak, cache.nbytes())
        for _, group in cache.groups:
            group.evict(position)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.proj(out.transpose(1, 2).reshape(b, 1, self.d_model))
