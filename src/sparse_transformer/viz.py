"""Pictures: the connectivity matrix of a pattern (like the paper's figure 3) as a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .patterns import Pattern


def pattern_image(pattern: Pattern, seq_len: int, causal: bool = True, head: int = 0,
                  query: int | None = None, cell: int | None = None) -> Image.Image:
    """Rows are queries, columns keys. Allowed pairs dark blue, the rest light grey; the row of
    ``query`` (default: the last) is drawn in orange so one output's receptive field stands out."""
    mask = pattern.mask(seq_len, num_heads=head + 1, causal=causal)[head].numpy()
    query = seq_len - 1 if query is None else query
    cell = cell or max(1, min(12, 768 // seq_len))
    rgb = np.empty((seq_len, seq_len, 3), dtype=np.uint8)
    rgb[...] = (235, 235, 240)
    rgb[mask] = (40, 70, 160)
    row = mask[query]
    rgb[query, row] = (240, 130, 20)
    rgb[query, ~row] = (250, 215, 170)
    img = Image.fromarray(rgb, "RGB").resize((seq_len * cell, seq_len * cell), Image.NEAREST)
    if cell >= 6:  # thin grid lines between cells
        draw = ImageDraw.Draw(img)
        for i in range(seq_len + 1):
            draw.line([(i * cell, 0), (i * cell, seq_len * cell)], fill=(255, 255, 255))
            draw.line([(0, i * cell), (seq_len * cell, i * cell)], fill=(255, 255, 255))
    return img


def save_pattern_png(pattern: Pattern, seq_len: int, path: str | Path, causal: bool = True,
                     head: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pattern_image(pattern, seq_len, causal, head).save(tmp, format="PNG")
    tmp.replace(path)
    return path
