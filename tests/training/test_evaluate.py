
import numpy as np
import pytest

from sparse_transformer.models import ModelConfig, SparseTransformer
from sparse_transformer.training import bits_per_byte, ppmd_bits_per_byte
from sparse_transformer.training.evaluate import eval_windows


@pytest.mark.parametrize("total,seq_len,min_context", [
    (10, 4, 2), (11, 4, 0), (100, 16, 8), (5, 8, 4), (17, 4, 3), (1000, 64, 63)])
def test_windows_score_every_byte_once(total, seq_len, min_context):
    scored = []
    for start, first, width in eval_windows(total, seq_len, min_context):
        assert width <= seq_len
        if scored:  # every window after the first has at least min_context of context
            assert first >= min(min_context, start + first)
        scored += range(start + 1 + first, start + 1 + width)
    assert scored == list(range(1, total))


def test_untrained_model_scores_eight_bits():
    m = SparseTransformer(ModelConfig(seq_len=32, d_model=16, n_layers=1, n_heads=2, stride=4,
                                      summary=1))
    data = np.random.default_rng(0).integers(0, 256, 500).astype(np.uint8)
    res = bits_per_byte(m, data, 32, batch_size=4)
    assert res["bytes"] == 499
    assert res["bits_per_byte"] == pytest.approx(8.0, abs=1e-5)


def test_ppmd_baseline_beats_eight_bits_on_text():
    pytest.importorskip("pyppmd")
    text = np.frombuffer(b"to be or not to be, that is the question. " * 200, dtype=np.uint8)
    assert ppmd_bits_per_byte(text) < 1.0
    rnd = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8)
    assert ppmd_bits_per_byte(rnd) > 7.5
    assert ppmd_bits_per_byte(text[:500], text[500:]) < ppmd_bits_per_byte(text[:500])


def test_bad_min_context():
    with pytest.raises(ValueError, match="min_context"):
        list(eval_windows(100, 8, 8))
