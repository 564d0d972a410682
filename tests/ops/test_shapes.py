"""The shapes real models use: other key lengths with a query offset, grouped-query attention,
padded queries. Reference and blocked against a float64 truth; the adapter that runs square-only
backends (Triton here, under the interpreter on the CPU) against the same truth."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import BACKENDS, force_backend, reference_attention
from tolerance import _EPS, attention_and_grads, rel_err

PATTERNS = [
    P.Dense(), P.Strided(8), P.Fixed(8, 2), P.Fixed(8, 2, distinct_heads=True), P.Local(5),
    P.Local(3) | P.Global((4,)) | P.Random(1, 8, seed=1),
    P.PerHead((P.Local(4), P.Column(4))),
]
# (q_len, k_len, q_offset): decoding one query against a cache, a few queries, a query block in
# the middle, more queries than keys, offsets that are not multiples of any block, square.
SHAPES = [(1, 37, None), (5, 70, None), (10, 50, 3), (20, 10, 0), (7, 100, 93), (33, 33, 0),
          (1, 1, None)]


def _inputs(b, h, hkv, lq, lk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g)
    k, v = (torch.randn(b, hkv, lk, d, generator=g) for _ in range(2))
    kpm = torch.rand(b, lk, generator=g) < 0.2
    kpm[-1, :] = True  # the last batch entry has no key at all: every row empty
    qpm = torch.rand(b, lq, generator=g) < 0.3
    return [t.to(dtype) for t in (q, k, v)], kpm, qpm


def _check(fn, q, k, v, out_factor=2.0, grad_factor=3.0, **args):
    """``fn`` against the float64 reference, within the project's relative tolerance."""
    dout = torch.randn_like(q, dtype=torch.float64)
    truth = attention_and_grads(reference_attention, q.double(), k.double(), v.double(), dout,
                                **args)
    plain = attention_and_grads(reference_attention, q, k, v, dout, compute_dtype=q.dtype,
                                **args)
    ours = attention_and_grads(fn, q, k, v, dout, **args)
    for name, t, p, o in zip(("out", "dq", "dk", "dv"), truth, plain, ours):
        assert o.shape == t.shape and o.dtype == q.dtype, (name, o.shape, o.dtype)
        factor = out_factor if name == "out" else grad_factor
        bound = factor * rel_err(p, t) + 4 * _EPS[q.dtype]
        assert rel_err(o, t) <= bound, f"{name}: {rel_err(o, t):.3e} > {bound:.3e}"
    return ours


def _blocked(q, k, v, **kw):
    return sparse_attention(q, k, v, backend="blocked", **kw)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name[:40])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("lq,lk,off", SHAPES)
def test_blocked_matches_reference(pattern, causal, lq, lk, off):
    (q, k, v), kpm, qpm = _inputs(2, 4, 2, lq, lk, 12, torch.float32)
    _check(_blocked, q, k, v, pattern=pattern, causal=causal, key_padding_mask=kpm,
           q_offset=off, query_padding_mask=qpm)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_blocked_low_precision(dtype):
    (q, k, v), kpm, qpm = _inputs(2, 6, 3, 24, 150, 16, dtype, seed=3)
    _check(_blocked, q, k, v, pattern=P.Fixed(16, 4), causal=True, key_padding_mask=kpm,
           q_offset=None, query_padding_mask=qpm)


# -- the reference itself, against independent constructions ------------------------------------
@pytest.mark.parametrize("pattern", PATTERNS[:6], ids=lambda p: p.name[:40])
@pytest.mark.parametrize("causal", [True, False])
def test_offset_queries_are_rows_of_the_square_attention(pattern, causal):
    """Queries at positions off .. off + lq - 1 give those rows of the full square attention."""
    (q, k, v), kpm, _ = _inputs(2, 4, 4, 50, 50, 8, torch.float64, seed=5)
    full = reference_attention(q, k, v, pattern, causal, kpm)
    for off, lq in [(0, 1), (49, 1), (13, 20), (30, 20)]:
        rows = reference_attention(q[:, :, off:off + lq], k, v, pattern, causal, kpm,
                                   q_offset=off)
        torch.testing.assert_close(rows, full[:, :, off:off + lq], rtol=0, atol=1e-12)
        ours = _blocked(q[:, :, off:off + lq], k, v, pattern=pattern, causal=causal,
                        key_padding_mask=kpm, q_offset=off)
        torch.testing.assert_close(ours, full[:, :, off:off + lq], rtol=0, atol=1e-12)


