"""Attention weights of a trained model, and the ``attention`` command's pictures."""
import numpy as np
import pytest
import torch
from PIL import Image

from sparse_transformer import attention_maps as am
from sparse_transformer.cli import main
from sparse_transformer.models import ModelConfig, SparseTransformer


@pytest.mark.parametrize("mode,pattern", [("merged", "fixed"), ("split", "strided")])
def test_weights_follow_the_pattern_and_give_the_layers_output(mode, pattern):
    torch.manual_seed(0)
    cfg = ModelConfig(seq_len=48, d_model=32, n_layers=2, n_heads=2, pattern=pattern, stride=8,
                      summary=2, mode=mode, qk_ratio=0.5)
    model = SparseTransformer(cfg).eval()
    x = torch.randint(0, 256, (48,))
    w = am.attention_weights(model, x, layer=1)
    assert w.shape == (2, 48, 48)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 48))
    blk = model.blocks[1]
    for heads, pat in blk.attn.head_patterns():
        mask = pat.mask(48, num_heads=len(range(2)[heads]))
        assert (w[heads][~mask] == 0).all()
    # Weights times values are the layer's own attention output (its backend, not ours).
    with torch.no_grad():
        h = model.embed(x[None])
        h = model.blocks[0](h)
        q, k, v = blk.attn.project(blk.norm_a(h))
        want = blk.attn.attend(q, k, v)[0]
    torch.testing.assert_close(w @ v[0], want, rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    model = SparseTransformer(ModelConfig(seq_len=16, d_model=16, n_layers=1, n_heads=2,
                                          stride=4, summary=1))
    with pytest.raises(ValueError, match="layer"):
        am.attention_weights(model, torch.zeros(8, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="sequence"):
        am.attention_weights(model, torch.zeros(17, dtype=torch.long), 0)


def test_pictures():
    w = torch.softmax(torch.randn(2, 30, 30), -1)
    img = am.text_heatmap(w, bytes(range(65, 95)), head=1, query=29, width=10)
    assert img.size[0] > 10 * 8 and img.size[1] > 3 * 14
    assert am.matrix_image(w, 0).size == (240, 240)
    pix = np.arange(2 * 3 * 5).astype(np.uint8)
    ov = am.image_overlay(torch.softmax(torch.randn(1, 30, 30), -1), pix, (2, 5, 3), 0, [5, 29])
    assert ov.size == (2 * (5 * 6 + 4), 2 * 6)


def test_attention_command(tmp_path, capsys):
    from sparse_transformer.data import embedded_splits
    from sparse_transformer.models import get_preset
    from sparse_transformer.training import Trainer

    data = {k: v[:20_000] for k, v in embedded_splits().items()}
    cfg = get_preset("tiny")
    cfg.train.steps = 2
    Trainer(cfg, tmp_path / "run", data=data, progress=False).fit()
    out = tmp_path / "pics"
    assert main(["attention", "--checkpoint", str(tmp_path / "run"), "--layer", "1", "--head",
                 "0", "--head", "1", "--text", "To be, or not to be", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["layer1_head0_matrix.png", "layer1_head0_query18.png",
                     "layer1_head1_matrix.png", "layer1_head1_query18.png"]
    assert Image.open(out / names[0]).size[0] > 0
    for bad, msg in ((["--layer", "2"], "--layer"), (["--head", "5"], "--head"),
                     (["--length", "65"], "--length"), (["--query", "99"], "--query")):
        with pytest.raises(SystemExit, match=msg):
            main(["attention", "--checkpoint", str(tmp_path / "run"), "--text", "abcdef",
                  "--out", str(tmp_path / "x"), *bad])
