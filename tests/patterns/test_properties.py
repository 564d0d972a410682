"""Structural properties: causality, counts, connectivity, factors and parts."""
import pytest
import torch

from sparse_transformer import patterns as P

PATTERNS = [
    P.Strided(4), P.Strided(7), P.Fixed(8, 2), P.Fixed(8, 2, distinct_heads=True), P.Local(5),
    P.Global((0, 9)), P.Random(2, block_size=4, seed=1), P.Dense(), P.Column(3),
    P.Column(4, min_distance=5), P.Block(6), P.Summary(8, 3), P.Summary(8, 2, True, True),
    P.Local(3) | P.Global((4,)) | P.Random(1, block_size=8),
    P.PerHead((P.Strided(4), P.Fixed(8, 4))),
]
IDS = [p.name for p in PATTERNS]


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_causal_mask_has_no_future_key(pattern):
    m = pattern.mask(37, 3, causal=True)
    assert not m.triu(1).any()
    assert torch.equal(m, pattern.mask(37, 3, causal=False) & torch.ones(37, 37, dtype=torch.bool).tril())


@pytest.mark.parametrize("n,l", [(64, 8), (50, 7), (100, 10)])
def test_strided_row_counts(n, l):
    counts = P.Strided(l).mask(n)[0].sum(-1)
    i = torch.arange(n)
    row = torch.clamp(i, max=l) + 1  # max(0, i - l) .. i
    # Column keys i - k l beyond the row: k = 2 .. i // l.
    col = torch.clamp(i // l - 1, min=0)
    assert torch.equal(counts, row + col)


def test_fixed_row_counts():
    n, l, c = 64, 8, 2
    counts = P.Fixed(l, c).mask(n)[0].sum(-1)
    i = torch.arange(n)
    own = i % l + 1
    earlier = (i // l) * c  # summaries of the earlier blocks (the own block's are in "own")
    assert torch.equal(counts, own + earlier)


@pytest.mark.parametrize("pattern", [P.Strided(4), P.Strided(8), P.Strided(5), P.Fixed(8, 1),
                                     P.Fixed(4, 2)], ids=lambda p: p.name)
@pytest.mark.parametrize("n", [16, 37, 64])
def test_connected_within_two_steps(pattern, n):
    # Every j <= i is reachable from i in at most two attention steps (the paper's claim).
    m = pattern.mask(n)[0].float()
    two = (m @ m) > 0
    assert two[torch.ones(n, n, dtype=torch.bool).tril()].all()


@pytest.mark.parametrize("pattern", [P.Strided(4), P.Strided(9), P.Fixed(8, 2),
                                     P.Fixed(8, 2, distinct_heads=True)], ids=lambda p: p.name)
@pytest.mark.parametrize("causal", [True, False])
def test_factors_union_is_merged(pattern, causal):
    m = torch.zeros(2, 41, 41, dtype=torch.bool)
    for f in pattern.factors:
        m |= f.mask(41, 2, causal)
    assert torch.equal(m, pattern.mask(41, 2, causal))


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
@pytest.mark.parametrize("causal", [True, False])
def test_parts_are_disjoint_and_cover(pattern, causal):
    n, heads = 45, 4
    count = sum(p.mask(n, heads, causal).int() for p in pattern.parts())
    assert count.max() <= 1
    assert torch.equal(count.bool(), pattern.mask(n, heads, causal))


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
def test_density_matches_mask(pattern):
    m = pattern.mask(30, 2)
    assert pattern.density(30, 2) == pytest.approx(m.sum().item() / (2 * 30 * 31 / 2))


def test_patterns_are_hashable_values():
    assert P.Strided(4) == P.Strided(4) and hash(P.Fixed(8, 2)) == hash(P.Fixed(8, 2))
    assert P.Strided(4) != P.Strided(5)
    assert P.Global((3, 1)) == P.Global((1, 3))


@pytest.mark.parametrize("pattern", [P.Strided(8), P.Fixed(8, 2, distinct_heads=True),
                                     P.Local(3) | P.Global((0,)),
                                     P.PerHead((P.Local(3), P.Column(4))),
                                     P.Random(2, 4, seed=3)], ids=lambda p: p.name)
def test_token_names_the_pattern_by_value(pattern):
    """torch.compile paths name a pattern by its token; it maps back to an equal live pattern,
    also after pickling (patterns travel in checkpoints and to DDP ranks)."""
    import pickle

    from sparse_transformer.patterns.base import by_token

    assert pattern.token == repr(pattern)
    assert by_token(pattern.token) == pattern
    clone = pickle.loads(pickle.dumps(pattern))
    assert clone == pattern and hash(clone) == hash(pattern)
    assert by_token(clone.token) == pattern
    with pytest.raises(KeyError, match="no live pattern"):
        by_token("NotAPattern(x=1)")
