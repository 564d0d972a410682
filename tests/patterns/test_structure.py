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
    (P.Global((0, 5)), "generic"), (P.Random(2, 8, seed=1), "generic"),
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
