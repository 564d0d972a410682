"""The Triton kernels against the reference.

On a machine with CUDA the GPU cases run on the GPU. Without CUDA the same kernels run on the CPU
under Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py before the kernels are
first imported), at small sizes, so CI exercises the kernel code rather than skipping it.
"""
import pytest
import torch

pytest.importorskip("triton")

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer import sparse_attention  # noqa: E402
from sparse_transformer.ops import BACKENDS, reference_attention  # noqa: E402
from sparse_transformer.ops.triton.backend import get_plan, interpreting, triton_attention  # noqa: E402
from sparse_transformer.ops.tiles import tile_positions  # noqa: E402
from tolerance import check_against_reference  # noqa: E402

CUDA = torch.cuda.is_available()
INTERP = (not CUDA) and interpreting()
needs_interp = pytest.mark.skipif(not INTERP, reason="CPU kernel tests need TRITON_INTERPRET=1")
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def _qkv(b, h, n, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype=dtype, device=device) for _ in range(3)]


def _padding(b, n, device, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    kpm = torch.rand(b, n, generator=g) < 0.2
    kpm[-1, : n // 2] = True  # early queries of the last batch entry have no key at all (causal)
    return kpm.to(device)


# -- plans: every allowed pair is computed exactly once, nothing else (no kernels needed) ---------
def _coverage(plan, passes, n, heads, key_major):
    """Count how often each (head, query, key) pair is computed and allowed by the plan's masks."""
    count = torch.zeros(plan.heads, n + 1, n + 1, dtype=torch.long)
    masks = plan.masks.bool()
    for ps in passes:
        for h in range(plan.heads):
            for t in range(ps.num_tiles):
                own = tile_positions(ps.tiles[h, t].long(), plan.block).clamp(max=n)
                for tile, mid in _run_tiles(ps, h, t):
                    other = tile_positions(tile, plan.block).clamp(max=n)
                    ok = masks[mid] if mid >= 0 else torch.ones_like(masks[0])
                    qp, kp = (other, own) if key_major else (own, other)  # masks are [query, key]
                    count[h].index_put_((qp[:, None].expand_as(ok), kp[None, :].expand_as(ok)),
                                        ok.long(), accumulate=True)
    return count[:, :n, :n]


def _run_tiles(ps, h, t):
    """The (tile, mask id) pairs of program tile t's runs, as the kernels walk them."""
    for r in range(int(ps.rowptr[h, t]), int(ps.rowptr[h, t + 1])):
        start, seg, jump, step, count, mid = ps.entries[h, r].long().tolist()
        assert count >= 1 and (mid < 0 or count == 1)  # a partial tile is a run of its own
        for j in range(count):
            yield torch.tensor([start + j * step, seg, jump]), mid


@pytest.mark.parametrize("pattern", [
    P.Strided(8), P.Fixed(8, 2), P.Fixed(16, 4, distinct_heads=True), P.Local(5),
    P.Local(3) | P.Global((4,)) | P.Random(1, 8, seed=5), P.PerHead((P.Local(4), P.Column(4))),
])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [16, 32])
def test_plan_covers_each_allowed_pair_once(pattern, causal, block):
    n, heads = 71, 2
    _, plan = get_plan(pattern, n, heads, causal, "cpu", block)
    want = pattern.mask(n, heads, causal)[: plan.heads].long()
    for passes, key_major in ((plan.fwd, False), (plan.bwd, True)):
        got = _coverage(plan, passes, n, heads, key_major)
        assert torch.equal(got, want)


def test_strided_plan_uses_transposed_column_tiles():
    _, plan = get_plan(P.Strided(32), 4096, 1, True, "cpu", 64)
    assert len(plan.fwd) == 2
    first = plan.fwd[0].tiles[0]
    assert (first[:, 1] == 1).all() and (first[:, 2] == 32).all()  # seg 1, jump l: a column
    allowed = P.Strided(32).mask(4096).sum().item()
    # Computed pairs stay within a small factor of the allowed ones (dense causal would be 30x).
    assert plan.pairs_computed < 3 * allowed


def test_fixed_plan_gathers_summary_keys():
    _, plan = get_plan(P.Fixed(128, 32), 4096, 1, True, "cpu", 64)
    seg = plan.bwd[0].tiles[0][:, 1]
    assert (seg == 32).all()  # compact summary tiles: 32 keys from each of two blocks
    assert plan.pairs_computed < 2 * P.Fixed(128, 32).mask(4096).sum().item()


# -- kernels on the CPU under the interpreter -------------------------------------------------------
CPU_CASES = [
    (P.Strided(16), 97, 32), (P.Fixed(16, 4), 97, 32), (P.Local(20), 97, 32),
    (P.Local(4) | P.Global((5,)) | P.Random(1, 16, seed=3), 97, 32),
    (P.Fixed(8, 2), 161, 16),  # far summary tiles as spans of several tiles, both directions
]


@needs_interp
@pytest.mark.parametrize("pattern,n,d", CPU_CASES, ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("causal", [True, False])
def test_interp_matches_reference(pattern, n, d, causal):
    q, k, v = _qkv(2, 2, n, d, torch.float32, "cpu")
    check_against_reference(triton_attention, q, k, v, pattern, causal, _padding(2, n, "cpu"))


@needs_interp
@pytest.mark.parametrize("pattern,atomic,fuse", [
    (P.Strided(8), False, True), (P.Strided(8), True, False), (P.Fixed(8, 2), False, False)],
    ids=["strided-fused", "strided-atomic", "fixed-two-kernels"])
def test_interp_64_bit_offsets(pattern, atomic, fuse, monkeypatch):
    """The kernels' 64-bit position arithmetic (used when an offset passes 2**31 elements),
    forced on at a small size, against the reference: forward, gradients, padding."""
    from sparse_transformer.ops.triton import backend

    monkeypatch.setattr(backend, "INT32_LIMIT", 0)
    monkeypatch.setattr(backend, "ATOMIC_DQ", atomic)
    if not fuse:
        monkeypatch.setattr(backend, "FUSE_BWD_BELOW", None)
    q, k, v = _qkv(2, 2, 45, 16, torch.float32, "cpu")
    assert backend._needs_i64(q.shape, backend._strides(q, k, v), 16)
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 45, "cpu"))


