"""Sampling: the cached sampler equals the re-running one, whole-sequence samples, files written."""
import numpy as np
import pytest
import torch

from sparse_transformer.data.audio import mu_law_decode, read_audio, write_wav
from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.sampling import generate, sample_items, sample_next


def _model(**kw):
    cfg = dict(seq_len=48, d_model=32, n_layers=2, n_heads=2, pattern="fixed", stride=8, summary=2)
    cfg.update(kw)
    torch.manual_seed(0)
    m = SparseTransformer(ModelConfig(**cfg))
    torch.nn.init.normal_(m.head.weight, std=1.0)
    return m


@pytest.mark.parametrize("pattern", ["fixed", "strided", "dense"])
def test_cached_generation_equals_reference(pattern):
    m = _model(pattern=pattern)
    a = generate(m, b"ab", 40, temperature=1.0, seed=3, use_cache=True)
    b = generate(m, b"ab", 40, temperature=1.0, seed=3, use_cache=False)
    assert torch.equal(a, b)  # same draws, since the logits agree


def test_generation_past_the_context():
    m = _model()
    out = generate(m, b"", 130, temperature=1.0, top_k=5)
    assert out.shape == (1, 130) and out.min() >= 0 and out.max() < 256


def test_sample_items_with_prefix_keeps_it():
    m = _model(position="data", data_shape=(4, 4, 3))
    prefix = np.arange(2 * 24, dtype=np.uint8).reshape(2, 24)  # top half of two 4x4x3 images
    rows = sample_items(m, 2, prefix, temperature=1.0, seed=1)
    assert rows.shape == (2, 48) and rows.dtype == np.uint8
    assert np.array_equal(rows[:, :24], prefix)
    again = sample_items(m, 2, prefix, temperature=1.0, seed=1)
    assert np.array_equal(rows, again)
    with pytest.raises(ValueError, match="prefix"):
        sample_items(m, 3, prefix)


def test_sample_next_checks_arguments():
    logits = torch.randn(2, 256)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, top_k=-2)
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_next(logits, 1.0, 3, g) for _ in range(50)])
    top3 = logits.topk(3).indices
    assert all(bool((picks[:, r, None] == top3[r]).any(-1).all()) for r in range(2))


def test_audio_sample_written_as_wav(tmp_path):
    codes = np.random.default_rng(0).integers(0, 256, 800).astype(np.uint8)
    path = write_wav(tmp_path / "s.wav", mu_law_decode(codes), 8000)
    x, sr = read_audio(path)
    assert sr == 8000 and len(x) == 800
    assert np.abs(x - mu_law_decode(codes)).max() < 1e-3
