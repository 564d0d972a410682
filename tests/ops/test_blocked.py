"""The blocked backend (and "auto" on the CPU) against the dense reference: forward and grads."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.ops import reference_attention
from tolerance import attention_and_grads, check_against_reference, rel_err

PATTERNS = [P.Strided(16), P.Strided(10), P.Fixed(16, 4), P.Fixed(16, 4, distinct_heads=True),
            P.Local(20), P.Local(7), P.Column(8), P.Block(12), P.Summary(16, 4),
            P.Global((0, 50)), P.Random(2, block_size=16, seed=1), P.Dense(),
            P.Local(9) | P.Global((3,)) | P.Random(1, block_size=16, seed=2),
            P.PerHead((P.Strided(8), P.Fixed(16, 8)))]
IDS = [p.name for p in PATTERNS]


def qkv(b, h, n, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n,d", [(63, 32), (97, 80)])
def test_matches_reference_float32(pattern, causal, n, d):
    q, k, v = qkv(2, 3, n, d, seed=n + d)
    check_against_reference(sparse_attention, q, k, v, pattern, causal, backend="blocked")


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Global((5,))], ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_reference_float64(pattern, causal):
    # In float64 "plain PyTorch" is the truth itself, so the relative rule degenerates to its ulp
    # floor; a different summation order legitimately differs by ~sqrt(keys) * eps. Bound: 1e3 eps.
    q, k, v = qkv(1, 2, 97, 64, torch.float64)
    dout = torch.randn_like(q)
    args = dict(pattern=pattern, causal=causal)
    ours = attention_and_grads(sparse_attention, q, k, v, dout, backend="blocked", **args)
    truth = attention_and_grads(reference_attention, q, k, v, dout, **args)
    for name, o, t in zip(("out", "dq", "dk", "dv"), ours, truth):
        assert o.dtype == torch.float64
        assert rel_err(o, t) <= 1e3 * torch.finfo(torch.float64).eps, name


@pytest.mark.parametrize("pattern,d", [(P.Strided(32), 64), (P.Fixed(64, 16), 80),
                                       (P.Local(48), 32)], ids=str)
def test_matches_reference_at_1025(pattern, d):
    q, k, v = qkv(1, 2, 1025, d, seed=d)
    check_against_reference(sparse_attention, q, k, v, pattern, True, backend="blocked")


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Local(20)], ids=str)
def test_bfloat16_within_plain_pytorch_error(pattern):
    q, k, v = qkv(2, 2, 97, 64, torch.bfloat16)
    check_against_reference(sparse_attention, q, k, v, pattern, True, backend="blocked")


@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Local(20)], ids=str)
def test_auto_on_cpu_matches_reference(pattern):
    q, k, v = qkv(2, 2, 63, 32)
    kpm = torch.rand(2, 63, generator=torch.Generator().manual_seed(1)) < 0.2
    check_against_reference(sparse_attention, q, k, v, pattern, True, kpm, backend="auto")


def test_custom_scale():
    q, k, v = qkv(1, 2, 63, 32, torch.float64)
    dout = torch.randn_like(q)
    args = dict(pattern=P.Strided(8), causal=True, scale=0.3)
    ours = attention_and_grads(sparse_attention, q, k, v, dout, backend="blocked", **args)
    truth = attention_and_grads(reference_attention, q, k, v, dout, **args)
    for o, t in zip(ours, truth):
        assert rel_err(o, t) <= 1e3 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize("n", [1, 2, 5, 17])
@pytest.mark.parametrize("pattern", [P.Strided(16), P.Fixed(16, 4), P.Local(20), P.Column(4),
                                     P.Random(1, block_size=4)], ids=str)
def test_lengths_shorter_than_blocks(pattern, n):
    q, k, v = qkv(2, 2, n, 16, seed=n)
    check_against_reference(sparse_attention, q, k, v, pattern, True, backend="blocked")


def test_many_batch_heads_use_the_batched_path():
    # More (batch, head) pairs than the per-pair loop takes: one torch.matmul per step instead.
    q, k, v = qkv(5, 4, 97, 16)
    kpm = torch.rand(5, 97, generator=torch.Generator().manual_seed(4)) < 0.2
    for pattern in (P.Strided(16), P.Fixed(16, 4), P.Random(2, block_size=16)):
        check_against_reference(sparse_attention, q, k, v, pattern, True, kpm, backend="blocked")