@pytest.mark.parametrize("pattern,n", [(P.Fixed(8, 2), 161), (P.Local(8) | P.Global((0, 3)), 130),
                                       (P.Strided(8), 97), (P.bigbird(8, (0,), 1, 16), 130)],
                         ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("cap", [1, 2, 3, 7])
def test_split_rows_keeps_every_tile_pair_once(pattern, n, cap):
    """``plan.split_rows``: the pieces hold exactly the rows' tile pairs (runs cut where they
    cross a piece's end), no piece holds more than ``cap``, every tile still has a program (an
    empty row too), and the slots count each split row's pieces."""
    from collections import Counter

    from sparse_transformer.ops.triton.plan import split_rows

    _, plan = get_plan(pattern, n, 2, True, "cpu", 8)
    for ps in plan.bwd:
        sp = split_rows(ps, cap)
        if sp is None:
            continue
        def pairs(p, t):
            return [(tuple(tile.tolist()), mid) for tile, mid in _run_tiles(p, 0, t)]
        whole = Counter((tuple(ps.tiles[0, t].tolist()), x) for t in range(ps.num_tiles)
                        for x in pairs(ps, t))
        cut = Counter((tuple(sp.tiles[0, t].tolist()), x) for t in range(sp.num_tiles)
                      for x in pairs(sp, t))
        assert cut == whole
        sizes = [len(pairs(sp, t)) for t in range(sp.num_tiles)]
        assert max(sizes) <= cap
        assert {tuple(r.tolist()) for r in sp.tiles[0]} == {tuple(r.tolist()) for r in ps.tiles[0]}
        slots = Counter(int(x) for x in sp.split[0] if x >= 0)
        assert [slots[i] for i in range(sp.parts.numel())] == sp.parts.tolist()
        assert all(p > 1 for p in sp.parts.tolist())
        assert sorted(sp.order[0].tolist()) == list(range(sp.num_tiles))
    assert split_rows(plan.bwd[0], 10**9) is None  # nothing to split


def test_split_rows_settings(monkeypatch):
    """SPARSE_TRANSFORMER_SPLIT_ROWS: 'auto', N or 0, anything else named; the auto cap is an
    eighth of a balanced slot's work, at least 16; deterministic mode splits nothing."""
    from sparse_transformer.ops.triton import backend
    from sparse_transformer.ops.triton.plan import auto_split_cap, pass_pairs

    assert backend._split_setting(" AUTO ") == "auto"
    assert backend._split_setting("128") == 128 and backend._split_setting("0") is None
    with pytest.raises(ValueError, match="SPARSE_TRANSFORMER_SPLIT_ROWS.*'auto'.*-3"):
        backend._split_setting("-3")
    assert backend._heads_fast_setting("Auto") == "auto"
    assert backend._heads_fast_setting("1") is True and backend._heads_fast_setting("0") is False
    with pytest.raises(ValueError, match="SPARSE_TRANSFORMER_HEADS_FAST.*'auto'.*yes"):
        backend._heads_fast_setting("yes")
    _, plan = get_plan(P.Local(8) | P.Global((0,)), 161, 2, True, "cpu", 8)
    ps = plan.bwd[0]
    pairs = pass_pairs(ps)
    assert pairs == sum(len(list(_run_tiles(ps, 0, t))) for t in range(ps.num_tiles))
    assert auto_split_cap(ps, 1000, 4) == max(16, pairs * 1000 // 32)
    assert auto_split_cap(ps, 1, 10**6) == 16
    cpu = torch.device("cpu")
    monkeypatch.setattr(backend, "SPLIT_ROWS_ABOVE", "auto")
    monkeypatch.setattr(backend, "HEADS_FAST", "auto")
    # the global key's row (21 of 60 tile pairs) against a balanced slot's 2 x 60 / 8 = 15: not
    # above twice that, so whole (and interleaved); over one head (7.5 a slot) it is split
    assert backend._dkdv_schedule(ps, 2, cpu) == (None, True)
    assert backend._dkdv_schedule(ps, 1, cpu) == (auto_split_cap(ps, 1, 8), False)
    monkeypatch.setattr(backend, "SPLIT_ROWS_ABOVE", 5)
    assert backend._dkdv_schedule(ps, 2, cpu)[0] == 5
    monkeypatch.setattr(backend, "HEADS_FAST", False)
    assert backend._dkdv_schedule(ps, 2, cpu) == (5, False)
    monkeypatch.setattr(backend, "SPLIT_ROWS_ABOVE", None)
    monkeypatch.setattr(backend, "HEADS_FAST", True)
    assert backend._dkdv_schedule(ps, 1, cpu) == (None, True)
    monkeypatch.setattr(backend, "SPLIT_ROWS_ABOVE", "auto")
    torch.use_deterministic_algorithms(True)
    try:
        assert backend._dkdv_schedule(ps, 1, cpu)[0] is None
    finally:
        torch.use_deterministic_algorithms(False)


def test_dkdv_schedule_by_row_shape():
    """A global key's row far above a balanced slot is split; fixed's uneven summary rows are
    interleaved, not split; strided's and local's even rows keep the head-after-head order."""
    from sparse_transformer.ops.triton.plan import (auto_split_cap, dkdv_schedule, pass_pairs,
                                                    row_work)

    def first_pass(pattern, n=16384, block=64):
        return get_plan(pattern, n, 1, True, "cpu", block)[1].bwd[0]

    lf = first_pass(P.Local(256) | P.Global((0,)))
    assert "row_stats" in vars(lf)  # read when the plan was built, not while scheduling a launch
    w = row_work(lf)
    assert int(w[0]) == 256 and int(w.sum()) == pass_pairs(lf)
    assert lf.row_stats == (256, int(w.sum()), w.numel())
    assert dkdv_schedule(lf, 16, 264) == (auto_split_cap(lf, 16, 264), False)
    assert dkdv_schedule(lf, 16, 264, split=False) == (None, True)
    assert dkdv_schedule(lf, 16, 264, split=False, interleave=False) == (None, False)
    assert dkdv_schedule(first_pass(P.Fixed(128, 32)), 16, 264) == (None, True)
    for pattern in (P.Strided(128), P.Local(256)):
        assert dkdv_schedule(first_pass(pattern), 16, 264) == (None, False)


@needs_interp
@pytest.mark.parametrize("pattern,atomic,fuse,n,cap", [
    (P.Fixed(8, 2), False, False, 97, 3), (P.Strided(8), True, False, 97, 1),
    (P.Local(8) | P.Global((0, 5)), False, False, 130, 2),
    (P.Fixed(8, 2), False, True, 45, 3)],
    ids=["fixed", "strided-atomic-dq", "longformer-like", "fused-unsplit"])
def test_interp_split_rows_match_reference(pattern, atomic, fuse, n, cap, monkeypatch):
    """Rows split into pieces of ``cap`` tile pairs (``SPLIT_ROWS_ABOVE``), their dk / dv added
    up by the last piece, against the reference: forward, gradients, padding, empty rows."""
    from sparse_transformer.ops.triton import backend

    monkeypatch.setattr(backend, "SPLIT_ROWS_ABOVE", cap)
    monkeypatch.setattr(backend, "ATOMIC_DQ", atomic)
    monkeypatch.setattr(backend, "FUSE_BWD_BELOW", 10**9 if fuse else None)
    made = []
    real = backend.split_rows
    monkeypatch.setattr(backend, "split_rows", lambda ps, cap: made.append(real(ps, cap)) or made[-1])
    q, k, v = _qkv(2, 2, n, 16, torch.float32, "cpu")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, n, "cpu"))
    split = [sp for sp in made if sp is not None]
    assert (not split) if fuse else (split and max(int(sp.parts.max()) for sp in split) >= 2)


