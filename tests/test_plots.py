"""Pictures: training curves from log.jsonl and sample grids."""
import json

import numpy as np
import pytest
from PIL import Image

from sparse_transformer.plots import sample_grid, save_training_curves


def test_training_curves_png(tmp_path):
    with open(tmp_path / "log.jsonl", "w") as f:
        for s in range(10, 110, 10):
            f.write(json.dumps({"step": s, "loss_bpb": 8 - s / 20, "elapsed_s": s / 2}) + "\n")
        f.write(json.dumps({"step": 100, "valid_bpb": 4.2, "elapsed_s": 50}) + "\n")
    path = save_training_curves(tmp_path, tmp_path / "c.png")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    blue = (img == (40, 90, 200)).all(-1)
    assert blue[:, : img.shape[1] // 2].sum() > 50 and blue[:, img.shape[1] // 2:].sum() > 50
    with pytest.raises(FileNotFoundError):
        save_training_curves(tmp_path / "none", tmp_path / "x.png")


def test_sample_grid_places_images():
    imgs = np.zeros((5, 4, 4, 3), np.uint8)
    imgs[2] = 200
    g = np.asarray(sample_grid(imgs, cols=3, scale=1, pad=1))
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert (g[1:5, 11:15] == 200).all() and (g[1:5, 1:5] == 0).all()
    gray = np.asarray(sample_grid(np.full((1, 3, 3, 1), 7, np.uint8), scale=2, pad=0))
    assert gray.shape == (6, 6, 3) and (gray == 7).all()
    with pytest.raises(ValueError, match="images must be"):
        sample_grid(np.zeros((2, 3, 3)))
