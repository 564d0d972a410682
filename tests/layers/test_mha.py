"""SparseMultiheadAttention against torch.nn.MultiheadAttention with the same weights."""
import pytest
import torch
from torch import nn

from sparse_transformer import patterns as P
from sparse_transformer.layers import SparseMultiheadAttention


def _pair(seed=0, **kw):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(**kw, dtype=torch.float64)
    ours = SparseMultiheadAttention(**kw, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())  # same parameter names
    return ref, ours


def _inputs(kw, n, lq, lk, seed=1):
    g = torch.Generator().manual_seed(seed)
    e = kw["embed_dim"]
    kdim, vdim = kw.get("kdim") or e, kw.get("vdim") or e
    shape = (lambda l, d: (n, l, d)) if kw.get("batch_first") else (lambda l, d: (l, n, d))
    return [torch.randn(*shape(l, d), generator=g, dtype=torch.float64, requires_grad=True)
            for l, d in ((lq, e), (lk, kdim), (lk, vdim))]


def _grads(module, out, inputs, seed=2):
    g = torch.Generator().manual_seed(seed)
    dout = torch.randn(out.shape, generator=g, dtype=out.dtype)
    params = [p for _, p in sorted(module.named_parameters())]
    return torch.autograd.grad(out, [*inputs, *params], dout)


def _assert_same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kw", [
    dict(embed_dim=16, num_heads=4, batch_first=True),
    dict(embed_dim=16, num_heads=2, batch_first=False),
    dict(embed_dim=12, num_heads=3, batch_first=True, bias=False),
    dict(embed_dim=16, num_heads=4, batch_first=True, kdim=10, vdim=6),
])
@pytest.mark.parametrize("padding", [False, True])
def test_dense_matches_torch(kw, padding):
    ref, ours = _pair(**kw)
    lq = lk = 9
    if kw.get("kdim"):
        lk = 13  # cross-attention: keys of another length and width
    kpm = None
    if padding:
        kpm = torch.zeros(3, lk, dtype=torch.bool)
        kpm[0, -3:] = True
        kpm[2, ::2] = True
    xs = _inputs(kw, 3, lq, lk)
    want, _ = ref(*xs, key_padding_mask=kpm, need_weights=False)
    got, weights = ours(*xs, key_padding_mask=kpm)
    assert weights is None
    _assert_same([got], [want])
    _assert_same(_grads(ours, got, xs), _grads(ref, want, xs))


def test_causal_and_sparse_patterns_match_torch_with_the_same_mask():
    kw = dict(embed_dim=16, num_heads=4, batch_first=True)
    n = 20
    for pattern, causal in [(P.Dense(), True), (P.Strided(4), True), (P.Fixed(5, 2), False),
                            (P.bigbird(3, 1, 1, 4, seed=3), False), (P.longformer(2, (0, 7)), True)]:
        ref, ours = _pair(**kw)
        ours.pattern, ours.causal = pattern, causal
        blocked = ~pattern.mask(n, 1, causal)[0]  # torch: True = not allowed
        xs = _inputs(kw, 2, n, n)
        kpm = torch.zeros(2, n, dtype=torch.bool)
        kpm[1, 15:] = True
        want, _ = ref(*xs, attn_mask=blocked, key_padding_mask=kpm, need_weights=False)
        got, _ = ours(*xs, key_padding_mask=kpm)
        _assert_same([got], [want])
        _assert_same(_grads(ours, got, xs), _grads(ref, want, xs))


def test_is_causal_with_its_mask_hint():
    kw = dict(embed_dim=8, num_heads=2, batch_first=True)
    ref, ours = _pair(**kw)
    xs = _inputs(kw, 2, 7, 7)
    hint = nn.Transformer.generate_square_subsequent_mask(7, dtype=torch.float64)
    want, _ = ref(*xs, attn_mask=hint, is_causal=True, need_weights=False)
    got, _ = ours(*xs, attn_mask=hint, is_causal=True)
    _assert_same([got], [want])


def test_unbatched_input():
    kw = dict(embed_dim=8, num_heads=2)
    ref, ours = _pair(**kw)
    xs = [torch.randn(5, 8, dtype=torch.float64) for _ in range(3)]
    _assert_same([ours(*xs)[0]], [ref(*xs, need_weights=False)[0]])


def test_fully_padded_rows_give_zeros_and_zero_gradients():
    kw = dict(embed_dim=8, num_heads=2, batch_first=True, bias=False)
    _, ours = _pair(**kw)
    xs = _inputs(kw, 2, 6, 6)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1] = True  # every key of the second sequence is padding
    out, _ = ours(*xs, key_padding_mask=kpm)
    assert not torch.isnan(out).any()
    assert (out[1] == 0).all() and out[0].abs().sum() > 0
    dq, dk, dv = torch.autograd.grad(out.sum(), xs)
    for g in (dq, dk, dv):
        assert not torch.isnan(g).any() and (g[1] == 0).all()
    # Causal + local: query 0 of a sequence whose first key is padding has no key at all.
    ours.pattern, ours.causal = P.Local(2), True
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[0, 0] = True
    out, _ = ours(*xs, key_padding_mask=kpm)
    (dq,) = torch.autograd.grad(out.sum(), xs[:1])
    assert (out[0, 0] == 0).all() and (dq[0, 0] == 0).all() and not torch.isnan(dq).any()


def test_dropout_acts_on_the_output_in_training_only():
    kw = dict(embed_dim=8, num_heads=2, batch_first=True, dropout=0.5)
    ref, ours = _pair(**kw)
    ref.eval()
    xs = _inputs(kw, 2, 6, 6)
    ours.eval()
    _assert_same([ours(*xs)[0]], [ref(*xs, need_weights=False)[0]])
    ours.train()
    out, _ = ours(*xs)
    dropped = (out == 0).double().mean()
    assert 0.2 < dropped < 0.8  # about half the output elements are zeroed


@pytest.mark.parametrize("call,match", [
    (lambda m, x: m(x, x, x, need_weights=True), "need_weights"),
    (lambda m, x: m(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool)), "attn_mask"),
    (lambda m, x: m(x, x, x, key_padding_mask=torch.zeros(2, 4)), "key_padding_mask"),
])
def test_refusals_name_the_argument(call, match):
    m = SparseMultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(ValueError, match=match):
        call(m, torch.randn(2, 4, 8))


def test_constructor_refusals():
    with pytest.raises(ValueError, match="num_heads"):
        SparseMultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="add_bias_kv"):
        SparseMultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(TypeError, match="pattern"):
        SparseMultiheadAttention(8, 2, pattern="local")


def test_decoding_against_cached_keys_gives_the_last_rows():
    """A query shorter than the keys sits at the last positions (q_offset = S - L by default)."""
    kw = dict(embed_dim=16, num_heads=4, batch_first=True)
    _, ours = _pair(**kw)
    ours.pattern, ours.causal = P.Fixed(4, 1), True
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    full, _ = ours(x, x, x)
    last, _ = ours(x[:, -2:], x, x)
    torch.testing.assert_close(last, full[:, -2:], rtol=1e-10, atol=1e-12)
    mid, _ = ours(x[:, 3:5], x[:, :5], x[:, :5])
    torch.testing.assert_close(mid, full[:, 3:5], rtol=1e-10, atol=1e-12)