@needs_interp
@pytest.mark.parametrize("pattern,atomic,fuse", [
    (P.Strided(8), False, True), (P.Strided(8), True, False), (P.Fixed(8, 2), False, False),
    (P.Fixed(8, 2, distinct_heads=True), False, False)],
    ids=["strided-fused", "strided-atomic", "fixed-two-kernels", "fixed-per-head"])
def test_interp_heads_fast_launch_order(pattern, atomic, fuse, monkeypatch):
    """Programs read with the heads fastest (``HEADS_FAST``): every program still finds its own
    batch, head and tile (3 x 3 heads, so a wrong split of the flat index shows), against the
    reference: forward, gradients, padding; every kernel role."""
    from sparse_transformer.ops.triton import backend

    monkeypatch.setattr(backend, "HEADS_FAST", True)
    monkeypatch.setattr(backend, "ATOMIC_DQ", atomic)
    if not fuse:
        monkeypatch.setattr(backend, "FUSE_BWD_BELOW", None)
    q, k, v = _qkv(3, 3, 45, 16, torch.float32, "cpu")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(3, 45, "cpu"))


@gpu
@pytest.mark.parametrize("pattern", [P.Fixed(64, 16), P.Local(64) | P.Global((0, 100)),
                                     P.Strided(64)], ids=lambda p: p.name)
@pytest.mark.parametrize("cap", [2, 8])
def test_gpu_split_rows(pattern, cap, monkeypatch):
    """Split rows on the GPU, where the pieces run concurrently (the interpreter runs them one
    after another): the additions, the count and the last piece's read must hold there."""
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "SPLIT_ROWS_ABOVE", cap)
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 4, 2049, 64, torch.bfloat16, "cuda")
    for _ in range(3):  # a race shows up in some runs, not all
        check_against_reference(triton_attention, q, k, v, pattern, True,
                                _padding(2, 2049, "cuda"))


@gpu
@pytest.mark.parametrize("pattern", [P.Fixed(64, 16), P.Local(200),
                                     P.Global((0, 700)) | P.Local(150),
                                     P.PerHead((P.Local(100), P.Column(64)))],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gpu_tma_matches_reference(pattern, dtype, monkeypatch):
    """Tensor-descriptor loads on the GPU (Hopper): every role, padding, n not a multiple of the
    tile, d = 64, and q, k, v as views of one packed tensor (rows strided by 3 x H x d)."""
    from sparse_transformer.ops.triton import backend as triton_backend

    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("tensor descriptors need compute capability 9 or more")
    monkeypatch.setattr(triton_backend, "TMA", frozenset(triton_backend.TMA_ROLES))
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 4, 1000, 64, dtype, "cuda")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 1000, "cuda"))
    check_against_reference(_through_packed_views, q, k, v, pattern, True,
                            _padding(2, 1000, "cuda"))
    assert ("_dkdv_kernel", True) in _tma_launches()


@gpu
@pytest.mark.parametrize("pattern", [P.Strided(64), P.Fixed(64, 16)], ids=lambda p: p.name)
def test_gpu_heads_fast_launch_order(pattern, monkeypatch):
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "HEADS_FAST", True)
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 4, 1025, 64, torch.bfloat16, "cuda")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 1025, "cuda"))


# (pattern, the kernels expected to read through descriptors): fixed's query-major passes read
# gathered summary keys and strided's column pass transposed tiles, so those keep pointer loads;
# strided's dk/dv passes add dq atomically (several passes), which keeps pointer loads too.
_TMA_CASES = [
    (P.Fixed(16, 4), {"_dkdv_kernel"}),
    (P.Local(40), {"_fwd_kernel", "_dq_kernel", "_dkdv_kernel"}),
    (P.Global((0, 50)) | P.Local(40), {"_fwd_kernel", "_dq_kernel", "_dkdv_kernel"}),
    (P.PerHead((P.Local(20), P.Column(16))), {"_fwd_kernel", "_dq_kernel", "_dkdv_kernel"}),
    (P.Strided(16), {"_fwd_kernel"}),
]


def _through_packed_views(q, k, v, *args, **kw):
    """``triton_attention`` on q, k, v copied into one (B, n, H, 3, d) tensor and read as views
    of it (rows strided by 3 x H x d, as a fused qkv projection lays them out)."""
    qkv = torch.stack([t.transpose(1, 2) for t in (q, k, v)], 3)
    return triton_attention(*(qkv[..., i, :].transpose(1, 2) for i in range(3)), *args, **kw)


def _tma_launches():
    from sparse_transformer.ops.triton import backend

    return {(lay_launch.kernel.__name__, lay_launch.tma)
            for layout in backend._LAYOUTS.values() for lay_launch in layout.launches}


@needs_interp
@pytest.mark.parametrize("pattern,expected", _TMA_CASES, ids=lambda c: getattr(c, "name", ""))
def test_interp_tma_matches_reference(pattern, expected, monkeypatch):
    """Tensor-descriptor loads (``TMA``) in every role against the reference: forward, gradients,
    padding, empty rows, a sequence that ends inside a tile (rows past it must read as zeros),
    per-head patterns, a forward pass seeded by an earlier one (strided), q, k, v as views of
    one packed tensor. 16-bit inputs only (what the descriptors take); the interpreter runs
    float16."""
    from sparse_transformer.ops.triton import backend

    monkeypatch.setattr(backend, "TMA", frozenset(backend.TMA_ROLES))
    monkeypatch.setattr(backend, "FUSE_BWD_BELOW", None)
    monkeypatch.setattr(backend, "_LAYOUTS", backend.LRUCache(8))
    q, k, v = _qkv(2, 2, 289, 32, torch.float16, "cpu", seed=3)
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 289, "cpu"))
    check_against_reference(_through_packed_views, q, k, v, pattern, True,
                            _padding(2, 289, "cpu"))
    used = {name for name, tma in _tma_launches() if tma}
    assert used == expected


