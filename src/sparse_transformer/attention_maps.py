"""What a trained model attends to: one layer's attention weights on one sequence, as pictures.

The weights are computed the reference way (``softmax(q k^T / sqrt(d) + mask)`` under the layer's
pattern, causal) from the layer's own projections, after running the blocks below it on the
sequence. This builds a (heads, n, n) tensor, so the sequence is bounded by ``MAX_LEN``; the
training and evaluation paths never do this.

* Text: ``text_heatmap`` lays the bytes out in lines and colours each by the weight the chosen
  query byte (outlined) gives it; ``matrix_image`` draws the whole (queries x keys) matrix.
* Images: ``image_overlay`` shows, for each chosen query pixel (outlined), the weights of the
  pixels it attends to over the image (summed over channels), like the paper's figure 2.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .patterns.layout import allowed_rows

MAX_LEN = 4096  # (heads, n, n) float32 at 4,096 positions is 64 MiB per head


@torch.no_grad()
def attention_weights(model, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Attention weights of ``layer`` (0-based) for one sequence ``x`` (long (n,) or (1, n)):
    float32 (heads, n, n), rows are queries and sum to 1 over their allowed keys."""
    x = x.reshape(1, -1).long()
    n = x.shape[1]
    if not 0 <= layer < len(model.blocks):
        raise ValueError(f"layer must be in [0, {len(model.blocks) - 1}], got {layer}")
    if not 1 <= n <= min(MAX_LEN, model.cfg.seq_len):
        raise ValueError(f"the sequence must hold 1 .. {min(MAX_LEN, model.cfg.seq_len)} "
                         f"positions (the model's context, at most {MAX_LEN}), got {n}")
    was = model.training
    model.eval()
    h = model.embed(x.to(next(model.parameters()).device))
    for blk in model.blocks[:layer]:
        h = blk(h)
    blk = model.blocks[layer]
    attn = blk.attn
    q, k, _ = attn.project(blk.norm_a(h))
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2))[0] * scale  # (heads, n, n)
    out = torch.zeros_like(scores)
    rows = torch.arange(n, device=scores.device)
    for heads, pat in attn.head_patterns():
        idx = range(attn.n_heads)[heads]
        mask = allowed_rows(pat, rows, n, len(idx), attn.causal).to(scores.device)
        s = scores[heads].masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=-1)
        out[heads] = torch.nan_to_num(w, nan=0.0)  # a query with no key: zeros
    model.train(was)
    return out.cpu()


def _colour(w: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] -> RGB uint8, white (0) through orange to dark red (1)."""
    w = np.clip(w, 0.0, 1.0)[..., None]
    lo, mid, hi = np.array([255, 255, 255]), np.array([250, 160, 40]), np.array([150, 0, 0])
    rgb = np.where(w < 0.5, lo + (mid - lo) * (w * 2), mid + (hi - mid) * (w * 2 - 1))
    return rgb.astype(np.uint8)


def _scaled(row: np.ndarray) -> np.ndarray:
    """A row of weights scaled so that its largest is 1 (small weights stay visible)."""
    top = float(row.max()) if row.size else 0.0
    return row / top if top > 0 else row


def matrix_image(weights: torch.Tensor, head: int, cell: int | None = None) -> Image.Image:
    """(queries x keys) of one head; each row scaled to its largest weight."""
    w = weights[head].numpy()
    n = w.shape[0]
    rgb = _colour(np.stack([_scaled(r) for r in w]))
    cell = cell or max(1, min(8, 768 // n))
    return Image.fromarray(rgb, "RGB").resize((n * cell, n * cell), Image.NEAREST)


def text_heatmap(weights: torch.Tensor, data: bytes, head: int, query: int,
                 width: int = 64) -> Image.Image:
    """The bytes in lines of ``width``; each byte's background is the weight ``query`` gives it
    (scaled to the largest), the query byte outlined in blue."""
    n = weights.shape[-1]
    if not 0 <= query < n:
        raise ValueError(f"query must be in [0, {n - 1}], got {query}")
    row = _scaled(weights[head, query].numpy())
    font = ImageFont.load_default()
    cw, ch = 9, 15
    lines = -(-n // width)
    img = Image.new("RGB", (width * cw + 8, lines * ch + 22), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), f"head {head}, query byte {query} ({chr(data[query])!r})", fill=(0, 0, 0),
              font=font)
    cols = _colour(row)
    for i in range(n):
        x0, y0 = 4 + (i % width) * cw, 20 + (i // width) * ch
        draw.rectangle([x0, y0, x0 + cw - 1, y0 + ch - 1], fill=tuple(int(c) for c in cols[i]))
        c = chr(data[i]) if 32 <= data[i] < 127 else "·"
        draw.text((x0 + 1, y0 + 1), c, fill=(0, 0, 0), font=font)
        if i == query:
            draw.rectangle([x0, y0, x0 + cw - 1, y0 + ch - 1], outline=(0, 60, 220), width=2)
    return img


def image_overlay(weights: torch.Tensor, pixels: np.ndarray, shape: tuple[int, int, int],
                  head: int, queries: list[int], scale: int = 6) -> Image.Image:
    """One panel per query position: the image in grey, each pixel tinted by the weight (summed
    over its channels, scaled to the largest) the query gives it; the query pixel outlined."""
    hgt, wid, ch = shape
    n = weights.shape[-1]
    full = np.zeros(hgt * wid * ch, dtype=np.uint8)
    full[:min(n, len(pixels))] = np.asarray(pixels[:n], dtype=np.uint8)
    grey = full.reshape(hgt, wid, ch).mean(-1)
    panels = []
    for q in queries:
        if not 0 <= q < n:
            raise ValueError(f"query must be in [0, {n - 1}], got {q}")
        w = np.zeros(hgt * wid * ch)
        w[:n] = weights[head, q].numpy()
        w = _scaled(w.reshape(hgt, wid, ch).sum(-1))
        base = np.repeat(grey[..., None], 3, -1) * 0.5 + 64
        heat = _colour(w).astype(np.float64)
        rgb = np.where(w[..., None] > 0, 0.35 * base + 0.65 * heat, base).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB").resize((wid * scale, hgt * scale), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        py, px = divmod(q // ch, wid)
        draw.rectangle([px * scale, py * scale, px * scale + scale - 1, py * scale + scale - 1],
                       outline=(0, 200, 255), width=2)
        panels.append(img)
    out = Image.new("RGB", (len(panels) * (wid * scale + 4), hgt * scale), (255, 255, 255))
    for i, p in enumerate(panels):
        out.paste(p, (i * (wid * scale + 4), 0))
    return out


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path
