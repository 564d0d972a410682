"""``Pattern.structure()``: each pattern's answer equals its predicate, and backends follow it."""
from dataclasses import dataclass

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.layers.kv_cache import keep_rule, needed_keys
from sparse_transformer.patterns import Pattern, Structure

KNOWN = [
    (P.Dense(), "dense"), (P.Local(5), "band"), (P.Column(6), "column"),
    (P.Column(6, min_distance=7), "column"), (P.Block(8), "block"), (P.Summary(8, 3), "summary"),
    (P.Summary(8, 2, distinct_heads=True), "summary"),
    (P.Summary(8, 2, distinct_heads=True, exclude_own_block=True), "summary"),
    (P.Strided(6), "union"), (P.Fixed(8, 2), "union"), (P.Fixed(8, 2, distinct_heads=True), "union"),
    (P.Local(3) | P.Global((2,)), "union"), (P.PerHead((P.Local(4), P.Column(3))), "per_head"),
    (P.Global((0, 5)), "global"), (P.Global((44,)), "global"), (P.Random(2, 8, seed=1), "random"),
    (P.Random(1, 4, seed=3, distinct_heads=True), "random"), (P.Random(5, 3, seed=2), "random"),
    (P.bigbird(4, 2, 2, 8, 7), "union"),
    (P.PerHead((P.Random(1, 4, seed=2, distinct_heads=True), P.Global((3,)))), "per_head"),
]


@pytest.mark.parametrize("pattern,kind", KNOWN, ids=[p.name for p, _ in KNOWN])
def test_structure_equals_the_predicate(pattern, kind):
    s = pattern.structure()
    assert s.kind == kind
    if kind == "generic":
        assert s.allowed(torch.zeros(1), torch.zeros(1), torch.zeros(1)) is None
        return
    n, heads = 45, 5  # not a multiple of any stride; heads beyond the distinct sub-blocks
    q = torch.arange(n).view(1, -1, 1)
    k = torch.arange(n).view(1, 1, -1)
    h = torch.arange(heads).view(-1, 1, 1)
    want = pattern.allowed(q, k, h).expand(heads, n, n)
    assert torch.equal(s.allowed(q, k, h).expand(heads, n, n), want)


def _old_random_table(num_blocks, seed, head, upto):
    """The bool (upto, upto) table Random used before its draws were kept as picks."""
    table = torch.zeros(upto, upto, dtype=torch.bool)
    gen = torch.Generator()
    for b in range(1, upto):
        gen.manual_seed((seed * 1_000_003 + head) * 1_000_033 + b)
        table[b, torch.randperm(b, generator=gen)[:num_blocks]] = True
    return table | table.T


@pytest.mark.parametrize("num_blocks,block,seed,distinct", [(2, 4, 0, False), (3, 5, 7, True),
                                                            (1, 8, 123, True)])