def test_tma_settings_and_eligibility(monkeypatch):
    """``SPARSE_TRANSFORMER_TMA`` values, and which launches may read through descriptors: never
    float32, misaligned rows or a pass with gathered tiles."""
    from sparse_transformer.ops.triton import backend

    assert backend._tma_setting("auto") == "auto"
    assert backend._tma_setting("0") == frozenset() == backend._tma_setting("none")
    assert backend._tma_setting("all") == frozenset(backend.TMA_ROLES)
    assert backend._tma_setting(" dq, dkdv ") == frozenset({"dq", "dkdv"})
    for bad in ("yes", "fwd,bwd", ","):
        with pytest.raises(ValueError, match="SPARSE_TRANSFORMER_TMA"):
            backend._tma_setting(bad)
    monkeypatch.setattr(backend, "TMA", "auto")
    assert backend._tma_roles(torch.device("cpu")) == frozenset()
    _, plan = get_plan(P.Fixed(16, 4), 200, 1, True, "cpu", 16)
    assert all(ps.contiguous_runs for ps in plan.bwd)  # query tiles in token order
    assert not all(ps.contiguous_runs for ps in plan.fwd)  # the gathered summary keys
    _, strided = get_plan(P.Strided(16), 200, 1, True, "cpu", 16)
    assert not strided.bwd[0].contiguous_runs  # the column factor's transposed tiles
    ps = plan.bwd[0]
    roles = frozenset(backend.TMA_ROLES)
    bf16 = torch.bfloat16
    assert backend._tma_ok("dkdv", roles, ps, bf16, 64, True, 64, 4096)
    assert not backend._tma_ok("dkdv", frozenset({"fwd"}), ps, bf16, 64, True, 64)
    assert not backend._tma_ok("dkdv", roles, ps, torch.float32, 64, True, 64)
    assert not backend._tma_ok("dkdv", roles, ps, bf16, 64, False, 64)  # a pointer off 16 B
    assert not backend._tma_ok("dkdv", roles, ps, bf16, 64, True, 68)  # rows off 16 B
    assert not backend._tma_ok("dkdv", roles, ps, bf16, 36, True, 64)
    assert backend._aligned(torch.zeros(8)) and not backend._aligned(torch.zeros(8)[1:])


@needs_interp
@pytest.mark.parametrize("pattern,n,d,dtype", [
    (P.Strided(32), 1025, 32, torch.float32),
    (P.Local(16), 63, 80, torch.float16),  # head_dim 80: padded to 128 inside the kernel
    (P.Fixed(32, 8, distinct_heads=True), 97, 64, torch.float16),
    (P.PerHead((P.Local(8), P.Column(8))), 63, 20, torch.float32),
    (P.Random(1, 16, seed=2, distinct_heads=True), 63, 32, torch.float32),
], ids=["strided-1025", "local-d80-fp16", "fixed-distinct-fp16", "perhead", "random-perhead"])
def test_interp_odd_shapes(pattern, n, d, dtype):
    b = 1 if n > 512 else 2
    q, k, v = _qkv(b, 3 if n < 512 else 1, n, d, dtype, "cpu", seed=n + d)
    kpm = None if n > 512 else _padding(b, n, "cpu")
    check_against_reference(triton_attention, q, k, v, pattern, True, kpm)


@needs_interp
def test_interp_empty_rows_are_zero_with_zero_grads():
    n = 40
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, n, 16, torch.float32, "cpu"))
    kpm = torch.zeros(1, n, dtype=torch.bool)
    kpm[0, :20] = True  # causal: queries 0..19 see only padding
    out, lse = triton_attention(q, k, v, P.Local(8), True, kpm, return_lse=True)
    assert torch.isfinite(out).all()
    assert (out[:, :, :20] == 0).all() and (lse[:, :, :20] == float("-inf")).all()
    assert torch.isfinite(lse[:, :, 27:]).all()
    (out.sum() * 1.0).backward()
    assert (q.grad[:, :, :20] == 0).all() and (k.grad[:, :, :20] == 0).all()
    assert (v.grad[:, :, :20] == 0).all() and torch.isfinite(q.grad).all()


@needs_interp
def test_interp_lse_and_its_gradient():
    q, k, v = _qkv(1, 2, 50, 32, torch.float64, "cpu")
    pattern = P.Strided(8)
    grads = []
    for fn in (triton_attention, reference_attention):
        qq, kk, vv = (t.float().clone().requires_grad_() for t in (q, k, v))
        out, lse = fn(qq, kk, vv, pattern, True, None, return_lse=True)
        (out.square().sum() + 0.5 * lse.sum()).backward()
        grads.append((out.detach(), lse.detach(), qq.grad, kk.grad, vv.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-4, atol=1e-4)


@needs_interp
def test_interp_deterministic_and_dispatch():
    q, k, v = _qkv(1, 2, 70, 32, torch.float32, "cpu")
    a = sparse_attention(q, k, v, P.Fixed(16, 4), backend="triton")
    b = triton_attention(q, k, v, P.Fixed(16, 4))
    assert "triton" in BACKENDS and torch.equal(a, b)


@needs_interp
def test_interp_inside_torch_compile():
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 48, 16, torch.float32, "cpu"))

    pattern = P.Strided(8)  # as a layer holds it

    def f(q, k, v):
        return (triton_attention(q, k, v, pattern) * 2).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_interp
