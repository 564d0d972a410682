"""Padding, empty rows (zeros, zero grads, never NaN) and the returned log-sum-exp."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import blocked_attention, reference_attention
from tolerance import check_against_reference


def qkv(b, h, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Local(20), P.Column(8),
                                     P.Random(2, block_size=16)], ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_padding_mask(pattern, causal):
    q, k, v = qkv(3, 2, 97, 32)
    kpm = torch.rand(3, 97, generator=torch.Generator().manual_seed(2)) < 0.3
    kpm[1] = True  # a fully padded batch element: every row of it is empty
    kpm[2, :50] = True  # a padded prefix: causally the first rows are empty
    check_against_reference(sparse_attention, q, k, v, pattern, causal, kpm, backend="blocked")


def _grads_zero_on_empty_rows(pattern, causal, kpm=None):
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 97, 32))
    out, lse = blocked_attention(q, k, v, pattern, causal, kpm, return_lse=True)
    mask = pattern.mask(97, 2, causal)[None]
    if kpm is not None:
        mask = mask & ~kpm[:, None, None, :]
    empty = ~mask.any(-1)  # (1, 2, 97)
    assert empty.any(), "the case must have empty rows"
    assert torch.isfinite(out).all() and (out[empty] == 0).all()
    assert torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
    # Gradient flowing only from empty rows is exactly zero.
    (out * empty.unsqueeze(-1)).sum().backward()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all() and (g == 0).all()


def test_empty_rows_global_bidirectional():
    # Global tokens beyond the sequence: no row has a key; a union with nothing else is empty.
    _grads_zero_on_empty_rows(P.Global((200,)), causal=False)


def test_empty_rows_global_causal():
    # Causally rows before the global token see nothing (the token is in their future).
    _grads_zero_on_empty_rows(P.Global((60,)), causal=True)


def test_empty_rows_random_causal():
    # Random links never join a block to itself: block 0 has no earlier block to draw.
    _grads_zero_on_empty_rows(P.Random(1, block_size=16, seed=3), causal=True)


def test_empty_rows_from_padding():
    kpm = torch.zeros(1, 97, dtype=torch.bool)
    kpm[0, :40] = True
    _grads_zero_on_empty_rows(P.Local(8), True, kpm)


@pytest.mark.parametrize("pattern", [P.Global((60, 75)), P.Random(1, block_size=16, seed=3)],
                         ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_empty_row_patterns_match_reference(pattern, causal):
    q, k, v = qkv(2, 2, 97, 32)
    check_against_reference(sparse_attention, q, k, v, pattern, causal, backend="blocked")


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Global((3, 70))], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_return_lse(pattern, dtype):
    q, k, v = (t.to(dtype) for t in qkv(2, 2, 97, 32))
    kpm = torch.zeros(2, 97, dtype=torch.bool)
    kpm[1, 10:30] = True
    out, lse = blocked_attention(q, k, v, pattern, True, kpm, return_lse=True)
    ref_out, ref_lse = reference_attention(q, k, v, pattern, True, kpm, return_lse=True)
    assert lse.shape == (2, 2, 97) and lse.dtype == (torch.float64 if dtype == torch.float64
                                                     else torch.float32)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse.to(lse.dtype), atol=tol, rtol=tol)


def test_lse_gradient_matches_reference():
    q, k, v = (t.double() for t in qkv(1, 2, 63, 16))

    def loss(fn):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out, lse = fn(qq, kk, vv, P.Fixed(16, 4), True, None, return_lse=True)
        torch.autograd.backward([out.sum(), (lse * lse).sum()])
        return qq.grad, kk.grad, vv.grad

    for a, b in zip(loss(blocked_attention), loss(reference_attention)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_non_contiguous_inputs():
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv(2, 3, 63, 32))
    assert not q.is_contiguous()
    check_against_reference(sparse_attention, q, k, v, P.Strided(8), True, backend="blocked")


def test_single_key_rows_give_dq_at_rounding_level():
    # A row with one allowed key has dq = 0 exactly. Plain autograd gets 0; the flash-style
    # backward (ds = p * (dp - rowsum(dout * out))) leaves float32 rounding noise, which must stay
    # at the level of eps * |dout| |v| (this is why such a degenerate case is not used with the
    # relative-to-plain rule above).
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 97, 32))
    out = blocked_attention(q, k, v, P.Global((60,)), True)
    dout = torch.randn_like(out)
    out.backward(dout)
    bound = 20 * torch.finfo(torch.float32).eps * dout.abs().max() * v.abs().max() * 32
    assert q.grad[:, :, 61:].abs().max() <= bound
