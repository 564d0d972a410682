"""The reference itself: equal to plain softmax attention and to SDPA where they apply."""
import torch
import torch.nn.functional as F

from sparse_transformer import patterns as P
from sparse_transformer.ops import reference_attention


def test_dense_causal_equals_sdpa():
    q, k, v = (torch.randn(2, 3, 33, 16, dtype=torch.float64) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(reference_attention(q, k, v, P.Dense(), True), want)


def test_pattern_mask_equals_sdpa_with_that_mask():
    q, k, v = (torch.randn(2, 3, 40, 16, dtype=torch.float64) for _ in range(3))
    pat = P.Strided(6)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=pat.mask(40, 3)[None])
    torch.testing.assert_close(reference_attention(q, k, v, pat, True), want)


def test_empty_rows_are_zero_with_zero_grads():
    q, k, v = (torch.randn(1, 2, 20, 8, requires_grad=True) for _ in range(3))
    out, lse = reference_attention(q, k, v, P.Global((10,)), True, return_lse=True)
    assert (out[:, :, :10] == 0).all() and torch.isneginf(lse[:, :, :10]).all()
    out[:, :, :10].sum().backward()
    assert all((t.grad == 0).all() for t in (q, k, v))


def test_lse_is_logsumexp_of_allowed_scores():
    q, k, v = (torch.randn(1, 1, 12, 4, dtype=torch.float64) for _ in range(3))
    _, lse = reference_attention(q, k, v, P.Local(3), True, return_lse=True)
    s = (q @ k.transpose(-1, -2)) * 0.5
    s = s.masked_fill(~P.Local(3).mask(12)[None], float("-inf"))
    torch.testing.assert_close(lse, s.logsumexp(-1))
