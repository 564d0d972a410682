"""The "flex" backend: PyTorch's FlexAttention driven by the layout derived from the pattern.

The BlockMask is built by hand from the pattern's block layout (``Pattern.block_layout``):
full tiles skip the element-wise mask, partial tiles look their mask up in a deduplicated table
of tile masks evaluated from the predicate, so the mask function is traceable for every pattern
(random ones included) and no n x n tensor is built. Block masks are cached per pattern, length,
heads, causality and device; key padding is applied in the mask function (with padding, every
listed tile counts as partial, since FlexAttention skips the mask function on full tiles).

A strided column factor (``Column`` among the pattern's disjoint parts) has an allowed key in
every tile below the diagonal in token order, so no tile could be skipped. It runs as its own
FlexAttention call in the paper's transposed order instead (positions sorted by residue modulo
the stride, then by row), where its tiles are few and dense. The other parts run in token order,
and the two results merge through their log-sum-exps, which FlexAttention differentiates.

FlexAttention has no backward on the CPU (only a forward), and is fast only compiled on a GPU:
on CUDA the compiled function is used, on the CPU the eager one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..patterns import Column, Pattern, Union, block_layout
from .triton_plan import _token_tiles, tile_positions

BLOCK = 128
_EVAL_ELEMENTS = 1 << 24


def flex_importable() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@lru_cache(maxsize=32)
def _layout_tables(pattern: Pattern, n: int, heads: int, causal: bool, device: str, block: int):
    """Block tables for BlockMask plus (tile id per tile, unique tile masks) for the mask_mod."""
    hp = heads if pattern.per_head else 1
    lay = block_layout(pattern, n, block, hp, causal, device=device)
    active, full = lay.active, lay.full
    partial = active & ~full
    tiles = _token_tiles(n, block, device)
    h_idx, qi, ki = partial.nonzero(as_tuple=True)
    masks = []
    step = max(1, _EVAL_ELEMENTS // (block * block))
    for s in range(0, qi.numel(), step):
        qp = tile_positions(tiles[qi[s:s + step]], block)
        kp = tile_positions(tiles[ki[s:s + step]], block)
        ok = pattern.allowed(qp[:, :, None], kp[:, None, :], h_idx[s:s + step, None, None])
        ok = ok & (kp < n)[:, None, :] & (qp < n)[:, :, None]
        if causal:
            ok = ok & (kp[:, None, :] <= qp[:, :, None])
        masks.append(ok)
    nb = lay.num_blocks
    # Tile 0 masks everything (inactive tiles), tile 1 allows everything (full tiles): the
    # mask_mod must be right everywhere, since eager FlexAttention evaluates it on every pair.
    tile_id = full.to(torch.int32)
    uniq = torch.stack([torch.zeros(block, block, dtype=torch.bool, device=device),
                        torch.ones(block, block, dtype=torch.bool, device=device)])
    if masks:
        flat = torch.cat(masks)
        found, inv = torch.unique(flat.reshape(flat.shape[0], -1), dim=0, return_inverse=True)
        uniq = torch.cat([uniq, found.view(-1, block, block)])
        tile_id[h_idx, qi, ki] = 2 + inv.to(torch.int32)

    def csr(sel):
        counts = sel.sum(-1).to(torch.int32)
        order = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[None].contiguous(), order[None].contiguous()

    return csr(partial), csr(full), csr(active), tile_id, uniq


def build_block_mask(pattern: Pattern, n: int, heads: int, causal: bool, device,
                     key_padding_mask=None, block: int = BLOCK):
    """A FlexAttention BlockMask for ``pattern`` (tables cached; the mask_mod adds padding)."""
    from torch.nn.attention.flex_attention import BlockMask

    dev = torch.device(device)
    (kv_num, kv_idx), (full_num, full_idx), active, tile_id, uniq = _layout_tables(
        pattern, n, heads, causal, str(dev), block)
    if key_padding_mask is not None:
        # FlexAttention skips the mask function on full tiles, and padding can fall anywhere:
        # every listed tile is partial then.
        (kv_num, kv_idx), full_num, full_idx = active, None, None
    per_head = tile_id.shape[0] > 1
    last = tile_id.shape[1] - 1

    def mask_mod(b, h, q_idx, kv_idx):
        hh = h if per_head else 0
        tid = tile_id[hh, torch.clamp(q_idx // block, max=last), torch.clamp(kv_idx // block, max=last)]
        ok = uniq[tid, q_idx % block, kv_idx % block]
        if key_padding_mask is not None:
            ok = ok & ~key_padding_mask[b, torch.clamp(kv_idx, max=n - 1)]
        return ok

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=mask_mod, seq_lengths=(n, n))


def flex_attention_backend(q, k, v, pattern: Pattern, causal: bool = True,
                           key_padding_mask=None, scale=None, return_lse: bool = False):
    """Sparse attention through FlexAttention; same arguments and results as every backend."""
    b, h, n, d = q.shape
    split = column_split(pattern, n)
    if split is None:
        out, lse = _flex(q, k, v, pattern, causal, key_padding_mask, scale)
    else:
        column, rest = split
        order, inverse = _transposed_order(n, column.stride, str(q.device))
        kpm_t = None if key_padding_mask is None else key_padding_mask[:, order]
        o1, l1 = _flex(q[:, :, order], k[:, :, order], v[:, :, order],
                       _TransposedColumn(column, n, causal), False, kpm_t, scale)
        o1, l1 = o1[:, :, inverse], l1[:, :, inverse]
        o2, l2 = _flex(q, k, v, rest, causal, key_padding_mask, scale)
        out, lse = _merge(o1, l1, o2, l2)
    return (out, lse) if return_lse else out


def column_split(pattern: Pattern, n: int):
    """(column part, the other parts) when ``pattern`` has a strided column part worth running in
    the transposed order (at least two rows), else None."""
    if pattern.per_head:
        return None
    parts = pattern.parts()
    cols = [p for p in parts if isinstance(p, Column) and n >= 2 * p.stride]
    if not cols or len(parts) < 2:
        return None
    rest = [p for p in parts if p is not cols[0]]
    return cols[0], (rest[0] if len(rest) == 1 else Union(tuple(rest)))


@lru_cache(maxsize=32)
def _transposed_order(n: int, stride: int, device: str):
    """Token positions in transposed order (by residue modulo ``stride``, then by row), and the
    inverse permutation."""
    pos = torch.arange(n, device=device)
    order = torch.argsort((pos % stride) * n + pos)
    return order, torch.argsort(order)


@dataclass(frozen=True)
class _TransposedColumn(Pattern):
    """A column part over transposed-order indices, causality included (``causal`` is the
    attention's): only used to build the block tables of the transposed FlexAttention call."""

    column: Column
    n: int
    causal: bool

    def allowed(self, q, k, h):
        order, _ = _transposed_order(self.n, self.column.stride, str(q.device))
        qp = order[q.clamp(0, self.n - 1)]
        kp = order[k.clamp(0, self.n - 1)]
        ok = self.column.allowed(qp, kp, h) & (q < self.n) & (k < self.n)
        return ok & (kp <= qp) if self.causal else ok


def _flex(q, k, v, pattern, causal: bool, key_padding_mask, scale):
    from torch.nn.attention.flex_attention import flex_attention

    b, h, n, d = q.shape
    bm = build_block_mask(pattern, n, h, causal, q.device, key_padding_mask)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    out, lse = _call(fn, q, k, v, bm, scale)
    # Rows with no allowed key: FlexAttention gives zeros; make the log-sum-exp -inf as ours.
    lse = torch.where(torch.isfinite(lse), lse.float(), torch.full_like(lse, float("-inf"),
                                                                       dtype=torch.float32))
    return out, lse


def _merge(o1, l1, o2, l2):
    """Attention over disjoint key sets combined through their log-sum-exps (differentiable; rows
    empty in both stay zero with a log-sum-exp of -inf)."""
    m = torch.maximum(l1, l2).detach()  # any shift gives the same values: no gradient through it
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    total = w1 + w2
    safe = total.clamp_min(torch.finfo(torch.float32).tiny)
    out = o1.float() * (w1 / safe)[..., None] + o2.float() * (w2 / safe)[..., None]
    lse = torch.where(total > 0, m + torch.log(safe), torch.full_like(m, float("-inf")))
    return out.to(o1.dtype), lse


def _call(fn, q, k, v, bm, scale):
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:
        return fn(q, k, v, block_mask=bm, scale=scale, return_lse=True)
    out, aux = fn(q, k, v, block_mask=bm, scale=scale, return_aux=AuxRequest(lse=True))
    return out, aux.lse
