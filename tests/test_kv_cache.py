"""The KV cache: eviction rules against the pattern predicate, and incremental decoding against a
full forward pass for every pattern and integration mode."""
import pytest
import torch

from sparse_transformer.layers.kv_cache import keep_rule, needed_keys
from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.patterns import (Block, Column, Dense, Fixed, Local, PerHead, Strided,
                                         Summary)

PATTERNS = [
    Dense(), Local(5), Column(4), Column(4, min_distance=5), Strided(4), Strided(5), Block(6),
    Summary(6, 2), Summary(6, 2, exclude_own_block=True), Summary(6, 2, distinct_heads=True),
    Fixed(6, 2), Fixed(8, 2, distinct_heads=True), Local(3) | Column(7),
    PerHead((Block(6), Summary(6, 3, distinct_heads=True))),
]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("horizon,n_heads", [(37, 1), (48, 3)])
def test_keep_rule_equals_predicate(pattern, horizon, n_heads):
    rule = keep_rule(pattern)
    assert rule is not None, f"no closed-form rule for {pattern.name}"
    for cur in range(horizon):
        pos = torch.arange(cur + 1)
        want = needed_keys(pattern, pos, cur, horizon, n_heads)
        got = rule(pos, cur, horizon, n_heads)
        assert torch.equal(got, want), f"{pattern.name}: cur={cur}: kept {got.nonzero().tolist()}"


def test_memory_follows_pattern():
    """Fixed keeps ~ n/l*c + l keys, local its window, dense and strided everything."""
    n = 512
    pos = torch.arange(n - 100)  # mid-context: cur = n - 101
    cur = n - 101
    fixed = int(keep_rule(Fixed(32, 4))(pos, cur, n, 1).sum())
    assert fixed <= (cur // 32 + 1) * 4 + 32 and fixed < n // 4
    assert int(keep_rule(Local(16))(pos, cur, n, 1).sum()) == 15
    assert int(keep_rule(Strided(16))(pos, cur, n, 1).sum()) == cur + 1  # column needs all
    assert int(keep_rule(Dense())(pos, cur, n, 1).sum()) == cur + 1


CASES = [
    ("dense", "merged"), ("local", "merged"),
    ("strided", "merged"), ("strided", "interleaved"), ("strided", "split"),
    ("fixed", "merged"), ("fixed", "interleaved"), ("fixed", "split"),
]


def _model(pattern, mode, **kw):
    cfg = dict(seq_len=45, d_model=24, n_layers=3, n_heads=3 if mode == "split" else 2,
               pattern=pattern, stride=6, summary=2, window=7, mode=mode)
    cfg.update(kw)
    torch.manual_seed(0)
    model = SparseTransformer(ModelConfig(**cfg)).double().eval()
    with torch.no_grad():  # the output layer starts at zero: give it weights so logits differ
        torch.nn.init.normal_(model.head.weight, std=0.5)
    return model


@pytest.mark.parametrize("pattern,mode", CASES)
def test_incremental_decoding_matches_forward(pattern, mode):
    model = _model(pattern, mode)
    x = torch.randint(0, 256, (2, model.cfg.seq_len))
    full = model(x)
    cache = model.new_cache()
    prefix = 5
    logits = [model.prefill(x[:, :prefix], cache)]
    for t in range(prefix, x.shape[1]):
        logits.append(model.decode_step(x[:, t], cache)[:, None])
    inc = torch.cat(logits, dim=1)
    err = (inc - full).abs().max().item()
    assert err < 1e-9, f"{pattern}/{mode}: max |incremental - full| = {err}"


@pytest.mark.parametrize("kw", [dict(pattern="fixed", distinct_heads=True, n_heads=2, summary=3),
                                dict(pattern="strided", qk_ratio=0.5, n_heads=2, d_model=24),
                                dict(pattern="fixed", position="data", data_shape=(5, 3, 3))])
def test_incremental_decoding_variants(kw):
    model = _model(kw.pop("pattern"), "merged", **kw)
    x = torch.randint(0, 256, (1, model.cfg.seq_len))
    full = model(x)
    cache = model.new_cache()
    steps = [model.decode_step(x[:, t], cache) for t in range(x.shape[1])]
    assert (torch.stack(steps, 1) - full).abs().max().item() < 1e-9


def test_fixed_cache_smaller_than_dense():
    model = _model("fixed", "merged", seq_len=120, stride=12, summary=2)
    cache = model.new_cache()
    for t in range(120 - 1):
        model.decode_step(torch.tensor([t % 256]), cache)
    kept = cache.keys_per_layer()
    assert max(kept) <= 120 // 12 * 2 + 12 and max(kept) < 60
    dense = _model("dense", "merged", seq_len=120)
    dc = dense.new_cache()
    for t in range(120 - 1):
        dense.decode_step(torch.tensor([t % 256]), dc)
    assert cache.peak_bytes() < dc.peak_bytes() / 2


def test_decode_past_context_is_an_error():
    model = _model("local", "merged", seq_len=4)
    cache = model.new_cache()
    for t in range(4):
        model.decode_step(torch.tensor([1]), cache)
    with pytest.raises(ValueError, match="seq_len"):
        model.decode_step(torch.tensor([1]), cache)
