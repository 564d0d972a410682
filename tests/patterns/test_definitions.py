"""Each pattern's mask against the paper's / the docstring's definition, written by hand."""
import itertools

import pytest
import torch

from sparse_transformer import patterns as P


def by_hand(n, rule, causal=True):
    m = torch.zeros(n, n, dtype=torch.bool)
    for i, j in itertools.product(range(n), range(n)):
        m[i, j] = rule(i, j) and (j <= i or not causal)
    return m


@pytest.mark.parametrize("n,l", [(23, 4), (40, 8), (17, 5)])
@pytest.mark.parametrize("causal", [True, False])
def test_strided(n, l, causal):
    # A1 = {max(0, i - l) .. i}, A2 = {j: (i - j) mod l == 0}; mirrored bidirectionally.
    a1 = by_hand(n, lambda i, j: max(0, i - l) <= j <= i)
    a2 = by_hand(n, lambda i, j: (i - j) % l == 0)
    want = a1 | a2
    if not causal:
        want = want | want.T
    assert torch.equal(P.Strided(l).mask(n, causal=causal)[0], want)
    row, col = P.Strided(l).factors
    assert torch.equal(row.mask(n)[0], a1)
    assert torch.equal(col.mask(n)[0], a2)


@pytest.mark.parametrize("n,l,c", [(23, 4, 1), (40, 8, 3), (33, 6, 6)])
@pytest.mark.parametrize("causal", [True, False])
def test_fixed(n, l, c, causal):
    a1 = by_hand(n, lambda i, j: i // l == j // l, causal)
    a2 = by_hand(n, lambda i, j: j % l in range(l - c, l), causal)
    assert torch.equal(P.Fixed(l, c).mask(n, causal=causal)[0], a1 | a2)
    block, summary = P.Fixed(l, c).factors
    assert torch.equal(block.mask(n, causal=causal)[0], a1)
    assert torch.equal(summary.mask(n, causal=causal)[0], a2)


def test_fixed_distinct_heads_sub_blocks():
    n, l, c, heads = 40, 8, 2, 5
    got = P.Fixed(l, c, distinct_heads=True).mask(n, heads)
    for h in range(heads):
        o = h % (l // c)  # head h reads sub-block o, counted from the end of the block
        own = range(l - (o + 1) * c, l - o * c)
        want = by_hand(n, lambda i, j: i // l == j // l or j % l in own)
        assert torch.equal(got[h], want), h
    assert not torch.equal(got[0], got[1])
    assert torch.equal(got[0], got[4])


@pytest.mark.parametrize("w", [1, 3, 8])
@pytest.mark.parametrize("causal", [True, False])
def test_local(w, causal):
    n = 21
    want = by_hand(n, lambda i, j: abs(i - j) < w, causal)
    assert torch.equal(P.Local(w).mask(n, causal=causal)[0], want)
    if causal:
        assert (want.sum(-1) == torch.clamp(torch.arange(n) + 1, max=w)).all()


@pytest.mark.parametrize("causal", [True, False])
def test_global(causal):
    n, toks = 19, (0, 7)
    want = by_hand(n, lambda i, j: i in toks or j in toks, causal)
    assert torch.equal(P.Global(toks).mask(n, causal=causal)[0], want)
    assert torch.equal(P.Global.first(2).mask(n)[0], P.Global((1, 0)).mask(n)[0])


def test_dense():
    assert torch.equal(P.Dense().mask(9)[0], torch.ones(9, 9, dtype=torch.bool).tril())
    assert P.Dense().mask(9, causal=False).all()


def test_random_seeded_reproducible_and_length_independent():
    pat = P.Random(2, block_size=4, seed=3)
    m1 = pat.mask(64, causal=False)
    assert torch.equal(m1, P.Random(2, block_size=4, seed=3).mask(64, causal=False))
    assert not torch.equal(m1, P.Random(2, block_size=4, seed=4).mask(64, causal=False))
    # The links among the first 40 positions do not depend on the sequence length.
    for n in (40, 41, 100, 129):
        assert torch.equal(pat.mask(n, causal=False)[0, :40, :40], m1[0, :40, :40]), n
    # Block-level structure: symmetric, same-block never linked unless drawn, each query block
    # b >= 1 draws min(b, num_blocks) earlier blocks.
    blocks = m1[0].view(16, 4, 16, 4).any(3).any(1)
    assert torch.equal(blocks, blocks.T)
    lower = blocks.tril(-1)
    assert torch.equal(lower.sum(1), torch.clamp(torch.arange(16), max=2))


def test_random_distinct_heads_differ():
    m = P.Random(1, block_size=4, seed=0, distinct_heads=True).mask(64, 3, causal=False)
    assert not (torch.equal(m[0], m[1]) and torch.equal(m[1], m[2]))


def test_union_and_or_operator():
    n = 30
    a, b = P.Local(3), P.Global((5,))
    want = a.mask(n) | b.mask(n)
    assert torch.equal(P.Union((a, b)).mask(n), want)
    assert torch.equal((a | b).mask(n), want)
    assert len(((a | b) | P.Dense()).members) == 3


def test_per_head_assignment():
    n = 24
    pat = P.PerHead((P.Local(2), P.Column(4)))
    m = pat.mask(n, 4)
    for h in range(4):
        want = (P.Local(2) if h % 2 == 0 else P.Column(4)).mask(n)[0]
        assert torch.equal(m[h], want)
    # Members that vary by head see their own head index among the heads assigned to them.
    inner = P.Fixed(8, 2, distinct_heads=True)
    m = P.PerHead((inner, P.Local(2))).mask(n, 4)
    assert torch.equal(m[0], inner.mask(n, 2)[0])
    assert torch.equal(m[2], inner.mask(n, 2)[1])