@pytest.mark.parametrize("autocast", [False, True])
def test_interp_dispatch_inside_torch_compile_has_no_graph_break(autocast):
    """The public entry point, as a model's block calls it, traces into one graph, with or
    without an enclosing autocast region (a break here recompiles every block, every step)."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 48, 16, torch.float32, "cpu"))
    pattern = P.Fixed(8, 2)

    def f(q, k, v):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return (sparse_attention(q, k, v, pattern, backend="triton") * 2).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_interp
def test_interp_compile_with_dynamic_shapes():
    """Symbolic lengths are specialised: each length gets its own plan, results stay exact."""
    pattern = P.Fixed(8, 2)

    def f(q, k, v):
        return triton_attention(q, k, v, pattern)

    compiled = torch.compile(f, backend="aot_eager", dynamic=True)
    for n in (40, 56):
        q, k, v = _qkv(1, 2, n, 16, torch.float32, "cpu", seed=n)
        torch.testing.assert_close(compiled(q, k, v), f(q, k, v))


def test_bad_inputs_name_the_argument():
    q = torch.randn(1, 1, 8, 160)
    with pytest.raises(ValueError, match="head_dim"):
        triton_attention(q, q, q, P.Local(2))
    q = torch.randn(1, 1, 8, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        triton_attention(q, q, q, P.Local(2))


# -- the GPU -------------------------------------------------------------------------------------
GPU_PATTERNS = [P.Strided(32), P.Fixed(32, 8), P.Fixed(64, 16, distinct_heads=True), P.Local(48),
                P.Local(16) | P.Global((0, 7)) | P.Random(2, 64, seed=1),
                P.PerHead((P.Local(33), P.Column(32)))]


@gpu
@pytest.mark.parametrize("pattern", GPU_PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [True, False])
def test_gpu_matches_reference(pattern, dtype, causal):
    q, k, v = _qkv(2, 4, 1025, 64, dtype, "cuda")
    check_against_reference(triton_attention, q, k, v, pattern, causal, _padding(2, 1025, "cuda"))


@gpu
@pytest.mark.parametrize("n", [63, 97, 1025])
@pytest.mark.parametrize("d", [32, 64, 80, 128])
def test_gpu_shapes(n, d):
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = _qkv(1, 2, n, d, dtype, "cuda", seed=n * d)
        check_against_reference(triton_attention, q, k, v, P.Strided(16), True,
                                _padding(1, n, "cuda"))


@gpu
def test_gpu_dispatch_inside_torch_compile_has_no_graph_break():
    """As a model's block calls it under bf16 autocast: one graph (torch 2.11 could not trace
    ``torch.amp.is_autocast_available``, and every block recompiled every step)."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 4, 1024, 64, torch.float32, "cuda"))
    pattern = P.Strided(64)

    def f(q, k, v):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return (sparse_attention(q, k, v, pattern, backend="triton").float() * 2).sum()

    # Graph breaks are the tracer's: aot_eager catches them without inductor's compile time.
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


@gpu
@pytest.mark.parametrize("pattern", [P.Strided(128), P.Local(256)], ids=["strided", "local"])
def test_gpu_offsets_past_int32(pattern):
    """q, k, v as views of one packed (B, n, 3, H, d) projection at n = 1.5M: a position's offset
    passes 2**31 elements (it made an illegal memory access in 32-bit arithmetic). The same call
    on contiguous copies, whose offsets fit 32 bits, gives the same outputs and gradients."""
    n, h, d = 1_500_003, 8, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(1, n, 3, h, d, device="cuda", dtype=torch.bfloat16, generator=g)
    views = [qkv[:, :, i].transpose(1, 2) for i in range(3)]  # (1, h, n, d), position stride 3hd
    assert views[0].stride(2) * n > 2**31
    dout = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    results = []
    for inputs in (views, [t.contiguous() for t in views]):
        inputs = [t.detach().requires_grad_() for t in inputs]
        out = triton_attention(*inputs, pattern)
        out.backward(dout)
        results.append((out.detach(), *(t.grad for t in inputs)))
        del out, inputs
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


@gpu
def test_gpu_deterministic():
    q, k, v = (t.requires_grad_() for t in _qkv(2, 4, 2048, 64, torch.bfloat16, "cuda"))
    runs = []
    for _ in range(2):
        out = triton_attention(q, k, v, P.Fixed(128, 32))
        runs.append((out, *torch.autograd.grad(out.float().square().sum(), (q, k, v))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@gpu
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_gpu_inside_torch_compile(dynamic):
    """Inductor graphs hold the kernels: forward and gradients match eager at two lengths."""
    torch._dynamo.reset()
    pattern = P.Fixed(32, 8)

    def f(q, k, v):
        return (triton_attention(q, k, v, pattern).float() * 2).square().sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic)
    for n in (1000, 1536):
        q, k, v = (t.requires_grad_() for t in _qkv(1, 4, n, 64, torch.bfloat16, "cuda", seed=n))
        got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
        want = torch.autograd.grad(f(q, k, v), (q, k, v))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


@needs_interp
@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4, distinct_heads=True)],
                         ids=lambda p: p.name)
def test_interp_unfused_backward(pattern, monkeypatch):
    """Large problems run dq and dk/dv as two kernels; small ones share a launch."""
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(1, 4, 97, 32, torch.float32, "cpu", seed=7)
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(1, 97, "cpu"))


@needs_interp
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("pattern", [P.Strided(4), P.Fixed(16, 4), P.Global((0, 50)) | P.Local(40)],
                         ids=lambda p: p.name)
def test_interp_runs_of_full_tiles(pattern, fuse, monkeypatch):
    """Runs of several full tiles (the affine inner loops) in every role give the reference's
    answers, empty rows and padding included."""
    from sparse_transformer.ops.triton import backend as triton_backend

    n = 289
    _, plan = get_plan(pattern, n, 2, True, "cpu", 16)
    longest = max(int(ps.entries[..., 4].max()) for ps in plan.fwd + plan.bwd)
    assert longest > 1  # the case exercises the inner loop, not only single tiles
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", None if not fuse else 10**9)
    q, k, v = _qkv(2, 2, n, 32, torch.float32, "cpu", seed=11)
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, n, "cpu"))


@needs_interp
@pytest.mark.parametrize("pattern", [P.Strided(4), P.Fixed(16, 4, distinct_heads=True),
                                     P.Global((0, 50)) | P.Local(40),
                                     P.PerHead((P.Local(9), P.Column(8)))],
                         ids=lambda p: p.name)
def test_interp_one_pass_backward_with_atomic_dq(pattern, monkeypatch):
    """The opt-in one-pass backward (dq added atomically by the dk/dv programs, over every
    key-major pass, strided's two tilings included) gives the reference's gradients, padding
    and rows without keys included; the fused small-problem launch keeps its two roles."""
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "ATOMIC_DQ", True)
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 2, 161, 24, torch.float32, "cpu", seed=13)
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 161, "cpu"))
    check_against_reference(triton_attention, q, k, v, pattern, False, _padding(2, 161, "cpu"))


