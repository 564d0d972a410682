"""Attention over disjoint key sets, merged through the returned log-sum-exps, equals attention
over their union (the public ``merge_partials`` with ``return_lse=True``)."""
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import merge_partials


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
