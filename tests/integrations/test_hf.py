"""attn_implementation="sparse" inside Hugging Face models built from tiny configs (no downloads).

With the Dense pattern (through the blocked backend, so our own code computes it) outputs and
gradients match the model's eager attention; padding reaches our function; generate() with its
KV cache decodes the same tokens as without the cache under a sparse pattern; and a few
training steps with a sparse pattern lower the loss."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.integrations import hf  # noqa: E402
from sparse_transformer.ops import dispatch  # noqa: E402

hf.register()
DENSE = {"pattern": "dense"}


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    return transformers.GPT2LMHeadModel, cfg


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM, cfg


def _bert():
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, attention_probs_dropout_prob=0.0,
                                  hidden_dropout_prob=0.0)
    return transformers.BertModel, cfg


def _twins(make, impl="eager", pattern=DENSE, backend="blocked"):
    """The same random weights twice: with the model's own attention and with ours."""
    cls, cfg = make()
    torch.manual_seed(0)
    ref = cls._from_config(cfg, attn_implementation=impl).double()
    ours = cls._from_config(cfg, attn_implementation="sparse").double()
    ours.load_state_dict(ref.state_dict())
    ours.config.sparse_pattern = pattern
    ours.config.sparse_backend = backend
    assert ours.config._attn_implementation == "sparse"
    return ref, ours


def _batch(b=3, n=12, pad_left=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.long)
    for row, count in ((1, 4), (2, 1))[:b - 1]:
        if pad_left:
            mask[row, :count] = 0
        else:
            mask[row, -count:] = 0
    return ids, mask


def _main(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _outputs_and_grads(model, ids, mask):
    model.zero_grad()
    y = _main(model(input_ids=ids, attention_mask=mask))
    keep = mask.bool()
    g = torch.Generator().manual_seed(3)
    w = torch.randn(y.shape, generator=g, dtype=y.dtype)
    (y * w)[keep].sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return y.detach()[keep], grads


@pytest.mark.parametrize("make", [_gpt2, _bert, _llama], ids=["gpt2", "bert", "llama-gqa"])
def test_dense_pattern_matches_the_models_own_attention(make):
    ref, ours = _twins(make)
    calls = []
    real = dispatch.sparse_attention

    def spy(*a, **kw):
        calls.append(dict(kw, kv_heads=a[1].shape[1], heads=a[0].shape[1]))
        return real(*a, **kw)

    ids, mask = _batch(pad_left=make is _llama)
    y_ref, g_ref = _outputs_and_grads(ref, ids, mask)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf, "sparse_attention", spy)
        y, g = _outputs_and_grads(ours, ids, mask)
    assert len(calls) == 2 and all(c["backend"] == "blocked" for c in calls)  # one per layer
    # The padding mask arrived: True exactly where attention_mask is 0.
    assert torch.equal(calls[0]["key_padding_mask"], mask == 0)
    assert calls[0]["causal"] is (make is not _bert)
    # Llama's grouped-query k/v arrive with their own 2 heads, not repeated to 4.
    assert (calls[0]["heads"], calls[0]["kv_heads"]) == ((4, 2) if make is _llama else (4, 4))
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    assert g.keys() == g_ref.keys()
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-8, atol=1e-10, msg=k)


def test_dense_pattern_matches_sdpa_through_sdpa_backend():
    ref, ours = _twins(_llama, impl="sdpa", backend="auto")
    ids, mask = _batch(pad_left=True)
    torch.testing.assert_close(_outputs_and_grads(ours, ids, mask)[0],
                               _outputs_and_grads(ref, ids, mask)[0], rtol=1e-9, atol=1e-10)


def test_padding_changes_nothing_for_real_tokens():
    """BERT: whatever sits in the padded slots, the real tokens' outputs are the same."""
    _, ours = _twins(_bert, pattern={"pattern": "bigbird", "window": 3, "global_tokens": [0],
                                     "random_blocks": 1, "random_block_size": 4})
    ids, mask = _batch()
    other = torch.where(mask.bool(), ids, (ids + 7) % 40)
    with torch.no_grad():
        a = _main(ours(input_ids=ids, attention_mask=mask))
        b = _main(ours(input_ids=other, attention_mask=mask))
        c = _main(ours(input_ids=other))  # no mask: the padded slots are read
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(a[keep], c[keep])


@pytest.mark.parametrize("make", [_llama, _gpt2], ids=["llama-gqa", "gpt2"])
def test_generate_with_cache_equals_generate_without(make):
    """Decoding against the cache (q_len 1, k_len = cache length: the query offset) gives the
    tokens that full recomputation gives, under sparse patterns and with left padding."""
    _, ours = _twins(make, backend="auto")
    ours.eval()
    ids, mask = _batch(b=2, n=10, pad_left=True, seed=4)
    for pattern in (P.Fixed(4, 1), P.Local(3) | P.Global((2,))):
        with hf.use_pattern(pattern):
            args = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
            cached = ours.generate(ids, use_cache=True, **args)
            full = ours.generate(ids, use_cache=False, **args)
        assert torch.equal(cached, full), pattern.name
    with hf.use_pattern(P.Dense()):
        dense = ours.generate(ids, **args)
    assert not torch.equal(dense, cached)  # the pattern mattered


