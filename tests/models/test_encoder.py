"""The encoder classifier: every pattern, padding that changes nothing, reference agreement."""
import pytest
import torch

from sparse_transformer.models.encoder import (ENCODER_PATTERNS, EncoderClassifier, EncoderConfig,
                                               encoder_pattern)
from sparse_transformer.ops import force_backend
from sparse_transformer.patterns import Global, Local, Random, Union


def small(pattern, **kw):
    cfg = EncoderConfig(vocab_size=50, n_classes=3, max_len=80, d_model=32, n_layers=2, n_heads=2,
                        dropout=0.0, pattern=pattern, window=6, n_global=2, n_random=1,
                        block_size=8, stride=8, summary=2, **kw)
    torch.manual_seed(0)
    m = EncoderClassifier(cfg)
    torch.nn.init.normal_(m.head.weight, std=0.5)  # the head starts at zero: make outputs differ
    return m.double()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("pattern", ENCODER_PATTERNS)
def test_padding_changes_nothing_and_blocked_matches_reference(pattern, pooling):
    m = small(pattern, pooling=pooling)
    g = torch.Generator().manual_seed(1)
    short = torch.randint(3, 50, (1, 37), generator=g)
    long = torch.randint(3, 50, (1, 71), generator=g)
    ids = torch.zeros(2, 71, dtype=torch.long)
    ids[0, :37], ids[1] = short[0], long[0]
    pad = torch.zeros(2, 71, dtype=torch.bool)
    pad[0, 37:] = True
    batched = m(ids, pad)
    alone = m(short, torch.zeros(1, 37, dtype=torch.bool))
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-9, atol=1e-9)
    with force_backend("reference"):
        ref = m(ids, pad)
    torch.testing.assert_close(batched, ref, rtol=1e-9, atol=1e-9)
    batched.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_pattern_names_build_what_they_say():
    bb = encoder_pattern("bigbird", window=4, n_global=2, n_random=3, block_size=16, seed=7)
    assert isinstance(bb, Union) and Local(4) in bb.members and Global((0, 1)) in bb.members
    assert Random(3, 16, 7) in bb.members
    lf = encoder_pattern("longformer", window=4, n_global=1)
    assert lf.members == (Local(4), Global((0,)))
    mask = lf.mask(20, causal=False)[0]
    assert mask[0].all() and mask[:, 0].all() and not mask[10, 2]  # [CLS] is global
    with pytest.raises(ValueError, match="pattern must be one of"):
        encoder_pattern("reformer")


def test_config_and_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="pooling"):
        EncoderConfig(pooling="max")
    with pytest.raises(ValueError, match="n_classes"):
        EncoderConfig(n_classes=1)
    m = small("local")
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 81, dtype=torch.long))
    with pytest.raises(ValueError, match="padding_mask"):
        m(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8))
