"""Attention over disjoint key sets, merged through the returned log-sum-exps, equals attention
over their union (the public ``merge_partials`` with ``return_lse=True``)."""
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import merge_partials, reference_attention
from sparse_transformer.ops.merge import lse_weights


def test_merge_of_factors_equals_the_merged_pattern():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 97, 32, dtype=torch.float64) for _ in range(3))
    parts = P.Strided(8).parts()  # disjoint: band and far column
    outs, lses = zip(*(sparse_attention(q, k, v, p, return_lse=True, backend="reference")
                       for p in parts))
    out, lse = merge_partials(list(outs), list(lses))
    ref, ref_lse = sparse_attention(q, k, v, P.Strided(8), return_lse=True, backend="reference")
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(lse, ref_lse)


def test_merge_keeps_empty_rows_zero_with_zero_gradient():
    q, k, v = (torch.randn(1, 1, 8, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pad = torch.ones(1, 8, dtype=torch.bool)  # every key is padding: every row is empty
    outs, lses = zip(*(sparse_attention(q, k, v, p, key_padding_mask=pad, return_lse=True)
                       for p in (P.Local(2), P.Column(4, min_distance=2))))
    out, lse = merge_partials(list(outs), list(lses))
    assert torch.equal(out, torch.zeros_like(out)) and torch.isinf(lse).all()
    out.sum().backward()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in (q, k, v))


def test_merge_of_two_parts_with_gradients_through_outputs_and_lse():
    """Two disjoint key sets merged through their log-sum-exps give attention over the union,
    and gradients flow through outputs and log-sum-exps (no NaN on rows empty in both)."""
    g = torch.Generator().manual_seed(0)
    n = 64
    q, k, v = (torch.randn(1, 2, n, 8, generator=g, dtype=torch.float64) for _ in range(3))
    kpm = torch.rand(1, n, generator=g) < 0.2
    kpm[0, :10] = True  # the first rows see nothing at all
    a, b = P.Local(5), P.Column(8, min_distance=5)
    q1, k1, v1 = (t.clone().requires_grad_() for t in (q, k, v))
    o1, l1 = reference_attention(q1, k1, v1, a, True, kpm, return_lse=True)
    o2, l2 = reference_attention(q1, k1, v1, b, True, kpm, return_lse=True)
    out, lse = merge_partials([o1, o2], [l1, l2])
    q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
    ref, ref_lse = reference_attention(q2, k2, v2, a | b, True, kpm, return_lse=True)
    torch.testing.assert_close(out, ref)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    gout, w = torch.randn_like(out), torch.randn_like(lse)
    fin = torch.isfinite(ref_lse)
    got = torch.autograd.grad((out * gout).sum() + (lse[fin] * w[fin]).sum(), (q1, k1, v1))
    want = torch.autograd.grad((ref * gout).sum() + (ref_lse[fin] * w[fin]).sum(), (q2, k2, v2))
    for x, y in zip(got, want):
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, y)


def test_lse_weights_is_a_softmax_that_never_gives_nan():
    x = torch.tensor([[1.0, 2.0, float("-inf")], [float("-inf")] * 3, [0.0, 50.0, -50.0]],
                     requires_grad=True)
    w, lse = lse_weights(x, -1)
    torch.testing.assert_close(w[[0, 2]], torch.softmax(x[[0, 2]], -1))
    torch.testing.assert_close(lse[[0, 2]], torch.logsumexp(x[[0, 2]], -1))
    assert torch.equal(w[1], torch.zeros(3)) and lse[1] == float("-inf")
    (w.sum() + lse[[0, 2]].sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[1], torch.zeros(3))


def test_merge_of_half_precision_parts_accumulates_in_float32():
    g = torch.Generator().manual_seed(1)
    outs = [torch.randn(4, 16, 8, generator=g) for _ in range(3)]
    lses = [torch.randn(4, 16, generator=g) for _ in range(3)]
    want, want_lse = merge_partials(outs, lses)
    got, got_lse = merge_partials([o.bfloat16() for o in outs], lses)
    assert got.dtype == torch.bfloat16 and got_lse.dtype == torch.float32
    # one rounding of the result (plus the inputs' own), not one per part
    assert (got.float() - want).abs().max() <= 2 * 2 ** -8 * want.abs().max()
    torch.testing.assert_close(got_lse, want_lse)