def test_default_offset_is_the_last_positions():
    (q, k, v), _, _ = _inputs(1, 2, 2, 4, 30, 8, torch.float64)
    pat = P.Fixed(8, 2)
    a = sparse_attention(q, k, v, pat, backend="blocked")
    b = sparse_attention(q, k, v, pat, backend="blocked", q_offset=26)
    c = sparse_attention(q, k, v, pat, backend="blocked", q_offset=0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_grouped_query_attention_equals_expanded_heads():
    (q, k, v), kpm, _ = _inputs(2, 6, 2, 40, 40, 8, torch.float64, seed=7)
    ke, ve = (t.repeat_interleave(3, dim=1) for t in (k, v))  # query head i -> kv head i // 3
    pat = P.Local(5) | P.Global((0,))
    for backend in ("reference", "blocked"):
        torch.testing.assert_close(sparse_attention(q, k, v, pat, True, kpm, backend=backend),
                                   sparse_attention(q, ke, ve, pat, True, kpm, backend=backend),
                                   rtol=0, atol=1e-12)


def test_padded_queries_give_zeros_and_zero_gradients():
    (q, k, v), kpm, qpm = _inputs(2, 2, 2, 16, 16, 8, torch.float64, seed=2)
    q.requires_grad_(True)
    for backend in ("reference", "blocked"):
        out, lse = sparse_attention(q, k, v, P.Strided(4), True, None, backend=backend,
                                    return_lse=True, query_padding_mask=qpm)
        assert (out[qpm[:, None].expand(-1, 2, -1)] == 0).all()
        assert torch.isneginf(lse[qpm[:, None].expand(-1, 2, -1)]).all()
        (dq,) = torch.autograd.grad(out.sum(), (q,))
        assert (dq.transpose(1, 2)[qpm] == 0).all() and dq.abs().sum() > 0


# -- the adapter for square-only backends -------------------------------------------------------
triton = pytest.mark.skipif("triton" not in BACKENDS, reason="triton not installed")


@triton
@pytest.mark.parametrize("pattern", [P.Strided(8), P.Local(3) | P.Global((4,))],
                         ids=lambda p: p.name[:30])
@pytest.mark.parametrize("lq,lk,off", [(1, 21, None), (6, 30, 17), (12, 8, 0)])
def test_triton_through_the_adapter(pattern, lq, lk, off):
    from sparse_transformer.ops.triton.backend import is_available

    if not is_available(torch.device("cpu")) and not torch.cuda.is_available():
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    (q, k, v), kpm, qpm = _inputs(1, 4, 2, lq, lk, 16, torch.float32, seed=11)
    q, k, v, kpm, qpm = (t.to(dev) for t in (q, k, v, kpm, qpm))
    with force_backend("triton"):
        _check(lambda *a, **kw: sparse_attention(*a, **kw), q, k, v, pattern=pattern,
               causal=True, key_padding_mask=kpm, q_offset=off, query_padding_mask=qpm)


def test_auto_routes_few_offset_queries_to_blocked(monkeypatch):
    """Under backend='auto' a square-only backend would compute every row of the frame; a few
    queries against many keys go to the blocked path instead (unless a backend is forced)."""
    from sparse_transformer.ops import dispatch

    calls = []
    monkeypatch.setitem(dispatch.BACKENDS, "fake", lambda *a, **kw: calls.append(a) or a[0])
    monkeypatch.setattr(dispatch, "choose_backend", lambda *a: "fake")
    (q, k, v), _, _ = _inputs(1, 2, 2, 1, 40, 8, torch.float32)
    out = sparse_attention(q, k, v, P.Local(4))
    assert not calls and out.shape == q.shape
    (q2, k2, v2), _, _ = _inputs(1, 2, 2, 30, 40, 8, torch.float32)
    sparse_attention(q2, k2, v2, P.Local(4))
    assert len(calls) == 1 and calls[0][0].shape[2] == 40  # the frame holds every key


def test_sdpa_refuses_sparse_patterns_and_handles_every_shape():
    (q, k, v), kpm, qpm = _inputs(2, 4, 2, 5, 20, 8, torch.float64)
    with pytest.raises(ValueError, match="sdpa.*Dense"):
        sparse_attention(q, k, v, P.Local(4), backend="sdpa")
    for causal in (True, False):
        for off in (None, 3):
            args = dict(causal=causal, key_padding_mask=kpm, q_offset=off,
                        query_padding_mask=qpm)
            got = sparse_attention(q, k, v, P.Dense(), backend="sdpa", **args)
            want = reference_attention(q, k, v, P.Dense(), **args)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw,name", [
    (dict(k=torch.randn(2, 3, 9, 8), v=torch.randn(2, 3, 9, 8)), "heads"),
    (dict(k=torch.randn(2, 2, 9, 8), v=torch.randn(2, 2, 8, 8)), "k"),
    (dict(q_offset=-1), "q_offset"),
    (dict(q_offset=1.5), "q_offset"),
    (dict(query_padding_mask=torch.zeros(2, 9, dtype=torch.bool)), "query_padding_mask"),
    (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)), "key_padding_mask"),
])
def test_bad_shapes_name_the_argument(kw, name):
    args = dict(q=torch.randn(2, 4, 5, 8), k=torch.randn(2, 2, 9, 8), v=torch.randn(2, 2, 9, 8),
                pattern=P.Local(4))
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        sparse_attention(**args)


