"""The shared tile description and the chunked predicate over tile pairs, against dense masks."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.ops import tiles


def test_tile_positions_of_the_three_tile_shapes():
    t = torch.tensor([[0, 4, 4], [2, 1, 5], [3, 2, 8]])  # contiguous, transposed, compact
    assert tiles.tile_positions(t, 4).tolist() == [[0, 1, 2, 3], [2, 7, 12, 17], [3, 4, 11, 12]]
    assert tiles.token_tiles(10, 4, "cpu").tolist() == [[0, 4, 4], [4, 4, 4], [8, 4, 4]]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("per_pair_heads", [False, True])
def test_tile_pair_masks_equal_the_dense_mask(causal, per_pair_heads, monkeypatch):
    monkeypatch.setattr(tiles, "EVAL_ELEMENTS", 3 * 16)  # several chunks of three pairs
    n, block, heads = 29, 4, 3
    pattern = P.Fixed(8, 2, distinct_heads=True)
    dense = pattern.mask(n, heads, causal)
    g = torch.Generator().manual_seed(0)
    qtiles = torch.cat([tiles.token_tiles(n, block, "cpu"), torch.tensor([[1, 1, 7]])])
    ktiles = torch.cat([tiles.token_tiles(n, block, "cpu"), torch.tensor([[6, 2, 8]])])
    qi = torch.randint(qtiles.shape[0], (10,), generator=g)
    ki = torch.randint(ktiles.shape[0], (10,), generator=g)
    hs = torch.randint(heads, (10,), generator=g) if per_pair_heads else torch.tensor(2)
    got = list(tiles.tile_pair_masks(pattern, n, causal, qtiles, ktiles, qi, ki, hs, block))
    assert len(got) == 4
    ok = torch.cat([o for o, _ in got])
    q_in = torch.cat([q for _, q in got])
    for p in range(10):
        qp = tiles.tile_positions(qtiles[qi[p]], block)
        kp = tiles.tile_positions(ktiles[ki[p]], block)
        h = int(hs[p]) if per_pair_heads else 2
        for a, i in enumerate(qp.tolist()):
            assert bool(q_in[p, a, 0]) == (i < n)
            for b, j in enumerate(kp.tolist()):
                want = i < n and j < n and bool(dense[h, i, j])
                assert bool(ok[p, a, b]) == want or i >= n
