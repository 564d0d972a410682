"""Dynamic evaluation: each window's bytes are scored, then trained on; never the other way."""
import numpy as np
import pytest
import torch

from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.training import bits_per_byte, dynamic_bits_per_byte
from sparse_transformer.training.evaluate import eval_windows


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(seq_len=32, d_model=32, n_layers=1, n_heads=2, pattern="fixed", stride=8,
                      summary=2)
    m = SparseTransformer(cfg)
    with torch.no_grad():  # the logits start at zero: give them a slope, so that they move
        m.head.weight.normal_(0, 0.5)
    return m, cfg


def _peeking(model, data, seq_len, lr, min_context):
    """A wrong dynamic evaluation (trains on a window, then scores it), for the test below."""
    import copy

    import torch.nn.functional as F

    net = copy.deepcopy(model)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rows = []
    for s, first, w in eval_windows(len(data), seq_len, min_context):
        win = torch.from_numpy(np.asarray(data[s:s + w + 1]).astype(np.int64))
        x, y = win[:-1][None], win[1 + first:]
        loss = F.cross_entropy(net(x)[0, first:w], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            rows.append(F.log_softmax(net(x)[0, first:w].float(), -1))
    return torch.cat(rows)


def _first_changed_rows(fn, data, j):
    """Log-probabilities of every byte <= j, for ``data`` and for ``data`` with byte j (and all
    after it) changed."""
    other = data.copy()
    other[j:] = (other[j:] + 1 + np.arange(len(other) - j) % 7) % 256
    a, b = fn(data), fn(other)
    return a[:j], b[:j]  # row r is the prediction of byte r + 1, so rows < j predict bytes <= j


@pytest.mark.parametrize("j", [40, 90])
def test_no_byte_is_scored_after_training_on_it(j):
    """Changing byte j (and later ones) may not change any prediction of bytes 1..j: the weights
    that score byte j were trained on earlier bytes only. A peeking variant fails the same check
    (so the check can fail)."""
    model, cfg = _model()
    data = np.random.default_rng(0).integers(0, 256, 120).astype(np.uint8)
    kw = dict(seq_len=cfg.seq_len, lr=3e-2, min_context=16)

    def honest(d):
        return dynamic_bits_per_byte(model, d, return_logprobs=True, **kw)["logprobs"]

    a, b = _first_changed_rows(honest, data, j)
    assert a.shape == (j, 256)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    a, b = _first_changed_rows(lambda d: _peeking(model, d, **kw), data, j)
    assert (a - b).abs().max() > 1e-3


def test_scores_every_byte_once_and_leaves_the_model_alone():
    model, cfg = _model()
    data = np.random.default_rng(1).integers(0, 256, 200).astype(np.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = dynamic_bits_per_byte(model, data, cfg.seq_len, lr=1e-2, return_logprobs=True)
    assert res["bytes"] == len(data) - 1 == res["logprobs"].shape[0]
    y = torch.from_numpy(data[1:].astype(np.int64))
    bits = -res["logprobs"].gather(1, y[:, None]).sum() / np.log(2) / len(y)
    assert abs(bits.item() - res["bits_per_byte"]) < 1e-4
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # With a learning rate too small to matter it is the static number.
    tiny = dynamic_bits_per_byte(model, data, cfg.seq_len, lr=1e-12)
    static = bits_per_byte(model, data, cfg.seq_len, batch_size=4)
    assert abs(tiny["bits_per_byte"] - static["bits_per_byte"]) < 1e-4


def test_dynamic_eval_learns_a_repeated_text():
    """A 100-byte random text repeated: the context (32) never holds the previous copy, so the
    static model cannot use the repetition; dynamic evaluation learns it in its weights."""
    model, cfg = _model()
    unit = np.random.default_rng(2).integers(0, 256, 100).astype(np.uint8)
    data = np.tile(unit, 8)
    static = bits_per_byte(model, data, cfg.seq_len, batch_size=8)["bits_per_byte"]
    dyn = dynamic_bits_per_byte(model, data, cfg.seq_len, lr=1e-2)
    assert dyn["bits_per_byte"] < static - 1.0, (static, dyn["bits_per_byte"])
    assert dyn["lr"] == 1e-2 and dyn["seconds"] > 0