def test_random_keeps_the_links_it_always_drew(num_blocks, block, seed, distinct):
    """Checkpoints depend on the draw: the same links as the former (blocks x blocks) table."""
    pat = P.Random(num_blocks, block, seed, distinct)
    n, heads = 203, 3
    mask = pat.mask(n, heads, causal=False)
    nb = -(-n // block)
    blk = torch.arange(n) // block
    for h in range(heads):
        table = _old_random_table(num_blocks, seed, h if distinct else 0, nb)
        assert torch.equal(mask[h], table[blk[:, None], blk[None, :]]), h
    picks = pat.drawn_blocks(nb, 1)
    assert picks.shape == (nb, num_blocks)
    for b in (1, 2, nb - 1):
        gen = torch.Generator().manual_seed((seed * 1_000_003 + (1 if distinct else 0)) * 1_000_033 + b)
        want = torch.randperm(b, generator=gen)[:num_blocks]
        assert torch.equal(picks[b, :want.numel()], want) and (picks[b, want.numel():] == -1).all()


def test_random_draws_grow_with_the_length_and_agree():
    from sparse_transformer.patterns.random import drawn_picks

    long = drawn_picks(2, 91, 0, 300)
    assert torch.equal(drawn_picks(2, 91, 0, 37), long[:37])
    assert torch.equal(drawn_picks(2, 91, 0, 1000)[:300], long)


CANDIDATE_PATTERNS = [
    P.Local(5), P.Block(12), P.Dense(), P.Global((0, 5)), P.Global((70,)), P.Global((200,)),
    P.Random(2, 8, seed=1), P.Random(1, 5, seed=4, distinct_heads=True), P.Random(3, 40, seed=2),
    P.Summary(16, 4), P.Summary(16, 4, True, True), P.bigbird(9, 2, 2, 16, 3),
    P.longformer(7, (0, 33)), P.Local(3) | P.Global((4,)) | P.Random(1, 8, seed=5),
    P.PerHead((P.Random(1, 4, seed=2, distinct_heads=True), P.Local(6) | P.Global((9,)))),
]


@pytest.mark.parametrize("pattern", CANDIDATE_PATTERNS, ids=[p.name for p in CANDIDATE_PATTERNS])
@pytest.mark.parametrize("n,block", [(97, 16), (64, 32), (100, 8)])
@pytest.mark.parametrize("causal", [True, False])
def test_candidate_tiles_hold_every_active_tile(pattern, n, block, causal):
    """The tiles a structure lists cover the active ones; the sparse layout equals the dense."""
    from sparse_transformer.patterns.layout import _generic_block_layout

    heads = 3 if pattern.per_head else 1
    active, full = _generic_block_layout(pattern, n, block, heads, causal)
    sparse = P.active_tiles(pattern, n, block, heads, causal)
    for h in range(heads):
        qi, ki = P.candidate_blocks(pattern, n, block, h, causal)
        listed = torch.zeros_like(active[h])
        listed[qi, ki] = True
        assert not (active[h] & ~listed).any()
        code = qi * active.shape[-1] + ki
        assert torch.equal(code, code.unique())  # unique, row-major
        got_q, got_k, got_full = sparse[h]
        assert torch.equal(torch.stack([got_q, got_k]), torch.stack(active[h].nonzero(as_tuple=True)))
        assert torch.equal(got_full, full[h, got_q, got_k])
    lay = pattern.block_layout(n, block, heads, causal)
    assert torch.equal(lay.active, active) and torch.equal(lay.full, full)


def test_candidate_tiles_are_few_for_bigbird():
    n, block = 1 << 14, 64
    pat = P.bigbird(192, 2, 3, 64, 0)
    qi, _ = P.candidate_blocks(pat, n, block, 0, True)
    assert qi.numel() < (n // block) * (4 + 3 + 1)  # band + random + global column
    assert P.candidate_blocks(P.Column(8), n, block) is None


def test_every_part_of_the_built_in_patterns_has_a_shape():
    """The backends' shortcuts cover the paper's factors (none fall back to generic)."""
    for pattern in (P.Strided(8), P.Fixed(8, 2), P.Fixed(8, 2, distinct_heads=True)):
        assert all(p.structure().kind != "generic" for p in pattern.parts())


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        Structure("diagonal")


@dataclass(frozen=True)
class _Window(Pattern):
    """A user's pattern that is not a Local subclass but answers as a band."""

    width: int

    def allowed(self, q, k, h):
        return (q - k).abs() < self.width

    def structure(self):
        return Structure("band", window=self.width)


def test_a_new_pattern_gets_the_shortcuts_by_answering():
    from sparse_transformer.ops.blocked.plans import build_plan, choose_block

    pat = _Window(5)
    assert choose_block(pat, 256) == choose_block(P.Local(5), 256)
    assert [t.kind for t in build_plan(pat, 97, 1, True).tasks] == \
        [t.kind for t in build_plan(P.Local(5), 97, 1, True).tasks]
    rule = keep_rule(pat)
    pos = torch.arange(40)
    assert rule is not None
    assert torch.equal(rule(pos, 39, 60, 1), needed_keys(pat, pos, 39, 60, 1))