def test_runs_group_affine_full_tiles():
    """Full tiles of one shape whose starts advance by a constant step share a run; partial
    tiles stay single; without merging every tile is its own run, covering the same tiles."""
    from sparse_transformer.ops.triton.plan import _runs

    tiles = torch.tensor([[0, 4, 4], [4, 4, 4], [8, 4, 4], [16, 4, 4], [24, 4, 4], [28, 1, 8],
                          [30, 4, 4], [34, 4, 4]])
    own = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    mid = torch.tensor([-1, -1, -1, -1, -1, -1, 3, -1])
    runs, run_own = _runs(tiles, own, mid, True)
    # (0, 4, 8) step 4; then 16, 24 step 8; then the odd-shaped tile; the partial; the next owner
    assert runs[:, 4].tolist() == [3, 2, 1, 1, 1]
    assert runs[:, 3].tolist() == [4, 8, 0, 0, 0]
    assert runs[:, 0].tolist() == [0, 16, 28, 30, 34]
    assert runs[3, 5].item() == 3 and run_own.tolist() == [0, 0, 0, 0, 1]
    single, _ = _runs(tiles, own, mid, False)
    assert single[:, 4].tolist() == [1] * 8 and torch.equal(single[:, :3], tiles)
    _, plan = get_plan(P.Fixed(128, 32), 4096, 1, True, "cpu", 64)
    summary = plan.bwd[0]  # key-major summary pass: each key tile's queries are one long run
    assert int(summary.entries[..., 4].max()) >= 40
    assert summary.entries.shape[1] < 4 * summary.num_tiles


def test_launch_keys_separate_specialisations():
    """The direct-launch cache never lets two different constexpr values, dtypes or alignments
    share a kernel; tensors of the same dtype and alignment, and float scalars, do share one."""
    from sparse_transformer.ops.triton.backend import _launch_key

    x, y = torch.zeros(8), torch.zeros(8)
    key = lambda tensors, ints: _launch_key("k", (("num_warps", 4),), tensors, ints)  # noqa: E731
    assert key((x,), (64, "ieee", True)) == key((y,), (64, "ieee", True))
    for other in [(128, "ieee", True), (64, "tf32", True), (64, "ieee", False)]:
        assert key((x,), (64, "ieee", True)) != key((x,), other)
    assert key((x,), (1,)) != key((x.half(),), (1,))  # dtype
    assert key((x,), (1,)) != key((x[1:],), (1,))  # 4 bytes past a 16-byte boundary
    assert _launch_key("k", (("num_warps", 4),), (x,), ()) != _launch_key(
        "k", (("num_warps", 8),), (x,), ())


@gpu
@pytest.mark.parametrize("pattern", [P.Strided(32), P.Fixed(32, 8), P.Local(16) | P.Global((0, 7))],
                         ids=lambda p: p.name)
def test_gpu_unfused_backward(pattern, monkeypatch):
    """dq and dk/dv as separate launches (the path large problems take)."""
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 4, 1025, 64, torch.bfloat16, "cuda")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 1025, "cuda"))


@gpu
@pytest.mark.parametrize("pattern", [P.Strided(64), P.Fixed(64, 16), P.Local(100)],
                         ids=lambda p: p.name)
def test_gpu_one_pass_backward_with_atomic_dq(pattern, monkeypatch):
    from sparse_transformer.ops.triton import backend as triton_backend

    monkeypatch.setattr(triton_backend, "ATOMIC_DQ", True)
    monkeypatch.setattr(triton_backend, "FUSE_BWD_BELOW", 0)
    q, k, v = _qkv(2, 4, 1025, 64, torch.bfloat16, "cuda")
    check_against_reference(triton_attention, q, k, v, pattern, True, _padding(2, 1025, "cuda"))


def test_direct_launch_cache(monkeypatch):
    """A launch binds its arguments by the kernel's own names, once. After a first launch
    through ``kernel[grid]`` whose per-call tensors are aligned, it calls the compiled kernel
    directly with the same arguments in the same order, and another launch of the same
    specialisation finds that kernel; unaligned tensors go back through ``kernel[grid]``. A
    compiled kernel whose call fails switches direct launches off."""
    from sparse_transformer.ops.triton import backend as tb

    calls = []

    class Compiled:
        def __init__(self, fail=False):
            self.fail = fail

        def run(self):
            pass

        def __getitem__(self, grid):
            def go(*args):
                if self.fail:
                    raise TypeError("different launcher")
                calls.append(("direct", grid, args))
            return go

    class Kernel:
        arg_names = ["X", "scale", "n", "BLOCK"]
        fail = False

        def __getitem__(self, grid):
            def go(*args, **opts):
                calls.append(("bound", grid, args, opts))
                return Compiled(self.fail)
            return go

    monkeypatch.setattr(tb, "interpreting", lambda: False)
    monkeypatch.setattr(tb, "FAST_LAUNCH", True)
    monkeypatch.setattr(tb, "_COMPILED", {})
    kern, x = Kernel(), torch.zeros(8)
    named = dict(BLOCK=64, n=10, scale=tb._Slot("s"), X=tb._Slot("x"))  # any order
    first = tb._Launch(kern, (3, 2), (("num_warps", 4),), named)
    first.run(dict(x=x, s=0.5), tb._fast(x))
    first.run(dict(x=x, s=0.25), tb._fast(x))
    assert [c[0] for c in calls] == ["bound", "direct"]
    assert calls[0][1] == calls[1][1] == (3, 2, 1) and calls[0][3] == {"num_warps": 4}
    assert calls[1][2][0] is x and calls[1][2][1:] == (0.25, 10, 64)  # the kernel's order
    tb._Launch(kern, (5, 2), (("num_warps", 4),), named).run(dict(x=x, s=1.0), tb._fast(x))
    assert calls[-1][0] == "direct" and calls[-1][1] == (5, 2, 1)  # found, not compiled again
    assert not tb._fast(x[1:])  # 4 bytes past a 16-byte boundary
    first.run(dict(x=x[1:], s=1.0), tb._fast(x[1:]))
    assert calls[-1][0] == "bound"
    other = tb._Launch(kern, (3, 2), (("num_warps", 4),), dict(named, BLOCK=128))
    other.run(dict(x=x, s=1.0), True)  # another constexpr value: another specialisation
    assert calls[-1][0] == "bound" and calls[-1][2][-1] == 128
    with pytest.raises(TypeError, match=r"missing \['scale'\], unknown \['Y'\]"):
        tb._Launch(kern, (1,), (), dict(X=x, Y=1, n=1, BLOCK=16))
    bad = Kernel()
    bad.fail = True
    calls.clear()
    failing = tb._Launch(bad, (1,), (), dict(X=tb._Slot("x"), scale=1.0, n=3, BLOCK=16))
    failing.run(dict(x=x), True)
    failing.run(dict(x=x), True)  # the direct call fails: launched the regular way
    assert [c[0] for c in calls] == ["bound", "bound"] and tb.FAST_LAUNCH is False


