"""Fused sparse attention in Triton: forward, dq and dk/dv kernels over a ``TritonPlan``.

Flash-style: each program owns one tile (``block`` positions, see ``plan.py``) of one
(batch, head) and walks the CSR list of runs the plan gives it, with an online softmax in the
forward. A run is either one partial tile, which loads its deduplicated int8 mask, or a sequence
of full tiles whose positions advance by a constant step: that inner loop has affine addresses
and no mask arithmetic, so Triton pipelines its loads (a run of one full tile takes a plain step
instead, without the pipelined loop's prologue and epilogue). Tiles the plan does not list are never
loaded; key padding is applied element-wise. Scores run in the log2 domain
(``exp2``) with float32 accumulation; the log-sum-exp is returned in natural log.

A forward pass may start from an earlier pass's (output, log-sum-exp): that is how parts computed
over different tilings (the strided column factor in the transposed view, then the row factor in
token order) merge without an extra kernel. Backward passes accumulate into float32 scratch in the
same way. Every program writes only its own tile, so results are deterministic (no atomics),
except in the opt-in one-pass backward (``ATOMIC_DQ``), where the dk/dv programs also add their
share of dq to a float32 buffer with atomic adds.

With ``TMA`` (Hopper, for passes whose runs are all contiguous tiles: ``plan.contiguous_runs``)
a program reads the other side's tiles through tensor descriptors made once per program
(``_descs``) instead of per-thread pointer loads: fewer instructions and registers in the inner
loop, and the loads run on the tensor-memory accelerator. Partial tiles then read their masks
through a descriptor too, which for the key-major dk/dv passes must be stored key-major.

Rows with no allowed key keep m = -inf and l = 0: they output zeros, a log-sum-exp of -inf, and
(because the backward maps -inf to +inf before exp2) zero gradients.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _pattern(seg, jump, offs):
    """Offsets of a tile's positions from its start (``ops/tiles.py``)."""
    return (offs // seg) * jump + offs % seg


@triton.jit
def _run(ENT, r):
    """Run ``r`` of a CSR list: (start, seg, jump, step, count, mask id); see ``RUN_FIELDS``."""
    ent = ENT + r * 6
    return (tl.load(ent), tl.load(ent + 1), tl.load(ent + 2), tl.load(ent + 3), tl.load(ent + 4),
            tl.load(ent + 5))


@triton.jit
def _ids(HEADS_FAST: tl.constexpr):
    """(program index within its head, batch x head index) of this program. Launch grids are
    (programs per head, batch x heads), and the GPU starts programs in grid order, axis 0
    fastest: by default head after head, each head's programs in plan order (most work first).
    With ``HEADS_FAST`` the same grid is read with the heads fastest: every head's first program,
    then every head's second, ..., so the heads' longest programs all start first."""
    if HEADS_FAST:
        heads = tl.num_programs(1)
        flat = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
        return flat // heads, flat % heads
    else:
        return tl.program_id(0), tl.program_id(1)


@triton.jit
def _program(TILES, ORDER, pid, bh, H, T, HP_MUL, BLOCK: tl.constexpr, I64: tl.constexpr):
    """What program ``pid`` of batch x head ``bh`` owns: (b, h, its head group's row hp in the
    plan, its tile t, offs = 0..BLOCK-1, the tile's positions)."""
    if I64:  # offsets past 2**31 elements: positions and rows in 64-bit arithmetic
        bh = bh.to(tl.int64)
    b = bh // H
    h = bh % H
    hp = h * HP_MUL
    t = tl.load(ORDER + hp * T + pid)
    offs = tl.arange(0, BLOCK)
    if I64:
        offs = offs.to(tl.int64)
    tile = TILES + (hp * T + t) * 3
    return b, h, hp, t, offs, tl.load(tile) + _pattern(tl.load(tile + 1), tl.load(tile + 2), offs)


@triton.jit
def _apply_mask(s, MASKS, mid, offs, BLOCK: tl.constexpr, KEY_MAJOR: tl.constexpr):
    """Scores of a partial tile with its stored mask applied (masks are stored [query, key])."""
    if KEY_MAJOR:  # s is (keys, queries)
        idx = offs[None, :] * BLOCK + offs[:, None]
    else:
        idx = offs[:, None] * BLOCK + offs[None, :]
    mk = tl.load(MASKS + mid * BLOCK * BLOCK + idx)
    return tl.where(mk != 0, s, float("-inf"))


@triton.jit
def _descs(TMA: tl.constexpr, A, a_off, sa, B, b_off, sb, MASKS, NMASK, N, D,
           BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """With ``TMA``: tensor descriptors over the rows of one (batch, head) of A and B (N x D at
    row strides sa, sb) and over the stored masks (NMASK x BLOCK x BLOCK int8), so that a run's
    contiguous tiles load through the Hopper tensor-memory accelerator: no per-thread addresses
    or bounds masks (rows past N read as zeros). Otherwise placeholders."""
    if TMA:
        return (tl.make_tensor_descriptor(A + a_off, shape=[N, D], strides=[sa, 1],
                                          block_shape=[BLOCK, BLOCK_D]),
                tl.make_tensor_descriptor(B + b_off, shape=[N, D], strides=[sb, 1],
                                          block_shape=[BLOCK, BLOCK_D]),
                tl.make_tensor_descriptor(MASKS, shape=[NMASK * BLOCK, BLOCK], strides=[BLOCK, 1],
                                          block_shape=[BLOCK, BLOCK]))
    else:
        return A, B, MASKS


@triton.jit
def _load_pair(A, B, a_off, sa, b_off, sb, pos, inb, offs_d, dmask, TMA: tl.constexpr, AD, BD,
               start):
    """The tiles of A and B (k and v, or q and dO) at positions ``pos`` (``inb``: inside the
    sequence) of one (batch, head), whose offsets are a_off / b_off and row strides sa / sb. With
    ``TMA`` the positions are start + 0..BLOCK-1, read through the descriptors AD and BD."""
    if TMA:
        return AD.load([start, 0]), BD.load([start, 0])
    else:
        m = inb[:, None] & dmask[None, :]
        a = tl.load(A + a_off + pos[:, None] * sa + offs_d[None, :], mask=m, other=0.0)
        b = tl.load(B + b_off + pos[:, None] * sb + offs_d[None, :], mask=m, other=0.0)
        return a, b


@triton.jit
def _load_lse2(LSE, row, inb):
    lse = tl.load(LSE + row, mask=inb, other=float("inf"))
    # Empty rows (lse = -inf) and out-of-range rows get +inf, so their probabilities are 0.
    return tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)


@triton.jit
def _fwd_step(q, m_i, l_i, acc, K, V, b, h, kpos, mid, MASKS, KPM, skb, skh, skn, svb, svh, svn,
              N, qk_scale, offs, offs_d, dmask, BLOCK: tl.constexpr, MASKED: tl.constexpr,
              HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr, TMA: tl.constexpr, KD, VD, MD,
              kstart):
    """One key tile of the online softmax (with ``TMA`` its positions are kstart + offs, read
    through the descriptors KD, VD and, for its mask, MD)."""
    kin = kpos < N
    k, v = _load_pair(K, V, b * skb + h * skh, skn, b * svb + h * svh, svn, kpos, kin, offs_d,
                      dmask, TMA, KD, VD, kstart)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    if MASKED:
        if TMA:
            s = tl.where(MD.load([mid * BLOCK, 0]) != 0, s, float("-inf"))
        else:
            s = _apply_mask(s, MASKS, mid, offs, BLOCK, False)
    if HAS_KPM:
        pad = tl.load(KPM + b * N + kpos, mask=kin, other=1)
        s = tl.where(pad[None, :] == 0, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    return m_new, l_i, acc


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, SEED_O, SEED_LSE, KPM,
                TILES, ORDER, ROWPTR, ENT, MASKS,
                qk_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                H, N, D, T, E, HP_MUL, NMASK,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, I64: tl.constexpr,
                HEADS_FAST: tl.constexpr, TMA: tl.constexpr):
    pid, bh = _ids(HEADS_FAST)
    b, h, hp, t, offs, qpos = _program(TILES, ORDER, pid, bh, H, T, HP_MUL, BLOCK, I64)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
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
    KD, VD, MD = _descs(TMA, K, b * skb + h * skh, skn, V, b * svb + h * svh, svn, MASKS, NMASK,
                        N, D, BLOCK, BLOCK_D)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 6
    for r in range(lo, hi):
        start, seg, jump, step, count, mid = _run(base, r)
        if TMA:  # contiguous tiles
            pat = offs
        else:
            pat = _pattern(seg, jump, offs)
        if mid >= 0:
            m_i, l_i, acc = _fwd_step(q, m_i, l_i, acc, K, V, b, h, start + pat, mid, MASKS, KPM,
                                      skb, skh, skn, svb, svh, svn, N, qk_scale, offs, offs_d,
                                      dmask, BLOCK, True, HAS_KPM, DOT_PREC, TMA, KD, VD, MD,
                                      start)
        elif count == 1 and not TMA:  # one full tile: no pipelined loop around a single step
            m_i, l_i, acc = _fwd_step(q, m_i, l_i, acc, K, V, b, h, start + pat, mid, MASKS, KPM,
                                      skb, skh, skn, svb, svh, svn, N, qk_scale, offs, offs_d,
                                      dmask, BLOCK, False, HAS_KPM, DOT_PREC, TMA, KD, VD, MD,
                                      start)
        else:
            for j in range(count):
                m_i, l_i, acc = _fwd_step(q, m_i, l_i, acc, K, V, b, h, start + j * step + pat,
                                          mid, MASKS, KPM, skb, skh, skn, svb, svh, svn, N,
                                          qk_scale, offs, offs_d, dmask, BLOCK, False, HAS_KPM,
                                          DOT_PREC, TMA, KD, VD, MD, start + j * step)
    nonempty = l_i > 0
    out = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, (m_i + tl.log2(tl.where(nonempty, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(O + b * sob + h * soh + qpos[:, None] * son + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=qin[:, None] & dmask[None, :])
    tl.store(LSE + row, lse, mask=qin)


@triton.jit
def _delta_kernel(O, DO, DLSE, DELTA, sob, soh, son, sdb, sdh, sdn, total, H, N, D,
                  HAS_DLSE: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                  I64: tl.constexpr):
    """delta = rowsum(O * dO) (minus the log-sum-exp's gradient), over rows r = (b * H + h) * N
    + position of O and dO at their own strides."""
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    if I64:
        r = r.to(tl.int64)
    bh = r // N
    pos = r % N
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, BLOCK_D)
    m = (r < total)[:, None] & (offs_d < D)[None, :]
    o = tl.load(O + (b * sob + h * soh + pos * son)[:, None] + offs_d[None, :], mask=m,
                other=0.0).to(tl.float32)
    do = tl.load(DO + (b * sdb + h * sdh + pos * sdn)[:, None] + offs_d[None, :], mask=m,
                 other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + r, mask=r < total, other=0.0)
    tl.store(DELTA + r, delta, mask=r < total)


@triton.jit
def _dq_step(q, do, lse2, delta, dq, K, V, b, h, kpos, mid, MASKS, KPM, skb, skh, skn, svb, svh,
             svn, N, qk_scale, offs, offs_d, dmask, BLOCK: tl.constexpr, MASKED: tl.constexpr,
             HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr, TMA: tl.constexpr, KD, VD, MD,
             kstart):
    """dq from one key tile (``TMA``: as in ``_fwd_step``, but masks read element-wise)."""
    kin = kpos < N
    k, v = _load_pair(K, V, b * skb + h * skh, skn, b * svb + h * svh, svn, kpos, kin, offs_d,
                      dmask, TMA, KD, VD, kstart)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
    if MASKED:
        # element-wise even with TMA: a mask tile read through a descriptor took dq from 168
        # to 179 registers (sm_90, Triton 3.6), past the 168 that let three programs share an SM
        s = _apply_mask(s, MASKS, mid, offs, BLOCK, False)
    if HAS_KPM:
        pad = tl.load(KPM + b * N + kpos, mask=kin, other=1)
        s = tl.where(pad[None, :] == 0, s, float("-inf"))
    p = tl.math.exp2(s - lse2[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
    ds = p * (dp - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)


@triton.jit
def _dq_tile(pid, bh, Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM,
             TILES, ORDER, ROWPTR, ENT, MASKS,
             qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
             sgb, sgh, sgn, H, N, D, T, E, HP_MUL, NMASK,
             BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
             HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, I64: tl.constexpr,
             TMA: tl.constexpr):
    b, h, hp, t, offs, qpos = _program(TILES, ORDER, pid, bh, H, T, HP_MUL, BLOCK, I64)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    qin = qpos < N
    qm = qin[:, None] & dmask[None, :]
    row = (b * H + h) * N + qpos
    q = tl.load(Q + b * sqb + h * sqh + qpos[:, None] * sqn + offs_d[None, :], mask=qm, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + qpos[:, None] * sdn + offs_d[None, :], mask=qm,
                 other=0.0)
    lse2 = _load_lse2(LSE, row, qin)
    delta = tl.load(DELTA + row, mask=qin, other=0.0)
    dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    KD, VD, MD = _descs(TMA, K, b * skb + h * skh, skn, V, b * svb + h * svh, svn, MASKS, NMASK,
                        N, D, BLOCK, BLOCK_D)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 6
    for r in range(lo, hi):
        start, seg, jump, step, count, mid = _run(base, r)
        if TMA:  # contiguous tiles
            pat = offs
        else:
            pat = _pattern(seg, jump, offs)
        if mid >= 0:
            dq = _dq_step(q, do, lse2, delta, dq, K, V, b, h, start + pat, mid, MASKS, KPM, skb,
                          skh, skn, svb, svh, svn, N, qk_scale, offs, offs_d, dmask, BLOCK, True,
                          HAS_KPM, DOT_PREC, TMA, KD, VD, MD, start)
        elif count == 1 and not TMA:
            dq = _dq_step(q, do, lse2, delta, dq, K, V, b, h, start + pat, mid, MASKS, KPM, skb,
                          skh, skn, svb, svh, svn, N, qk_scale, offs, offs_d, dmask, BLOCK, False,
                          HAS_KPM, DOT_PREC, TMA, KD, VD, MD, start)
        else:
            for j in range(count):
                dq = _dq_step(q, do, lse2, delta, dq, K, V, b, h, start + j * step + pat, mid,
                              MASKS, KPM, skb, skh, skn, svb, svh, svn, N, qk_scale, offs,
                              offs_d, dmask, BLOCK, False, HAS_KPM, DOT_PREC, TMA, KD, VD, MD,
                              start + j * step)
    dq = dq * sm_scale
    if HAS_SEED:
        dq += tl.load(SEED_DQ + row[:, None] * D + offs_d[None, :], mask=qm, other=0.0)
    tl.store(DQ + b * sgb + h * sgh + qpos[:, None] * sgn + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=qm)


@triton.jit
def _dkdv_step(k, v, kpad, dk, dv, Q, DO, LSE, DELTA, DQACC, b, h, H, qpos, mid, MASKS, sqb, sqh,
               sqn, sdb, sdh, sdn, N, D, qk_scale, sm_scale, offs, offs_d, dmask, BLOCK: tl.constexpr,
               MASKED: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr,
               ATOMIC_DQ: tl.constexpr, TMA: tl.constexpr, QD, DOD, MD, qstart):
    """dk and dv from one query tile (scores held transposed: keys x queries). With
    ``ATOMIC_DQ`` this tile's share of dq is added to the float32 ``DQACC`` too (one pass).
    With ``TMA`` the tile's positions are qstart + offs, read through the descriptors QD and
    DOD, and MD holds the masks stored key-major."""
    qin = qpos < N
    qm = qin[:, None] & dmask[None, :]
    row = (b * H + h) * N + qpos
    q, do = _load_pair(Q, DO, b * sqb + h * sqh, sqn, b * sdb + h * sdh, sdn, qpos, qin, offs_d,
                       dmask, TMA, QD, DOD, qstart)
    lse2 = _load_lse2(LSE, row, qin)
    delta = tl.load(DELTA + row, mask=qin, other=0.0)
    st = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale
    if MASKED:
        if TMA:
            st = tl.where(MD.load([mid * BLOCK, 0]) != 0, st, float("-inf"))
        else:
            st = _apply_mask(st, MASKS, mid, offs, BLOCK, True)
    if HAS_KPM:
        st = tl.where(kpad[:, None] == 0, st, float("-inf"))
    pt = tl.math.exp2(st - lse2[None, :])
    dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
    dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
    dst = pt * (dpt - delta[None, :])
    dst = dst.to(q.dtype)
    dk += tl.dot(dst, q, input_precision=DOT_PREC)
    if ATOMIC_DQ:
        dqp = tl.dot(tl.trans(dst), k, input_precision=DOT_PREC) * sm_scale
        tl.atomic_add(DQACC + row[:, None] * D + offs_d[None, :], dqp, mask=qm, sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_tile(pid, bh, Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, DQACC,
               TILES, ORDER, ROWPTR, ENT, MASKS, SPLIT, PARTS, DKS, DVS, CNT, S,
               qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
               sdb, sdh, sdn, sgkb, sgkh, sgkn, sgvb, sgvh, sgvn,
               H, N, D, T, E, HP_MUL, NMASK,
               BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
               HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, ATOMIC_DQ: tl.constexpr,
               I64: tl.constexpr, HAS_SPLIT: tl.constexpr, TMA: tl.constexpr):
    b, h, hp, t, offs, kpos = _program(TILES, ORDER, pid, bh, H, T, HP_MUL, BLOCK, I64)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    kin = kpos < N
    km = kin[:, None] & dmask[None, :]
    krow = (b * H + h) * N + kpos
    k = tl.load(K + b * skb + h * skh + kpos[:, None] * skn + offs_d[None, :], mask=km, other=0.0)
    v = tl.load(V + b * svb + h * svh + kpos[:, None] * svn + offs_d[None, :], mask=km, other=0.0)
    dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    if HAS_KPM:
        kpad = tl.load(KPM + b * N + kpos, mask=kin, other=1)
    else:
        kpad = kin
    QD, DOD, MD = _descs(TMA, Q, b * sqb + h * sqh, sqn, DO, b * sdb + h * sdh, sdn, MASKS, NMASK,
                         N, D, BLOCK, BLOCK_D)
    lo = tl.load(ROWPTR + hp * (T + 1) + t)
    hi = tl.load(ROWPTR + hp * (T + 1) + t + 1)
    base = ENT + hp * E * 6
    for r in range(lo, hi):
        start, seg, jump, step, count, mid = _run(base, r)
        if TMA:  # contiguous tiles
            pat = offs
        else:
            pat = _pattern(seg, jump, offs)
        if mid >= 0:
            dk, dv = _dkdv_step(k, v, kpad, dk, dv, Q, DO, LSE, DELTA, DQACC, b, h, H,
                                start + pat, mid, MASKS, sqb, sqh, sqn, sdb, sdh, sdn, N, D,
                                qk_scale, sm_scale, offs, offs_d, dmask, BLOCK, True, HAS_KPM,
                                DOT_PREC, ATOMIC_DQ, TMA, QD, DOD, MD, start)
        elif count == 1 and not TMA:
            dk, dv = _dkdv_step(k, v, kpad, dk, dv, Q, DO, LSE, DELTA, DQACC, b, h, H,
                                start + pat, mid, MASKS, sqb, sqh, sqn, sdb, sdh, sdn, N, D,
                                qk_scale, sm_scale, offs, offs_d, dmask, BLOCK, False, HAS_KPM,
                                DOT_PREC, ATOMIC_DQ, TMA, QD, DOD, MD, start)
        else:
            for j in range(count):
                dk, dv = _dkdv_step(k, v, kpad, dk, dv, Q, DO, LSE, DELTA, DQACC, b, h, H,
                                    start + j * step + pat, mid, MASKS, sqb, sqh, sqn, sdb, sdh,
                                    sdn, N, D, qk_scale, sm_scale, offs, offs_d, dmask, BLOCK,
                                    False, HAS_KPM, DOT_PREC, ATOMIC_DQ, TMA, QD, DOD, MD,
                                    start + j * step)
    dk = dk * sm_scale
    if HAS_SPLIT:  # a piece of a split row (``plan.split_rows``): the last piece writes the sum
        slot = tl.load(SPLIT + hp * T + t)
        sl = tl.maximum(slot, 0)
        zero = offs * 0  # masks as vectors (scalar & tensor masks trip the interpreter)
        piece = (zero + slot) >= 0
        sptr = (((b * H + h) * S + sl) * BLOCK + offs)[:, None] * D + offs_d[None, :]
        sm = km & piece[:, None]
        tl.atomic_add(DKS + sptr, dk, mask=sm, sem="relaxed")
        tl.atomic_add(DVS + sptr, dv, mask=sm, sem="relaxed")
        tl.debug_barrier()  # every thread's additions issued before the count goes up
        done = tl.atomic_add(CNT + (b * H + h) * S + sl, 1, mask=slot >= 0, sem="acq_rel")
        last = piece & ((zero + done) == (zero + tl.load(PARTS + sl) - 1))
        lm = sm & last[:, None]
        dk = tl.where(lm, tl.load(DKS + sptr, mask=lm, other=0.0, cache_modifier=".cg"), dk)
        dv = tl.where(lm, tl.load(DVS + sptr, mask=lm, other=0.0, cache_modifier=".cg"), dv)
        km = km & (((zero + slot) < 0) | last)[:, None]
    if HAS_SEED:
        dk += tl.load(SEED_DK + krow[:, None] * D + offs_d[None, :], mask=km, other=0.0)
        dv += tl.load(SEED_DV + krow[:, None] * D + offs_d[None, :], mask=km, other=0.0)
    tl.store(DK + b * sgkb + h * sgkh + kpos[:, None] * sgkn + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=km)
    tl.store(DV + b * sgvb + h * sgvh + kpos[:, None] * sgvn + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=km)


@triton.jit
def _bwd_kernel(Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, DK, DV, SEED_DK, SEED_DV, KPM,
                QTILES, QORDER, QROWPTR, QENT, KTILES, KORDER, KROWPTR, KENT, MASKS,
                qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                sgb, sgh, sgn, sgkb, sgkh, sgkn, sgvb, sgvh, sgvn,
                H, N, D, TQ, EQ, TK, EK, HP_MUL,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                DQ_SEED: tl.constexpr, KV_SEED: tl.constexpr, DOT_PREC: tl.constexpr,
                I64: tl.constexpr, HEADS_FAST: tl.constexpr):
    """One launch for a backward pass: the first TQ programs compute dq tiles, the rest dk/dv."""
    pid, bh = _ids(HEADS_FAST)
    if pid < TQ:
        _dq_tile(pid, bh, Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, QTILES, QORDER, QROWPTR, QENT,
                 MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
                 sdb, sdh, sdn, sgb, sgh, sgn, H, N, D, TQ, EQ, HP_MUL, 1, BLOCK, BLOCK_D, HAS_KPM,
                 DQ_SEED, DOT_PREC, I64, False)
    else:
        _dkdv_tile(pid - TQ, bh, Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, DQ,
                   KTILES, KORDER, KROWPTR, KENT, MASKS, KORDER, KORDER, DELTA, DELTA, KORDER, 0,
                   qk_scale, sm_scale, sqb, sqh, sqn, skb,
                   skh, skn, svb, svh, svn, sdb, sdh, sdn, sgkb, sgkh, sgkn, sgvb, sgvh, sgvn, H,
                   N, D, TK, EK,
                   HP_MUL, 1, BLOCK, BLOCK_D, HAS_KPM, KV_SEED, DOT_PREC, False, I64, False, False)


@triton.jit
def _dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, TILES, ORDER, ROWPTR, ENT, MASKS,
               qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
               sgb, sgh, sgn, H, N, D, T, E, HP_MUL, NMASK,
               BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
               HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, I64: tl.constexpr,
               HEADS_FAST: tl.constexpr, TMA: tl.constexpr):
    """dq alone (for large passes, where one kernel per role keeps register use lower)."""
    pid, bh = _ids(HEADS_FAST)
    _dq_tile(pid, bh, Q, K, V, DO, LSE, DELTA, DQ, SEED_DQ, KPM, TILES, ORDER, ROWPTR,
             ENT, MASKS, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn,
             sdb, sdh, sdn, sgb, sgh, sgn, H, N, D, T, E, HP_MUL, NMASK, BLOCK, BLOCK_D, HAS_KPM,
             HAS_SEED, DOT_PREC, I64, TMA)


@triton.jit
def _dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, DQACC,
                 TILES, ORDER, ROWPTR, ENT, MASKS, SPLIT, PARTS, DKS, DVS, CNT, S,
                 qk_scale, sm_scale, sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                 sgkb, sgkh, sgkn, sgvb, sgvh, sgvn,
                 H, N, D, T, E, HP_MUL, NMASK,
                 BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr,
                 HAS_SEED: tl.constexpr, DOT_PREC: tl.constexpr, ATOMIC_DQ: tl.constexpr,
                 I64: tl.constexpr, HEADS_FAST: tl.constexpr, HAS_SPLIT: tl.constexpr,
                 TMA: tl.constexpr):
    """dk and dv alone (see ``_dq_kernel``); with ``ATOMIC_DQ`` also dq, added atomically to
    the float32 ``DQACC`` (the one-pass backward: five matmuls per tile pair instead of seven,
    in an order that varies from run to run). With ``HAS_SPLIT`` some programs are pieces of a
    split row (``plan.split_rows``): their dk / dv add up in the float32 slots ``DKS`` /
    ``DVS`` (zeroed by the caller), ``CNT`` counts finished pieces, and the last one writes."""
    pid, bh = _ids(HEADS_FAST)
    _dkdv_tile(pid, bh, Q, K, V, DO, LSE, DELTA, DK, DV, SEED_DK, SEED_DV, KPM, DQACC,
               TILES, ORDER, ROWPTR, ENT, MASKS, SPLIT, PARTS, DKS, DVS, CNT, S, qk_scale, sm_scale, sqb, sqh, sqn, skb, skh,
               skn, svb, svh, svn, sdb, sdh, sdn, sgkb, sgkh, sgkn, sgvb, sgvh, sgvn, H, N, D, T,
               E, HP_MUL, NMASK,
               BLOCK, BLOCK_D, HAS_KPM, HAS_SEED, DOT_PREC, ATOMIC_DQ, I64, HAS_SPLIT, TMA)
