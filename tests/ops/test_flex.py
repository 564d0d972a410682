"""The FlexAttention backend (hand-built BlockMask from the derived layout) against the reference.

On the CPU FlexAttention has only an (eager) forward, so CPU tests check outputs and log-sum-exps;
on a GPU the forward and the three gradients are checked with the project's tolerance rule.
"""
import warnings

import pytest
import torch

pytest.importorskip("torch.nn.attention.flex_attention")

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.ops import BACKENDS, reference_attention  # noqa: E402
from sparse_transformer.ops.flex import build_block_mask, flex_attention_backend  # noqa: E402
from tolerance import check_against_reference, rel_err  # noqa: E402

PATTERNS = [P.Strided(16), P.Fixed(16, 4), P.Fixed(16, 4, distinct_heads=True), P.Local(20),
            P.Local(4) | P.Random(1, 16, seed=1, distinct_heads=True) | P.Global((3,)),
            P.Local(300)]  # the last has full 128-tiles, where padding must still apply
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _inputs(b, h, n, d, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(dtype=dtype, device=device)
               for _ in range(3))
    kpm = torch.rand(b, n, generator=g) < 0.2
    kpm[-1, : n // 2] = True  # causal: early queries of the last batch entry see nothing
    return q, k, v, kpm.to(device)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("causal", [True, False])
def test_cpu_forward_and_lse_match_reference(pattern, causal):
    q, k, v, kpm = _inputs(2, 3, 300, 32)  # 300: the last 128-block is partial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, lse = flex_attention_backend(q, k, v, pattern, causal, kpm, return_lse=True)
        alone = flex_attention_backend(q, k, v, pattern, causal, kpm)  # no log-sum-exp asked
    ref, ref_lse = reference_attention(q, k, v, pattern, causal, kpm, return_lse=True)
    assert rel_err(out, ref) < 1e-5 and rel_err(alone, ref) < 1e-5
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)
    if causal:
        assert (out[-1, :, : 300 // 2] == 0).all()  # empty rows give zeros, not NaN


def test_block_mask_matches_the_predicate_everywhere():
    from torch.nn.attention.flex_attention import create_mask

    pattern, n = P.Fixed(16, 4, distinct_heads=True), 300
    bm = build_block_mask(pattern, n, 4, True, "cpu")
    got = create_mask(bm.mask_mod, 1, 4, n, n, device="cpu")[0]
    assert torch.equal(got, pattern.mask(n, 4, True))
    dense = bm.to_dense()[0]  # (heads, q blocks, k blocks): the listed tiles
    assert torch.equal(dense.bool(), pattern.block_layout(n, 128, 4, True).active)


def test_padding_makes_every_listed_tile_partial():
    """FlexAttention skips the mask function on full tiles; with key padding none may be full."""
    pattern, n = P.Local(300), 600
    kpm = torch.zeros(1, n, dtype=torch.bool)
    kpm[0, 5] = True
    plain = build_block_mask(pattern, n, 2, True, "cpu")
    padded = build_block_mask(pattern, n, 2, True, "cpu", kpm)
    assert int(plain.full_kv_num_blocks.sum()) > 0  # the case the rule is about
    assert padded.full_kv_num_blocks is None or int(padded.full_kv_num_blocks.sum()) == 0
    assert torch.equal(padded.to_dense().bool(), plain.to_dense().bool())


def test_registered():
    assert "flex" in BACKENDS


@gpu
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_matches_reference(pattern, dtype):
    q, k, v, kpm = _inputs(2, 4, 1025, 64, dtype, "cuda")
    check_against_reference(flex_attention_backend, q, k, v, pattern, True, kpm)


def test_strided_and_fixed_parts_get_their_own_calls():
    from sparse_transformer.ops.flex import split_parts

    assert split_parts(P.Strided(16), 300) == ([P.Column(16, min_distance=17)], P.Local(17))
    fixed = P.Fixed(16, 4, distinct_heads=True)
    assert split_parts(fixed, 300) == ([fixed.parts()[1]], P.Block(16))
    assert split_parts(P.Strided(16), 31) == ([], P.Strided(16))  # one row: nothing to gain
    assert split_parts(P.Local(20), 300) == ([], P.Local(20))


@pytest.mark.parametrize("n", [97, 256, 300])
@pytest.mark.parametrize("pattern", [P.Strided(8), P.Fixed(8, 2), P.Fixed(16, 4, distinct_heads=True)],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("causal", [True, False])
def test_split_calls_match_reference(pattern, n, causal):
    """Column calls in transposed order, summary calls over gathered keys, the rest in token
    order, merged: outputs and log-sum-exps equal the reference, padding and empty rows
    included."""
    q, k, v, kpm = _inputs(2, 4, n, 16, seed=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, lse = flex_attention_backend(q, k, v, pattern, causal, kpm, return_lse=True)
        plain = flex_attention_backend(q, k, v, pattern, causal, return_lse=False)
    ref, ref_lse = reference_attention(q, k, v, pattern, causal, kpm, return_lse=True)
    assert rel_err(plain, reference_attention(q, k, v, pattern, causal)) < 1e-5
    assert rel_err(out, ref) < 1e-5
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[fin], ref_lse[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,stride", [(97, 8), (300, 16), (256, 16), (40, 7)])
def test_transposed_position_is_the_sorted_order(n, stride):
    from sparse_transformer.ops.flex.backend import _transposed_order, _transposed_position

    order, inverse = _transposed_order(n, stride, "cpu")
    assert torch.equal(_transposed_position(torch.arange(n), n, stride), order)
    assert torch.equal(order[inverse], torch.arange(n))


def test_traceable_patterns_use_their_predicate():
    """Arithmetic predicates become FlexAttention's mask function; the others use mask tables.
    Both give the same mask."""
    from torch.nn.attention.flex_attention import create_mask

    assert P.Strided(8).traceable and (P.Local(3) | P.Fixed(8, 2)).traceable
    assert not (P.Local(3) | P.Global((1,))).traceable and not P.Random(1, 8).traceable
    n = 70
    for pattern in (P.Fixed(8, 2, distinct_heads=True), P.Local(3) | P.Global((1,))):
        bm = build_block_mask(pattern, n, 4, True, "cpu")
        assert bm.mask_mod.__name__ == ("predicate_mask_mod" if pattern.traceable
                                        else "table_mask_mod")
        got = create_mask(bm.mask_mod, 1, 4, n, n, device="cpu")[0]
        assert torch.equal(got, pattern.mask(n, 4, True))


def test_flex_refuses_tensors_of_2_31_elements():
    """FlexAttention's kernels use 32-bit offsets: a clear error naming the way out, not an
    illegal memory access on the device (meta tensors: nothing is allocated)."""
    q = torch.empty(1, 8, 2**22, 64, device="meta", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="fewer than 2\\*\\*31 elements.*triton"):
        flex_attention_backend(q, q, q, P.Local(128))