@needs_interp
@pytest.mark.parametrize("fuse,atomic", [(True, "auto"), (False, False), (False, True)],
                         ids=["fused", "dq-and-dkdv", "atomic-dq"])
def test_direct_launch_path_computes_the_same(fuse, atomic, monkeypatch):
    """The path a GPU takes after a first launch (each layout calling its compiled kernel
    directly with its filled-in arguments), here with the interpreter standing in for the
    compiled kernel: the same results as the reference, forward and gradients, with padding
    and rows that have no key."""
    from sparse_transformer.ops.triton import backend as tb

    direct = []

    class Direct:  # Triton's compiled kernel: ``compiled[grid](*all arguments in order)``
        def __init__(self, kernel):
            self.kernel = kernel

        def run(self):
            pass

        def __getitem__(self, grid):
            def go(*args):
                direct.append(self.kernel)
                self.kernel[grid](*args)
            return go

    class Found(dict):  # every launch key finds a compiled kernel
        def get(self, key, default=None):
            return Direct(key[0])

    monkeypatch.setattr(tb, "check_inputs", tb.check_tensor)
    monkeypatch.setattr(tb, "interpreting", lambda: False)
    monkeypatch.setattr(tb, "FAST_LAUNCH", True)
    monkeypatch.setattr(tb, "_COMPILED", Found())
    monkeypatch.setattr(tb, "_LAYOUTS", tb.LRUCache(16))
    monkeypatch.setattr(tb, "FUSE_BWD_BELOW", 10_000 if fuse else 0)
    monkeypatch.setattr(tb, "ATOMIC_DQ", atomic)
    q, k, v = _qkv(2, 2, 45, 16, torch.float32, "cpu")
    check_against_reference(triton_attention, q, k, v, P.Strided(4), True, _padding(2, 45, "cpu"))
    assert tb.FAST_LAUNCH  # the direct way worked, and it ran every kernel of this variant
    kern = tb._kernels()
    expected = {"fused": [kern._bwd_kernel], "dq-and-dkdv": [kern._dq_kernel, kern._dkdv_kernel],
                "atomic-dq": [kern._dkdv_kernel]}["fused" if fuse else
                                                   "atomic-dq" if atomic else "dq-and-dkdv"]
    for kernel in [kern._fwd_kernel, kern._delta_kernel, *expected]:
        assert any(d is kernel for d in direct)
    if not (fuse or atomic):
        assert not any(d is kern._bwd_kernel for d in direct)


@needs_interp
def test_layouts_follow_the_settings(monkeypatch):
    """A call signature's launches are laid out once and used again; changing a launch setting,
    the backward's policies or the strides gives a new layout, with the same results."""
    from sparse_transformer.ops.triton import backend as tb

    monkeypatch.setattr(tb, "_LAYOUTS", tb.LRUCache(8))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 37, 16, generator=g) for _ in range(3))
    pattern = P.Strided(4)

    def run():
        out = tb.triton_attention(q, k, v, pattern)
        return out, torch.autograd.grad(out, (q, k, v), out)

    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    out, grads = run()
    layouts = list(tb._LAYOUTS.values())
    assert len(layouts) == 2  # forward, backward
    run()
    assert list(tb._LAYOUTS.values()) == layouts  # used again, not rebuilt
    monkeypatch.setattr(tb, "ATOMIC_DQ", not tb._atomic_dq(layouts[1].plans[1]))
    out3, grads3 = run()
    assert len(tb._LAYOUTS) == 3  # a new backward; the forward's layout is the same
    generation = tb.tuning.GENERATION
    saved = dict(tb.TUNING["fwd"])
    try:
        tb.TUNING["fwd"]["num_warps"] = 2
        assert tb.tuning.GENERATION > generation
        out2, grads2 = run()
    finally:
        tb.TUNING["fwd"].update(saved)
    assert len(tb._LAYOUTS) == 5
    for a, b in zip((out, *grads), (out2, *grads2)):
        assert torch.equal(a, b)
    for a, b in zip((out, *grads), (out3, *grads3)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_atomic_dq_policy(monkeypatch):
    """"auto" adds dq atomically only for plans of several passes (strided's two tilings, where
    it was measured faster); forced on or off by ATOMIC_DQ, and off under PyTorch's
    deterministic mode."""
    from sparse_transformer.ops.triton import backend as tb

    _, strided = get_plan(P.Strided(8), 64, 1, True, "cpu", 16)
    _, fixed = get_plan(P.Fixed(8, 2), 64, 1, True, "cpu", 16)
    assert len(strided.fwd) > 1 and len(fixed.fwd) == 1
    monkeypatch.setattr(tb, "ATOMIC_DQ", "auto")
    assert tb._atomic_dq(strided) and not tb._atomic_dq(fixed)
    monkeypatch.setattr(tb, "ATOMIC_DQ", True)
    assert tb._atomic_dq(fixed)
    monkeypatch.setattr(tb, "ATOMIC_DQ", False)
    assert not tb._atomic_dq(strided)
    monkeypatch.setattr(tb, "ATOMIC_DQ", "auto")
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not tb._atomic_dq(strided)
    finally:
        torch.use_deterministic_algorithms(prev)


# -- packed q/k/v -----------------------------------------------------------------------------

def _packed(b, n, h, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3 * h * d, generator=g).to(dtype=dtype, device=device)


def _out_and_grad(fn, qkv, h, kpm, packed):
    """fn's output and the gradient of qkv; ``packed``: fn takes qkv whole, else q, k, v as
    views of it (autograd then concatenates their gradients)."""
    from sparse_transformer.ops.triton.backend import unpack_qkv

    x = qkv.detach().clone().requires_grad_()
    out = fn(x, h, kpm) if packed else fn(*unpack_qkv(x, h), kpm)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.device)
    (out.float() * w).sum().backward()
    return out.detach(), x.grad


def _packed_and_views(pattern, qkv, h, kpm):
    """(output, qkv's gradient) through the packed Triton entry, then through q, k, v views."""
    from sparse_transformer.ops.triton.backend import triton_attention_packed

    packed = _out_and_grad(lambda x, h, m: triton_attention_packed(x, h, pattern,
                                                                   key_padding_mask=m),
                           qkv, h, kpm, packed=True)
    views = _out_and_grad(lambda q, k, v, m: triton_attention(q, k, v, pattern,
                                                              key_padding_mask=m),
                          qkv, h, kpm, packed=False)
    return packed, views


