"""Block layouts held against the dense mask, including lengths that are not multiples."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.patterns.layout import _generic_block_layout

PATTERNS = [P.Strided(16), P.Strided(10), P.Fixed(16, 4), P.Fixed(16, 4, distinct_heads=True),
            P.Local(20), P.Local(1), P.Column(16), P.Column(8, min_distance=9), P.Block(16),
            P.Block(24), P.Summary(16, 4, exclude_own_block=True), P.Global((0, 40)), P.Dense(),
            P.Random(2, block_size=16, seed=5), P.Local(9) | P.Global((3,))]
IDS = [p.name for p in PATTERNS]


def tiles_from_mask(mask, block):
    h, n, _ = mask.shape
    nb = -(-n // block)
    pad = torch.zeros(h, nb * block, nb * block, dtype=torch.bool)
    inside = torch.zeros_like(pad)
    pad[:, :n, :n] = mask
    inside[:, :n, :n] = True
    t = pad.view(h, nb, block, nb, block)
    i = inside.view(h, nb, block, nb, block)
    active = t.any(4).any(2)
    full = (t | ~i).all(4).all(2) & active
    return active, full


@pytest.mark.parametrize("pattern", PATTERNS, ids=IDS)
@pytest.mark.parametrize("n,block", [(63, 16), (97, 16), (64, 32), (100, 8)])
@pytest.mark.parametrize("causal", [True, False])
def test_layout_matches_mask(pattern, n, block, causal):
    heads = 3
    lay = pattern.block_layout(n, block, heads, causal)
    active, full = tiles_from_mask(pattern.mask(n, heads, causal), block)
    assert torch.equal(lay.active, active)
    assert torch.equal(lay.full, full)
    assert lay.active.dtype == torch.bool and not (lay.full & ~lay.active).any()


@pytest.mark.parametrize("pattern", [P.Strided(128), P.Local(256), P.Block(128), P.Column(96),
                                     P.Fixed(128, 32), P.Summary(128, 32, False, True),
                                     P.Local(129), P.Dense()], ids=lambda p: p.name)
@pytest.mark.parametrize("causal", [True, False])
def test_fast_layout_matches_generic_at_1025(pattern, causal):
    for block in (32, 64, 128):
        fast = pattern.block_layout(1025, block, 2, causal)
        active, full = _generic_block_layout(pattern, 1025, block, 1, causal)
        assert torch.equal(fast.active[0], active[0]), block
        assert torch.equal(fast.full[0], full[0]), block


def test_key_blocks_lists_active_blocks_in_order():
    lay = P.Strided(16).block_layout(97, 16, 1)
    idx, counts = lay.key_blocks()
    for i in range(lay.num_blocks):
        want = lay.active[0, i].nonzero().flatten()
        assert torch.equal(idx[0, i, :counts[0, i]], want)
        assert (idx[0, i, counts[0, i]:] == -1).all()


def test_layout_is_cheap_at_long_lengths():
    import time
    t = time.perf_counter()
    for pat in (P.Local(129), P.Column(128), P.Strided(128), P.Block(128)):
        pat.block_layout(65536, 64, 4, True)
    assert time.perf_counter() - t < 10


def test_layout_cache_keys_on_pattern():
    a = P.Local(8).block_layout(64, 8)
    b = P.Local(16).block_layout(64, 8)
    assert not torch.equal(a.active, b.active)
