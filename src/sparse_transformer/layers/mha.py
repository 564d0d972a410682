"""``SparseMultiheadAttention``: a stand-in for ``torch.nn.MultiheadAttention`` with any pattern.

Same constructor and ``forward`` argument names where they mean the same thing, and the same
parameter names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``; ``q_proj_weight``,
``k_proj_weight``, ``v_proj_weight`` when ``kdim`` or ``vdim`` differ from ``embed_dim``), so the
weights of a ``torch.nn.MultiheadAttention`` load with ``load_state_dict``. With the Dense
pattern the outputs and gradients are those of the PyTorch module (tested). Differences:

* ``pattern`` says what may attend to what, ``causal`` whether keys after the query are hidden
  (``is_causal`` in ``forward`` overrides it per call). ``attn_mask`` is not taken: the pattern
  replaces it (passing one is an error, except as the hint that accompanies ``is_causal=True``).
* ``need_weights=True`` is refused: no attention matrix is ever built. ``forward`` returns
  ``(output, None)``.
* ``dropout`` zeroes elements of the layer's *output* in training (this project's convention:
  dropout only at the end of a residual branch, never inside attention), not the attention
  weights as PyTorch does. With ``dropout=0`` or in eval mode both modules compute the same.
* A query whose keys are all padding outputs zeros with zero gradients (PyTorch gives NaN).
* ``add_bias_kv`` and ``add_zero_attn`` are not supported.

Queries sit at positions ``q_offset + i`` and keys at ``j`` (``q_offset`` defaults to
``key_len - query_len``, see ``sparse_attention``), so one module serves self-attention,
decoding against cached keys and, with the Dense pattern, cross-attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import sparse_attention
from ..patterns import Dense, Pattern


class SparseMultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None, *,
                 pattern: Pattern | None = None, causal: bool = False, backend: str = "auto"):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported (both must be False)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        pattern = Dense() if pattern is None else pattern
        if not isinstance(pattern, Pattern):
            raise TypeError(f"pattern must be a sparse_transformer.patterns.Pattern, got "
                            f"{type(pattern).__name__}")
        kw = dict(device=device, dtype=dtype)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.pattern, self.causal, self.backend = pattern, causal, backend
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self._reset_parameters()

    def _reset_parameters(self):
        """PyTorch's initialisation: Xavier-uniform projections, zero biases."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        e = self.embed_dim
        b = (None, None, None) if self.in_proj_bias is None else self.in_proj_bias.split(e)
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight.split(e)
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        return [F.linear(x, wi, bi) for x, wi, bi in zip((query, key, value), w, b)]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool | None = None, *, q_offset: int | None = None,
                query_padding_mask: torch.Tensor | None = None):
        """query (L, N, E) or (N, L, E) with ``batch_first`` (or unbatched (L, E)); key (S, N,
        kdim), value (S, N, vdim) likewise. ``key_padding_mask``: bool (N, S), True marks
        padding keys; ``query_padding_mask``: bool (N, L), True marks padding queries (zero
        output). Returns ``(output, None)`` with output shaped like ``query``."""
        if need_weights:
            raise ValueError("need_weights=True is not supported: SparseMultiheadAttention never "
                             "builds the attention matrix (pass need_weights=False)")
        causal = self.causal if is_causal is None else bool(is_causal)
        if attn_mask is not None and not (is_causal is True):
            raise ValueError("attn_mask is not supported: the pattern says what may attend to "
                             "what (attn_mask is accepted only as the hint that comes with "
                             "is_causal=True)")
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be a bool tensor (True = padding), got "
                             f"{key_padding_mask.dtype}")
        unbatched = query.dim() == 2
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError("query, key, value must all be 3-D (batched) or all 2-D (unbatched), "
                             f"got {query.dim()}-D, {key.dim()}-D, {value.dim()}-D")
        if unbatched:
            query, key, value = (x.unsqueeze(1) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
            if query_padding_mask is not None:
                query_padding_mask = query_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # Now (L, N, E): project, then heads (N, H, L, D).
        q, k, v = self._project(query, key, value)
        h, d = self.num_heads, self.head_dim
        q, k, v = (x.reshape(x.shape[0], x.shape[1], h, d).permute(1, 2, 0, 3) for x in (q, k, v))
        out = sparse_attention(q, k, v, self.pattern, causal=causal,
                               key_padding_mask=key_padding_mask, backend=self.backend,
                               q_offset=q_offset, query_padding_mask=query_padding_mask)
        out = out.permute(2, 0, 1, 3).reshape(out.shape[2], out.shape[0], self.embed_dim)
        out = F.dropout(self.out_proj(out), self.dropout, self.training)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, None
