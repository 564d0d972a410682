"""The activation checkpointing modes and the choice "auto" makes from a memory budget."""
import pytest
import torch

from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.models import memory


def cfg(**kw):
    base = dict(seq_len=64, d_model=32, n_layers=3, n_heads=2, pattern="fixed", stride=8,
                summary=2)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("given, mode", [(True, "block"), (False, "none"), ("true", "block"),
                                         ("off", "none"), ("attention", "attention"),
                                         ("Full", "full"),
                                         ("AUTO", "auto")])
def test_checkpointing_spellings(given, mode):
    assert cfg(checkpointing=given).checkpointing == mode


@pytest.mark.parametrize("bad", ["sometimes", 3, None])
def test_bad_checkpointing_is_named(bad):
    with pytest.raises(ValueError, match="checkpointing must be one of"):
        cfg(checkpointing=bad)


def test_estimates_order_and_scale():
    c = cfg(d_model=512, n_layers=30, n_heads=8, seq_len=12288, stride=128, summary=32)
    tokens = 2 * 12288
    none, attn, block, full = (memory.activation_bytes(c, tokens, m) for m in memory.MODES)
    assert none > attn > block == full  # "full" chunks only inputs longer than FF_CHUNK
    long = 1 << 20  # a million tokens: the feed-forward chunks cut the recomputed block's share
    assert memory.activation_bytes(c, long, "full") < memory.activation_bytes(c, long, "block")
    # Twice the tokens, about twice the activations; fp32 activations cost more than bf16.
    assert memory.activation_bytes(c, 2 * tokens, "none") == pytest.approx(2 * none, rel=1e-6)
    assert memory.activation_bytes(c, tokens, "none", act_bytes=4) > none
    # "block" keeps each block's input: float32, or bf16 (half) with checkpoint_storage "auto".
    half = memory.activation_bytes(c, tokens, "block", stream_bytes=2)
    assert block - half == tokens * c.n_layers * 2 * c.d_model


def test_auto_picks_the_cheapest_mode_that_fits():
    c = cfg(d_model=512, n_layers=30, n_heads=8, seq_len=12288, stride=128, summary=32)
    tokens, params = 2 * 12288, 94_000_000
    need = {m: memory.step_bytes(c, tokens, m, params) for m in memory.MODES}
    fits = lambda m: int(need[m] / memory.HEADROOM) + 1  # noqa: E731
    assert memory.choose_checkpointing(c, tokens, params, fits("none")) == "none"
    assert memory.choose_checkpointing(c, tokens, params, fits("none") - 2) == "attention"
    assert memory.choose_checkpointing(c, tokens, params, fits("attention") - 2) == "block"
    assert memory.choose_checkpointing(c, tokens, params, 1) == "full"  # nothing fits


def test_model_resolves_auto_once_per_shape(monkeypatch):
    m = SparseTransformer(cfg(checkpointing="auto"))
    calls = []

    def fake(cfg_, tokens, params, budget, act_bytes=2, stream_bytes=4):
        calls.append(tokens)
        return "attention"

    monkeypatch.setattr(memory, "choose_checkpointing", fake)
    x = torch.randint(0, 256, (2, 33))
    for _ in range(2):
        m.loss(x[:, :-1], x[:, 1:]).backward()
    assert m.checkpoint_mode(64, "cpu") == "attention"
    assert calls == [64]
    m.eval()
    with torch.no_grad():
        m(x[:, :-1])  # inference never checkpoints and never asks
    assert calls == [64]


def test_bad_checkpoint_storage_is_named():
    with pytest.raises(ValueError, match="checkpoint_storage must be one of"):
        cfg(checkpoint_storage="fp8")


def test_full_checkpointing_matches_block(monkeypatch):
    """"full" recomputes each block's feed-forward in chunks of positions: the same loss and
    gradients as "block" (to float32 rounding), with chunk boundaries inside a sequence and a
    last, shorter chunk."""
    from sparse_transformer.models import transformer

    torch.manual_seed(0)
    a = SparseTransformer(cfg(checkpointing="block", dropout=0.0))
    b = SparseTransformer(cfg(checkpointing="full", dropout=0.0))
    b.load_state_dict(a.state_dict())
    b.ff_chunk = 13  # 2 x 40 positions: chunks cross the batch boundary, the last is short
    x = torch.randint(0, 256, (2, 41))
    calls = []
    ff = transformer.FeedForward._ff
    monkeypatch.setattr(transformer.FeedForward, "_ff",
                        lambda self, h: calls.append(h.shape[0]) or ff(self, h))
    la = a.loss(x[:, :-1], x[:, 1:])
    la.backward()
    calls_block = len(calls)
    lb = b.loss(x[:, :-1], x[:, 1:])
    lb.backward()
    chunked = calls[calls_block:]
    assert max(chunked) == 13 and 80 % 13 in chunked  # it ran in chunks
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_feed_forward_chunks_inputs_past_32_bit_offsets(monkeypatch):
    """Without checkpointing, an input whose hidden activation would hold more than
    MAX_ELEMENTS elements runs in chunks (no recompute): same output and gradients."""
    from sparse_transformer.models import transformer

    torch.manual_seed(1)
    ff = transformer.FeedForward(8, 4)
    x = torch.randn(3, 10, 8, requires_grad=True)
    ref = ff(x)
    (gx,) = torch.autograd.grad(ref.square().sum(), x)
    monkeypatch.setattr(transformer, "MAX_ELEMENTS", 32 * 7)  # 7 positions of 32 hidden units
    sizes = []
    inner = transformer.FeedForward._ff
    monkeypatch.setattr(transformer.FeedForward, "_ff",
                        lambda self, h: sizes.append(h.shape[0]) or inner(self, h))
    out = ff(x)
    (gx2,) = torch.autograd.grad(out.square().sum(), x)
    assert sizes == [7, 7, 7, 7, 2]
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx2, gx)
