"""The "flex" backend: PyTorch's FlexAttention driven by the layout derived from the pattern.

The BlockMask is built by hand from the pattern's block layout (``Pattern.block_layout``):
full tiles skip the element-wise mask, partial tiles look their mask up in a deduplicated table
of tile masks evaluated from the predicate, so the mask function is traceable for every pattern
(random ones included) and no n x n tensor is built. Block masks are cached per pattern, length,
heads, causality and device; key padding is applied in the mask function (with padding, every
listed tile counts as partial, since FlexAttention skips the mask function on full tiles).

A strided column factor (a part whose ``structure()`` is a "column") has an allowed key in
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

from ...patterns import Pattern, Union, block_layout
from ...patterns.structure import Structure
from ..merge import merge_partials
from ..tiles import tile_pair_masks, token_tiles

BLOCK = 128


def flex_importable() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception:
        return False
    return True


@lru_cache(maxsize=1)  # one compiled function for the process (it takes no arguments)
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
    tiles = token_tiles(n, block, device)
    h_idx, qi, ki = partial.nonzero(as_tuple=True)
    masks = [ok & q_in for ok, q_in in tile_pair_masks(pattern, n, causal, tiles, tiles, qi, ki,
                                                        h_idx, block)]
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
    """A FlexAttention BlockMask for ``pattern`` (tables cached; the mask_mod adds padding).

    Without padding the whole BlockMask is cached: building one costs milliseconds of host time,
    more than the attention itself for short sequences."""
    if key_padding_mask is None:
        return _cached_block_mask(pattern, n, heads, causal, str(torch.device(device)), block)
    return _block_mask(pattern, n, heads, causal, device, key_padding_mask, block)


@lru_cache(maxsize=32)
def _cached_block_mask(pattern: Pattern, n: int, heads: int, causal: bool, device: str,
                       block: int):
    return _block_mask(pattern, n, heads, causal, device, None, block)


def _block_mask(pattern: Pattern, n: int, heads: int, causal: bool, device, key_padding_mask,
                block: int):
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

    def table_mask_mod(b, h, q_idx, kv_idx):
        hh = h if per_head else 0
        tid = tile_id[hh, torch.clamp(q_idx // block, max=last), torch.clamp(kv_idx // block, max=last)]
        ok = uniq[tid, q_idx % block, kv_idx % block]
        if key_padding_mask is not None:
            ok = ok & ~key_padding_mask[b, torch.clamp(kv_idx, max=n - 1)]
        return ok

    def predicate_mask_mod(b, h, q_idx, kv_idx):
        ok = pattern.allowed(q_idx, kv_idx, h)
        if causal:
            ok = ok & (kv_idx <= q_idx)
        if key_padding_mask is not None:
            ok = ok & ~key_padding_mask[b, torch.clamp(kv_idx, max=n - 1)]
        return ok

    # A predicate of plain arithmetic is cheaper inside the kernel than two table look-ups.
    mask_mod = predicate_mask_mod if pattern.traceable else table_mask_mod

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=mask_mod, seq_lengths=(n, n))


def flex_attention_backend(q, k, v, pattern: Pattern, causal: bool = True,
                           key_padding_mask=None, scale=None, return_lse: bool = False):
    """Sparse attention through FlexAttention; same arguments and results as every backend.
    FlexAttention's kernels form 32-bit element offsets: views whose offsets pass 2**31 (q, k, v
    taken from one packed projection at 1.4M positions of width 512) are copied contiguous, and
    tensors of 2**31 elements or more are refused (the Triton backend takes them)."""
    from ..dispatch import past_int32

    if any(t.numel() >= 2**31 for t in (q, k, v)):
        raise ValueError(f"backend='flex' takes q, k and v of fewer than 2**31 elements, got "
                         f"shape {tuple(q.shape)}; use backend='triton' (64-bit offsets) or 'auto'")
    q, k, v = (t.contiguous() if past_int32(t) else t for t in (q, k, v))
    b, h, n, d = q.shape
    special, rest = split_parts(pattern, n)
    results = []
    for part in special:
        if part.structure().kind == "column":
            results.append(_transposed_call(q, k, v, part, causal, key_padding_mask, scale))
        else:
            results.append(_summary_call(q, k, v, part, causal, key_padding_mask, scale))
    if rest is not None:
        # The log-sum-exp costs FlexAttention time: asked for only when merged or returned.
        need = return_lse or bool(special)
        results.append(_flex(q, k, v, rest, causal, key_padding_mask, scale, need))
    # Disjoint parts combine through their log-sum-exps (differentiable, empty rows stay zero).
    out, lse = merge_partials([o for o, _ in results], [l for _, l in results])
    return (out, lse) if return_lse else out


def split_parts(pattern: Pattern, n: int):
    """(parts with their own FlexAttention call, the rest as one pattern or None).

    A strided column part runs in the transposed order and a fixed summary part over its
    gathered summary keys when the sequence holds at least two strides; everything else runs in
    token order. Parts are disjoint (``Pattern.parts``), so their results merge exactly."""
    parts = pattern.parts()
    if len(parts) < 2 or pattern.structure().kind == "per_head":
        return [], pattern
    special = [p for p in parts if p.structure().kind in ("column", "summary")
               and n >= 2 * p.structure().stride]
    rest = [p for p in parts if not any(p is x for x in special)]
    if not special:
        return [], pattern
    return special, (None if not rest else rest[0] if len(rest) == 1 else Union(tuple(rest)))


def _transposed_call(q, k, v, column: Pattern, causal: bool, key_padding_mask, scale):
    n = q.shape[2]
    order, inverse = _transposed_order(n, column.structure().stride, str(q.device))
    kpm = None if key_padding_mask is None else key_padding_mask[:, order]
    out, lse = _flex(q[:, :, order], k[:, :, order], v[:, :, order],
                     _TransposedColumn(column, n, causal), False, kpm, scale)
    return out[:, :, inverse], lse[:, :, inverse]


def _summary_position(s, h, st: Structure):
    """Token position of summary key ``s`` (the keys of every stride block, in order) for head
    ``h`` of a "summary" part; arithmetic, so FlexAttention can trace it."""
    low = st.stride - st.summary
    if st.distinct_heads:
        low = low - (h % (st.stride // st.summary)) * st.summary
    return (s // st.summary) * st.stride + low + s % st.summary


def _summary_call(q, k, v, part: Pattern, causal: bool, key_padding_mask, scale):
    """All queries against the gathered summary keys (n * summary / stride of them)."""
    from torch.nn.attention.flex_attention import flex_attention

    b, h, n, d = q.shape
    st = part.structure()
    size = -(-n // st.stride) * st.summary
    heads = h if st.distinct_heads else 1
    pos = _summary_position(torch.arange(size, device=q.device)[None, :],
                            torch.arange(heads, device=q.device)[:, None], st).clamp(max=n - 1)
    if heads == 1:
        ks, vs = k[:, :, pos[0]], v[:, :, pos[0]]
    else:
        idx = pos[None, :, :, None].expand(b, h, size, d)
        ks, vs = k.gather(2, idx), v.gather(2, idx)
    bm = _summary_block_mask(part, n, heads, causal, str(q.device), key_padding_mask)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    return _finite_lse(*_call(fn, q, ks, vs, bm, scale))


def _summary_block_mask(part: Pattern, n: int, heads: int, causal: bool, device: str,
                        key_padding_mask):
    from torch.nn.attention.flex_attention import BlockMask

    base = _summary_base_mask(part, n, heads, causal, device)
    if key_padding_mask is None:
        return base
    # FlexAttention skips the mask function on full tiles: with padding every tile is partial.
    active = base.to_dense()[0].bool()
    num = active.sum(-1).to(torch.int32)[None].contiguous()
    idx = torch.argsort((~active).to(torch.int8), dim=-1, stable=True).to(torch.int32)[None]
    plain = base.mask_mod

    def mask_mod(b, h, q_idx, s_idx):
        kp = _summary_position(s_idx, h, part.structure()).clamp(max=n - 1)
        return plain(b, h, q_idx, s_idx) & ~key_padding_mask[b, kp]

    return BlockMask.from_kv_blocks(num, idx.contiguous(), BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
                                    seq_lengths=base.seq_lengths)


@lru_cache(maxsize=32)
def _summary_base_mask(part: Pattern, n: int, heads: int, causal: bool, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    st = part.structure()

    def mask_mod(b, h, q_idx, s_idx):
        kp = _summary_position(s_idx, h, st)
        ok = (kp < n) & part.allowed(q_idx, kp, h)
        return ok & (kp <= q_idx) if causal else ok

    size = -(-n // st.stride) * st.summary
    return create_block_mask(mask_mod, None, heads if heads > 1 else None, n, size,
                             device=device, BLOCK_SIZE=BLOCK)


@lru_cache(maxsize=32)
def _transposed_order(n: int, stride: int, device: str):
    """Token positions in transposed order (by residue modulo ``stride``, then by row), and the
    inverse permutation."""
    pos = torch.arange(n, device=device)
    order = torch.argsort((pos % stride) * n + pos)
    return order, torch.argsort(order)


def _transposed_position(i, n: int, stride: int):
    """Token position of index ``i`` of the transposed order (arithmetic, so FlexAttention can
    trace it): residues below n % stride have n // stride + 1 rows, the others n // stride."""
    rows, extra = n // stride, n % stride
    long_part = extra * (rows + 1)
    j = i - long_part
    in_long = i < long_part
    r = torch.where(in_long, i // (rows + 1), extra + j // rows)
    m = torch.where(in_long, i % (rows + 1), j % rows)
    return m * stride + r


@dataclass(frozen=True)
class _TransposedColumn(Pattern):
    """A column part over transposed-order indices, causality included (``causal`` is the
    attention's): the pattern of the transposed FlexAttention call."""

    column: Pattern  # a part whose structure() is a "column"
    n: int
    causal: bool

    @property
    def traceable(self) -> bool:
        return True

    def allowed(self, q, k, h):
        stride = self.column.structure().stride
        qp = _transposed_position(q, self.n, stride)
        kp = _transposed_position(k, self.n, stride)
        ok = self.column.allowed(qp, kp, h) & (q < self.n) & (k < self.n)
        return ok & (kp <= qp) if self.causal else ok


def _flex(q, k, v, pattern, causal: bool, key_padding_mask, scale, need_lse: bool = True):
    from torch.nn.attention.flex_attention import flex_attention

    b, h, n, d = q.shape
    bm = build_block_mask(pattern, n, h, causal, q.device, key_padding_mask)
    fn = _compiled_flex() if q.is_cuda else flex_attention
    if not need_lse:
        return fn(q, k, v, block_mask=bm, scale=scale), None
    return _finite_lse(*_call(fn, q, k, v, bm, scale))


def _finite_lse(out, lse):
    # Rows with no allowed key: FlexAttention gives zeros; make the log-sum-exp -inf as ours.
    lse = torch.where(torch.isfinite(lse), lse.float(), torch.full_like(lse, float("-inf"),
                                                                       dtype=torch.float32))
    return out, lse


def _call(fn, q, k, v, bm, scale):
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:
        return fn(q, k, v, block_mask=bm, scale=scale, return_lse=True)
    out, aux = fn(q, k, v, block_mask=bm, scale=scale, return_aux=AuxRequest(lse=True))
    return out, aux.lse
