"""The Sparse Transformer (Child et al. 2019, section 5): pre-norm residual blocks over bytes.

    H_0 = embed(X);  H_k = H_{k-1} + a(H_{k-1}) + b(H_{k-1});  y = softmax(norm(H_N) W_out)
    a(H) = dropout(attention(norm(H)));  b(H) = dropout(ff(norm(H + a(H))))
    ff(x) = W2 f(W1 x + b1) + b2,  f(x) = x * sigmoid(1.702 x)

Initialisation: weights N(0, std=sqrt(0.125 / fan_in)), token embedding std sqrt(0.125 / d),
position embeddings std 0.125 / sqrt(d * n_emb), biases and output logits zero, and the attention
output projection and W2 additionally scaled by 1 / sqrt(2 N).

The paper writes N(0, 0.125 / sqrt(d_in)) without saying what the second argument is. We chose
per tensor by measurement (demo preset, CPU, mean bits/byte over steps 100-120; single runs, and
two seeds of one setting differed by 0.11): 0.125 / sqrt(d_in) itself as the standard deviation
of every tensor gave 4.20; std sqrt(0.125 / (d_in)) everywhere, position embeddings included, gave
4.20 and 4.09 (position then outweighs the token at initialisation); this choice gave 3.96 and,
with another draw of the position embeddings, 3.76.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import SparseSelfAttention
from .config import ModelConfig
from .memory import FF_CHUNK


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


# No tensor the feed-forward forms holds more elements than this: long inputs run in chunks, so
# that no kernel meets an element offset past 2**31 (32-bit indexing).
MAX_ELEMENTS = 2**31 - 1


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: float):
        super().__init__()
        hidden = int(round(d_model * mult))
        self.hidden = hidden
        self.w1 = nn.Linear(d_model, hidden)
        self.act = QuickGELU()
        self.w2 = nn.Linear(hidden, d_model)

    def _ff(self, x):
        return self.w2(self.act(self.w1(x)))

    def forward(self, x, chunk: int = 0):
        """``chunk`` > 0 (``"full"`` checkpointing): inputs of more than ``chunk`` positions run
        ``chunk`` positions at a time, each chunk recomputed in the backward pass, so that autograd
        holds one chunk's hidden activations instead of the whole sequence's. Any input whose
        hidden activation would pass ``MAX_ELEMENTS`` runs in chunks too. Exact either way: the
        feed-forward acts on each position alone."""
        width = x.shape[-1]
        tokens = x.numel() // max(1, width)
        step = max(1, MAX_ELEMENTS // max(self.hidden, width))
        if chunk > 0:
            step = min(step, chunk)
        if tokens <= step:
            return self._ff(x)
        recompute = chunk > 0 and torch.is_grad_enabled()
        parts = x.reshape(tokens, width).split(step)
        outs = [checkpoint(self._ff, p, use_reentrant=False) if recompute else self._ff(p)
                for p in parts]
        return torch.cat(outs).reshape(*x.shape[:-1], outs[0].shape[-1])


class ResidualBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.norm_a = nn.LayerNorm(cfg.d_model)
        self.attn = SparseSelfAttention(cfg.d_model, cfg.n_heads, cfg.build_pattern(), cfg.mode,
                                        layer_index=index, causal=True, qk_ratio=cfg.qk_ratio,
                                        backend=cfg.backend)
        self.norm_b = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg.d_model, cfg.ff_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def attention_branch(self, h, key_padding_mask=None, cache=None):
        """a(H) = dropout(attention(norm(H)))."""
        return self.drop(self.attn(self.norm_a(h), key_padding_mask, cache=cache))

    def forward(self, h, key_padding_mask=None, cache=None, recompute_attention: bool = False,
                branches_only: bool = False, ff_chunk: int = 0):
        """H + a(H) + b(H); with ``branches_only``, a(H) + b(H) from an input stored in a lower
        precision (read as float32), for the caller to add to the exact H. ``ff_chunk``: see
        ``FeedForward.forward``."""
        if branches_only:
            h = h.float()
        if recompute_attention and cache is None:
            a = checkpoint(self.attention_branch, h, key_padding_mask, use_reentrant=False)
        else:
            a = self.attention_branch(h, key_padding_mask, cache)
        b = self.drop(self.ff(self.norm_b(h + a), chunk=ff_chunk))
        return a + b if branches_only else h + a + b

    def decode_step(self, h, cache, position: int):
        a = self.drop(self.attn.decode_step(self.norm_a(h), cache, position))
        b = self.drop(self.ff(self.norm_b(h + a)))
        return h + a + b


class PositionEmbedding(nn.Module):
    """Learned position embeddings, one table per dimension (factorized or of the data)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.position == "factorized":
            self.dims = (-(-cfg.seq_len // cfg.stride), cfg.stride)
        elif cfg.position == "data":
            self.dims = tuple(cfg.data_shape)
        else:
            self.dims = ()
        self.tables = nn.ParameterList(
            [nn.Parameter(torch.empty(size, cfg.d_model)) for size in self.dims])
        std = 0.125 / math.sqrt(cfg.d_model * max(1, len(self.dims)))
        for t in self.tables:
            nn.init.normal_(t, std=std)

    def forward(self, positions: torch.Tensor) -> torch.Tensor | float:
        """positions: long (n,) -> (n, d) sum of the per-dimension embeddings."""
        out = 0.0
        rem = positions
        for size, table in zip(reversed(self.dims), reversed(list(self.tables))):
            out = out + table[rem % size]
            rem = rem // size
        return out


class SparseTransformer(nn.Module):
    ff_chunk = FF_CHUNK  # positions per feed-forward chunk under "full" checkpointing

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = PositionEmbedding(cfg)
        self.blocks = nn.ModuleList([ResidualBlock(cfg, i) for i in range(cfg.n_layers)])
        self._graphed = None  # per-block CUDA-graph callables (compile_blocks)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        cfg = self.cfg
        resid = 1.0 / math.sqrt(2 * cfg.n_layers)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=math.sqrt(0.125 / m.in_features))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for blk in self.blocks:
            blk.attn.proj.weight.data.mul_(resid)
            blk.ff.w2.weight.data.mul_(resid)
        nn.init.normal_(self.tok.weight, std=math.sqrt(0.125 / cfg.d_model))
        nn.init.zeros_(self.head.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        n = x.shape[1]
        pos = torch.arange(offset, offset + n, device=x.device)
        return self.tok(x) + self.pos(pos)

    def forward(self, x: torch.Tensor, key_padding_mask=None) -> torch.Tensor:
        """x: long (batch, seq) of byte values -> logits (batch, seq, vocab) in float32."""
        if x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"x must be a long tensor (batch, seq), got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the model's seq_len "
                             f"{self.cfg.seq_len}")
        h = self.embed(x)
        mode = "none"
        training = self.training and torch.is_grad_enabled()
        if training:
            mode = self.checkpoint_mode(x.numel(), x.device)
        # CUDA graphs replay only training steps without block recomputation: their outputs
        # live in the graphs' memory pool until the next step (marked here), which evaluation
        # and sampling loops, calling the same blocks again and again, would overwrite.
        whole = mode in ("block", "full")  # every block recomputed
        graphed = training and not whole and self._graphed is not None
        if graphed:
            torch.compiler.cudagraph_mark_step_begin()
        low = whole and self._stores_bf16(x.device)
        # "full": the recomputed block's feed-forward runs in chunks, each recomputed once more
        chunk = self.ff_chunk if mode == "full" else 0
        for i, blk in enumerate(self.blocks):
            if low:  # the recomputed block's input kept in bf16: half the memory of "block"
                h = h + checkpoint(blk, h.to(torch.bfloat16), key_padding_mask,
                                   use_reentrant=False, branches_only=True, ff_chunk=chunk)
            elif whole:
                h = checkpoint(blk, h, key_padding_mask, use_reentrant=False, ff_chunk=chunk)
            elif graphed:
                h = self._graphed[i](h, key_padding_mask, recompute_attention=mode == "attention")
            else:
                h = blk(h, key_padding_mask, recompute_attention=mode == "attention")
        return self.head(self.norm(h)).float()

    def _stores_bf16(self, device) -> bool:
        """Whether "block" / "full" checkpointing keeps block inputs in bf16
        (``cfg.checkpoint_storage`` "auto" under bf16 autocast)."""
        dev = torch.device(device).type
        return (self.cfg.checkpoint_storage == "auto" and torch.is_autocast_enabled(dev)
                and torch.get_autocast_dtype(dev) == torch.bfloat16)

    def checkpoint_mode(self, tokens: int, device) -> str:
        """The activation checkpointing this training forward uses: ``cfg.checkpointing``, with
        "auto" resolved once from the device's free memory (``models.memory``)."""
        mode = self.cfg.checkpointing
        if mode != "auto":
            return mode
        key = (tokens, str(device))
        if getattr(self, "_auto_mode", (None,))[0] != key:
            from .memory import available_bytes, choose_checkpointing

            act = 4 if not torch.is_autocast_enabled(torch.device(device).type) else 2
            chosen = choose_checkpointing(self.cfg, tokens, self.num_parameters(),
                                          available_bytes(device), act_bytes=act,
                                          stream_bytes=2 if self._stores_bf16(device) else 4)
            self._auto_mode = (key, chosen)
        return self._auto_mode[1]

    def prepare(self, seq_len: int, device) -> None:
        """Build every layer's attention plans for ``seq_len`` on ``device`` now."""
        for blk in self.blocks:
            blk.attn.prepare(seq_len, device)

    def compile_blocks(self, cuda_graphs: bool = False, **options) -> None:
        """Regional compilation: ``torch.compile`` each residual block in place (the blocks share
        one compiled graph per distinct pattern, so depth does not multiply the compile time).
        Weights and state-dict names are unchanged. ``cuda_graphs``: training steps also run
        each block as a replayed CUDA graph (``mode="reduce-overhead"``, static shapes);
        evaluation and sampling keep the plain compiled blocks."""
        for blk in self.blocks:
            blk.compile(**options)
        if cuda_graphs:
            self._graphed = [torch.compile(blk.forward, mode="reduce-overhead", **options)
                             for blk in self.blocks]

    # -- incremental decoding ------------------------------------------------------------------
    def new_cache(self):
        """An empty KV cache for incremental decoding (see ``layers.kv_cache``)."""
        from ..layers.kv_cache import KVCache

        n = self.cfg.seq_len
        return KVCache([blk.attn.new_cache(n) for blk in self.blocks], horizon=n)

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, cache) -> torch.Tensor:
        """Full forward over a prefix x (batch, n) that fills an empty ``cache``; returns the
        logits (batch, n, vocab). Decoding continues at position n with ``decode_step``."""
        if cache.length:
            raise ValueError("prefill needs an empty cache (cache.length == 0)")
        if x.dim() != 2 or x.dtype != torch.long or x.shape[1] > self.cfg.seq_len:
            raise ValueError(f"x must be a long tensor (batch, n <= {self.cfg.seq_len}), "
                             f"got {x.dtype} {tuple(x.shape)}")
        h = self.embed(x)
        for blk, layer_cache in zip(self.blocks, cache.layers):
            h = blk(h, None, cache=layer_cache)
        cache.length = x.shape[1]
        return self.head(self.norm(h)).float()

    @torch.no_grad()
    def decode_step(self, tokens: torch.Tensor, cache) -> torch.Tensor:
        """Logits (batch, vocab) for the byte after ``tokens`` (long, (batch,)), which sit at
        position ``cache.length``; the cache is updated. Equals ``forward`` on the whole prefix."""
        pos = cache.length
        if pos >= self.cfg.seq_len:
            raise ValueError(f"the cache is full: position {pos} is past the context "
                             f"(seq_len={self.cfg.seq_len}); start a new cache")
        h = self.embed(tokens.view(-1, 1), offset=pos)
        for blk, layer_cache in zip(self.blocks, cache.layers):
            h = blk.decode_step(h, layer_cache, pos)
        cache.length = pos + 1
        return self.head(self.norm(h))[:, 0].float()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per byte."""
        logits = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
