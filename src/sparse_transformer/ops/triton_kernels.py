"""Fused sparse attention in Triton: forward, dq and dk/dv kernels over a ``TritonPlan``.

Flash-style: each program owns one tile (``block`` positions, see ``triton_plan``) of one
(batch, head) and walks the CSR list of tiles the plan gives it, with an online softmax in the
forward. Tiles the plan does not list are never loaded; listed tiles that are not full load one
deduplicated int8 mask; key padding is applied element-wise. Scores run in the log2 domain
(``exp2``) with float32 accumulation; the log-sum-exp is returned in natural log.

A forward pass may start from an earlier pass's (output, log-sum-exp): that is how parts computed
over different tilings (the strided column factor in the transposed view, then the row factor in
token order) merge without an extra kernel. Backward passes accumulate into float32 scratch in the
same way. Every program writes only its own tile, so results are deterministic (no atomics).

Rows with no allowed key keep m = -inf and l = 0: they output zeros, a log-sum-exp of -inf, and
(because the backward maps -inf to +inf before exp2) zero gradients.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _positions(tiles_ptr, offs):
    start = tl.load(tiles_ptr)
    seg = tl.load(tiles_ptr + 1)
    jump = tl.load(tiles_ptr + 2)
    return start + (offs // seg) * jump + offs % seg


@triton.jit
def _tile_mask(s, MASKS, mid, offs, BLOCK: tl.constexpr, MASK_BRANCH: tl.constexpr,
               KEY_MAJOR: tl.constexpr):
    """Scores of a listed tile with its stored mask applied (mask id -1: a full tile)."""
    if KEY_MAJOR:  # s is (keys, queries); masks are stored (queries, keys)
        idx = offs[None, :] * BLOCK + offs[:, None]
    else:
        idx = offs[:, None] * BLOCK + offs[None, :]
    if MASK_BRANCH:
        if mid >= 0:
            mk = tl.load(MASKS + mid * BLOCK * BLOCK + idx)
            s = tl.where(mk != 0, s, float("-inf"))
    else:  # predicated load: full tiles read nothing, and the loop has no branch
        mk = tl.load(MASKS + tl.maximum(mid, 0) * BLOCK * BLOCK + idx,
                     mask=(idx * 0 + mid) >= 0, other=1)
        s = tl.where(mk != 0, s, float("-inf"))
    return s


@triton.jit
def _key_scores(q, k, kpos, kin, mid, MASKS, KPM, b, N, qk_scale, offs, BLOCK: tl.constexpr,
                MASK_BRANCH: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr):
    """Scores (log2 domain) of a query tile against a listed key tile, masked by the tile's mask
    and by key padding (query-major passes: forward and dq)."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    s = _tile_mask(s, MASKS, mid, offs, BLOCK, MASK_BRANCH, False)
    if HAS_KPM:
        pad = tl.load(KPM + b * N + kpos, mask=kin, other=1)
        s = tl.where(pad[None, :] == 0, s, float("-inf"))
    return s


@triton.jit
def _load_keys(ENT, i, K, V, b, h, skb, skh, skn, svb, svh, svn, N, offs, offs_d, dmask):
    """Entry ``i`` of a query-major list: key positions, mask id and the K and V tiles."""
    ent = ENT + i * 4
    kpos = _positions(ent, offs)
    mid = tl.load(ent + 3)
    kin = (kpos < N) & (kpos >= 0)  # a prefetch past an empty list reads padding (-1)
    kmask = kin[:, None] & dmask[None, :]
    k = tl.load(K + b * skb + h * skh + kpos[:, None] * skn + offs_d[None, :], mask=kmask,
                other=0.0)
    v = tl.load(V + b * svb + h * svh + kpos[:, None] * svn + offs_d[None, :], mask=kmask,
                other=0.0)
    return kpos, kin, mid, k, v