@pytest.mark.skipif("flex" not in BACKENDS, reason="FlexAttention not importable")
@pytest.mark.parametrize("lq,lk,off", [(3, 150, None), (40, 150, 61), (150, 150, 0)])
def test_flex_through_the_adapter_forward(lq, lk, off):
    """On the CPU FlexAttention has only a forward: outputs and log-sum-exps are checked."""
    import warnings

    (q, k, v), kpm, qpm = _inputs(2, 4, 2, lq, lk, 16, torch.float32, seed=13)
    args = dict(pattern=P.Fixed(16, 4), causal=True, key_padding_mask=kpm, q_offset=off,
                query_padding_mask=qpm)
    with warnings.catch_warnings(), torch.no_grad(), force_backend("flex"):
        warnings.simplefilter("ignore")
        out, lse = sparse_attention(q, k, v, return_lse=True, **args)
    ref, ref_lse = reference_attention(q, k, v, return_lse=True, **args)
    assert rel_err(out, ref) < 1e-5
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["blocked", "triton", "flex", "auto"])
@pytest.mark.parametrize("lq,lk,off", [(1, 1000, None), (100, 1000, 700), (600, 1000, 400),
                                       (512, 512, 0)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_backends_on_every_shape(backend, lq, lk, off, dtype):
    if backend not in BACKENDS and backend != "auto":
        pytest.skip(f"{backend} not registered")
    (q, k, v), kpm, qpm = _inputs(2, 8, 2, lq, lk, 64, dtype, seed=17)
    q, k, v, kpm, qpm = (t.cuda() for t in (q, k, v, kpm, qpm))
    for pattern in (P.Strided(32), P.Fixed(64, 16), P.bigbird(48, 2, 1, 64, seed=3)):
        if backend == "auto":
            fn = sparse_attention
        else:
            def fn(*a, **kw):
                with force_backend(backend):
                    return sparse_attention(*a, **kw)
        _check(fn, q, k, v, pattern=pattern, causal=True, key_padding_mask=kpm, q_offset=off,
               query_padding_mask=qpm)
