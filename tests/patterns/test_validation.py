"""Invalid pattern parameters raise ValueError naming the parameter."""
import pytest

from sparse_transformer import patterns as P

CASES = [
    (lambda: P.Strided(0), "stride"), (lambda: P.Strided(-3), "stride"),
    (lambda: P.Strided(2.5), "stride"), (lambda: P.Strided(True), "stride"),
    (lambda: P.Fixed(0, 1), "stride"), (lambda: P.Fixed(8, 0), "summary"),
    (lambda: P.Fixed(8, 9), "summary"), (lambda: P.Fixed(8, 3, distinct_heads=True), "summary"),
    (lambda: P.Summary(8, -1), "summary"), (lambda: P.Block(0), "stride"),
    (lambda: P.Local(0), "window"), (lambda: P.Local(-1), "window"),
    (lambda: P.Column(0), "stride"), (lambda: P.Column(4, min_distance=-1), "min_distance"),
    (lambda: P.Global(()), "tokens"), (lambda: P.Global((1, 1)), "tokens"),
    (lambda: P.Global((-1,)), "tokens"), (lambda: P.Global.first(0), "count"),
    (lambda: P.Random(0), "num_blocks"), (lambda: P.Random(1, block_size=0), "block_size"),
    (lambda: P.Random(1, seed=-2), "seed"), (lambda: P.Union(()), "members"),
    (lambda: P.Union((P.Local(2), 3)), "members"), (lambda: P.PerHead(()), "patterns"),
    (lambda: P.Local(2).mask(0), "seq_len"), (lambda: P.Local(2).mask(8, 0), "num_heads"),
    (lambda: P.Local(2).block_layout(8, 0), "block"),
]


@pytest.mark.parametrize("make,name", CASES, ids=[n + str(i) for i, (_, n) in enumerate(CASES)])
def test_invalid_parameter_names_it(make, name):
    with pytest.raises(ValueError, match=name):
        make()
