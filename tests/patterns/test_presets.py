"""Encoder presets (BigBird-style, Longformer-style, bidirectional strided and fixed): their
definitions, the blocked backend on them, and their routes from config and the command line."""
import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer import sparse_attention
from sparse_transformer.cli import apply_overrides, main
from sparse_transformer.models import ModelConfig, get_preset
from tolerance import check_against_reference


def _pairs(n):
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(n).view(1, -1)
    return i, j


def test_longformer_is_window_and_global_positions():
    n = 40
    m = P.longformer(3, (0, 17)).mask(n, 1, causal=False)[0]
    i, j = _pairs(n)
    want = ((i - j).abs() < 3) | (i == 0) | (j == 0) | (i == 17) | (j == 17)
    assert torch.equal(m, want)
    assert torch.equal(P.longformer(3, ()).mask(n, 1, False)[0], (i - j).abs() < 3)


def test_bigbird_is_window_global_and_seeded_random_blocks():
    n, bs = 64, 8
    p = P.bigbird(4, 2, random_blocks=1, block_size=bs, seed=5)
    m = p.mask(n, 1, causal=False)[0]
    i, j = _pairs(n)
    window_or_global = ((i - j).abs() < 4) | (i < 2) | (j < 2)
    rest = m & ~window_or_global
    assert torch.equal(m | ~window_or_global, torch.ones_like(m))  # window, globals all allowed
    # The rest is made of whole random blocks: each query block b >= 1 drew one earlier block,
    # and links are symmetric.
    blocks = rest.view(n // bs, bs, n // bs, bs).any(dim=(1, 3))
    assert torch.equal(blocks, blocks.T) and blocks.any()
    # Seeded: the same seed gives the same pattern, another seed another one.
    assert torch.equal(P.bigbird(4, 2, 1, bs, seed=5).mask(n, 1, False), m[None])
    assert not torch.equal(P.bigbird(4, 2, 1, bs, seed=6).mask(n, 1, False), m[None])
    assert P.bigbird(4, 0, 0).name == P.Local(4).name


def test_bidirectional_strided_and_fixed_follow_their_definitions():
    n, l, c = 30, 6, 2
    i, j = _pairs(n)
    strided = P.Strided(l).mask(n, 1, causal=False)[0]
    assert torch.equal(strided, ((i - j).abs() <= l) | ((i - j) % l == 0))
    fixed = P.Fixed(l, c).mask(n, 1, causal=False)[0]
    assert torch.equal(fixed, (i // l == j // l) | (j % l >= l - c))
    # The causal forms are these restricted to j <= i.
    assert torch.equal(P.Fixed(l, c).mask(n, 1, causal=True)[0], fixed & (j <= i))


@pytest.mark.parametrize("pattern", [P.bigbird(5, 2, 2, 16, seed=1), P.longformer(7, (0, 40)),
                                     P.Strided(9), P.Fixed(16, 4)], ids=lambda p: p.name[:30])
def test_blocked_backend_on_encoder_presets_with_padding(pattern):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 97, 12, generator=g) for _ in range(3))
    kpm = torch.zeros(2, 97, dtype=torch.bool)
    kpm[1, 60:] = True
    check_against_reference(lambda *a, **kw: sparse_attention(*a, backend="blocked", **kw),
                            q, k, v, pattern, causal=False, key_padding_mask=kpm)


def test_every_kind_is_reachable_from_the_config():
    names = {}
    for kind in P.PATTERN_KINDS:
        cfg = apply_overrides(get_preset("tiny"), [f"model.pattern={kind}", "window=5",
                                                   "global_tokens=0,3", "random_blocks=1",
                                                   "random_block_size=4", "pattern_seed=2"])
        names[kind] = cfg.model.build_pattern().name
    assert names["bigbird"] == P.bigbird(5, (0, 3), 1, 4, seed=2).name
    assert names["longformer"] == P.longformer(5, (0, 3)).name
    assert len(set(names.values())) == len(P.PATTERN_KINDS)


@pytest.mark.parametrize("kw,field", [
    (dict(pattern="bigbirdd"), "pattern"), (dict(random_blocks=-1), "random_blocks"),
    (dict(random_block_size=0), "random_block_size"), (dict(pattern_seed=-2), "pattern_seed"),
    (dict(global_tokens=(1, 1)), "global_tokens"), (dict(global_tokens=(-1,)), "global_tokens"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kw)


def test_pattern_command_draws_presets(tmp_path, capsys):
    png = tmp_path / "bb.png"
    assert main(["pattern", "--pattern", "bigbird", "--window", "3", "--global-tokens", "0,1",
                 "--random-blocks", "1", "--random-block-size", "8", "--seq-len", "48",
                 "--bidirectional", "--out", str(png)]) == 0
    assert png.stat().st_size > 100 and "Random(num_blocks=1" in capsys.readouterr().out
    assert main(["pattern", "--pattern", "longformer", "--global-tokens", "", "--seq-len", "16",
                 "--out", str(png)]) == 0
    assert "Global" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="global_tokens"):
        main(["pattern", "--pattern", "longformer", "--global-tokens", "2,2", "--out", str(png)])


def test_patterns_by_name_are_the_config_spec():
    """``patterns.build_pattern`` and ``patterns.PATTERN_KINDS`` are the one spec configs and the
    command line read (no second list of kinds)."""
    from sparse_transformer.models import pattern_spec

    assert P.build_pattern is pattern_spec.build_pattern
    assert P.PATTERN_KINDS == pattern_spec.PATTERN_KINDS
    assert P.build_pattern("local+global", window=4, global_tokens=(0,)) == \
        P.Local(4) | P.Global((0,))
    with pytest.raises(AttributeError):
        P.no_such_name  # noqa: B018