@triton.jit
def _load_queries(ENT, i, Q, DO, LSE, DELTA, b, h, H, sqb, sqh, sqn, N, D, offs, offs_d, dmask):
    """Entry ``i`` of a key-major list: query positions, mask id, Q, dO, LSE and delta."""
    ent = ENT + i * 4
    qpos = _positions(ent, offs)
    mid = tl.load(ent + 3)
    qin = (qpos < N) & (qpos >= 0)
    qm = qin[:, None] & dmask[None, :]
    row = (b * H + h) * N + qpos
    q = tl.load(Q + b * sqb + h * sqh + qpos[:, None] * sqn + offs_d[None, :], mask=qm,
                other=0.0)
    do = tl.load(DO + row[:, None] * D + offs_d[None, :], mask=qm, other=0.0)
    lse2 = _load_lse2(LSE, row, qin)
    delta = tl.load(DELTA + row, mask=qin, other=0.0)
    return mid, q, do, lse2, delta


@triton.jit
def _load_lse2(LSE, row, inb):
    lse = tl.load(LSE + row, mask=inb, other=float("inf"))
    # Empty rows (lse = -inf) and out-of-range rows get +inf, so their probabilities are 0.
    return tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, SEED_O, SEED_LSE, KPM,
                TILES, ORDER, ROWPTR, ENT, MASKS,
                qk_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                H, N, D, T, E, HP_MUL,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr,
                MASK_BRANCH: tl.constexpr = True, PREFETCH: tl.constexpr = False):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hp = h * HP_MUL
    t = tl.load(ORDER + hp * T + pid)
    offs = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    qpos = _positions(TILES + (hp * T + t) * 3, offs)
    qin = qpos < N
    q = tl.load(Q + b * sqb + h * sqh + qpos[:, None] * sqn + offs_d[None, :],
                mask=qin[:, None] & dmask[None, :], other=0.0)
    row = (b * H + h) * N + qpos  # index of (b, h, qpos) in (B, H, N) tensors
    if HAS_SEED:
        prev = tl.load(SEED_LSE + row, mask=qin, other=float("-inf"))
        m_i = prev * 1.4426950408889634
        l_i = tl.where(prev == float("-inf"), 0.0, 1.0)
        acc = tl.load(SEED_O + row[:, None] * D + offs_d[None, :],
                      mask=qin[:, None] & dmask[None, :], other=0.0)
    else:
        m_i = tl.full([BLOCK], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK], tl.float32)
        acc = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 4
    if PREFETCH:  # the next tile's loads are issued before this tile's arithmetic
        kpos, kin, mid, k, v = _load_keys(base, tl.minimum(lo, E - 1), K, V, b, h, skb, skh,
                                          skn, svb, svh, svn, N, offs, offs_d, dmask)
    for e in range(lo, hi):
        if PREFETCH:
            kpos_n, kin_n, mid_n, k_n, v_n = _load_keys(
                base, tl.minimum(e + 1, hi - 1), K, V, b, h, skb, skh, skn, svb, svh, svn, N,
                offs, offs_d, dmask)
        else:
            kpos, kin, mid, k, v = _load_keys(base, e, K, V, b, h, skb, skh, skn, svb, svh, svn,
                                              N, offs, offs_d, dmask)
        s = _key_scores(q, k, kpos, kin, mid, MASKS, KPM, b, N, qk_scale, offs, BLOCK,
                        MASK_BRANCH, HAS_KPM, DOT_PREC)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
        if PREFETCH:
            kpos, kin, mid, k, v = kpos_n, kin_n, mid_n, k_n, v_n
    nonempty = l_i > 0
    out = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, (m_i + tl.log2(tl.where(nonempty, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(O + row[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=qin[:, None] & dmask[None, :])
    tl.store(LSE + row, lse, mask=qin)


@triton.jit
def _delta_kernel(O, DO, DLSE, DELTA, total, D, HAS_DLSE: tl.constexpr,
                  ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    m = (r < total)[:, None] & (offs_d < D)[None, :]
    o = tl.load(O + r[:, None] * D + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
    do = tl.load(DO + r[:, None] * D + offs_d[None, :], mask=m, other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + r, mask=r < total, other=0.0)
    tl.store(DELTA + r, delta, mask=r < total)


@triton.jit
def _dq_tile(pid, Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM,
               TILES, ORDER, ROWPTR, ENT, MASKS,
               qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
               H, N, D, T, E, HP_MUL,
               BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
               HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr,
               MASK_BRANCH: tl.constexpr = True, PREFETCH: tl.constexpr = False):
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hp = h * HP_MUL
    t = tl.load(ORDER + hp * T + pid)
    offs = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    qpos = _positions(TILES + (hp * T + t) * 3, offs)
    qin = qpos < N
    qm = qin[:, None] & dmask[None, :]
    row = (b * H + h) * N + qpos
    q = tl.load(Q + b * sqb + h * sqh + qpos[:, None] * sqn + offs_d[None, :], mask=qm, other=0.0)
    do = tl.load(DO + row[:, None] * D + offs_d[None, :], mask=qm, other=0.0)
    lse2 = _load_lse2(LSE, row, qin)
    delta = tl.load(DELTA + row, mask=qin, other=0.0)
    dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 4
    if PREFETCH:
        kpos, kin, mid, k, v = _load_keys(base, tl.minimum(lo, E - 1), K, V, b, h, skb, skh,
                                          skn, svb, svh, svn, N, offs, offs_d, dmask)
    for e in range(lo, hi):
        if PREFETCH:
            kpos_n, kin_n, mid_n, k_n, v_n = _load_keys(
                base, tl.minimum(e + 1, hi - 1), K, V, b, h, skb, skh, skn, svb, svh, svn, N,
                offs, offs_d, dmask)
        else:
            kpos, kin, mid, k, v = _load_keys(base, e, K, V, b, h, skb, skh, skn, svb, svh, svn,
                                              N, offs, offs_d, dmask)
        s = _key_scores(q, k, kpos, kin, mid, MASKS, KPM, b, N, qk_scale, offs, BLOCK,
                        MASK_BRANCH, HAS_KPM, DOT_PREC)
        p = tl.math.exp2(s - lse2[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
        if PREFETCH:
            kpos, kin, mid, k, v = kpos_n, kin_n, mid_n, k_n, v_n
    dq = dq * sm_scale
    if HAS_SEED:
        dq += tl.load(SEED_DQ + row[:, None] * D + offs_d[None, :], mask=qm, other=0.0)
    tl.store(DQ + row[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=qm)


@triton.jit
def _dkdv_tile(pid, Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM,
                 TILES, ORDER, ROWPTR, ENT, MASKS,
                 qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                 H, N, D, T, E, HP_MUL,
                 BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                 HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr,
                 MASK_BRANCH: tl.constexpr = True, PREFETCH: tl.constexpr = False):
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hp = h * HP_MUL
    t = tl.load(ORDER + hp * T + pid)
    offs = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    kpos = _positions(TILES + (hp * T + t) * 3, offs)
    kin = kpos < N
    km = kin[:, None] & dmask[None, :]
    krow = (b * H + h) * N + kpos
    k = tl.load(K + b * skb + h * skh + kpos[:, None] * skn + offs_d[None, :], mask=km, other=0.0)
    v = tl.load(V + b * svb + h * svh + kpos[:, None] * svn + offs_d[None, :], mask=km, other=0.0)
    dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    if HAS_KPM:
        kpad = tl.load(KPM + b * N + kpos, mask=kin, other=1)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 4
    if PREFETCH:
        mid, q, do, lse2, delta = _load_queries(base, tl.minimum(lo, E - 1), Q, DO, LSE, DELTA,
                                                b, h, H, sqb, sqh, sqn, N, D, offs, offs_d, dmask)
    for e in range(lo, hi):
        if PREFETCH:
            mid_n, q_n, do_n, lse2_n, delta_n = _load_queries(
                base, tl.minimum(e + 1, hi - 1), Q, DO, LSE, DELTA, b, h, H, sqb, sqh, sqn, N, D,
                offs, offs_d, dmask)
        else:
            mid, q, do, lse2, delta = _load_queries(base, e, Q, DO, LSE, DELTA, b, h, H, sqb,
                                                    sqh, sqn, N, D, offs, offs_d, dmask)
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale  # (keys, queries)
        st = _tile_mask(st, MASKS, mid, offs, BLOCK, MASK_BRANCH, True)
        if HAS_KPM:
            st = tl.where(kpad[:, None] == 0, st, float("-inf"))
        pt = tl.math.exp2(st - lse2[None, :])
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=DOT_PREC)
        if PREFETCH:
            mid, q, do, lse2, delta = mid_n, q_n, do_n, lse2_n, delta_n
    dk = dk * sm_scale
    if HAS_SEED:
        dk += tl.load(SEED_DK + krow[:, None] * D + offs_d[None, :], mask=km, other=0.0)
        dv += tl.load(SEED_DV + krow[:, None] * D + offs_d[None, :], mask=km, other=0.0)
    tl.store(DK + krow[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=km)
    tl.store(DV + krow[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=km)


@triton.jit
def _bwd_kernel(Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, DK, DV, SEED_DK, SEED_DV, KPM,
                QTILES, QORDER, QROWPTR, QENT, KTILES, KORDER, KROWPTR, KENT, MASKS,
                qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                H, N, D, TQ, EQ, TK, EK, HP_MUL,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                DQ_SEED: tl.constexpr, KV_SEED: tl.constexpr, DOT_PREC: tl.constexpr,
                MASK_BRANCH: tl.constexpr, PREFETCH: tl.constexpr = False):
    """One launch for a backward pass: the first TQ programs compute dq tiles, the rest dk/dv."""
    pid = tl.program_id(0)
    if pid < TQ:
        _dq_tile(pid, Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, QTILES, QORDER, QROWPTR, QENT,
                 MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                 H, N, D, TQ, EQ, HP_MUL, BLOCK, BLOCK_D, HAS_KPM, DQ_SEED, DOT_PREC,
                 MASK_BRANCH, PREFETCH)
    else:
        _dkdv_tile(pid - TQ, Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, KTILES,
                   KORDER, KROWPTR, KENT, MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh,
                   skn, svb, svh, svn, H, N, D, TK, EK, HP_MUL, BLOCK, BLOCK_D, HAS_KPM,
                   KV_SEED, DOT_PREC, MASK_BRANCH, PREFETCH)


@triton.jit
def _dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, TILES, ORDER, ROWPTR, ENT, MASKS,
               qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
               H, N, D, T, E, HP_MUL,
               BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
               HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, MASK_BRANCH: tl.constexpr,
               PREFETCH: tl.constexpr = False):
    """dq alone (for large passes, where one kernel per role keeps register use lower)."""
    _dq_tile(tl.program_id(0), Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, TILES, ORDER, ROWPTR,
             ENT, MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
             H, N, D, T, E, HP_MUL, BLOCK, BLOCK_D, HAS_KPM, HAS_SEED, DOT_PREC, MASK_BRANCH,
             PREFETCH)


@triton.jit
def _dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM,
                 TILES, ORDER, ROWPTR, ENT, MASKS,
                 qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                 H, N, D, T, E, HP_MUL,
                 BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                 HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, MASK_BRANCH: tl.constexpr,
                 PREFETCH: tl.constexpr = False):
    """dk and dv alone (see ``_dq_kernel``)."""
    _dkdv_tile(tl.program_id(0), Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, TILES,
               ORDER, ROWPTR, ENT, MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn,
               svb, svh, svn, H, N, D, T, E, HP_MUL, BLOCK, BLOCK_D, HAS_KPM, HAS_SEED,
               DOT_PREC, MASK_BRANCH, PREFETCH)