@needs_interp
@pytest.mark.parametrize("pattern,atomic,fuse", [
    (P.Strided(8), False, True), (P.Strided(8), True, False), (P.Strided(8), False, False),
    (P.Fixed(8, 2), False, False), (P.Local(8), False, True)],
    ids=["strided-fused", "strided-atomic", "strided-two-pass", "fixed", "local"])
def test_interp_packed_qkv_matches_views(pattern, atomic, fuse, monkeypatch):
    """Kernels that read q, k, v from the packed projection and write its gradient whole give
    what q, k, v as views give (odd length, padding with an empty row), and the reference."""
    from sparse_transformer.ops.triton import backend

    monkeypatch.setattr(backend, "ATOMIC_DQ", atomic)
    if not fuse:
        monkeypatch.setattr(backend, "FUSE_BWD_BELOW", None)
    b, n, h, d = 2, 45, 2, 16
    qkv = _packed(b, n, h, d, torch.float32, "cpu")
    kpm = _padding(b, n, "cpu")
    (po, pg), (vo, vg) = _packed_and_views(pattern, qkv, h, kpm)
    assert po.transpose(1, 2).is_contiguous()  # token-major: merging the heads is a view
    ro, rg = _out_and_grad(lambda q, k, v, m: reference_attention(q, k, v, pattern,
                                                                  key_padding_mask=m),
                           qkv, h, kpm, packed=False)
    torch.testing.assert_close(po, vo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pg, vg, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(po, ro, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pg, rg, rtol=1e-4, atol=1e-4)


@needs_interp
def test_interp_packed_qkv_inside_torch_compile():
    from sparse_transformer.ops.triton import backend

    qkv = _packed(1, 40, 2, 16, torch.float32, "cpu").requires_grad_()
    pattern = P.Strided(8)

    def f(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (backend.triton_attention_packed(x, 2, pattern) * 2).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(qkv), qkv)[0]
    want = torch.autograd.grad(f(qkv), qkv)[0]
    torch.testing.assert_close(got, want)

    # The fake implementation gives the real output's (token-major) strides, so the traced
    # head merge is a view exactly where the real one is.
    def merged(x):
        out = backend.triton_attention_packed(x, 2, pattern)
        return out.transpose(1, 2).reshape(1, 40, 32)

    torch._dynamo.reset()
    got = torch.compile(merged, backend="aot_eager", fullgraph=True)(qkv)
    want = merged(qkv)
    assert want.is_contiguous() and got.stride() == want.stride()
    torch.testing.assert_close(got, want)


@pytest.mark.skipif(not (CUDA or INTERP), reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("layout", ["token-major", "every-other-row"])
def test_backward_reads_the_output_gradient_at_its_strides(layout):
    """dO is read where it lies (token-major, as a head merge's gradient arrives, or any other
    strides with unit last stride): the same gradients as from a contiguous copy. The output
    itself is token-major. On a GPU at a GPU tile size, in bf16 (dq's one-pass atomic sums
    vary in order, hence the tolerance); under the interpreter in float32."""
    dev, dtype, n, tol = (("cuda", torch.bfloat16, 1000, 2e-2) if CUDA
                          else ("cpu", torch.float32, 37, 1e-6))
    b, h, d = 2, 2, 64 if CUDA else 16
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(dev, dtype).requires_grad_()
               for _ in range(3))
    kpm = _padding(b, n, dev)
    out = triton_attention(q, k, v, P.Strided(32 if CUDA else 8), key_padding_mask=kpm)
    assert out.transpose(1, 2).is_contiguous()
    if layout == "token-major":
        dout = torch.randn(b, n, h, d, generator=g).to(dev, dtype).transpose(1, 2)
    else:
        dout = torch.randn(b, h, 2 * n, d, generator=g).to(dev, dtype)[:, :, ::2]
    assert not dout.is_contiguous() and dout.stride(-1) == 1
    got = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    want = torch.autograd.grad(out, (q, k, v), dout.contiguous())
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@needs_interp
def test_interp_layer_packed_path_matches(monkeypatch):
    """The attention layer with the packed path on and off: same output and gradients."""
    from sparse_transformer.layers.attention import SparseSelfAttention
    from sparse_transformer.ops import dispatch

    torch.manual_seed(0)
    layer = SparseSelfAttention(32, 2, P.Fixed(8, 2), backend="triton")
    x = torch.randn(2, 37, 32)
    kpm = _padding(2, 37, "cpu")
    runs = []
    for on in (True, False):
        monkeypatch.setattr(dispatch, "PACKED_QKV", on)
        layer.zero_grad()
        xx = x.clone().requires_grad_()
        out = layer(xx, kpm)
        out.square().sum().backward()
        runs.append((out.detach(), xx.grad, [p.grad.clone() for p in layer.parameters()]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-5, atol=1e-5)
    for a, b in zip(runs[0][2], runs[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (CUDA or INTERP), reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.slow
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "views"])
def test_layer_compiled_by_inductor_matches_eager(packed, monkeypatch):
    """The attention layer compiled by inductor (our ops opaque in its graph, their fake outputs
    token-major like the real ones) gives eager's output and input gradient (float32; on a GPU
    through inductor's GPU code)."""
    from sparse_transformer.layers.attention import SparseSelfAttention
    from sparse_transformer.ops import dispatch

    dev = "cuda" if CUDA else "cpu"
    monkeypatch.setattr(dispatch, "PACKED_QKV", packed)
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = SparseSelfAttention(32, 2, P.Strided(8), backend="triton").to(dev)
    x = torch.randn(2, 37, 32, device=dev)
    runs = []
    for fn in (torch.compile(layer, backend="inductor", fullgraph=True), layer):
        xx = x.clone().requires_grad_()
        out = fn(xx)
        out.square().sum().backward()
        runs.append((out.detach(), xx.grad))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-5, atol=1e-5)


def test_unpack_qkv_names_a_bad_width():
    from sparse_transformer.ops.triton.backend import unpack_qkv

    with pytest.raises(ValueError, match="3 x heads x head_dim"):
        unpack_qkv(torch.zeros(1, 4, 20), 2)


@gpu
@pytest.mark.parametrize("pattern", [P.Strided(128), P.Fixed(128, 32)], ids=["strided", "fixed"])
def test_gpu_packed_qkv_matches_views(pattern):
    b, n, h, d = 2, 2049, 4, 64
    qkv = _packed(b, n, h, d, torch.bfloat16, "cuda")
    (po, pg), (vo, vg) = _packed_and_views(pattern, qkv, h, _padding(b, n, "cuda"))
    torch.testing.assert_close(po, vo, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(pg, vg, rtol=1e-2, atol=1e-2)