def test_generate_matches_the_models_own_attention_with_dense():
    ref, ours = _twins(_llama, backend="auto")
    ids, mask = _batch(b=2, n=8, pad_left=True, seed=5)
    args = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.eval().generate(ids, **args), ref.eval().generate(ids, **args))


@pytest.mark.parametrize("make,pattern", [
    (_gpt2, {"pattern": "fixed", "stride": 4, "summary": 1}),
    (_llama, {"pattern": "longformer", "window": 3, "global_tokens": [0]}),
    (_bert, {"pattern": "bigbird", "window": 2, "random_blocks": 1, "random_block_size": 4}),
], ids=["gpt2-fixed", "llama-longformer", "bert-bigbird"])
def test_a_few_training_steps_lower_the_loss(make, pattern):
    _, ours = _twins(make, pattern=pattern, backend="auto")
    ours.float().train()
    ids, mask = _batch(b=4, n=16, seed=6)
    opt = torch.optim.Adam(ours.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        y = _main(ours(input_ids=ids, attention_mask=mask))
        if make is _bert:  # reconstruct the input tokens from the last hidden state
            y = y @ ours.embeddings.word_embeddings.weight.T
            loss = torch.nn.functional.cross_entropy(y[mask.bool()], ids[mask.bool()])
        else:
            loss = torch.nn.functional.cross_entropy(y[:, :-1][mask[:, 1:].bool()],
                                                     ids[:, 1:][mask[:, 1:].bool()])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_use_pattern_overrides_the_config_and_errors_name_the_fix():
    _, ours = _twins(_gpt2, pattern=P.Local(2))
    ours.eval()
    ids, _ = _batch(b=1, n=10)
    with torch.no_grad():
        local = ours(ids).logits
        with hf.use_pattern(P.Dense()):
            dense = ours(ids).logits
        ours.config.sparse_pattern = DENSE
        torch.testing.assert_close(ours(ids).logits, dense, rtol=0, atol=0)
    assert not torch.allclose(local, dense)
    ours.config.sparse_pattern = None
    with pytest.raises(ValueError, match="sparse_pattern"):
        ours(ids)
    ours.config.sparse_pattern = {"window": 3}
    with pytest.raises(ValueError, match="'pattern'"):
        ours(ids)
    ours.config.sparse_pattern = [P.Local(2), P.Dense()]  # one per layer
    with torch.no_grad():
        assert not torch.allclose(ours(ids).logits, local)


def test_attention_dropout_in_training_is_refused():
    cls, cfg = _gpt2()
    cfg.attn_pdrop = 0.1
    model = cls._from_config(cfg, attn_implementation="sparse").train()
    model.config.sparse_pattern = DENSE
    with pytest.raises(ValueError, match="dropout"):
        model(torch.randint(0, 40, (1, 8)))
    model.eval()(torch.randint(0, 40, (1, 8)))  # no dropout in eval mode: fine


def test_packed_sequences_are_refused_not_silently_merged():
    _, ours = _twins(_llama)
    ids, _ = _batch(b=1, n=8)
    packed = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # two sequences in one row
    with pytest.raises(ValueError, match="packed"):
        ours(input_ids=ids, position_ids=packed, use_cache=False)
    ours(input_ids=ids, position_ids=torch.arange(8)[None], use_cache=False)  # one sequence


def test_mask_function():
    keep = torch.ones(2, 6, dtype=torch.bool)
    assert hf.sparse_attention_mask(2, 6, 6, attention_mask=keep) is None
    keep[0, 0] = False
    assert torch.equal(hf.sparse_attention_mask(2, 1, 6, 5, attention_mask=keep), keep)
    # A static cache: 4 of 16 slots filled, no padding.
    assert hf.sparse_attention_mask(2, 1, 16, 3).shape == (2, 4)


def test_from_pretrained_set_attn_implementation_and_the_saved_pattern(tmp_path):
    """The three ways transformers selects an implementation; a dict pattern is saved with the
    config and comes back with from_pretrained (local files only)."""
    cls, cfg = _gpt2()
    cfg.sparse_pattern = {"pattern": "longformer", "window": 3, "global_tokens": [0]}
    torch.manual_seed(0)
    model = cls(cfg).eval()  # the model's default implementation
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path, attn_implementation="sparse").eval()
    assert loaded.config._attn_implementation == "sparse"
    assert loaded.config.sparse_pattern == cfg.sparse_pattern
    ids, _ = _batch(b=1, n=10)
    with torch.no_grad():
        sparse = loaded(ids).logits
        model.set_attn_implementation("sparse")
        torch.testing.assert_close(model(ids).logits, sparse, rtol=1e-6, atol=1e-6)
        model.set_attn_implementation("eager")
        assert not torch.allclose(model(ids).logits, sparse, rtol=1e-4, atol=1e-4)
